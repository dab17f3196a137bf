//! Real-kernel vmcores: boot 7.2 with scx_simple, let the guest report what
//! it sees (attached ops, pids), freeze, write ktstr's own vmcore and
//! QEMU's `dump-guest-memory`, then analyse both offline with
//! ktstr-introspect and check them against the guest's own report.

use ktstr::introspect::collect::{CollectOptions, snapshot};
use ktstr::introspect::image::KernelImage;
use ktstr::introspect::kernel::{KaslrSource, Kernel};
use ktstr::introspect::vmcore::Vmcore;
use ktstr_test::host::env::vm_env;
use ktstr_test::host::initramfs::Initramfs;
use ktstr_test::test_utils::{helper_run, no_ops};
use ktstr_vmm::{RunningVm, Topology};
use ktstr_wire::SchedSpec;
use std::sync::Arc;
use std::time::Duration;

fn analyse(
    image: &Arc<KernelImage>,
    path: &std::path::Path,
) -> ktstr::introspect::snapshot::SchedSnapshot {
    let core = Vmcore::open(path).unwrap();
    let (info, cpus) = (core.vmcoreinfo.clone(), core.cpus.clone());
    assert!(info.is_some(), "{} has no VMCOREINFO", path.display());
    let k = Kernel::discover(core, image.clone(), &cpus, info.as_ref()).unwrap();
    assert_eq!(k.kaslr_source(), KaslrSource::Vmcoreinfo);
    snapshot(&k, &CollectOptions::default())
}

#[test]
fn vmcores_of_a_running_scx_simple_72_guest_match_what_it_reported() {
    check_kernel("7.2");
}

/// 6.12 keeps its sched_ext state in globals (no scx_root): same checks.
#[test]
fn vmcores_of_a_running_scx_simple_612_guest_match_what_it_reported() {
    check_kernel("6.12");
}

fn check_kernel(name: &str) {
    let Some(env) = vm_env(Some(name)) else {
        return;
    };
    if !env.kernel.name.starts_with(name) && std::env::var("KTSTR_KERNEL").is_ok() {
        eprintln!(
            "SKIPPED: KTSTR_KERNEL selects {} for every test",
            env.kernel.name
        );
        return;
    }
    let image = Arc::new(KernelImage::open(&env.kernel.vmlinux).unwrap());
    let mut init = Initramfs::base();
    init.add_file("/bin/scx_simple", &env.scheduler("scx_simple").unwrap())
        .unwrap();
    let path = init.write_cached(&env.initramfs_dir()).unwrap();
    let spec = env.spec(path, Topology::flat(2), 256, Duration::from_secs(200));
    // Hold host CPUs for the guest's vCPUs like every other VM test: the
    // 7.2 and 6.12 tests run in parallel, and overcommitted TCG guests
    // have stalled early in boot here.
    let _slot = ktstr_test::host::env::VcpuSlot::acquire(2);
    let vm = RunningVm::boot(&spec).unwrap();
    let mut run = helper_run(&["report", "15"], Duration::from_secs(150));
    run.scheduler = Some(SchedSpec {
        path: "/bin/scx_simple".into(),
        liveness_ms: 1000,
        attach_timeout_ms: 10_000,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ktstr.vmcore");
    let qemus = dir.path().join("qemu.vmcore");
    std::thread::scope(|s| {
        let session = s.spawn(|| ktstr_test::host::session::run(&vm, &run, &mut no_ops()));
        assert!(
            vm.console()
                .wait_for("KTSTR-REPORT READY", Duration::from_secs(120)),
            "{}",
            vm.console().tail(30)
        );
        let con = vm.console().contents();
        let field = |k: &str| {
            con.lines()
                .find_map(|l| {
                    l.split_once(&format!("KTSTR-REPORT {k}="))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap()
        };
        let ops = field("OPS");
        let pids: Vec<i32> = field("PIDS")
            .split(',')
            .map(|p| p.parse().unwrap())
            .collect();
        let f = vm.freeze(Duration::from_secs(10)).unwrap();
        let k = ktstr_test::host::cold::frozen_kernel(&f, &image, None).unwrap();
        let live = snapshot(&k, &CollectOptions::default());
        let t = std::time::Instant::now();
        let size = ktstr_test::host::vmcore_dump::write_frozen_vmcore(&f, &k, &ours).unwrap();
        eprintln!("ktstr vmcore: {size} bytes in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        f.engine_dump(&qemus).unwrap();
        eprintln!("qemu dump-guest-memory: {:?}", t.elapsed());
        drop(f);
        for (what, snap) in [
            ("live", live),
            ("ktstr vmcore", analyse(&image, &ours)),
            ("qemu vmcore", analyse(&image, &qemus)),
        ] {
            let sch = snap
                .sched
                .as_ref()
                .unwrap_or_else(|| panic!("{what}: no sched state"));
            assert_eq!(sch.ops_name.as_deref(), Some(ops.as_str()), "{what}");
            assert_eq!(sch.exit_kind, 0, "{what}");
            let seen: std::collections::BTreeSet<i32> =
                snap.scx_tasks.iter().map(|t| t.pid).collect();
            for p in &pids {
                assert!(
                    seen.contains(p),
                    "{what}: pid {p} reported by the guest is not on scx_tasks"
                );
            }
            assert_eq!(snap.nr_cpus, 2, "{what}");
            assert!(snap.tasks.iter().any(|t| t.comm == "scx_simple"), "{what}");
            eprintln!(
                "{what}: jiffies {:?}, {} tasks, {} DSQs",
                snap.jiffies,
                snap.tasks.len(),
                snap.dsqs.len()
            );
        }
        assert_eq!(ops, "simple");
        let r = session.join().unwrap();
        assert_eq!(r.exit_code, Some(0), "{r:?}");
    });
}
