//! `/init worker <hex spec>`: one workload worker. Applies cgroup,
//! affinity, policy and nice; waits for a start byte on stdin; works until
//! the next byte or EOF; prints its report as one hex line on stdout.

use ktstr_wire::worker::{
    SchedPolicy, WorkPhase, WorkType, WorkerReport, WorkerSpec, from_hex, to_hex,
};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn now_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn cpu() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

fn setup(spec: &WorkerSpec, r: &mut WorkerReport) {
    if !spec.cgroup.is_empty() {
        let p = format!(
            "/sys/fs/cgroup/{}/cgroup.procs",
            spec.cgroup.trim_start_matches('/')
        );
        if let Err(e) = std::fs::write(&p, std::process::id().to_string()) {
            r.errors.push(format!("join {p}: {e}"));
        }
    }
    if !spec.cpus.is_empty()
        && let Err(e) = set_affinity(&spec.cpus)
    {
        r.errors
            .push(format!("sched_setaffinity {:?}: {e}", spec.cpus));
    }
    let (policy, prio) = match spec.policy {
        SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
        SchedPolicy::Ext => (7, 0),
    };
    if spec.policy != SchedPolicy::Normal {
        let param = libc::sched_param {
            sched_priority: prio,
        };
        // SAFETY: valid param pointer for pid 0.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            r.errors.push(format!(
                "sched_setscheduler {:?}: {}",
                spec.policy,
                std::io::Error::last_os_error()
            ));
        }
    }
    if spec.nice != 0 {
        // SAFETY: plain syscall on ourselves.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, spec.nice) } != 0 {
            r.errors.push(format!(
                "setpriority {}: {}",
                spec.nice,
                std::io::Error::last_os_error()
            ));
        }
    }
}

/// The kernel's `sched_info` of every thread of this process: (cpu time,
/// run delay, times scheduled in), from `/proc/self/task/*/schedstat`.
/// Threads that exited in between are lost, which is why workers sample
/// while their threads are alive.
fn schedstat() -> (u64, u64, u64) {
    let mut sum = (0u64, 0u64, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return sum;
    };
    for e in dir.flatten().take(4096) {
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        let v: Vec<u64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [a, b, c] = v[..] {
            sum.0 = sum.0.saturating_add(a);
            sum.1 = sum.1.saturating_add(b);
            sum.2 = sum.2.saturating_add(c);
        }
    }
    sum
}

/// The most wake-latency samples kept (the rest are counted).
const MAX_SAMPLES: usize = 100_000;

/// Per-iteration bookkeeping.
struct Meter {
    start: Instant,
    last: Instant,
    last_cpu: u32,
    r: WorkerReport,
    lat: Vec<u64>,
}

impl Meter {
    fn tick(&mut self) {
        let now = Instant::now();
        let gap = (now - self.last).as_nanos() as u64;
        let c = cpu();
        if gap > self.r.max_gap_ns {
            self.r.max_gap_ns = gap;
            self.r.max_gap_cpu = c;
            self.r.max_gap_at_ns = (now - self.start).as_nanos() as u64;
        }
        self.last = now;
        self.r.work_units += 1;
        if c != self.last_cpu {
            self.r.migrations += 1;
            self.last_cpu = c;
        }
        if !self.r.cpus.contains(&c) {
            self.r.cpus.push(c);
        }
    }

    fn sleep(&mut self, d: Duration, stop: &AtomicBool) {
        // Sleep in slices so a stop is honoured promptly.
        let end = Instant::now() + d;
        while !stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let want = left.min(Duration::from_millis(50));
            let t = Instant::now();
            std::thread::sleep(want);
            let late = t.elapsed().saturating_sub(want);
            self.sample(late.as_nanos() as u64);
        }
        // A sleep is a gap we asked for: do not count it as starvation.
        self.last = Instant::now();
    }

    /// Record one wake-latency sample.
    fn sample(&mut self, ns: u64) {
        self.r.wake_sample_total += 1;
        if self.lat.len() < MAX_SAMPLES {
            self.lat.push(ns);
        }
    }

    fn count(&mut self, name: &str) {
        match self.r.counters.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v += 1,
            None => self.r.counters.push((name.to_string(), 1)),
        }
    }
}

fn spin_iters(n: u64) {
    let mut x = 0u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_add(i));
    }
}

/// Strided read-modify-write passes over a private buffer.
fn cache_pressure(size_kib: usize, stride: usize, m: &mut Meter, stop: &AtomicBool) {
    let mut buf = vec![0u8; size_kib.saturating_mul(1024)];
    let stride = stride.max(1);
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0;
        while i < buf.len() {
            buf[i] = buf[i].wrapping_add(1);
            i += stride;
        }
        std::hint::black_box(&mut buf);
        m.r.iterations += 1;
        m.tick();
    }
}

