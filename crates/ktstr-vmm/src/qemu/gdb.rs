//! A minimal GDB remote-protocol client (in ack mode) for QEMU's gdbstub: write
//! watchpoints (`Z2`/`z2`), continue, interrupt, and stop replies.
//! Used to freeze the guest at the instant it writes a watched address.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Longest packet we accept from the stub.
const MAX_PACKET: usize = 1 << 20;

/// A gdbstub failure.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("gdbstub I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("gdbstub closed the connection")]
    Closed,
    #[error("gdbstub: {0}")]
    Protocol(String),
    #[error("gdbstub: no answer in time")]
    Timeout,
}

/// A stop reply (`T05...`, `S02`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub signal: u8,
    /// `watch:ADDR` (or `awatch`/`rwatch`) when a watchpoint fired.
    pub watch: Option<u64>,
    /// `thread:N` (QEMU numbers vCPUs from 1).
    pub thread: Option<u32>,
    pub raw: String,
}

/// Parse a stop-reply packet payload.
pub fn parse_stop(p: &str) -> Option<Stop> {
    let mut chars = p.chars();
    let kind = chars.next()?;
    if kind != 'T' && kind != 'S' {
        return None;
    }
    let signal = u8::from_str_radix(p.get(1..3)?, 16).ok()?;
    let mut watch = None;
    let mut thread = None;
    if kind == 'T' {
        for kv in p[3..].split(';').filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once(':') else {
                continue;
            };
            match k {
                "watch" | "awatch" | "rwatch" => watch = u64::from_str_radix(v, 16).ok(),
                "thread" => {
                    // "p1.2" (multiprocess) or "02".
                    let t = v.rsplit('.').next().unwrap_or(v).trim_start_matches('p');
                    thread = u32::from_str_radix(t, 16).ok();
                }
                _ => {}
            }
        }
    }
    Some(Stop {
        signal,
        watch,
        thread,
        raw: p.to_string(),
    })
}

/// Frame a packet: `$data#cs`.
pub fn frame(data: &str) -> Vec<u8> {
    let cs = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${data}#{cs:02x}").into_bytes()
}

/// A connection to the stub.
pub struct Gdb {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Gdb {
    /// Connect; QEMU pauses the VM when a debugger attaches.
    pub fn connect(path: &std::path::Path, timeout: Duration) -> Result<Self, GdbError> {
        let deadline = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(GdbError::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut g = Self { s, buf: Vec::new() };
        // Announce ourselves; the reply lists the stub's features.
        let _ = g.request("qSupported:swbreak+;hwbreak+", Duration::from_secs(5))?;
        Ok(g)
    }

    fn send(&mut self, data: &str) -> Result<(), GdbError> {
        self.s.write_all(&frame(data)).map_err(GdbError::Io)
    }

    /// Read one packet payload (skipping acks), up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<String, GdbError> {
        let deadline = Instant::now() + timeout;
        loop {
            // A complete packet in the buffer?
            while matches!(self.buf.first(), Some(b'+') | Some(b'-')) {
                self.buf.remove(0);
            }
            if let Some(start) = self.buf.iter().position(|&b| b == b'$')
                && let Some(hash) = self.buf[start..].iter().position(|&b| b == b'#')
            {
                let end = start + hash + 3;
                if self.buf.len() >= end {
                    let payload =
                        String::from_utf8_lossy(&self.buf[start + 1..start + hash]).into_owned();
                    self.buf.drain(..end);
                    // Acknowledge (we stay in ack mode: simplest and always supported).
                    self.s.write_all(b"+").map_err(GdbError::Io)?;
                    return Ok(payload);
                }
            }
            if self.buf.len() > MAX_PACKET {
                return Err(GdbError::Protocol("oversized packet".into()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GdbError::Timeout);
            }
            self.s
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .map_err(GdbError::Io)?;
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp) {
                Ok(0) => return Err(GdbError::Closed),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(GdbError::Io(e)),
            }
        }
    }

    /// Send a request and read its reply.
    pub fn request(&mut self, data: &str, timeout: Duration) -> Result<String, GdbError> {
        self.send(data)?;
        self.recv(timeout)
    }

    /// Insert a write watchpoint on `len` bytes at guest virtual `addr`.
    pub fn insert_write_watch(&mut self, addr: u64, len: u64) -> Result<(), GdbError> {
        match self
            .request(&format!("Z2,{addr:x},{len:x}"), Duration::from_secs(5))?
            .as_str()
        {
            "OK" => Ok(()),
            r => Err(GdbError::Protocol(format!(
                "Z2 at {addr:#x} refused: {r:?}"
            ))),
        }
    }

    /// Remove it.
    pub fn remove_write_watch(&mut self, addr: u64, len: u64) -> Result<(), GdbError> {
        match self
            .request(&format!("z2,{addr:x},{len:x}"), Duration::from_secs(5))?
            .as_str()
        {
            "OK" => Ok(()),
            r => Err(GdbError::Protocol(format!(
                "z2 at {addr:#x} refused: {r:?}"
            ))),
        }
    }

    /// Resume all vCPUs (no reply until the next stop).
    pub fn cont(&mut self) -> Result<(), GdbError> {
        self.send("c")
    }

    /// Ask a running guest to stop (Ctrl-C); the stop reply follows.
    pub fn interrupt(&mut self) -> Result<(), GdbError> {
        self.s.write_all(&[0x03]).map_err(GdbError::Io)
    }

    /// Detach: QEMU resumes the VM.
    pub fn detach(&mut self) -> Result<(), GdbError> {
        let _ = self.request("D", Duration::from_secs(5));
        Ok(())
    }

    /// Wait for a stop reply.
    pub fn wait_stop(&mut self, timeout: Duration) -> Result<Stop, GdbError> {
        let p = self.recv(timeout)?;
        parse_stop(&p)
            .ok_or_else(|| GdbError::Protocol(format!("expected a stop reply, got {p:?}")))
    }

    /// The stop reason now (`?`).
    pub fn query_stop(&mut self) -> Result<Stop, GdbError> {
        let p = self.request("?", Duration::from_secs(5))?;
        parse_stop(&p)
            .ok_or_else(|| GdbError::Protocol(format!("expected a stop reply, got {p:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_replies_and_frames() {
        let s = parse_stop("T05thread:p01.02;watch:ffffffff82a079c0;").unwrap();
        assert_eq!(
            (s.signal, s.watch, s.thread),
            (5, Some(0xffffffff82a079c0), Some(2))
        );
        let s = parse_stop("T02thread:01;").unwrap();
        assert_eq!((s.signal, s.watch, s.thread), (2, None, Some(1)));
        assert_eq!(parse_stop("S05").unwrap().signal, 5);
        assert!(parse_stop("OK").is_none());
        assert!(parse_stop("T").is_none());
        assert_eq!(frame("c"), b"$c#63".to_vec());
        assert_eq!(frame("?"), b"$?#3f".to_vec());
    }
}
