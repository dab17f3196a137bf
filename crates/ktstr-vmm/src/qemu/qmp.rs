//! A QMP client over a Unix socket: the greeting and capabilities
//! handshake, synchronous commands, and asynchronous events collected by a
//! reader thread (STOP, RESUME, SHUTDOWN, GUEST_PANICKED, RESET, ...).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest QMP line we accept (a `info registers -a` reply for 64 vCPUs is
/// well under this).
const MAX_LINE: usize = 16 << 20;

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection ({what}): {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP command `{cmd}` failed: {class}: {desc}")]
    Command {
        cmd: String,
        class: String,
        desc: String,
    },
    #[error("QMP: no reply to `{0}` in time")]
    Timeout(String),
    #[error("QMP: connection closed (QEMU exited?)")]
    Closed,
    #[error("QMP: malformed message: {0}")]
    Protocol(String),
}

/// One QMP event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

#[derive(Default)]
struct Events {
    list: Vec<Event>,
    closed: bool,
}

/// A connected QMP session.
pub struct Qmp {
    writer: Mutex<UnixStream>,
    replies: Mutex<Receiver<Value>>,
    events: Arc<(Mutex<Events>, Condvar)>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl QmpError {
    fn io(source: std::io::Error) -> Self {
        QmpError::Io {
            what: "socket".into(),
            source,
        }
    }
}

impl Qmp {
    /// Connect (retrying until `timeout` while QEMU starts), read the
    /// greeting and negotiate capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => {
                    return Err(QmpError::Io {
                        what: path.display().to_string(),
                        source,
                    });
                }
            }
        };
        let read_half = stream.try_clone().map_err(QmpError::io)?;
        let (tx, rx) = mpsc::channel();
        let events: Arc<(Mutex<Events>, Condvar)> = Arc::default();
        let ev2 = events.clone();
        let reader = std::thread::Builder::new()
            .name("ktstr-qmp".into())
            .spawn(move || reader_loop(read_half, tx, ev2))
            .map_err(QmpError::io)?;
        let q = Self {
            writer: Mutex::new(stream),
            replies: Mutex::new(rx),
            events,
            reader: Some(reader),
        };
        // The greeting arrives as a reply-channel message.
        let greeting = q.recv(Duration::from_secs(10), "greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected greeting, got {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None, Duration::from_secs(10))?;
        Ok(q)
    }

    fn recv(&self, timeout: Duration, what: &str) -> Result<Value, QmpError> {
        let rx = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        match rx.recv_timeout(timeout) {
            Ok(v) => Ok(v),
            Err(RecvTimeoutError::Timeout) => Err(QmpError::Timeout(what.into())),
            Err(RecvTimeoutError::Disconnected) => Err(QmpError::Closed),
        }
    }

    /// Run a command and return its `return` value.
    pub fn execute(
        &self,
        cmd: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let msg = match args {
            Some(a) => json!({"execute": cmd, "arguments": a}),
            None => json!({"execute": cmd}),
        };
        // Hold the reply lock across write+read so replies pair with commands.
        let rx = self.replies.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let mut line = msg.to_string();
            line.push('\n');
            w.write_all(line.as_bytes()).map_err(|_| QmpError::Closed)?;
        }
        let v = match rx.recv_timeout(timeout) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => return Err(QmpError::Timeout(cmd.into())),
            Err(RecvTimeoutError::Disconnected) => return Err(QmpError::Closed),
        };
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(QmpError::Command {
                cmd: cmd.into(),
                class: e.get("class").and_then(Value::as_str).unwrap_or("?").into(),
                desc: e.get("desc").and_then(Value::as_str).unwrap_or("?").into(),
            });
        }
        Err(QmpError::Protocol(format!("reply to {cmd}: {v}")))
    }

    /// A human monitor command's text output.
    pub fn hmp(&self, command: &str, timeout: Duration) -> Result<String, QmpError> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({"command-line": command})),
            timeout,
        )?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Events seen so far (kept; callers filter by index).
    pub fn events(&self) -> Vec<Event> {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .clone()
    }

    /// Number of events seen so far.
    pub fn event_count(&self) -> usize {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .len()
    }

    /// Wait for an event named one of `names` at index >= `from`.
    pub fn wait_event(&self, names: &[&str], from: usize, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.events;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = g
                .list
                .iter()
                .skip(from)
                .find(|e| names.contains(&e.name.as_str()))
            {
                return Some(e.clone());
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Has the connection closed (QEMU gone)?
    pub fn closed(&self) -> bool {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        if let Ok(w) = self.writer.get_mut() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

fn reader_loop(stream: UnixStream, tx: mpsc::Sender<Value>, events: Arc<(Mutex<Events>, Condvar)>) {
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match std::io::Read::take(&mut r, MAX_LINE as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if let Some(name) = v.get("event").and_then(Value::as_str) {
            let (m, cv) = &*events;
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .list
                .push(Event {
                    name: name.to_string(),
                    data: v.get("data").cloned().unwrap_or(Value::Null),
                });
            cv.notify_all();
        } else if tx.send(v).is_err() {
            break;
        }
    }
    let (m, cv) = &*events;
    m.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    cv.notify_all();
}
