//! Opt-in VM stress for the lost-report race (#18): many short real VM
//! runs, each of which must deliver its test result before `Exit`.
//! `KTSTR_STRESS_RUNS=N cargo test --test lost_reports -- --nocapture`
//! (a run takes a few seconds under TCG; the default run skips this, as a
//! full matrix would not fit CI's time budget).

use ktstr::assert::AssertResult;
use ktstr::prelude::*;
use ktstr::test_support::TestDef;

fn quick(_: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

const DEF: TestDef = TestDef {
    name: "short_runs_lose_no_report",
    module: module_path!(),
    body: quick,
    duration_s: 1,
    ..TestDef::DEFAULT
};

#[test]
fn short_runs_lose_no_report() {
    if std::env::var(ktstr::harness::GUEST_TEST_ENV).is_ok() {
        // Inside the guest: just the body.
        ktstr::harness::run_test(&DEF);
        return;
    }
    let Some(n) = std::env::var("KTSTR_STRESS_RUNS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        eprintln!("SKIPPED: opt-in stress; set KTSTR_STRESS_RUNS=N to run N short VMs");
        return;
    };
    let start = std::time::Instant::now();
    let mut failed = Vec::new();
    for i in 0..n {
        if let Err(e) = std::panic::catch_unwind(|| ktstr::harness::run_test(&DEF)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "non-string panic".into());
            failed.push(format!(
                "run {i}: {}",
                msg.lines().next().unwrap_or_default()
            ));
        }
    }
    println!(
        "{n} short VM runs in {:.0} s: {} failed",
        start.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
