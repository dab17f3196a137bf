//! Running the payload: its output relayed to the host in bounded chunks,
//! its cold-path kernel-op requests relayed over a local Unix socket (so
//! the payload never needs to know the transport), its timeout enforced.

use crate::link::Link;
use crate::sys;
use ktstr_wire::{GuestMsg, HostMsg, MAX_CHUNK, RunSpec, Stream, read_msg, write_msg};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where the payload connects for kernel ops and results
/// (`KTSTR_GUEST_RELAY` in its environment).
pub const RELAY_SOCK: &str = "/run/ktstr-relay.sock";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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

/// Start the relay listener.
pub fn start_relay(link: Arc<Link>) -> std::io::Result<()> {
    let _ = std::fs::create_dir_all("/run");
    let _ = std::fs::remove_file(RELAY_SOCK);
    let l = UnixListener::bind(RELAY_SOCK)?;
    std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            for conn in l.incoming().flatten() {
                let link = link.clone();
                let _ = std::thread::Builder::new()
                    .name("relay-conn".into())
                    .spawn(move || serve(link, conn));
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
