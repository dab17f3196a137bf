//! Failure dumps captured at the instant of failure, on the real kernels:
//! scx_qmap made to stall a task trips the sched_ext watchdog; scx_qmap
//! made to call scx_bpf_error; the same without `expect_err` failing with
//! a summary that points at the dump; and the 6.12 kernel (globals).

use anyhow::Result;
use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::prelude::*;

const QMAP: Scheduler = Scheduler::named("scx_qmap");

fn spinners(ctx: &Ctx) -> Result<AssertResult> {
    let mut h = WorkloadHandle::spawn(&WorkloadConfig {
        num_workers: 4,
        work_type: WorkType::Mixed,
        ..Default::default()
    })?;
    h.start();
    std::thread::sleep(ctx.duration);
    let _ = h.stop_and_collect();
    // The scheduler is expected to fail: the host judges by the dump.
    Ok(AssertResult::pass())
}

fn check_dump(r: &VmResult, kind: &str) -> Result<()> {
    let d = r
        .dump
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no failure dump"))?;
    anyhow::ensure!(
        d.exit_kind_name == kind,
        "exit kind {} ({}), want {kind}",
        d.exit_kind_name,
        d.exit_kind
    );
    anyhow::ensure!(
        d.provenance.starts_with("watchpoint"),
        "captured {}",
        d.provenance
    );
    let dir = r
        .failure_dump
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no dump dir"))?;
    for f in ["dump.json", "dump.txt"] {
        anyhow::ensure!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    let loaded = ktstr_test::host::dump::FailureDump::load(dir).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(loaded == *d, "dump.json does not round-trip");
    Ok(())
}

/// The stall is always identified: kind STALL, the kernel's reason, and the
/// task the kernel names found with its details. When the freeze landed
/// before teardown (the scheduler still enabled) the stalled task must also
/// be on a runnable list or DSQ with a runnable age above the timeout.
/// Under TCG the watchpoint on the watchdog's claim (written from the tick)
/// is not always reported, so that part is checked when it applies.
fn stalled_on_a_queue(r: &VmResult) -> Result<()> {
    let d = r
        .dump
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no failure dump"))?;
    anyhow::ensure!(
        d.exit_kind_name == "SCX_EXIT_ERROR_STALL",
        "exit kind {} ({})",
        d.exit_kind_name,
        d.exit_kind
    );
    let line = d
        .exit_reason
        .iter()
        .find(|l| l.contains("failed to run for"))
        .ok_or_else(|| anyhow::anyhow!("no stall line in {:?}", d.exit_reason))?;
    // "sched_ext: qmap: reaper[50] failed to run for 5.083s"
    let who = line.split(": ").last().unwrap_or("");
    let pid: i32 = who
        .split('[')
        .nth(1)
        .and_then(|x| x.split(']').next())
        .unwrap_or("")
        .parse()?;
    let t = d.snapshot.task(pid).ok_or_else(|| {
        anyhow::anyhow!(
            "stalled pid {pid} not in the dump (captured: {})",
            d.provenance
        )
    })?;
    anyhow::ensure!(
        who.starts_with(&t.comm),
        "pid {pid} is {} in the dump, {who} in the kernel's words",
        t.comm
    );
    let enabled = d
        .snapshot
        .sched
        .as_ref()
        .and_then(|s| s.enable_state.as_deref())
        == Some("SCX_ENABLED");
    if enabled {
        let stalled = ktstr_test::host::dump::stalled_tasks(d);
        anyhow::ensure!(
            stalled.iter().any(|t| t
                .found_on
                .iter()
                .any(|w| w.starts_with("runnable cpu") || w.starts_with("dsq "))),
            "captured before teardown, yet no stalled task on a runnable list or DSQ:\n{}",
            d.render_text()
        );
    }
    let dir = r
        .failure_dump
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no dump dir"))?;
    anyhow::ensure!(dir.join("dump.json").is_file() && dir.join("dump.txt").is_file());
    Ok(())
}

/// `-t 2` stalls every 2nd user thread; qmap's 5 s watchdog fires.
#[ktstr_test(scheduler = QMAP, extra_sched_args = ["-t", "2"], expect_err = true, cores = 2, duration_s = 12, watchdog_timeout_s = 5, post_vm = stalled_on_a_queue)]
fn qmap_stall_is_caught_before_teardown(ctx: &Ctx) -> Result<AssertResult> {
    spinners(ctx)
}

fn bpf_error(r: &VmResult) -> Result<()> {
    check_dump(r, "SCX_EXIT_ERROR_BPF")
}

/// `-e 50` calls scx_bpf_error("test triggering error") after 50 enqueues.
#[ktstr_test(scheduler = QMAP, extra_sched_args = ["-e", "50"], expect_err = true,
             expect_scx_bpf_error_contains = "test triggering error", cores = 2, duration_s = 3, post_vm = bpf_error)]