/// fork, `_exit(0)` in the child, `waitpid` in the parent.
fn fork_exit(m: &mut Meter, stop: &AtomicBool) {
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
fn nice_sweep(m: &mut Meter, stop: &AtomicBool) {
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

/// The CPUs this thread may run on now.
fn allowed_cpus() -> Vec<u32> {
    // SAFETY: zeroed cpu_set_t is a valid out-parameter.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set of the right size for ourselves.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    // SAFETY: indexes below CPU_SETSIZE.
    (0..1024u32)
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect()
}

/// Restrict this thread to `cpus` (indexes >= 1024 are ignored).
fn set_affinity(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: zeroed cpu_set_t is valid; CPU_SET on indexes < 1024.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < 1024) {
        // SAFETY: index checked above.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: valid set of the right size for pid 0 (ourselves).
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spin, move itself to another CPU of its allowed set, yield.
fn affinity_churn(spin: u64, m: &mut Meter, stop: &AtomicBool) {
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

/// Sleep to absolute deadlines `interval_us` apart; each wake-up's
/// lateness is a sample.
fn timer_latency(interval_us: u64, m: &mut Meter, stop: &AtomicBool) {
    let step = interval_us.clamp(10, 1_000_000) * 1000;
    let mut next = now_ns(libc::CLOCK_MONOTONIC) + step;
    while !stop.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: valid timespec; no remainder needed with TIMER_ABSTIME.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        let now = now_ns(libc::CLOCK_MONOTONIC);
        m.sample(now.saturating_sub(next));
        // Deadlines missed by more than a period are skipped, as
        // cyclictest does, so one long stall is one sample.
        next = next
            .saturating_add(step)
            .max(now.saturating_sub(now % step) + step);
        m.r.iterations += 1;
        m.tick();
        // The sleep itself is not a gap.
        m.last = Instant::now();
    }
}

fn spin_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        spin_iters(2000);
        m.tick();
    }
}

fn yield_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        m.tick();
    }
}

fn phase(p: &WorkPhase, m: &mut Meter, stop: &AtomicBool) {
    match p {
        WorkPhase::Spin(d) => spin_for(*d, m, stop),
        WorkPhase::Sleep(d) => m.sleep(*d, stop),
        WorkPhase::Yield(d) => yield_for(*d, m, stop),
    }
}

/// Two threads passing a token through pipes: a wake chain of two tasks.
fn ping_pong(m: &mut Meter, stop: &Arc<AtomicBool>) {
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: valid arrays for pipe(2).
    if unsafe { libc::pipe(a.as_mut_ptr()) } != 0 || unsafe { libc::pipe(b.as_mut_ptr()) } != 0 {
        m.r.errors.push("pipe failed".into());
        return;
    }
    let s2 = stop.clone();
    let (ar, bw) = (a[0], b[1]);
    let peer = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: valid fds and buffer.
            if unsafe { libc::read(ar, byte.as_mut_ptr().cast(), 1) } != 1 {
                break;
            }
            // SAFETY: as above.
            if unsafe { libc::write(bw, byte.as_ptr().cast(), 1) } != 1 {
                break;
            }
        }
    });
    let (aw, br) = (a[1], b[0]);
    let byte = [1u8; 1];
    let mut back = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        // SAFETY: valid fds and buffers.
        if unsafe { libc::write(aw, byte.as_ptr().cast(), 1) } != 1
            || unsafe { libc::read(br, back.as_mut_ptr().cast(), 1) } != 1
        {
            break;
        }
        m.sample(t.elapsed().as_nanos() as u64);
        m.tick();
    }
    // SAFETY: closing our pipe ends wakes the peer with EOF.
    unsafe {
        libc::close(aw);
        libc::close(br);
    }
    let _ = peer.join();
}

fn futex(word: &std::sync::atomic::AtomicU32, op: i32, val: u32) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call;
    // the timeout bounds FUTEX_WAIT so a stop is always noticed.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op | libc::FUTEX_PRIVATE_FLAG,
            val,
            &ts as *const libc::timespec,
            0,
            0,
        )
    };
}

/// Two threads handing a token back and forth through a futex word: a
/// wake chain of two tasks (wake latency measured per round trip).
fn futex_ping_pong(m: &mut Meter, stop: &Arc<AtomicBool>) {
    use std::sync::atomic::AtomicU32;
    let word = Arc::new(AtomicU32::new(0));
    let (w2, s2) = (word.clone(), stop.clone());
    let peer = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            if w2.load(Ordering::Acquire) == 1 {
                w2.store(0, Ordering::Release);
                futex(&w2, libc::FUTEX_WAKE, 1);
            } else {
                futex(&w2, libc::FUTEX_WAIT, 0);
            }
        }
    });
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        word.store(1, Ordering::Release);
        futex(&word, libc::FUTEX_WAKE, 1);
        while word.load(Ordering::Acquire) == 1 && !stop.load(Ordering::Relaxed) {
            futex(&word, libc::FUTEX_WAIT, 1);
        }
        m.sample(t.elapsed().as_nanos() as u64);
        m.tick();
    }
    let _ = peer.join();
}

