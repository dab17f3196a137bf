//! Running one payload in a VM the way ktstr tests and `ktstr run` both do:
//! initramfs (guest-init, scheduler, payload + libraries), boot, session
//! with cold-path ops and the failure watch, then a [`VmResult`] and a
//! verdict. The library API behind `#[ktstr_test]` and the CLI.

use super::error::HostError;
use super::failure::{CaptureMode, FailureCapture};
use super::session::SessionHooks;
use crate::host::cold::ColdOps;
use crate::host::env::{VmEnv, kernel_image};
use crate::host::initramfs::Initramfs;
use crate::result::VmResult;
use ktstr_introspect::scx_exit::ExitKind;
use ktstr_vmm::{RunningVm, Topology, VmExit};
use ktstr_wire::{Hello, KernelOp, KernelOpReplyPayload, Phase, RunSpec, SchedSpec};
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
    /// How long the scheduler may take to attach (None: the engine's
    /// default, see [`default_attach_timeout`]).
    pub attach_timeout: Option<Duration>,
    /// How a scheduler failure is caught.
    pub capture: CaptureMode,
}

/// The attach timeout when none is given: 10 s where KVM runs the guest
/// natively, 120 s under TCG, where verifying a large BPF program takes
/// tens of seconds (scx_lavd: ~37 s on 2 loaded cores).
pub fn default_attach_timeout() -> Duration {
    match ktstr_vmm::engine::select().map(|s| s.kind) {
        Ok(ktstr_vmm::EngineKind::Qemu(ktstr_vmm::qemu::cmdline::Accel::Tcg)) => {
            Duration::from_secs(120)
        }
        _ => Duration::from_secs(10),
    }
}

/// The session hooks of a run: cold-path kernel ops, failure capture.
struct RunHooks {
    cold: ColdOps,
    capture: FailureCapture,
}

impl SessionHooks<RunningVm> for RunHooks {
    fn kernel_ops(
        &mut self,
        vm: &RunningVm,
        hello: Option<&Hello>,
        ops: &[KernelOp],
    ) -> Vec<KernelOpReplyPayload> {
        self.cold.kernel_ops(vm, hello, ops)
    }
    fn lifecycle(&mut self, vm: &RunningVm, hello: Option<&Hello>, phase: &Phase, _: &str) {
        self.capture.on_lifecycle(vm, hello, phase);
    }
    fn tick(&mut self, vm: &RunningVm, hello: Option<&Hello>) {
        self.capture.poll(vm, hello);
    }
}

/// Boot, run, collect. Errors only when the VM cannot be set up.
pub fn run(env: &VmEnv, req: &RunRequest) -> Result<VmResult, HostError> {
    let mut init = Initramfs::base();
    let attach_timeout = req.attach_timeout.unwrap_or_else(default_attach_timeout);
    let sched = match &req.scheduler {
        Some((path, args)) => {
            // A dynamic scheduler (an ordinary `cargo install` build) needs
            // its loader and libraries, exactly as payloads do.
            init.add_executable_with_libs("/bin/scheduler", path)?;
            Some(SchedSpec {
                path: "/bin/scheduler".into(),
                args: args.clone(),
                liveness_ms: 1000,
                attach_timeout_ms: u64::try_from(attach_timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        None => None,
    };
    init.add_executable_with_libs("/bin/ktstr-payload", &req.payload)?;
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
    let timeout = Duration::from_secs(req.duration_s + req.watchdog_timeout_s + 90)
        + if req.scheduler.is_some() {
            attach_timeout
        } else {
            Duration::ZERO
        };
    let image = kernel_image(&env.kernel.vmlinux)?;
    let cold = ColdOps::new(image.clone());
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let dump_dir = crate::host::dump::dump_root().join(format!("{}-{id}", req.name));
    let capture = FailureCapture::new(
        image,
        req.vmcore.then(|| dump_dir.join("vmcore")),
        req.capture,
    );
    let mut hooks = RunHooks { cold, capture };
    let (r, _vm) = env.run(&init, t, req.memory_mb, timeout, &run, &mut hooks)?;
    let RunHooks {
        cold,
        capture: mut fc,
    } = hooks;
    let sched_log = String::from_utf8_lossy(&r.sched_log).into_owned();
    let tail = |s: &str, n: usize| {
        let l: Vec<&str> = s.lines().collect();
        l[l.len().saturating_sub(n)..].join("\n")
    };
    let dump = fc.take().map(|mut d| {
        d.test = req.name.clone();
        d.exit_reason = crate::host::dump::exit_lines(&r.console);
        if !ExitKind(d.exit_kind).is_error()
            && let Some(k) = crate::host::dump::kind_from_reason(&d.exit_reason)
        {
            d.exit_kind = k.0;
            d.exit_kind_name = k.name(&[]);
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
        _ => ktstr_vmm::kernel_log::find_problem(&r.console).map(|p| p.excerpt),
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
        attach_time: r.attach_time,
        session_error: r.error.clone(),
        snapshot_bridge: cold.bridge.clone(),
        failure_dump: dump.as_ref().map(|_| dump_dir.clone()),
        dump,
    })
}

/// What a report shows of a scheduler's log: libbpf/verifier lines and
/// the tail (or a note that it wrote nothing).
pub fn scheduler_log_excerpt(log: &str) -> String {
    let lines = ktstr_wire::sched_diag::relevant_lines(log);
    if lines.iter().all(|l| l.trim().is_empty()) {
        "(the scheduler wrote nothing)".into()
    } else {
        lines.join("\n")
    }
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
        .is_some_and(|d| ExitKind(d.exit_kind).is_error());
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
            failures.push(format!(
                "scheduler failed: {d}\n--- scheduler log (libbpf/verifier lines and tail) ---\n{}",
                scheduler_log_excerpt(&vr.sched_log)
            ));
        }
        if let Some(d) = vr
            .dump
            .as_ref()
            .filter(|d| ExitKind(d.exit_kind).is_error())
        {
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
