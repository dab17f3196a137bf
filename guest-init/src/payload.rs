//! Running the payload: its output relayed to the host in bounded chunks,
//! its cold-path kernel-op requests relayed over a local Unix socket (so
//! the payload never needs to know the transport), its timeout enforced.
//!
//! Ordering: what the payload sent over the relay (its result above all)
//! reaches the host before `Exit`. After the payload exits,
//! [`drain_relay`] waits until the accept loop has swept the listener
//! after the exit and every relay connection has been read to its end.

use crate::link::Link;
use crate::sys;
use ktstr_wire::{GuestMsg, HostMsg, MAX_CHUNK, RunSpec, Stream, read_msg, write_msg};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Where the payload connects for kernel ops and results
/// (`KTSTR_GUEST_RELAY` in its environment).
pub const RELAY_SOCK: &str = "/run/ktstr-relay.sock";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Relay bookkeeping: connections being served, and accept-loop sweeps.
#[derive(Default)]
struct RelayState {
    active: u32,
    sweeps: u64,
}

static RELAY: Mutex<RelayState> = Mutex::new(RelayState {
    active: 0,
    sweeps: 0,
});
static RELAY_CV: Condvar = Condvar::new();

fn relay_state() -> std::sync::MutexGuard<'static, RelayState> {
    RELAY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait (at most `max`) until everything the exited payload sent over the
/// relay has been forwarded: two accept-loop sweeps after now (so a
/// connection still in the backlog was taken) and no connection left.
pub fn drain_relay(max: Duration) -> bool {
    let deadline = std::time::Instant::now() + max;
    let mut s = relay_state();
    let start = s.sweeps;
    while s.sweeps < start.saturating_add(2) || s.active > 0 {
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        s = RELAY_CV
            .wait_timeout(s, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

/// Serve one payload connection: forward its messages; answer its kernel-op
/// requests with the host's replies.
fn serve(link: Arc<Link>, mut conn: UnixStream) {
    loop {
        let msg: GuestMsg = match read_msg(&mut conn) {
            Ok(m) => m,
            Err(_) => return,
        };
        match msg {
            GuestMsg::KernelOpRequest { id: local, ops } => {
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                let rx = link.expect_reply(id);
                link.send(&GuestMsg::KernelOpRequest { id, ops });
                // The host may wait for the scheduler/KASLR before replying.
                let replies = match rx.recv_timeout(Duration::from_secs(120)) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                if write_msg(&mut conn, &HostMsg::KernelOpReply { id: local, replies }).is_err() {
                    return;
                }
            }
            other => link.send(&other),
        }
    }
}

/// Start the relay listener: a loop that polls the listener, accepts
/// what is pending, and counts each sweep (see [`drain_relay`]).
pub fn start_relay(link: Arc<Link>) -> std::io::Result<()> {
    start_relay_at(link, RELAY_SOCK)
}

fn start_relay_at(link: Arc<Link>, path: &str) -> std::io::Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            loop {
                let _ = sys::poll_readable(l.as_raw_fd(), 20);
                let mut s = relay_state();
                while let Ok((conn, _)) = l.accept() {
                    let _ = conn.set_nonblocking(false);
                    let link = link.clone();
                    s.active += 1;
                    let spawned =
                        std::thread::Builder::new()
                            .name("relay-conn".into())
                            .spawn(move || {
                                serve(link, conn);
                                relay_state().active -= 1;
                                RELAY_CV.notify_all();
                            });
                    if spawned.is_err() {
                        s.active -= 1;
                    }
                }
                s.sweeps += 1;
                drop(s);
                RELAY_CV.notify_all();
            }
        })?;
    Ok(())
}

fn pump(link: Arc<Link>, mut r: impl Read, stream: Stream) {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => link.send(&GuestMsg::Output {
                stream,
                data: buf[..n].to_vec(),
            }),
        }
    }
}

/// Run the payload to completion (or timeout); returns its exit code.
pub fn run(link: &Arc<Link>, spec: &RunSpec, track: impl Fn(i32)) -> i32 {
    let Some((prog, args)) = spec.payload_argv.split_first() else {
        link.send(&GuestMsg::Log("no payload in the RunSpec".into()));
        return 0;
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("KTSTR_GUEST_RELAY", RELAY_SOCK)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &spec.payload_env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            link.send(&GuestMsg::Log(format!(
                "could not start payload {prog}: {e}"
            )));
            return 127;
        }
    };
    let pid = child.id() as i32;
    track(pid);
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        let l = link.clone();
        pumps.push(std::thread::spawn(move || pump(l, o, Stream::Stdout)));
    }
    if let Some(e) = child.stderr.take() {
        let l = link.clone();
        pumps.push(std::thread::spawn(move || pump(l, e, Stream::Stderr)));
    }
    let timeout_ms = if spec.payload_timeout_ms == 0 {
        u64::MAX
    } else {
        spec.payload_timeout_ms
    };
    let exited = match sys::pidfd_open(pid) {
        Ok(fd) => {
            let mut left = timeout_ms;
            let mut done = false;
            while left > 0 && !done {
                let step = left.min(60_000);
                done = sys::poll_readable(fd.as_raw_fd(), step as i32).unwrap_or(false);
                left -= step;
            }
            done
        }
        Err(_) => true,
    };
    let code = if exited {
        child
            .wait()
            .map(|s| sys::exit_code(std::os::unix::process::ExitStatusExt::into_raw(s)))
            .unwrap_or(255)
    } else {
        link.send(&GuestMsg::Log(format!(
            "payload timed out after {timeout_ms} ms; killing it"
        )));
        let _ = child.kill();
        let _ = child.wait();
        124
    };
    for p in pumps {
        let _ = p.join();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_wire::{GuestMsg, RelayClient};
    use std::os::fd::OwnedFd;

    /// The race behind "the guest sent no scenario report": the payload
    /// sends its result over the relay and exits at once; guest-init then
    /// sends `Exit`. Hundreds of rounds: the result always comes first.
    #[test]
    fn a_result_sent_just_before_exit_always_precedes_exit() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("relay.sock");
        let (guest_end, mut host_end) = UnixStream::pair().unwrap();
        let file = std::fs::File::from(OwnedFd::from(guest_end));
        let (link, _rx) = Link::start(file).unwrap();
        start_relay_at(link.clone(), sock.to_str().unwrap()).unwrap();
        let rounds = 300;
        for i in 0..rounds {
            // The payload: connect, send the result, exit (drop).
            let mut c = RelayClient::connect(sock.to_str().unwrap()).unwrap();
            c.send(&GuestMsg::TestResult {
                passed: true,
                json: format!("{i}"),
            })
            .unwrap();
            drop(c);
            // guest-init: the payload exited; drain, then Exit.
            assert!(
                drain_relay(Duration::from_secs(5)),
                "round {i}: drain timed out"
            );
            link.send(&GuestMsg::Exit { code: i });
            let first: GuestMsg = read_msg(&mut host_end).unwrap();
            assert_eq!(
                first,
                GuestMsg::TestResult {
                    passed: true,
                    json: format!("{i}")
                },
                "round {i}"
            );
            let second: GuestMsg = read_msg(&mut host_end).unwrap();
            assert_eq!(second, GuestMsg::Exit { code: i }, "round {i}");
        }
    }
}
