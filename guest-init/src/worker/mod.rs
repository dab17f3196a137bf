//! `/init worker <hex spec>`: one workload worker. Applies cgroup,
//! affinity, policy and nice; waits for a start byte on stdin; works until
//! the next byte or EOF; prints its report as one hex line on stdout.

use ktstr_wire::worker::{SchedPolicy, WorkType, WorkerReport, WorkerSpec, from_hex, to_hex};
use std::io::Read;

mod churn;
mod cpu;
mod meter;
mod timer;
mod wake;

use churn::{affinity_churn, fork_exit, nice_sweep};
use cpu::{cache_pressure, phase, spin_for, yield_for};
use meter::{Meter, cpu, now_ns, percentiles, schedstat};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use timer::timer_latency;
use wake::{futex_ping_pong, ping_pong};
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
        && let Err(e) = crate::sys::set_affinity(&spec.cpus)
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
