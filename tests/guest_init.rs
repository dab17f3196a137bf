//! End-to-end tests of guest-init on the 7.2 kernel: payload output and
//! exit codes, scheduler start (attached, died, never attached, sysfs
//! absent), and a scheduler killed mid-run. Each run must end with the
//! guest powered off.

use ktstr_test::host::env::{VmEnv, vm_env};
use ktstr_test::host::initramfs::Initramfs;
use ktstr_test::test_utils::{helper_run, no_ops};
use ktstr_vmm::{Topology, VmExit};
use ktstr_wire::{Phase, SchedSpec};
use std::time::Duration;

fn with_scheduler(env: &VmEnv, name: &str) -> Initramfs {
    let mut i = Initramfs::base();
    let p = env
        .scheduler(name)
        .expect("scheduler binary (run `ktstr sched build` or import ../shared/schedulers)");
    i.add_file(&format!("/bin/{name}"), &p).unwrap();
    i
}

/// Boot `init` on `cpus` vCPUs (256 MiB, `secs` limit) and run one session.
fn session(
    env: &VmEnv,
    init: &Initramfs,
    cpus: u32,
    secs: u64,
    run: &ktstr_wire::RunSpec,
) -> ktstr_test::host::session::SessionResult {
    env.run(
        init,
        Topology::flat(cpus),
        256,
        Duration::from_secs(secs),
        run,
        &mut no_ops(),
    )
    .unwrap()
    .0
}

fn sched(path: &str, args: &[&str], attach_ms: u64) -> Option<SchedSpec> {
    Some(SchedSpec {
        path: path.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        liveness_ms: 1000,
        attach_timeout_ms: attach_ms,
    })
}

#[test]
fn scx_simple_attaches_and_payload_sees_it() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/bin/scx_simple", &[], 10_000);
    // The payload prints the attached ops name as the guest sees it.
    run.payload_argv = vec![
        "/init".into(),
        "exit".into(),
        "0".into(),
        "payload-ran".into(),
    ];
    let r = session(&env, &with_scheduler(&env, "scx_simple"), 2, 90, &run);
    assert_eq!(r.phase(&Phase::SchedulerAttached), Some("simple"), "{r:?}");
    assert_eq!(r.exit_code, Some(0));
    assert!(r.stdout_text().contains("payload-ran"));
    assert_eq!(r.vm_exit, VmExit::PowerOff);
    assert!(
        r.console
            .contains("sched_ext: BPF scheduler \"simple\" enabled"),
        "{}",
        r.console
    );
}

#[test]
fn scheduler_that_exits_at_once_is_reported_dead_with_its_log() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/init", &["sched-die"], 10_000);
    let r = session(&env, &Initramfs::base(), 1, 60, &run);
    let d = r
        .phase(&Phase::SchedulerDied)
        .unwrap_or_else(|| panic!("no died report: {r:?}"));
    assert!(d.contains("liveness gate") && d.contains("verifier"), "{d}");
    assert!(String::from_utf8_lossy(&r.sched_log).contains("failing at init on purpose"));
    assert!(
        r.phase(&Phase::PayloadStarting).is_none(),
        "payload must not run"
    );
    assert_eq!(r.vm_exit, VmExit::PowerOff);
}

/// A scheduler that survives the liveness gate and dies before attaching
/// is reported at once, with its status and its own stated cause (before
/// the fix it waited out the attach timeout and said "timeout ... killed").
#[test]
fn scheduler_dying_before_attach_is_reported_at_once_with_its_cause() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/init", &["sched-die-late", "2"], 60_000);
    let t0 = std::time::Instant::now();
    let r = session(&env, &Initramfs::base(), 1, 120, &run);
    let d = r
        .phase(&Phase::SchedulerDied)
        .unwrap_or_else(|| panic!("no died report: {r:?}"));
    assert!(
        d.contains("exit status: 3") && d.contains("before attaching"),
        "{d}"
    );
    assert!(d.contains("CONFIG_FUNCTION_TRACER=y"), "{d}");
    assert!(r.phase(&Phase::SchedulerNotAttached).is_none(), "{r:?}");
    // Well before the 60 s attach timeout.
    assert!(t0.elapsed() < Duration::from_secs(40), "{:?}", t0.elapsed());
}

/// An ordinary dynamically linked binary as the scheduler runs in the
/// guest: the runner copies its interpreter and libraries (before the
/// fix it exited 127 with the loader's error unseen).
#[test]
fn a_dynamic_scheduler_binary_gets_its_libraries() {
    let Some(env) = vm_env(None) else { return };
    let dynamic = std::path::Path::new("/bin/true");
    assert!(
        !ktstr_kernels::artifact::is_static_elf(&std::fs::read(dynamic).unwrap()).unwrap(),
        "/bin/true is expected to be dynamic on Debian"
    );
    let req = ktstr_test::host::runner::RunRequest {
        name: "dynamic-sched".into(),
        scheduler: Some((dynamic.to_path_buf(), vec![])),
        topology: Topology::flat(1),
        memory_mb: 256,
        duration_s: 1,
        watchdog_timeout_s: 5,
        payload: dynamic.to_path_buf(),
        payload_args: vec![],
        payload_env: vec![],
        vmcore: false,
        attach_timeout: Some(Duration::from_secs(5)),
        capture: Default::default(),
    };
    let vr = ktstr_test::host::runner::run(&env, &req).unwrap();
    let d = vr
        .lifecycle
        .iter()
        .find(|(p, _)| *p == Phase::SchedulerDied)
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("{:?}", vr.lifecycle));
    // `true` ran (exit 0 inside the liveness gate): the loader found libc.
    assert!(d.contains("exit status: 0"), "{d}");
    assert!(
        !d.contains("could not start") && !vr.sched_log.contains("error while loading"),
        "{d}"
    );
}

