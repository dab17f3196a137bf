//! The `ktstr` CLI end to end on the default kernel: `ktstr run` passes
//! its default scenario under scx_simple and EEVDF; a stalling scx_qmap
//! fails with a non-zero exit, a dump and a vmcore; `ktstr dump show` and
//! `ktstr analyze` open what it wrote.

use std::process::Command;

fn ktstr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ktstr"))
}

/// Runs `ktstr`; VMs it boots count against this process's vCPU budget
/// (4 vCPUs by default), so concurrent tests do not skew each other.
fn out(c: &mut Command) -> (bool, String) {
    let _slot = ktstr_test::host::env::VcpuSlot::acquire(4);
    let o = c.output().expect("run ktstr");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn run_default_scenario_passes_under_scx_simple_and_eevdf() {
    if ktstr_test::host::env::vm_env(None).is_none() {
        return;
    }
    for sched in ["scx_simple", "eevdf"] {
        let (ok, text) = out(ktstr().args(["run", "--duration", "3s", "--scheduler", sched]));
        assert!(ok && text.contains("verdict: PASS"), "{sched}:\n{text}");
        assert!(text.contains("[PASS] fairness"), "{sched}:\n{text}");
    }
}

#[test]
fn run_with_a_stalling_scheduler_fails_with_a_dump_and_vmcore() {
    let Some(env) = ktstr_test::host::env::vm_env(None) else {
        return;
    };
    let dumps = tempfile::tempdir().unwrap();
    let (ok, text) = out(ktstr().env("KTSTR_DUMP_DIR", dumps.path()).args([
        "run",
        "--scheduler",
        "scx_qmap",
        "--sched-args",
        "-t 2",
        "--duration",
        "12s",
        "--vmcore",
    ]));
    assert!(!ok, "must exit non-zero:\n{text}");
    assert!(
        text.contains("scheduler failure captured") && text.contains("SCX_EXIT_ERROR_STALL"),
        "{text}"
    );
    let dir = std::fs::read_dir(dumps.path())
        .unwrap()
        .next()
        .expect("a dump directory")
        .unwrap()
        .path();
    let (ok, shown) = out(ktstr().args(["dump", "show"]).arg(&dir));
    assert!(
        ok && shown.contains("exit kind: SCX_EXIT_ERROR_STALL") && shown.contains("vCPU registers"),
        "{shown}"
    );
    let vmcore = dir.join("vmcore");
    assert!(vmcore.is_file(), "no vmcore in {}", dir.display());
    let (ok, analysed) = out(ktstr()
        .args(["analyze", "--vmlinux"])
        .arg(&env.kernel.vmlinux)
        .arg("--vmcore")
        .arg(&vmcore));
    // The vmcore was taken at the failure (the scheduler may already be torn
    // down when the watchdog's claim was not reported): it must open and
    // show the guest's CPUs and tasks.
    assert!(
        ok && analysed.contains("CPU states")
            && analysed.contains("scx_tasks:")
            && analysed.contains("translation: vmcoreinfo"),
        "{analysed}"
    );
}

#[test]
fn help_explains_every_command() {
    let (ok, text) = out(ktstr().arg("--help"));
    assert!(ok);
    for c in ["kernel", "sched", "run", "dump", "analyze"] {
        assert!(text.contains(c), "--help lacks {c}:\n{text}");
    }
    let (ok, text) = out(ktstr().args(["run", "--help"]));
    assert!(
        ok && text.contains("--sched-args")
            && text.contains("--topology")
            && text.contains("wake-chains"),
        "{text}"
    );
    let (ok, text) = out(ktstr().args(["run", "--scenario", "nope"]));
    assert!(!ok && text.contains("unknown scenario `nope`"), "{text}");
}

#[test]
fn cache_clean_empties_the_artifact_caches() {
    let t = tempfile::tempdir().unwrap();
    for part in ["initramfs", "payloads"] {
        std::fs::create_dir_all(t.path().join(part)).unwrap();
        std::fs::write(t.path().join(part).join("x"), vec![0u8; 4096]).unwrap();
    }
    let o = ktstr()
        .env("KTSTR_CACHE_DIR", t.path())
        .args(["cache", "clean"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("removed 2 cached artifacts"),
        "{text}"
    );
    assert!(!t.path().join("initramfs/x").exists() && !t.path().join("payloads/x").exists());
}
