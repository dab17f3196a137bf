//! A scenario with cgroups and cpusets: two cgroups pinned to disjoint
//! halves of a 2-LLC guest plus an unpinned one, under scx_qmap. The
//! standard checks run per cgroup: not starved, fairness among equal
//! spinners, and isolation (pinned workers ran only on their CPUs).

// Outside `cargo test` only main() is built; the test items are unused.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

use anyhow::Result;
use ktstr::ktstr_test;
use ktstr::prelude::*;

const SCHED: Scheduler = Scheduler::named("scx_qmap");

#[ktstr_test(scheduler = SCHED, llcs = 2, cores = 2, duration_s = 3)]
fn pinned_halves_stay_put(ctx: &Ctx) -> Result<AssertResult> {
    let (llc0, llc1) = (ctx.llc_cpus[0].clone(), ctx.llc_cpus[1].clone());
    execute_defs(
        ctx,
        vec![
            CgroupDef::named("cg_0").workers(2).cpuset(llc0),
            CgroupDef::named("cg_1").workers(2).cpuset(llc1),
            CgroupDef::named("cg_free")
                .workers(2)
                .work_type(WorkType::Mixed),
        ],
    )
}

fn main() {
    eprintln!("this example is a test: run it with `cargo test --example cgroup_cpuset_scenario`");
}
