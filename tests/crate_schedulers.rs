//! Opt-in (`KTSTR_TEST_CRATES=scx_bpfland,scx_lavd,...`, needs crates.io):
//! published sched_ext schedulers built the way their authors ship them —
//! `ktstr sched build --crate NAME`, i.e. `cargo install`, dynamically
//! linked — then `ktstr run --scheduler NAME` on the cached 7.2 kernel,
//! which must reach its verdict with the scheduler attached. Each build
//! takes 5-15 minutes on 2 cores (dependencies are shared between them),
//! so this does not run by default. Prints attach time, verdict and size.

use std::process::Command;

fn ktstr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ktstr"))
}

#[test]
fn published_schedulers_build_and_reach_a_verdict() {
    let Ok(list) = std::env::var("KTSTR_TEST_CRATES") else {
        eprintln!(
            "SKIPPED: set KTSTR_TEST_CRATES=scx_bpfland,scx_lavd,scx_cosmos to build published \
             schedulers with cargo (network, ~5-15 min each) and run them"
        );
        return;
    };
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let b = ktstr()
            .args(["sched", "build", "--crate", name])
            .output()
            .unwrap();
        assert!(
            b.status.success(),
            "{name}: build failed:\n{}",
            String::from_utf8_lossy(&b.stderr)
        );
        let bin = String::from_utf8_lossy(&b.stdout).trim().to_string();
        let data = std::fs::read(bin.split(" (").next().unwrap()).unwrap();
        assert!(
            !ktstr::kernels::artifact::is_static_elf(&data).unwrap(),
            "{name}: expected the ordinary dynamic cargo build"
        );
        let r = ktstr()
            .args([
                "run",
                "--kernel",
                "7.2",
                "--scheduler",
                name,
                "--duration",
                "5s",
                "--json",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "{name}: no JSON report ({e}):\n{out}\n{}",
                String::from_utf8_lossy(&r.stderr)
            )
        });
        eprintln!(
            "{name}: {bin}; attach {} ms; passed {}; failures {}",
            v["attach_time_ms"], v["passed"], v["failures"]
        );
        assert!(
            v["attach_time_ms"].as_u64().is_some(),
            "{name}: never attached: {}",
            v["failures"]
        );
        assert!(v["report"].is_object(), "{name}: no scenario report: {v}");
    }
}