fn qmap_scx_bpf_error_is_caught(ctx: &Ctx) -> Result<AssertResult> {
    spinners(ctx)
}

#[ktstr_test(scheduler = QMAP, extra_sched_args = ["-e", "50"], expect_err = true,
             expect_scx_bpf_error_contains = "test triggering error", cores = 2, duration_s = 3,
             kernel = "6.12", post_vm = bpf_error)]
fn qmap_scx_bpf_error_is_caught_on_612(ctx: &Ctx) -> Result<AssertResult> {
    spinners(ctx)
}

/// Without `expect_err` the same failure fails the test, and the summary
/// names the dump and its key lines.
#[test]
fn unexpected_scheduler_error_points_at_the_dump() {
    let def = ktstr::test_support::TestDef {
        name: "unexpected_scheduler_error_points_at_the_dump",
        module: module_path!(),
        body: spinners,
        scheduler: Some(QMAP),
        extra_sched_args: &["-e", "50"],
        duration_s: 3,
        ..ktstr::test_support::TestDef::DEFAULT
    };
    let Some(msg) = ktstr_test::test_utils::expect_test_failure(&def) else {
        return;
    };
    for want in [
        "scheduler error captured",
        "exit kind: SCX_EXIT_ERROR_BPF",
        "--- failure dump: ",
        "DSQ depths:",
    ] {
        assert!(msg.contains(want), "summary lacks {want:?}:\n{msg}");
    }
}

fn sampled_bpf_error(r: &VmResult) -> Result<()> {
    let d = r
        .dump
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no failure dump"))?;
    anyhow::ensure!(
        d.provenance.starts_with("sampled"),
        "captured {} (the watchpoint was not to be armed)",
        d.provenance
    );
    anyhow::ensure!(
        d.exit_kind_name == "SCX_EXIT_ERROR_BPF",
        "exit kind {} ({})",
        d.exit_kind_name,
        d.exit_kind
    );
    // Frozen at the failure, before teardown finished: the scheduler's
    // instance is still there to read.
    let sch = d
        .snapshot
        .sched
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no scheduler state"))?;
    anyhow::ensure!(sch.ops_name.is_some(), "{sch:?}");
    Ok(())
}

/// With no watchpoint at all, the lock-free sampler sees the error kind
/// and the session's tick freezes the guest (before the fix the sampler
/// ran but nothing ever froze on its signal).
#[test]
fn the_sampler_alone_captures_at_the_failure() {
    const DEF: ktstr::test_support::TestDef = ktstr::test_support::TestDef {
        name: "the_sampler_alone_captures_at_the_failure",
        module: module_path!(),
        body: spinners,
        scheduler: Some(QMAP),
        extra_sched_args: &["-e", "50"],
        duration_s: 3,
        expect_err: true,
        expect_scx_bpf_error_contains: Some("test triggering error"),
        post_vm: Some(sampled_bpf_error),
        capture: ktstr_test::host::failure::CaptureMode::Sampled,
        ..ktstr::test_support::TestDef::DEFAULT
    };
    ktstr::test_support::run_test(&DEF);
}
