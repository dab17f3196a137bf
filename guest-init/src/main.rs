//! ktstr-guest-init: PID 1 of every ktstr test VM.
//!
//! Mounts the filesystems a test needs, connects to the host over the
//! channel named on the kernel command line, says Hello, receives a
//! RunSpec, starts the scheduler (gated), runs the payload with its output
//! and kernel-op requests relayed, reports lifecycle events, and always
//! powers the guest off — on every path, its own errors and panics too.
//! As a non-PID-1 program it runs the built-in helpers (see `helpers`).

mod helpers;
mod link;
mod payload;
mod sched;
mod sys;
mod topo;
mod worker;

use ktstr_wire::{GuestMsg, Hello, HostMsg, PROTO_VERSION, Phase};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pids whose exit status belongs to someone (scheduler, payload); the
/// reaper leaves them alone. The lock also serialises spawn vs reap.
static TRACKED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn track(pid: i32) {
    TRACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

fn say(msg: &str) {
    eprintln!("ktstr-guest-init: {msg}");
}

fn mount_all() {
    for (src, target, fs, data) in [
        ("proc", "/proc", "proc", None),
        ("sysfs", "/sys", "sysfs", None),
        ("devtmpfs", "/dev", "devtmpfs", None),
        ("tmpfs", "/tmp", "tmpfs", None),
        ("tmpfs", "/run", "tmpfs", None),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", None),
        ("debugfs", "/sys/kernel/debug", "debugfs", None),
        ("tracefs", "/sys/kernel/tracing", "tracefs", None),
        ("bpf", "/sys/fs/bpf", "bpf", Some("mode=0700")),
    ] {
        if let Err(e) = sys::mount(src, target, fs, data) {
            say(&format!("mount {fs} on {target}: {e}"));
        }
    }
    // Let children use the cpu and cpuset controllers.
    let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +cpuset");
}

fn start_reaper() {
    let _ = std::thread::Builder::new().name("reaper".into()).spawn(|| {
        loop {
            {
                let g = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
                while let Some(pid) = sys::peek_zombie() {
                    if g.as_ref().is_some_and(|s| s.contains(&pid)) {
                        break; // its owner reaps it
                    }
                    let _ = sys::try_reap(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}

fn now_boottime_ns() -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn hello() -> Hello {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = topo::cpus();
    Hello {
        proto: PROTO_VERSION,
        kernel_release: release.trim().to_string(),
        nr_cpus: cpus.len() as u32,
        kallsyms_text: topo::kallsyms_text(),
        boot_time_ns: now_boottime_ns(),
        cpus,
        sched_ext_sysfs: std::fs::metadata(sched::SCHED_EXT_DIR).is_ok(),
    }
}

fn setup_cgroups(spec: &ktstr_wire::RunSpec) {
    for cg in &spec.cgroups {
        if cg.path.contains("..") {
            say(&format!("refusing cgroup path {}", cg.path));
            continue;
        }
        let dir = format!("/sys/fs/cgroup/{}", cg.path.trim_start_matches('/'));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            say(&format!("mkdir {dir}: {e}"));
            continue;
        }
        if let Some(cpus) = &cg.cpuset
            && let Err(e) = std::fs::write(format!("{dir}/cpuset.cpus"), cpus)
        {
            say(&format!("{dir}/cpuset.cpus = {cpus}: {e}"));
        }
    }
}

/// The whole run; returns when it is time to power off.
fn run() -> Result<(), String> {
    mount_all();
    start_reaper();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let chan_spec = link::channel_from_cmdline(&cmdline)
        .ok_or("no ktstr.chan= on the kernel command line; nothing to talk to")?;
    let chan = link::open(&chan_spec, Duration::from_secs(10))?;
    let (link, rx) = link::Link::start(chan).map_err(|e| e.to_string())?;
    link.send(&GuestMsg::Hello(hello()));
    let spec = link::wait_run(&rx, Duration::from_secs(60))?;
    payload::start_relay(link.clone()).map_err(|e| format!("relay socket: {e}"))?;
    setup_cgroups(&spec);

    let mut sched_child = None;
    if let Some(s) = &spec.scheduler {
        link.send(&GuestMsg::Lifecycle {
            phase: Phase::SchedulerStarting,
            detail: s.path.clone(),
        });
        match sched::start(s, spec.force_no_sched_ext, track) {
            sched::Started::Attached { child, ops } => {
                link.send(&GuestMsg::Lifecycle {
                    phase: Phase::SchedulerAttached,
                    detail: ops,
                });
                sched_child = Some(child);
            }
            sched::Started::Died(detail) => {
                link.send(&GuestMsg::SchedLog(sched::log_tail(ktstr_wire::MAX_CHUNK)));
                link.send(&GuestMsg::Lifecycle {
                    phase: Phase::SchedulerDied,
                    detail,
                });
                link.send(&GuestMsg::Exit { code: 1 });
                return Ok(());
            }
            sched::Started::NotAttached(detail) => {
                link.send(&GuestMsg::SchedLog(sched::log_tail(ktstr_wire::MAX_CHUNK)));
                link.send(&GuestMsg::Lifecycle {
                    phase: Phase::SchedulerNotAttached,
                    detail,
                });
                link.send(&GuestMsg::Exit { code: 1 });
                return Ok(());
            }
        }
    }
    // Watch the scheduler for the whole run.
    if let Some(child) = sched_child.as_ref() {
        let pid = child.id() as i32;
        let l2 = link.clone();
        let _ = std::thread::Builder::new()
            .name("sched-watch".into())
            .spawn(move || {
                if let Ok(fd) = sys::pidfd_open(pid) {
                    use std::os::fd::AsRawFd;
                    while !sys::poll_readable(fd.as_raw_fd(), 60_000).unwrap_or(true) {}
                    let status = sys::reap(pid)
                        .map(sys::describe_status)
                        .unwrap_or_else(|e| e.to_string());
                    l2.send(&GuestMsg::SchedLog(sched::log_tail(ktstr_wire::MAX_CHUNK)));
                    l2.send(&GuestMsg::Lifecycle {
                        phase: Phase::SchedulerDied,
                        detail: format!("scheduler {status} during the run"),
                    });
                }
            });
    }
    // Host messages during the run: only Shutdown matters.
    let shutdown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sd = shutdown.clone();
    std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            if let HostMsg::Shutdown { reason } = m {
                say(&format!("host requested shutdown: {reason}"));
                sd.store(true, std::sync::atomic::Ordering::SeqCst);
                sys::power_off();
            }
        }
    });
    link.send(&GuestMsg::Lifecycle {
        phase: Phase::PayloadStarting,
        detail: spec.payload_argv.join(" "),
    });
    let code = payload::run(&link, &spec, track);
    if !payload::drain_relay(Duration::from_secs(5)) {
        say("the payload's relay connections did not finish within 5 s after it exited");
    }
    link.send(&GuestMsg::Lifecycle {
        phase: Phase::PayloadFinished,
        detail: format!("exit code {code}"),
    });
    if sched_child.is_some() && sched::attached_ops().is_some() {
        link.send(&GuestMsg::SchedLog(sched::log_tail(ktstr_wire::MAX_CHUNK)));
    }
    link.send(&GuestMsg::Exit { code });
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::process::id() != 1 {
        match helpers::run(&args) {
            Some(code) => std::process::exit(code),
            None => {
                eprintln!(
                    "ktstr-guest-init: PID 1 of ktstr test VMs; as a program it runs helpers: spin SECS | sleep SECS | exit CODE [TEXT] | panic | sched-die | sched-die-late [SECS] | sched-idle"
                );
                std::process::exit(2);
            }
        }
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ktstr-guest-init: PANIC: {info}");
        sys::power_off();
    }));
    if let Err(e) = run() {
        say(&format!("error: {e}"));
    }
    // Give the channel a moment to drain the last frames.
    std::thread::sleep(Duration::from_millis(50));
    sys::power_off();
}
