//! The frontend end to end on the 7.2 kernel: EEVDF and sched_ext steady
//! scenarios with the standard checks, cpuset isolation (and a wrong
//! expectation failing it), cpu.max throttling, cold-path refusals through `Ctx`, and the
//! summary a failing check prints.

use anyhow::Result;
use ktstr::assert::{AssertResult, isolation};
use ktstr::ktstr_test;
use ktstr::prelude::*;
use ktstr::scenario::run_defs;
use std::time::Duration;

const SCX_SIMPLE: Scheduler = Scheduler::named("scx_simple");
const SCX_QMAP: Scheduler = Scheduler::named("scx_qmap");

fn steady_defs() -> Vec<CgroupDef> {
    vec![
        CgroupDef::named("steady")
            .workers(8)
            .work_type(WorkType::SpinWait),
    ]
}

/// sched_ext schedulers here rotate every runnable task through shared
/// queues, so they meet the default 15 % spread.
fn steady(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(ctx, steady_defs())
}

/// EEVDF baseline: 4 vCPUs, 8 spinning workers in one cgroup for 3 s —
/// none starved, and CPU time within a spread calibrated for EEVDF here.
/// Measured on 7.2 under TCG (19 runs): 27-94 %, median about 52 % (a
/// 9 s run: 31 %): EEVDF's group load balancing migrates a handful of times per
/// run, so 3-1 splits last long. 125 % still fails a worker that never
/// left a crowded CPU (1 s against 3 s alone gives 133 %) or starved.
#[ktstr_test(cores = 4, duration_s = 3)]
fn eevdf_steady_is_fair(ctx: &Ctx) -> Result<AssertResult> {
    let t = ktstr::assert::Thresholds {
        fairness_spread: EEVDF_TCG_SPREAD,
        ..Default::default()
    };
    Ok(ktstr::scenario::run_defs_with(ctx, &steady_defs(), &t)?.1)
}

/// See [`eevdf_steady_is_fair`] for the measurements behind it.
const EEVDF_TCG_SPREAD: f64 = 1.25;

#[ktstr_test(scheduler = SCX_SIMPLE, cores = 4, duration_s = 3)]
fn scx_simple_steady_is_fair(ctx: &Ctx) -> Result<AssertResult> {
    steady(ctx)
}

#[ktstr_test(scheduler = SCX_QMAP, cores = 4, duration_s = 3)]
fn scx_qmap_steady_is_fair(ctx: &Ctx) -> Result<AssertResult> {
    steady(ctx)
}

/// A cgroup pinned to CPUs 2-3 stays there (the isolation check passes),
/// and checking the same reports against CPU 0 only fails.
#[ktstr_test(cores = 4, duration_s = 2)]
fn cpuset_pinned_cgroup_stays_on_its_cpus(ctx: &Ctx) -> Result<AssertResult> {
    let (reports, checks) = run_defs(
        ctx,
        &[
            CgroupDef::named("pinned").workers(2).cpuset(vec![2, 3]),
            CgroupDef::named("free").workers(2),
        ],
    )?;
    let pinned = &reports[0].reports;
    anyhow::ensure!(
        pinned.iter().all(|r| !r.cpus.is_empty()),
        "no CPU samples: {pinned:?}"
    );
    let wrong = isolation(pinned, &[0]);
    let mut a = checks;
    a.check("wrong expectation fails", !wrong.passed(), wrong.summary());
    Ok(a)
}

/// cgroup v2 bandwidth control in the guest: a cgroup whose `cpu.max`
/// is 25 % of one CPU (25 ms per 100 ms) gets 25 % ± 5 points however
/// many spinners it holds, while an unlimited one beside it does not
/// (the same check against its use fails).
#[ktstr_test(cores = 2, duration_s = 4)]
fn cpu_max_throttles_a_cgroup_to_its_quota(ctx: &Ctx) -> Result<AssertResult> {
    let (reports, checks) = run_defs(
        ctx,
        &[
            CgroupDef::named("capped").workers(2).cpu_quota_pct(25),
            CgroupDef::named("free").workers(1),
        ],
    )?;
    let free = ktstr::assert::cpu_quota(&reports[1].reports, 0.25, 0.05);
    let mut a = checks;
    a.check(
        "unlimited cgroup is not at the quota",
        !free.passed(),
        free.summary(),
    );
    Ok(a)
}

/// Cold-path writes on a running task and with a stale start time are
/// refused, naming the layer.
#[ktstr_test(scheduler = SCX_SIMPLE, cores = 2, duration_s = 1)]
fn cold_path_refusals_name_the_layer(ctx: &Ctx) -> Result<AssertResult> {
    let mut h = WorkloadHandle::spawn(&WorkloadConfig {
        num_workers: 1,
        work_type: WorkType::SpinWait,
        ..Default::default()
    })?;
    h.start();
    std::thread::sleep(Duration::from_millis(300));
    let pid = h.worker_pids()[0] as u32;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .unwrap_or("")
        .split_whitespace()
        .nth(19)
        .unwrap_or("0")
        .parse()?;
    let start = ticks * 10_000_000;
    let w = |p, s| ktstr_wire::KernelOp::Write {
        target: KernelTarget::task_field(p, s, "scx.dsq_vtime"),
        value: KernelValue::u64(1),
    };
    let r = ctx.kernel_ops(vec![w(pid, start), w(pid, start + 7_000_000_000)])?;
    let _ = h.stop_and_collect();
    let mut a = AssertResult::pass();
    a.check(
        "running task refused at L4",
        !r[0].success && r[0].reason.starts_with("L4 on_rq"),
        r[0].reason.clone(),
    );
    a.check(
        "stale start refused at L2",
        !r[1].success && r[1].reason.starts_with("L2 start_time"),
        r[1].reason.clone(),
    );
    Ok(a)
}

fn failing_body(ctx: &Ctx) -> Result<AssertResult> {
    let (reports, _) = run_defs(
        ctx,
        &[CgroupDef::named("pinned").workers(1).cpuset(vec![1])],
    )?;
    Ok(isolation(&reports[0].reports, &[0]))
}

/// A failing check fails the test with a summary naming the check, its
/// numbers, and the console and scheduler log tails.
#[test]
fn failing_check_prints_a_summary() {
    let def = ktstr::test_support::TestDef {
        name: "failing_check_prints_a_summary",
        module: module_path!(),
        body: failing_body,
        scheduler: Some(SCX_SIMPLE),
        duration_s: 1,
        ..ktstr::test_support::TestDef::DEFAULT
    };
    let Some(msg) = ktstr_test::test_utils::expect_test_failure(&def) else {
        return;
    };
    for want in [
        "FAILED isolation",
        "workers ran outside [0]",
        "--- scheduler log (tail) ---",
        "--- console (tail) ---",
    ] {
        assert!(msg.contains(want), "summary lacks {want:?}:\n{msg}");
    }
}

/// Wake chains through pipes and through futexes both make progress.
#[ktstr_test(cores = 2, duration_s = 2)]
fn wake_chains_make_progress(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![
            CgroupDef::named("pipes")
                .workers(2)
                .work_type(WorkType::pipe_io(1024)),
            CgroupDef::named("futexes")
                .workers(2)
                .work_type(WorkType::futex_ping_pong(1024)),
        ],
    )
}
