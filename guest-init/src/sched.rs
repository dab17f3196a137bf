//! Starting the sched_ext scheduler: spawn with its log file, a liveness
//! gate watched through a pidfd (not a sleep), then wait for
//! `/sys/kernel/sched_ext/root/ops` to become non-empty, woken by inotify
//! on `/sys/kernel/sched_ext/` with a polling backstop. Every failure path
//! names the probable cause.

use crate::sys;
use ktstr_wire::SchedSpec;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SCHED_EXT_DIR: &str = "/sys/kernel/sched_ext";
pub const ROOT_OPS: &str = "/sys/kernel/sched_ext/root/ops";
pub const SCHED_LOG: &str = "/tmp/sched.log";

/// How starting the scheduler went.
#[derive(Debug)]
pub enum Started {
    /// Attached; the ops name.
    Attached { child: Child, ops: String },
    /// Exited (detail says how and what probably went wrong).
    Died(String),
    /// Stayed alive but never attached (detail: `timeout` or `sched_ext
    /// sysfs absent`, plus advice). The process has been killed and reaped.
    NotAttached(String),
}

/// Read the ops name if attached.
pub fn attached_ops() -> Option<String> {
    let s = std::fs::read_to_string(ROOT_OPS).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The outcome of waiting for the attach marker.
#[derive(Debug, PartialEq, Eq)]
enum Attach {
    Attached(String),
    Timeout,
    SysfsAbsent,
    /// The scheduler exited while we waited.
    Died,
}

/// Wait for `root/ops`, and for the scheduler's death (`pidfd` readable)
/// at the same time: a scheduler that exits after the liveness gate is
/// reported at once, not as a timeout.
fn wait_attached(timeout: Duration, force_absent: bool, pidfd: Option<i32>) -> Attach {
    if force_absent || std::fs::metadata(SCHED_EXT_DIR).is_err() {
        return Attach::SysfsAbsent;
    }
    let ino = sys::Inotify::watch_dir(SCHED_EXT_DIR).ok();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ops) = attached_ops() {
            return Attach::Attached(ops);
        }
        if pidfd.is_some_and(|fd| sys::poll_readable(fd, 0).unwrap_or(false)) {
            return Attach::Died;
        }
        let now = Instant::now();
        if now >= deadline {
            return Attach::Timeout;
        }
        // Woken by inotify when root/ appears; 100 ms polling backstop
        // (kernfs does not report attribute writes through inotify).
        let ms = (deadline - now).as_millis().min(100) as i32;
        match &ino {
            Some(i) => {
                i.wait(ms);
            }
            None => std::thread::sleep(Duration::from_millis(ms as u64)),
        }
    }
}

/// Spawn and gate the scheduler.
pub fn start(spec: &SchedSpec, force_absent: bool, track: impl Fn(i32)) -> Started {
    let log = match std::fs::File::create(SCHED_LOG) {
        Ok(f) => f,
        Err(e) => return Started::Died(format!("cannot create {SCHED_LOG}: {e}")),
    };
    let log2 = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return Started::Died(format!("cannot dup log fd: {e}")),
    };
    let mut child = match Command::new(&spec.path)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let hint = if std::path::Path::new(&spec.path).is_file() {
                " (the file is there: its ELF interpreter or a library it names is missing)"
            } else {
                ""
            };
            return Started::Died(format!("could not start {}: {e}{hint}", spec.path));
        }
    };
    let pid = child.id() as i32;
    track(pid);
    let started = Instant::now();
    let pidfd = sys::pidfd_open(pid).ok();
    let fd = pidfd.as_ref().map(|f| f.as_raw_fd());
    // Liveness gate: stay alive for liveness_ms, watched via pidfd.
    let live = Duration::from_millis(if spec.liveness_ms == 0 {
        1000
    } else {
        spec.liveness_ms
    });
    let died = match fd {
        Some(fd) => sys::poll_readable(fd, live.as_millis() as i32).unwrap_or(false),
        None => {
            std::thread::sleep(live);
            matches!(child.try_wait(), Ok(Some(_)))
        }
    };
    if died {
        return Started::Died(death_detail(
            &spec.path,
            &mut child,
            started,
            "within the liveness gate",
        ));
    }
    let attach = Duration::from_millis(if spec.attach_timeout_ms == 0 {
        10_000
    } else {
        spec.attach_timeout_ms
    });
    match wait_attached(attach, force_absent, fd) {
        Attach::Attached(ops) => Started::Attached { child, ops },
        Attach::Died => Started::Died(death_detail(
            &spec.path,
            &mut child,
            started,
            "before attaching",
        )),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Started::NotAttached(match other {
                Attach::SysfsAbsent => format!(
                    "sched_ext sysfs absent: {SCHED_EXT_DIR} does not exist, so this kernel has no \
                     sched_ext (rebuild with CONFIG_SCHED_CLASS_EXT=y); the scheduler was killed"
                ),
                _ => format!(
                    "timeout: the scheduler stayed alive but {ROOT_OPS} stayed empty for {} ms \
                     (a slow BPF load on a loaded host: raise the attach timeout, e.g. \
                     --attach-timeout 300s; or a program that never attaches); it was killed",
                    attach.as_millis()
                ),
            })
        }
    }
}

/// Why the scheduler died, in its own words where it left any: the exit
/// status, the time, and the cause the log names (a missing kernel
/// option, the dynamic loader, the BPF verifier, libbpf).
fn death_detail(path: &str, child: &mut Child, started: Instant, when: &str) -> String {
    let status = child
        .wait()
        .map(|s| s.to_string())
        .unwrap_or_else(|e| e.to_string());
    let log = String::from_utf8_lossy(&log_tail(64 * 1024)).into_owned();
    let cause = ktstr_wire::sched_diag::likely_cause(&log).unwrap_or_else(|| {
        "no cause in its log: a BPF verifier rejection or libbpf load failure, a kernel \
         without CONFIG_SCHED_CLASS_EXT, a crash at init, or bad arguments"
            .into()
    });
    format!(
        "scheduler {path} {status} {when} ({} ms after start): {cause}",
        started.elapsed().as_millis()
    )
}

/// The scheduler log (bounded).
pub fn log_tail(max: usize) -> Vec<u8> {
    let b = std::fs::read(SCHED_LOG).unwrap_or_default();
    b[b.len().saturating_sub(max)..].to_vec()
}
