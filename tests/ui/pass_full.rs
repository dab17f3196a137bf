// Every attribute, as a scheduler author would write them.
use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::prelude::*;
use ktstr::scenario::Ctx;
use ktstr::test_support::VmResult;

const QMAP: Scheduler = Scheduler::named("scx_qmap").binary(SchedulerSpec::Discover("scx_qmap"));

fn check(_r: &VmResult) -> anyhow::Result<()> {
    Ok(())
}

#[ktstr_test(
    scheduler = QMAP,
    extra_sched_args = ["-s", "20000"],
    numa_nodes = 1,
    llcs = 2,
    cores = 2,
    threads = 1,
    memory_mb = 512,
    duration_s = 3,
    watchdog_timeout_s = 10,
    attach_timeout_s = 60,
    post_vm = check,
    expect_err = false,
    vmcore = false,
    kernel = "7.2",
    auto_repro = true
)]
fn every_attribute(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let _ = ctx;
    Ok(AssertResult::pass())
}

#[ktstr_test]
fn no_attributes(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
