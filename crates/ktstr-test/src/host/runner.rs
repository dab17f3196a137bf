//! Running one payload in a VM the way ktstr tests and `ktstr run` both do:
//! initramfs (guest-init, scheduler, payload + libraries), boot, session
//! with cold-path ops and the failure watch, then a [`VmResult`] and a
//! verdict. The library API behind `#[ktstr_test]` and the CLI.

use crate::host::cold::ColdOps;
use crate::host::env::{VmEnv, kernel_image};
use crate::host::initramfs::Initramfs;
use crate::result::VmResult;
use ktstr_vmm::{Topology, VmExit};
use ktstr_wire::{Phase, RunSpec, SchedSpec};
use std::path::PathBuf;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Names the dump directory.
    pub name: String,
    /// Host path of the scheduler binary and its arguments (None: EEVDF).
    pub scheduler: Option<(PathBuf, Vec<String>)>,
    pub topology: Topology,
    pub memory_mb: u32,
    pub duration_s: u64,
    pub watchdog_timeout_s: u64,
    /// Host path of the payload binary (its libraries come along).
    pub payload: PathBuf,
    pub payload_args: Vec<String>,
    pub payload_env: Vec<(String, String)>,
    /// Write a vmcore at the instant of a scheduler failure.
    pub vmcore: bool,
}

/// Boot, run, collect. Errors only when the VM cannot be set up.
pub fn run(env: &VmEnv, req: &RunRequest) -> Result<VmResult, String> {
    let mut init = Initramfs::base();
    let sched = match &req.scheduler {
        Some((path, args)) => {
            init.add_file("/bin/scheduler", path)
                .map_err(|e| e.to_string())?;
            Some(SchedSpec {
                path: "/bin/scheduler".into(),
                args: args.clone(),
                liveness_ms: 1000,
                attach_timeout_ms: 10_000,
            })
        }
        None => None,
    };
    init.add_executable_with_libs("/bin/ktstr-payload", &req.payload)
        .map_err(|e| e.to_string())?;
    let t = req.topology;
    // The caller's variables come last so they can override these.
    let mut env_vars = vec![
        (
            "KTSTR_DURATION_MS".to_string(),
            (req.duration_s * 1000).to_string(),
        ),
        (
            "KTSTR_TOPOLOGY".to_string(),
            format!("{},{},{},{}", t.nodes, t.llcs, t.cores, t.threads),
        ),
        ("RUST_BACKTRACE".to_string(), "1".to_string()),
    ];
    env_vars.extend(req.payload_env.iter().cloned());
    let run = RunSpec {
        scheduler: sched,
        payload_argv: std::iter::once("/bin/ktstr-payload".to_string())
            .chain(req.payload_args.iter().cloned())
            .collect(),
        payload_env: env_vars,
        payload_timeout_ms: (req.duration_s + req.watchdog_timeout_s + 30) * 1000,
        ..Default::default()
    };
    let timeout = Duration::from_secs(req.duration_s + req.watchdog_timeout_s + 90);
    let image = kernel_image(&env.kernel.vmlinux)?;
    let mut cold = ColdOps::new(image.clone());
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let dump_dir = crate::host::dump::dump_root().join(format!("{}-{id}", req.name));
    let mut fc = crate::host::failure::FailureCapture::new(
        image,
        req.vmcore.then(|| dump_dir.join("vmcore")),
    );
    let (r, _vm) = env.run_with_hooks(
        &init,
        t,
        req.memory_mb,
        timeout,
        &run,
        &mut |vm, h, ops| cold.handle(vm, h, ops),
        &mut |vm, h, phase, _| fc.on_lifecycle(vm, h, phase),
    )?;
    let sched_log = String::from_utf8_lossy(&r.sched_log).into_owned();
    let tail = |s: &str, n: usize| {
        let l: Vec<&str> = s.lines().collect();
        l[l.len().saturating_sub(n)..].join("\n")
    };
    let dump = fc.take().map(|mut d| {
        d.test = req.name.clone();
        d.exit_reason = crate::host::dump::exit_lines(&r.console);
        if d.exit_kind < crate::host::dump::SCX_EXIT_ERROR
            && let Some((k, n)) = crate::host::dump::kind_from_reason(&d.exit_reason)
        {
            d.exit_kind = k;
            d.exit_kind_name = n.to_string();
        }
        d.console_tail = tail(&r.console, 60);
        d.sched_log_tail = tail(&sched_log, 60);
        if let Err(e) = d.write(&dump_dir) {
            tracing::warn!(error = %e, "writing the failure dump");
        }
        d
    });
    let crash_message = match &r.vm_exit {
        VmExit::Panic { console_tail } => Some(console_tail.clone()),
        VmExit::EngineError(e) => Some(e.clone()),
        _ => crate::harness::kernel_problem(&r.console),
    };
    let guest_result = r
        .test_result
        .as_ref()
        .and_then(|(_, j)| serde_json::from_str::<crate::assert::AssertResult>(j).ok());
    Ok(VmResult {
        exit_code: r.exit_code.unwrap_or(-1),
        timed_out: matches!(r.vm_exit, VmExit::Timeout),
        crash_message,
        guest_result,
        guest_json: r.test_result.as_ref().map(|(_, j)| j.clone()),
        console: r.console.clone(),
        sched_log,
        stdout: r.stdout_text(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        lifecycle: r.lifecycle.clone(),
        session_error: r.error.clone(),
        snapshot_bridge: cold.bridge.clone(),
        failure_dump: dump.as_ref().map(|_| dump_dir.clone()),
        dump,
    })
}

/// Everything wrong with a run (empty: it passed).
pub fn judge(vr: &VmResult, expect_err: bool, expect_contains: Option<&str>) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(e) = &vr.session_error {
        failures.push(format!("session: {e}"));
    }
    let errored = vr
        .dump
        .as_ref()
        .is_some_and(|d| d.exit_kind >= crate::host::dump::SCX_EXIT_ERROR);
    let phase = |p: Phase| {
        vr.lifecycle
            .iter()
            .find(|(x, _)| *x == p)
            .map(|(_, d)| d.clone())
    };
    if expect_err {
        if !errored {
            failures.push(
                "expected the scheduler to fail (expect_err), but no scheduler error was captured"
                    .into(),
            );
        } else if let Some(want) = expect_contains {
            let reason = vr
                .dump
                .as_ref()
                .map(|d| d.exit_reason.join("\n"))
                .unwrap_or_default();
            if !reason.contains(want) {
                failures.push(format!(
                    "scheduler error reason does not contain {want:?}: {reason:?}"
                ));
            }
        }
    } else {
        if let Some(d) = phase(Phase::SchedulerDied).or(phase(Phase::SchedulerNotAttached)) {
            failures.push(format!("scheduler failed: {d}"));
        }
        if let Some(d) = &vr.dump {
            failures.push(format!(
                "scheduler error captured:\n  {}",
                d.key_lines().join("\n  ")
            ));
        }
    }
    if let Some(c) = &vr.crash_message {
        failures.push(format!("guest kernel problem:\n{c}"));
    }
    if vr.timed_out {
        failures.push("the VM hit its timeout".into());
    }
    if vr.exit_code != 0 && !expect_err {
        failures.push(format!("guest payload exited with {}", vr.exit_code));
    }
    failures
}