#[test]
fn scheduler_that_never_attaches_times_out() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/init", &["sched-idle"], 2_000);
    let r = session(&env, &Initramfs::base(), 1, 60, &run);
    let d = r
        .phase(&Phase::SchedulerNotAttached)
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(d.starts_with("timeout"), "{d}");
    assert!(String::from_utf8_lossy(&r.sched_log).contains("never attaching"));
    assert_eq!(r.vm_exit, VmExit::PowerOff);
}

#[test]
fn missing_sched_ext_sysfs_is_named() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/init", &["sched-idle"], 2_000);
    run.force_no_sched_ext = true;
    let r = session(&env, &Initramfs::base(), 1, 60, &run);
    let d = r
        .phase(&Phase::SchedulerNotAttached)
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        d.starts_with("sched_ext sysfs absent") && d.contains("CONFIG_SCHED_CLASS_EXT"),
        "{d}"
    );
    assert_eq!(r.vm_exit, VmExit::PowerOff);
}

#[test]
fn scheduler_killed_mid_run_is_reported() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["pkill", "scx_simple", "1", "3"], Duration::from_secs(30));
    run.scheduler = sched("/bin/scx_simple", &[], 10_000);
    let r = session(&env, &with_scheduler(&env, "scx_simple"), 2, 90, &run);
    assert_eq!(r.phase(&Phase::SchedulerAttached), Some("simple"), "{r:?}");
    let d = r
        .phase(&Phase::SchedulerDied)
        .unwrap_or_else(|| panic!("no died report: {r:?}"));
    assert!(d.contains("killed by signal 9"), "{d}");
    assert_eq!(r.exit_code, Some(0), "{}", r.stdout_text());
    assert_eq!(r.vm_exit, VmExit::PowerOff);
}

/// The cold path end to end: the payload (guest-init's `kernel-ops`
/// helper) sends a batch through the relay; the host freezes the VM,
/// validates and applies each op with ktstr-introspect, and replies.
#[test]
fn cold_path_kernel_ops_round_trip_and_refusals() {
    let Some(env) = vm_env(None) else { return };
    let image = std::sync::Arc::new(
        ktstr::introspect::image::KernelImage::open(&env.kernel.vmlinux).unwrap(),
    );
    let mut cold = ktstr_test::host::cold::ColdOps::new(image);
    let mut run = helper_run(&["kernel-ops"], Duration::from_secs(60));
    run.scheduler = sched("/bin/scx_simple", &[], 10_000);
    let (r, _vm) = env
        .run(
            &with_scheduler(&env, "scx_simple"),
            Topology::flat(2),
            256,
            Duration::from_secs(120),
            &run,
            &mut cold,
        )
        .unwrap();
    let out = r.stdout_text();
    assert_eq!(
        r.exit_code,
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let line = |i: usize| {
        out.lines()
            .find(|l| l.starts_with(&format!("op{i} ")))
            .unwrap_or_else(|| panic!("op{i} missing:\n{out}"))
            .to_string()
    };
    assert!(line(0).contains("success=true"), "write: {}", line(0));
    assert!(
        line(1).contains("success=true") && line(1).contains("U64("),
        "{}",
        line(1)
    );
    let seed = 30u64 * 86_400 * 1_000_000_000;
    let v: u64 = line(1)
        .split("U64(")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(v >= seed, "dsq_vtime {v} < seed {seed}");
    assert!(
        line(2).contains("success=true") && line(2).contains("U32("),
        "{}",
        line(2)
    );
    assert!(
        line(3).contains("success=true") && line(3).contains("U64("),
        "{}",
        line(3)
    );
    assert!(
        line(4).contains("success=false") && line(4).contains("L4 on_rq"),
        "running task: {}",
        line(4)
    );
    assert!(
        line(5).contains("success=false") && line(5).contains("L2 start_time"),
        "wrong start: {}",
        line(5)
    );
    assert!(
        line(6).contains("success=false") && line(6).contains("larger than the 4-byte width"),
        "{}",
        line(6)
    );
    let tags: Vec<String> = cold
        .bridge
        .drain_kernel_ops()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(tags, ["vtime", "nr_running", "jiffies", "narrow"]);
}

#[test]
fn scx_qmap_attaches() {
    let Some(env) = vm_env(None) else { return };
    let mut run = helper_run(&["exit", "0"], Duration::from_secs(30));
    run.scheduler = sched("/bin/scx_qmap", &[], 10_000);
    let r = session(&env, &with_scheduler(&env, "scx_qmap"), 2, 90, &run);
    assert_eq!(
        r.phase(&Phase::SchedulerAttached),
        Some("qmap"),
        "{r:?}\n{}",
        String::from_utf8_lossy(&r.sched_log)
    );
    assert_eq!(r.vm_exit, VmExit::PowerOff);
}
