//! Every work type in one VM for 1 s each, under EEVDF and under
//! scx_simple: each makes progress with no setup error, and each shows the
//! behaviour that sets it apart (forks counted and reaped, affinity moves
//! seen as migrations, timer latency percentiles ordered and bounded, run
//! delay equal to what `/proc/<pid>/schedstat` says).

use anyhow::Result;
use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::prelude::*;
use std::time::Duration;

const SCX_SIMPLE: Scheduler = Scheduler::named("scx_simple");

fn run_one(w: &WorkType, workers: u32) -> Result<Vec<WorkerReport>> {
    let mut h = WorkloadHandle::spawn(&WorkloadConfig {
        num_workers: workers,
        work_type: w.clone(),
        ..Default::default()
    })?;
    h.start();
    std::thread::sleep(Duration::from_secs(1));
    Ok(h.stop_and_collect())
}

fn counter(r: &WorkerReport, name: &str) -> u64 {
    r.counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

/// Zombies left in the guest (state Z in /proc/*/stat).
fn zombies() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|x| x.1.trim_start().starts_with('Z'))
                })
                .count()
        })
        .unwrap_or(0)
}

fn matrix(_ctx: &Ctx) -> Result<AssertResult> {
    let mut a = AssertResult::pass();
    for name in WorkType::ALL_NAMES {
        let Some(w) = WorkType::from_name(name) else {
            continue; // Sequence: covered by the cold-path and scenario tests
        };
        // Grouped types run one group; the others two workers.
        let workers = w.worker_group_size().map_or(2, |g| g as u32);
        let reports = run_one(&w, workers)?;
        for r in &reports {
            a.check(
                &format!("{name}_progress"),
                r.work_units > 0 && r.errors.is_empty(),
                format!(
                    "{name} worker {}: {} units, errors {:?}",
                    r.index, r.work_units, r.errors
                ),
            );
        }
        match *name {
            "ForkExit" => {
                let forks: u64 = reports.iter().map(|r| counter(r, "forks")).sum();
                let z = zombies();
                a.check(
                    "ForkExit_forks",
                    forks > 0 && z == 0,
                    format!("{forks} forks in 1 s, {z} zombies left"),
                );
            }
            "AffinityChurn" => {
                let (moves, migr): (u64, u64) = reports
                    .iter()
                    .map(|r| (counter(r, "affinity_moves"), r.migrations))
                    .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
                a.check(
                    "AffinityChurn_migrates",
                    moves > 0 && migr > 0,
                    format!("{moves} affinity moves, {migr} migrations seen"),
                );
            }
            "TimerLatency" => {
                for r in &reports {
                    let p = &r.wake_latency_ns;
                    // interval 1000 µs: every percentile below 10 ms.
                    a.check(
                        "TimerLatency_percentiles",
                        p.len() == 5 && p.windows(2).all(|x| x[0] <= x[1]) && p[3] < 10_000_000,
                        format!(
                            "worker {}: p50/p90/p99/p99.9/max {p:?} ns over {} wakes",
                            r.index, r.wake_sample_total
                        ),
                    );
                }
            }
            "NiceSweep" => {
                let n: u64 = reports.iter().map(|r| counter(r, "nice_changes")).sum();
                a.check("NiceSweep_changes", n > 0, format!("{n} nice changes"));
            }
            "PolicyChurn" => {
                let n: u64 = reports.iter().map(|r| counter(r, "policy_changes")).sum();
                a.check("PolicyChurn_changes", n > 0, format!("{n} policy changes"));
            }
            "IoSyncWrite" => {
                let n: u64 = reports.iter().map(|r| counter(r, "fsyncs")).sum();
                a.check("IoSyncWrite_fsyncs", n > 0, format!("{n} fdatasyncs"));
            }
            "PageFaultChurn" => {
                for r in &reports {
                    // 256 random touches of 1024 pages fault ~226 distinct
                    // pages per cycle (repeats hit a page already in).
                    let f = counter(r, "minor_faults");
                    a.check(
                        "PageFaultChurn_faults",
                        r.iterations > 0 && f >= 150 * r.iterations,
                        format!("{f} minor faults over {} cycles", r.iterations),
                    );
                }
            }
            "CgroupChurn" => {
                for r in &reports {
                    let seen = (0..2)
                        .map(|g| counter(r, &format!("seen_in_{g}")))
                        .collect::<Vec<_>>();
                    a.check(
                        "CgroupChurn_seen_in_each",
                        seen.iter().all(|&n| n > 0),
                        format!(
                            "worker {}: seen {seen:?} times in wt-cgroup-churn-0/1",
                            r.index
                        ),
                    );
                }
            }
            "SignalStorm" => {
                let n: u64 = reports.iter().map(|r| counter(r, "signals_received")).sum();
                a.check(
                    "SignalStorm_delivered",
                    n > 0,
                    format!("{n} signals received"),
                );
            }
            "EpollStorm" => {
                let n: u64 = reports.iter().map(|r| counter(r, "events_received")).sum();
                a.check("EpollStorm_consumed", n > 0, format!("{n} events consumed"));
            }
            "AluHot" => {
                let bits = counter(&reports[0], "alu_width_bits");
                a.check(
                    "AluHot_vector",
                    bits >= 128,
                    format!("Widest ran at {bits} bits"),
                );
            }
            // Every member of a wake type measured wakes: waiters of the
            // herd, receivers of the fan-outs, every hop of the chain,
            // both sides of the pairs (the messengers measure none).
            "ThunderingHerd" | "FutexFanOut" | "FanOutCompute" | "WakeChain" | "PipeIo"
            | "FutexPingPong" | "CachePipe" => {
                let skip_messenger =
                    matches!(*name, "ThunderingHerd" | "FutexFanOut" | "FanOutCompute");
                for r in reports.iter().skip(usize::from(skip_messenger)) {
                    a.check(
                        &format!("{name}_wakes_measured"),
                        r.wake_sample_total > 0 && r.wake_latency_ns.len() == 5,
                        format!(
                            "worker {}: {} wake samples, {:?} ns",
                            r.index, r.wake_sample_total, r.wake_latency_ns
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

#[ktstr_test(cores = 2, duration_s = 1)]
fn every_work_type_under_eevdf(ctx: &Ctx) -> Result<AssertResult> {
    matrix(ctx)
}

#[ktstr_test(scheduler = SCX_SIMPLE, cores = 2, duration_s = 1)]
fn every_work_type_under_scx_simple(ctx: &Ctx) -> Result<AssertResult> {
    matrix(ctx)
}

/// A worker's reported run delay is the kernel's: three spinners on one
/// CPU wait for it, and the report's delta covers what
/// `/proc/<pid>/schedstat` moved by between two reads inside the run.
#[ktstr_test(cores = 2, duration_s = 1)]
fn run_delay_is_the_kernels_schedstat(_ctx: &Ctx) -> Result<AssertResult> {
    let mut h = WorkloadHandle::spawn(&WorkloadConfig {
        num_workers: 3,
        work_type: WorkType::SpinWait,
        affinity: AffinityIntent::Cpus(vec![1]),
        ..Default::default()
    })?;
    h.start();
    let read = |pid: i32| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::thread::sleep(Duration::from_millis(200));
    let pids = h.worker_pids();
    let before: Vec<Option<u64>> = pids.iter().map(|&p| read(p)).collect();
    std::thread::sleep(Duration::from_millis(1000));
    let after: Vec<Option<u64>> = pids.iter().map(|&p| read(p)).collect();
    let reports = h.stop_and_collect();
    let mut a = AssertResult::pass();
    for (i, r) in reports.iter().enumerate() {
        let seen = match (before[i], after[i]) {
            (Some(b), Some(e)) => e.saturating_sub(b),
            _ => {
                a.check("schedstat_readable", false, format!("pid {}", pids[i]));
                continue;
            }
        };
        // The report spans the whole run (start to stop, ~1.4 s), the
        // reads 1 s of it: it holds at least what was seen and, with three
        // tasks sharing one CPU, not more than its whole wall time.
        a.check(
            "run_delay_matches_schedstat",
            seen > 0
                && r.schedstat_run_delay_ns >= seen
                && r.schedstat_run_delay_ns <= r.wall_time_ns,
            format!(
                "worker {}: reported run delay {} ns over {} ns wall, /proc schedstat moved {} ns in 1 s",
                r.index, r.schedstat_run_delay_ns, r.wall_time_ns, seen
            ),
        );
    }
    Ok(a)
}
