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
    if !spec.cpus.is_empty() {
        // SAFETY: zeroed cpu_set_t is valid; CPU_SET on indexes < 1024.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in spec.cpus.iter().filter(|&&c| c < 1024) {
            // SAFETY: index checked above.
            unsafe { libc::CPU_SET(c as usize, &mut set) };
        }
        // SAFETY: valid set of the right size for pid 0 (ourselves).
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0
        {
            r.errors.push(format!(
                "sched_setaffinity {:?}: {}",
                spec.cpus,
                std::io::Error::last_os_error()
            ));
        }
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

/// Per-iteration bookkeeping.
struct Meter {
    last: Instant,
    last_cpu: u32,
    r: WorkerReport,
    lat: Vec<u64>,
}

impl Meter {
    fn tick(&mut self) {
        let now = Instant::now();
        let gap = (now - self.last).as_nanos() as u64;
        self.r.max_gap_ns = self.r.max_gap_ns.max(gap);
        self.last = now;
        self.r.work_units += 1;
        let c = cpu();
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
            if self.lat.len() < 100_000 {
                self.lat.push(late.as_nanos() as u64);
            }
        }
        // A sleep is a gap we asked for: do not count it as starvation.
        self.last = Instant::now();
    }
}

fn spin_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let mut x = 0u64;
        for i in 0..2000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
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
        if m.lat.len() < 100_000 {
            m.lat.push(t.elapsed().as_nanos() as u64);
        }
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
        if m.lat.len() < 100_000 {
            m.lat.push(t.elapsed().as_nanos() as u64);
        }
        m.tick();
    }
    let _ = peer.join();
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
    let wall0 = Instant::now();
    let cpu0 = now_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    m.last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match &spec.work {
            WorkType::SpinWait => spin_for(Duration::from_millis(100), &mut m, &stop),
            WorkType::YieldHeavy => yield_for(Duration::from_millis(100), &mut m, &stop),
            WorkType::Mixed => {
                spin_for(Duration::from_millis(1), &mut m, &stop);
                m.sleep(Duration::from_micros(100), &stop);
            }
            WorkType::Bursty { burst, idle } => {
                spin_for(*burst, &mut m, &stop);
                m.sleep(*idle, &stop);
            }
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
    m.r.wall_time_ns = wall0.elapsed().as_nanos() as u64;
    m.r.cpu_time_ns = now_ns(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(cpu0);
    m.lat.sort_unstable();
    if !m.lat.is_empty() {
        let p = |q: usize| m.lat[(m.lat.len() * q / 100).min(m.lat.len() - 1)];
        m.r.wake_latency_ns = vec![p(50), p(90), p(99)];
    }
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
