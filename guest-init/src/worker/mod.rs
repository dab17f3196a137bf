//! `/init worker <hex spec>`: one workload worker. Applies cgroup,
//! affinity, policy and nice; joins its group (grouped work types); waits
//! for a start byte on stdin; works until the next byte or EOF; prints its
//! report as one hex line on stdout. Each work loop lives in the module of
//! the kernel path it drives.

use ktstr_wire::worker::{
    SchedPolicy, WakeMechanism, WorkType, WorkerReport, WorkerSpec, from_hex, to_hex,
};
use std::io::Read;

mod churn;
mod cpu;
mod group;
mod io;
mod meter;
mod policy;
mod preempt;
mod timer;
mod wake;

use group::Group;
use meter::{Meter, cpu, now_ns, percentiles, schedstat};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    if let Err(e) = policy::apply(spec.policy) {
        r.errors.push(e);
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

/// The policy a grouped type gives this member instead of the
/// workload's, if it does.
fn member_policy(work: &WorkType, member: u32) -> Option<SchedPolicy> {
    let member = member as usize;
    match *work {
        WorkType::RtStarvation {
            rt_workers,
            rt_priority,
            ..
        } if member < rt_workers => Some(SchedPolicy::Fifo(rt_priority.clamp(1, 99) as u32)),
        WorkType::PreemptStorm { .. } if member == 0 => Some(SchedPolicy::Fifo(1)),
        WorkType::AsymmetricWaker {
            waker_class,
            wakee_class,
            ..
        } => Some(
            if member == 0 {
                waker_class
            } else {
                wakee_class
            }
            .to_policy(),
        ),
        _ => None,
    }
}

/// Run `work` until `stop`. Grouped types get their group (the caller
/// checked it is there).
fn work(w: &WorkType, g: Option<&Group>, m: &mut Meter, stop: &AtomicBool) {
    use WorkType as W;
    let Some(g) = g.filter(|_| w.worker_group_size().is_some()) else {
        return solo(w, m, stop);
    };
    match *w {
        W::PipeIo { burst_iters } => wake::pipe_pair(g, burst_iters, None, m, stop),
        W::CachePipe {
            size_kib,
            burst_iters,
        } => {
            let mut ws = vec![0u8; size_kib.saturating_mul(1024)];
            wake::pipe_pair(g, burst_iters, Some(&mut ws), m, stop)
        }
        W::FutexPingPong { spin_iters } => wake::futex_pair(g, spin_iters, m, stop),
        W::FutexFanOut { spin_iters, .. } => {
            wake::fan_out(g, wake::FanOut::Spin(spin_iters), m, stop)
        }
        W::FanOutCompute {
            cache_footprint_kib,
            operations,
            sleep_usec,
            ..
        } => {
            // Two n x n u64 matrices in the footprint.
            let n = (cache_footprint_kib * 1024 / 16).isqrt().max(1);
            let matrix = (0..2 * n * n).map(|i| i as u64).collect();
            let mode = wake::FanOut::Compute {
                sleep: Duration::from_micros(sleep_usec),
                operations,
                matrix,
            };
            wake::fan_out(g, mode, m, stop)
        }
        W::ThunderingHerd { inter_batch_ms, .. } => wake::fan_out(
            g,
            wake::FanOut::Herd(Duration::from_millis(inter_batch_ms)),
            m,
            stop,
        ),
        W::MutexContention {
            hold_iters,
            work_iters,
            ..
        } => wake::mutex_contention(g, hold_iters, work_iters, m, stop),
        W::AsymmetricWaker { burst_iters, .. } => wake::asymmetric_waker(g, burst_iters, m, stop),
        W::WakeChain {
            wake, work_per_hop, ..
        } => wake::wake_chain(g, wake == WakeMechanism::Pipe, work_per_hop, m, stop),
        W::EpollStorm {
            producers,
            events_per_burst,
            ..
        } => wake::epoll_storm(g, producers as u32, events_per_burst as u32, m, stop),
        W::RtStarvation { burst_iters, .. } => preempt::spin_bursts(burst_iters, m, stop),
        W::PreemptStorm {
            rt_burst_iters,
            rt_sleep_us,
            ..
        } => preempt::preempt_storm(g, rt_burst_iters, rt_sleep_us, m, stop),
        W::SignalStorm {
            signals_per_iter,
            work_iters,
        } => preempt::signal_storm(g, signals_per_iter, work_iters, m, stop),
        W::SmtSiblingSpin => cpu::pause_spin(m, stop),
        _ => solo(w, m, stop),
    }
}

/// Work types whose workers are independent.
fn solo(w: &WorkType, m: &mut Meter, stop: &AtomicBool) {
    use WorkType as W;
    if let Some(n) = w.worker_group_size() {
        return m.r.errors.push(format!(
            "{} runs in groups of {n} and this worker has no group",
            w.name()
        ));
    }
    // Types that return after one round are called again until stop.
    while !stop.load(Ordering::Relaxed) && m.r.errors.is_empty() {
        match *w {
            W::SpinWait => cpu::spin_for(Duration::from_millis(100), m, stop),
            W::YieldHeavy => cpu::yield_for(Duration::from_millis(100), m, stop),
            W::Mixed => {
                cpu::spin_for(Duration::from_millis(1), m, stop);
                m.sleep(Duration::from_micros(100), stop);
            }
            W::Bursty {
                burst_duration,
                sleep_duration,
            } => {
                cpu::spin_for(burst_duration, m, stop);
                m.sleep(sleep_duration, stop);
            }
            W::Sequence {
                ref first,
                ref rest,
            } => {
                cpu::phase(first, m, stop);
                for p in rest {
                    cpu::phase(p, m, stop);
                }
            }
            W::IoSyncWrite => io::sync_write("/tmp", m, stop),
            W::CachePressure { size_kib, stride } => {
                cpu::cache_pressure(size_kib, stride, false, m, stop)
            }
            W::CacheYield { size_kib, stride } => {
                cpu::cache_pressure(size_kib, stride, true, m, stop)
            }
            W::ForkExit => churn::fork_exit(m, stop),
            W::NiceSweep => churn::nice_sweep(m, stop),
            W::AffinityChurn { spin_iters } => churn::affinity_churn(spin_iters, m, stop),
            W::PolicyChurn { spin_iters } => churn::policy_churn(spin_iters, m, stop),
            W::PageFaultChurn {
                region_kib,
                touches_per_cycle,
                spin_iters,
            } => churn::page_fault_churn(region_kib, touches_per_cycle as u64, spin_iters, m, stop),
            W::NumaMigrationChurn { period_ms } => churn::numa_migration_churn(period_ms, m, stop),
            W::CgroupChurn { groups, cycle_ms } => churn::cgroup_churn(groups, cycle_ms, m, stop),
            W::IdleChurn {
                burst_duration,
                sleep_duration,
                precise_timing,
            } => cpu::idle_churn(burst_duration, sleep_duration, precise_timing, m, stop),
            W::AluHot { width } => cpu::alu_hot(width, m, stop),
            W::IpcVariance {
                hot_iters,
                cold_iters,
                period_iters,
            } => cpu::ipc_variance(hot_iters, cold_iters, period_iters, m, stop),
            W::TimerLatency { interval_us } => timer::timer_latency(interval_us, m, stop),
            // Grouped types were refused above.
            _ => return,
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
    let group = match spec.group.as_ref().map(Group::join).transpose() {
        Ok(g) => g,
        Err(e) => {
            m.r.errors.push(e);
            None
        }
    };
    if let Some(g) = &group
        && let Some(p) = member_policy(&spec.work, g.member)
        && let Err(e) = policy::apply(p)
    {
        m.r.errors.push(e);
    }
    if matches!(spec.work, WorkType::SignalStorm { .. }) {
        preempt::install_sigusr2_counter();
    }
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
    // Members meet even after a setup error, so their peers are not left
    // waiting for the rendezvous timeout.
    if let Some(g) = &group
        && let Err(e) = g.rendezvous(&stop)
    {
        m.r.errors.push(e);
        stop.store(true, Ordering::SeqCst);
    }
    let wall0 = Instant::now();
    let cpu0 = now_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    let sched0 = schedstat();
    m.start = Instant::now();
    m.last = m.start;
    if !stop.load(Ordering::Relaxed) {
        work(&spec.work, group.as_ref(), &mut m, &stop);
    }
    // Every work type runs on the worker's main thread (the stdin watcher
    // sleeps in read), so the schedstat sum is the worker's own.
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