/// p50, p90, p99, p99.9 and max of the samples (empty for none).
fn percentiles(v: &mut [u64]) -> Vec<u64> {
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_unstable();
    let n = v.len();
    let at = |per_mille: usize| v[(n * per_mille / 1000).min(n - 1)];
    vec![at(500), at(900), at(990), at(999), v[n - 1]]
}

/// Run a worker; returns the exit code.
pub fn run(hex: &str) -> i32 {
    let spec: WorkerSpec = match from_hex(hex) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: bad spec: {e}");
            return 2;
        }
    };
    let mut m = Meter {
        start: Instant::now(),
        last: Instant::now(),
        last_cpu: cpu(),
        r: WorkerReport {
            index: spec.index,
            pid: std::process::id() as i32,
            ..Default::default()
        },
        lat: Vec::new(),
    };
    setup(&spec, &mut m.r);
    // Wait for the start byte, then watch stdin for the stop byte / EOF.
    let mut b = [0u8; 1];
    let _ = std::io::stdin().read(&mut b);
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
        s2.store(true, Ordering::SeqCst);
    });
    if let Err(e) = spec.work.validate() {
        m.r.errors.push(e);
        stop.store(true, Ordering::SeqCst);
    }
    let wall0 = Instant::now();
    let cpu0 = now_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    let sched0 = schedstat();
    m.start = Instant::now();
    m.last = m.start;
    while !stop.load(Ordering::Relaxed) {
        match &spec.work {
            WorkType::SpinWait => spin_for(Duration::from_millis(100), &mut m, &stop),
            WorkType::YieldHeavy => yield_for(Duration::from_millis(100), &mut m, &stop),
            WorkType::Mixed => {
                spin_for(Duration::from_millis(1), &mut m, &stop);
                m.sleep(Duration::from_micros(100), &stop);
            }
            WorkType::Bursty {
                burst_duration,
                sleep_duration,
            } => {
                spin_for(*burst_duration, &mut m, &stop);
                m.sleep(*sleep_duration, &stop);
            }
            WorkType::CachePressure { size_kib, stride } => {
                cache_pressure(*size_kib, *stride, &mut m, &stop)
            }
            WorkType::ForkExit => fork_exit(&mut m, &stop),
            WorkType::NiceSweep => nice_sweep(&mut m, &stop),
            WorkType::AffinityChurn { spin_iters } => affinity_churn(*spin_iters, &mut m, &stop),
            WorkType::TimerLatency { interval_us } => timer_latency(*interval_us, &mut m, &stop),
            WorkType::PipeIo => ping_pong(&mut m, &stop),
            WorkType::FutexPingPong => futex_ping_pong(&mut m, &stop),
            WorkType::Sequence { first, rest } => {
                phase(first, &mut m, &stop);
                for p in rest {
                    phase(p, &mut m, &stop);
                }
            }
        }
    }
    // Helper threads (PipeIo's and FutexPingPong's peers) are joined by
    // now, so the sum covers the main thread; single-threaded work types
    // are exact.
    let sched1 = schedstat();
    m.r.schedstat_cpu_time_ns = sched1.0.saturating_sub(sched0.0);
    m.r.schedstat_run_delay_ns = sched1.1.saturating_sub(sched0.1);
    m.r.schedstat_run_count = sched1.2.saturating_sub(sched0.2);
    m.r.wall_time_ns = wall0.elapsed().as_nanos() as u64;
    m.r.cpu_time_ns = now_ns(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu0);
    m.r.off_cpu_ns = m.r.wall_time_ns.saturating_sub(m.r.cpu_time_ns);
    m.r.wake_latency_ns = percentiles(&mut m.lat);
    m.r.cpus.sort_unstable();
    // Never panic on a closed or failing stdout (println! would): the
    // test side reports a worker whose report is missing.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "KTSTR-WORKER {}", to_hex(&m.r)).and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "worker {}: could not write its report: {e}",
                spec.index
            );
            3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_monotone() {
        assert!(percentiles(&mut []).is_empty());
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let p = percentiles(&mut v);
        assert_eq!(p, vec![501, 901, 991, 1000, 1000]);
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(percentiles(&mut [7]), vec![7; 5]);
    }

    #[test]
    fn schedstat_of_this_process_moves() {
        let a = schedstat();
        spin_iters(5_000_000);
        let b = schedstat();
        assert!(b.0 >= a.0 && b.2 >= a.2, "{a:?} -> {b:?}");
    }
}
