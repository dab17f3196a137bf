//! Lifecycle and attribute churn: fork/exit, nice, affinity.

use super::cpu::spin_iters;
use super::meter::Meter;
use crate::sys::{allowed_cpus, set_affinity};
use std::sync::atomic::{AtomicBool, Ordering};

/// fork, `_exit(0)` in the child, `waitpid` in the parent.
pub(super) fn fork_exit(m: &mut Meter, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: the child only calls the async-signal-safe `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: terminate the child at once, running no destructors.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            m.r.errors
                .push(format!("fork: {}", std::io::Error::last_os_error()));
            return;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
            m.r.errors.push(format!(
                "waitpid {pid}: {}",
                std::io::Error::last_os_error()
            ));
            return;
        }
        m.count("forks");
        m.r.iterations += 1;
        m.tick();
    }
}

/// Spin, move to the next nice value in -20..=19, yield.
pub(super) fn nice_sweep(m: &mut Meter, stop: &AtomicBool) {
    let mut nice = -20;
    while !stop.load(Ordering::Relaxed) {
        spin_iters(20_000);
        // SAFETY: plain syscall on ourselves.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
            m.count("nice_changes");
        }
        nice = if nice >= 19 { -20 } else { nice + 1 };
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        m.r.iterations += 1;
        m.tick();
    }
}

/// Spin, move itself to another CPU of its allowed set, yield.
pub(super) fn affinity_churn(spin: u64, m: &mut Meter, stop: &AtomicBool) {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        m.r.errors.push(format!(
            "AffinityChurn needs at least 2 allowed CPUs, has {cpus:?}"
        ));
        return;
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    while !stop.load(Ordering::Relaxed) {
        spin_iters(spin);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = cpus[(rng % cpus.len() as u64) as usize];
        if set_affinity(&[target]).is_ok() {
            m.count("affinity_moves");
        }
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        m.r.iterations += 1;
        m.tick();
    }
}
