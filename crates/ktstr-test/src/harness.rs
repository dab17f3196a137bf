//! What `#[ktstr_test]` expands to: the test's definition ([`TestDef`])
//! and [`run_test`], which on the host boots a VM whose initramfs carries
//! this very test binary, and inside the guest runs only the body.

use crate::assert::AssertResult;
use crate::def::{SchedulerSpec, TestDef};
use crate::guest::ctx::Ctx;
use crate::host::env::vm_env;
use crate::result::VmResult;
use std::path::PathBuf;

/// Env var naming the test to run in guest mode.
pub const GUEST_TEST_ENV: &str = "KTSTR_GUEST_TEST";

/// Run a test: the body in guest mode, or a whole VM on the host.
pub fn run_test(def: &TestDef) {
    if std::env::var(GUEST_TEST_ENV).is_ok_and(|v| v == exact_name(def)) {
        guest_mode(def);
    } else {
        host_mode(def);
    }
}

fn guest_mode(def: &TestDef) {
    let ctx = Ctx::from_guest_env();
    let result = match (def.body)(&ctx) {
        Ok(r) => r,
        Err(e) => AssertResult::fail("body", format!("{e:#}")),
    };
    let passed = result.passed();
    if let Ok(mut c) = ktstr_wire::RelayClient::from_env() {
        let json = serde_json::to_string(&result).unwrap_or_default();
        let _ = c.send(&ktstr_wire::GuestMsg::TestResult { passed, json });
    }
    assert!(passed, "{}", result.summary());
}

/// The name libtest knows the test by (module path without the crate).
pub fn exact_name(def: &TestDef) -> String {
    match def.module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{}", def.name),
        None => def.name.to_string(),
    }
}

/// This test binary with debug info stripped, cached by its identity.
fn payload_binary(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let md = std::fs::metadata(&exe)?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    let out = dir.join(format!("{name}-{}-{mtime}", md.len()));
    if !out.is_file() {
        // Tests run concurrently: a private temporary, then an atomic rename.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out.with_extension(format!("tmp-{}-{n}", std::process::id()));
        let stripped = std::process::Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&exe)
            .arg(&tmp)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(&exe, &tmp)?;
        }
        std::fs::rename(&tmp, &out)?;
        crate::host::cache_gc::prune(
            dir,
            crate::host::cache_gc::budget_bytes(),
            crate::host::cache_gc::MIN_AGE,
        );
    } else {
        crate::host::cache_gc::touch(&out);
    }
    Ok(out)
}

/// Text of a failed run: the checks, the console and scheduler log tails.
pub fn summary(name: &str, r: &VmResult, why: &str) -> String {
    let tail = |s: &str, n: usize| {
        let l: Vec<&str> = s.lines().collect();
        l[l.len().saturating_sub(n)..].join("\n")
    };
    let mut s = format!("ktstr test `{name}` failed: {why}\n");
    if let Some(g) = &r.guest_result {
        s += &format!("--- checks ---\n{}\n", g.summary());
    }
    if !r.stderr.trim().is_empty() {
        s += &format!(
            "--- guest test output (tail) ---\n{}\n",
            tail(&r.stderr, 20)
        );
    }
    if !r.sched_log.trim().is_empty() {
        s += &format!("--- scheduler log (tail) ---\n{}\n", tail(&r.sched_log, 20));
    }
    s += &format!("--- console (tail) ---\n{}\n", tail(&r.console, 30));
    if let Some(d) = &r.failure_dump {
        s += &format!("--- failure dump: {} ---\n", d.display());
    }
    s
}

fn host_mode(def: &TestDef) {
    let Some(env) = vm_env(def.kernel) else {
        return;
    };
    let scheduler = def.scheduler.map(|s| {
        let path = match s.binary {
            SchedulerSpec::Discover(n) => env.scheduler(n).unwrap_or_else(|e| panic!("{e}")),
            SchedulerSpec::Path(p) => PathBuf::from(p),
        };
        let mut args: Vec<String> = s.args.iter().map(|a| a.to_string()).collect();
        args.extend(def.extra_sched_args.iter().map(|a| a.to_string()));
        (path, args)
    });
    let payload = payload_binary(&env.cache.root().join("payloads"))
        .unwrap_or_else(|e| panic!("test binary: {e}"));
    let req = crate::host::runner::RunRequest {
        name: def.name.to_string(),
        scheduler,
        topology: def.topology,
        memory_mb: def.memory_mb,
        duration_s: def.duration_s,
        watchdog_timeout_s: def.watchdog_timeout_s,
        payload,
        payload_args: vec![
            exact_name(def),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        payload_env: vec![(GUEST_TEST_ENV.into(), exact_name(def))],
        vmcore: def.vmcore || std::env::var("KTSTR_VMCORE").is_ok_and(|v| v == "1"),
        attach_timeout: attach_timeout(def),
        capture: match crate::host::failure::CaptureMode::from_env() {
            crate::host::failure::CaptureMode::Sampled => {
                crate::host::failure::CaptureMode::Sampled
            }
            crate::host::failure::CaptureMode::Watchpoint => def.capture,
        },
    };
    let vr = crate::host::runner::run(&env, &req).unwrap_or_else(|e| panic!("{e}"));
    let mut failures =
        crate::host::runner::judge(&vr, def.expect_err, def.expect_scx_bpf_error_contains);
    // A payload that exited 0 without sending its result could not be
    // judged: that is never a pass (it was the lost-report symptom).
    if !def.expect_err && vr.exit_code == 0 && vr.guest_result.is_none() {
        failures
            .push("the guest test exited 0 but sent no result: its checks cannot be judged".into());
    }
    if let Some(post) = def.post_vm
        && let Err(e) = post(&vr)
    {
        failures.push(format!("post_vm: {e:#}"));
    }
    if !failures.is_empty() {
        panic!("{}", summary(def.name, &vr, &failures.join("; ")));
    }
    // A pass shows its measurements too (visible with `--nocapture`).
    if let Some(g) = &vr.guest_result {
        println!("ktstr test `{}` passed:\n{}", def.name, g.details_text());
    }
}

/// The test's attach timeout, else its scheduler's declaration, else None
/// (the engine's default).
fn attach_timeout(def: &TestDef) -> Option<std::time::Duration> {
    [
        def.attach_timeout_s,
        def.scheduler.map_or(0, |s| s.attach_timeout_s),
    ]
    .into_iter()
    .find(|&s| s > 0)
    .map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::def::Scheduler;
    use std::time::Duration;

    #[test]
    fn attach_timeout_precedence() {
        const S: Scheduler = Scheduler::named("scx_lavd").attach_timeout_s(90);
        let mut d = TestDef::DEFAULT;
        assert_eq!(attach_timeout(&d), None, "engine default");
        d.scheduler = Some(S);
        assert_eq!(attach_timeout(&d), Some(Duration::from_secs(90)));
        d.attach_timeout_s = 20;
        assert_eq!(attach_timeout(&d), Some(Duration::from_secs(20)));
    }
}
