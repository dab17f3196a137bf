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

/// Spin `spin_iters`, then move to the next policy of OTHER, BATCH, IDLE,
/// FIFO 1, RR 1 and back: class switches of a running task. Counters
/// `policy_changes` and `policy_refused`.
pub(super) fn policy_churn(spin: u64, m: &mut Meter, stop: &AtomicBool) {
    const CYCLE: [(i32, i32); 5] = [
        (libc::SCHED_OTHER, 0),
        (libc::SCHED_BATCH, 0),
        (libc::SCHED_IDLE, 0),
        (libc::SCHED_FIFO, 1),
        (libc::SCHED_RR, 1),
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        spin_iters(spin);
        i = (i + 1) % CYCLE.len();
        let (policy, prio) = CYCLE[i];
        let param = libc::sched_param {
            sched_priority: prio,
        };
        // SAFETY: valid param pointer for pid 0 (ourselves).
        if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
            m.count("policy_changes");
        } else {
            m.count("policy_refused");
        }
        m.r.iterations += 1;
        m.tick();
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above; back to SCHED_OTHER before reporting.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
}

/// Minor page faults of this process so far (getrusage).
fn minor_faults() -> u64 {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt.max(0) as u64
}

/// Map `region_kib` anonymous memory once; per cycle write
/// `touches_per_cycle` random pages (each a fresh fault), spin
/// `spin_iters`, then `MADV_DONTNEED` the region so the next cycle faults
/// again. Counter `minor_faults` is the kernel's count.
pub(super) fn page_fault_churn(
    region_kib: usize,
    touches: u64,
    spin: u64,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let len = region_kib.saturating_mul(1024).max(4096);
    // SAFETY: a fresh private anonymous mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return m
            .r
            .errors
            .push(format!("mmap {len}: {}", std::io::Error::last_os_error()));
    }
    let pages = (len / 4096) as u64;
    let faults0 = minor_faults();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..touches {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let off = (rng % pages) as usize * 4096;
            // SAFETY: `off` < `len`, inside the live mapping.
            unsafe { p.cast::<u8>().add(off).write_volatile(1) };
        }
        spin_iters(spin);
        // SAFETY: the whole mapping; its contents may be dropped.
        unsafe { libc::madvise(p, len, libc::MADV_DONTNEED) };
        m.r.iterations += 1;
        m.tick();
    }
    m.add("minor_faults", minor_faults().saturating_sub(faults0));
    // SAFETY: unmapping the mapping made above; no references remain.
    unsafe { libc::munmap(p, len) };
}

/// Parse a sysfs CPU list ("0-3,6,8-9"); at most 4096 CPUs, bad parts
/// skipped.
pub(super) fn parse_cpulist(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) else {
            continue;
        };
        for c in a..=b.min(a.saturating_add(4096)) {
            if out.len() >= 4096 {
                return out;
            }
            out.push(c);
        }
    }
    out
}

/// The CPUs of every NUMA node with CPUs, from sysfs.
fn node_cpus() -> Vec<Vec<u32>> {
    (0..1024)
        .map_while(|n| {
            std::fs::read_to_string(format!("/sys/devices/system/node/node{n}/cpulist")).ok()
        })
        .map(|s| parse_cpulist(&s))
        .filter(|c| !c.is_empty())
        .collect()
}

/// Move to the CPUs of each NUMA node in turn, `period_ms` per node
/// (sleeping there, then a short spin so it runs on the node). Counters
/// `node_moves` and `nodes`.
pub(super) fn numa_migration_churn(period_ms: u64, m: &mut Meter, stop: &AtomicBool) {
    let nodes = node_cpus();
    if nodes.is_empty() {
        return m
            .r
            .errors
            .push("NumaMigrationChurn: no /sys/devices/system/node/node*/cpulist".into());
    }
    m.add("nodes", nodes.len() as u64);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if set_affinity(&nodes[i % nodes.len()]).is_ok() {
            m.count("node_moves");
        }
        i += 1;
        m.sleep(std::time::Duration::from_millis(period_ms), stop);
        spin_iters(256);
        m.r.iterations += 1;
        m.tick();
    }
}

/// This process's cgroup v2 path below /sys/fs/cgroup ("" for the root).
fn own_cgroup() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let p = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(p.trim().trim_matches('/').to_string())
}

/// Move round `groups` child cgroups of its own cgroup
/// (`wt-cgroup-churn-<i>`, inheriting its cpuset) every `cycle_ms`,
/// confirming each move in /proc/self/cgroup. Counters `cgroup_moves`
/// and `seen_in_<i>`; back in its own cgroup at the end.
pub(super) fn cgroup_churn(groups: usize, cycle_ms: u64, m: &mut Meter, stop: &AtomicBool) {
    let Some(home) = own_cgroup() else {
        return m
            .r
            .errors
            .push("CgroupChurn: no cgroup v2 entry in /proc/self/cgroup".into());
    };
    let base = std::path::Path::new("/sys/fs/cgroup").join(&home);
    let mut dirs = Vec::new();
    for i in 0..groups {
        let d = base.join(format!("wt-cgroup-churn-{i}"));
        if let Err(e) = std::fs::create_dir(&d)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return m.r.errors.push(format!("mkdir {}: {e}", d.display()));
        }
        dirs.push(d);
    }
    let me = std::process::id().to_string();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let g = i % groups;
        i += 1;
        match std::fs::write(dirs[g].join("cgroup.procs"), &me) {
            Ok(()) => m.count("cgroup_moves"),
            Err(e) => {
                m.r.errors
                    .push(format!("move to {}: {e}", dirs[g].display()));
                break;
            }
        }
        let want = format!("wt-cgroup-churn-{g}");
        if own_cgroup().is_some_and(|c| c.ends_with(&want)) {
            m.count(&format!("seen_in_{g}"));
        }
        m.sleep(std::time::Duration::from_millis(cycle_ms), stop);
        spin_iters(256);
        m.r.iterations += 1;
        m.tick();
    }
    let _ = std::fs::write(base.join("cgroup.procs"), &me);
    for d in dirs {
        // Busy while a sibling worker is still inside; the last one out
        // removes it.
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_parse() {
        assert_eq!(parse_cpulist("0-3,6,8-9\n"), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_cpulist(""), Vec::<u32>::new());
        assert_eq!(parse_cpulist("x,2,5-a"), vec![2]);
        assert_eq!(parse_cpulist("0-4294967295").len(), 4096, "bounded");
    }
}
