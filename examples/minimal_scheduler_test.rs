//! The smallest useful ktstr test: boot the default kernel with scx_simple
//! on 4 vCPUs, run 8 spinning workers for 3 seconds, and check that none
//! starved and that they shared the CPUs fairly.
//!
//! Copy this into your crate's `tests/` (with `ktstr`, `ktstr-test` and
//! `anyhow` as dev-dependencies) and run it with `cargo test`. Here it is
//! built as a test example: `cargo test --example minimal_scheduler_test`.

// Outside `cargo test` only main() is built; the test items are unused.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

use anyhow::Result;
use ktstr::ktstr_test;
use ktstr::prelude::*;

const SCHED: Scheduler = Scheduler::named("scx_simple");

#[ktstr_test(scheduler = SCHED, cores = 4, duration_s = 3)]
fn eight_spinners_are_fair(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![
            CgroupDef::named("spinners")
                .workers(8)
                .work_type(WorkType::SpinWait),
        ],
    )
}

fn main() {
    eprintln!("this example is a test: run it with `cargo test --example minimal_scheduler_test`");
}
