//! End-to-end tests of the qemu engine with the real 7.2 kernel: boot to
//! userspace with several topologies, bytes both ways, exit codes, a
//! kernel panic, a hung guest killed at its timeout, no QEMU left behind.

use ktstr::introspect::collect::{CollectOptions, snapshot};
use ktstr_test::host::env::vm_env;
use ktstr_test::host::initramfs::Initramfs;
use ktstr_test::test_utils::{helper_run, no_ops};
use ktstr_vmm::{Topology, VmExit};
use ktstr_wire::Phase;
use std::time::Duration;

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn boots_reports_topology_and_exit_code() {
    let Some(env) = vm_env(None) else { return };
    for topo in [
        Topology::flat(1),
        Topology::flat(2),
        Topology {
            nodes: 1,
            llcs: 2,
            cores: 2,
            threads: 1,
        },
    ] {
        let run = helper_run(
            &["exit", "3", "hello", "from", "the", "guest"],
            Duration::from_secs(30),
        );
        let (r, vm) = env
            .run(
                &Initramfs::base(),
                topo,
                256,
                Duration::from_secs(60),
                &run,
                &mut no_ops(),
            )
            .unwrap();
        let pid = vm.engine_pid();
        assert_eq!(r.vm_exit, VmExit::PowerOff, "{topo}: {r:?}");
        assert_eq!(r.exit_code, Some(3), "{topo}: {r:?}");
        assert!(
            r.stdout_text().contains("hello from the guest"),
            "{topo}: {:?}",
            r.stdout_text()
        );
        let h = r.hello.as_ref().expect("hello");
        assert_eq!(h.nr_cpus, topo.nr_cpus(), "{topo}");
        assert!(h.kernel_release.starts_with("7.2"), "{}", h.kernel_release);
        assert!(h.kallsyms_text > 0xffff_ffff_8000_0000);
        let packages: std::collections::BTreeSet<u32> = h.cpus.iter().map(|c| c.package).collect();
        assert_eq!(
            packages.len() as u32,
            topo.nodes * topo.llcs,
            "{topo}: {:?}",
            h.cpus
        );
        assert!(r.phase(&Phase::PayloadFinished).is_some());
        eprintln!("{topo}: boot to hello {:?}", r.boot_to_hello);
        drop(vm);
        if let Some(p) = pid {
            assert!(!pid_alive(p), "QEMU {p} survived its VM");
        }
    }
}

#[test]
fn kernel_panic_is_reported_with_console_tail() {
    let Some(env) = vm_env(None) else { return };
    let run = helper_run(&["panic"], Duration::from_secs(30));
    let (r, _vm) = env
        .run(
            &Initramfs::base(),
            Topology::flat(1),
            256,
            Duration::from_secs(60),
            &run,
            &mut no_ops(),
        )
        .unwrap();
    match &r.vm_exit {
        VmExit::Panic { console_tail } => {
            assert!(console_tail.contains("Kernel panic"), "{console_tail}");
            assert!(console_tail.contains("sysrq"), "{console_tail}");
        }
        other => panic!("expected a panic, got {other:?}\nconsole:\n{}", r.console),
    }
}

#[test]
fn hung_guest_is_killed_at_its_timeout() {
    let Some(env) = vm_env(None) else { return };
    let run = helper_run(&["sleep", "3600"], Duration::from_secs(3600));
    let start = std::time::Instant::now();
    let (r, vm) = env
        .run(
            &Initramfs::base(),
            Topology::flat(1),
            256,
            Duration::from_secs(8),
            &run,
            &mut no_ops(),
        )
        .unwrap();
    assert_eq!(r.vm_exit, VmExit::Timeout, "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(vm.exited());
}

/// Freeze the guest while it spins on every CPU; read jiffies and each
/// CPU's rq->nr_running through ktstr-introspect on the mapped RAM.
#[test]
fn freeze_and_introspect_a_running_guest() {
    let Some(env) = vm_env(None) else { return };
    let image = std::sync::Arc::new(
        ktstr::introspect::image::KernelImage::open(&env.kernel.vmlinux).unwrap(),
    );
    ktstr_test::test_utils::with_spinning_guest(&env, 2, |vm| {
        let f = vm.freeze(Duration::from_secs(5)).unwrap();
        assert_eq!(f.regs().len(), 2);
        let k =
            ktstr::introspect::kernel::Kernel::discover(f.mem_arc(), image.clone(), f.regs(), None)
                .unwrap();
        let snap = snapshot(&k, &CollectOptions::default());
        assert!(snap.jiffies.unwrap() > 0);
        assert_eq!(snap.nr_cpus, 2);
        assert!(
            snap.tasks.iter().any(|t| t.comm == "init"),
            "{:?}",
            snap.tasks.iter().map(|t| &t.comm).collect::<Vec<_>>()
        );
    });
}

/// 1000 freeze/thaw cycles while the guest spins on every CPU; each frozen
/// instant reads `jiffies_64` and every CPU's `runqueues.nr_running`
/// through ktstr-introspect on the mapped RAM. Every 100th freeze is held
/// for 300 ms: the guest's clock must not count frozen time.
#[test]
fn thousand_freezes_keep_guest_time() {
    let Some(env) = vm_env(None) else { return };
    let image = std::sync::Arc::new(
        ktstr::introspect::image::KernelImage::open(&env.kernel.vmlinux).unwrap(),
    );
    let btf_nr = image.btf().field("rq", "nr_running").unwrap().offset;
    ktstr_test::test_utils::with_spinning_guest(&env, 2, |vm| {
        let mut params = None;
        let mut last: Option<(u64, std::time::Instant)> = None;
        let (mut ran_total_ms, mut jiffies_total) = (0i64, 0u64);
        let mut held = Duration::ZERO;
        let mut latencies = Vec::new();
        let mut after_hold_ms = Vec::new();
        for i in 0..1000 {
            let t0 = std::time::Instant::now();
            let f = vm.freeze(Duration::from_secs(10)).unwrap();
            let frozen_at = std::time::Instant::now();
            latencies.push(frozen_at - t0);
            assert_eq!(f.regs().len(), 2, "freeze {i}: registers of every vCPU");
            let k = match params {
                None => {
                    let k = ktstr_test::host::cold::frozen_kernel(&f, &image, None).unwrap();
                    params = Some(*k.params());
                    k
                }
                Some(p) => ktstr::introspect::kernel::Kernel::new(
                    f.mem_arc(),
                    image.clone(),
                    p,
                    ktstr::introspect::kernel::KaslrSource::Given,
                ),
            };
            let j = k.sym_u64("jiffies_64").unwrap();
            for cpu in 0..2 {
                let rq = k.per_cpu_sym("runqueues", cpu).unwrap();
                let nr = k.read_u32(rq + btf_nr).unwrap();
                assert!(nr <= 64, "freeze {i}: cpu {cpu} nr_running {nr}");
            }
            if let Some((pj, thawed_at)) = last {
                assert!(j >= pj, "jiffies went backwards");
                // Upper bound on the time the guest ran since the last thaw.
                ran_total_ms += (frozen_at - thawed_at).as_millis() as i64 + 1;
                jiffies_total += j - pj;
                if i % 100 == 0 {
                    after_hold_ms.push(j - pj);
                }
            }
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(300));
                held += Duration::from_millis(300);
            }
            let thaw_start = std::time::Instant::now();
            f.thaw().unwrap();
            last = Some((j, thaw_start));
        }
        eprintln!(
            "guest jiffies advanced {jiffies_total} ms while it ran at most {ran_total_ms} ms; held frozen {held:?}; \
             jiffies across each 300 ms hold: {after_hold_ms:?}"
        );
        // A clock that counted frozen time would be >= 2.7 s ahead here.
        assert!(
            (jiffies_total as i64) <= ran_total_ms + 50,
            "guest time counted frozen time: {jiffies_total} ms of jiffies vs {ran_total_ms} ms running"
        );
        for d in &after_hold_ms {
            assert!(*d < 200, "jiffies jumped {d} ms across a 300 ms freeze");
        }
        latencies.sort();
        eprintln!(
            "1000 freezes: median {:?}, p99 {:?}",
            latencies[500], latencies[990]
        );
    });
}

/// A write watchpoint on `jiffies_64` freezes the guest at the instant the
/// tick writes it: the callback sees the new value and a RIP in the
/// kernel's jiffies update code. QMP freezes in between do not disturb it.
#[test]
fn watchpoint_catches_the_write_of_jiffies() {
    let Some(env) = vm_env(None) else { return };
    let image = std::sync::Arc::new(
        ktstr::introspect::image::KernelImage::open(&env.kernel.vmlinux).unwrap(),
    );
    ktstr_test::test_utils::with_spinning_guest(&env, 2, |vm| {
        let (params, jiffies_kva, before) = {
            let f = vm.freeze(Duration::from_secs(10)).unwrap();
            let k = ktstr_test::host::cold::frozen_kernel(&f, &image, None).unwrap();
            let kva = k.sym("jiffies_64").unwrap();
            (*k.params(), kva, k.read_u64(kva).unwrap())
        };
        let hits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h2, img2) = (hits.clone(), image.clone());
        let watch = vm
            .watch_write(
                jiffies_kva,
                8,
                Box::new(move |f, cpu| {
                    let k = ktstr::introspect::kernel::Kernel::new(
                        f.mem_arc(),
                        img2.clone(),
                        params,
                        ktstr::introspect::kernel::KaslrSource::Given,
                    );
                    let v = k.read_u64(jiffies_kva).unwrap();
                    let rip = cpu
                        .and_then(|c| f.regs().get(c as usize))
                        .map(|r| r.rip)
                        .unwrap_or(0);
                    let mut h = h2.lock().unwrap();
                    h.push((v, k.symbolize(rip)));
                    if h.len() >= 5 {
                        ktstr_vmm::watch::WatchAction::Remove
                    } else {
                        ktstr_vmm::watch::WatchAction::Continue
                    }
                }),
            )
            .unwrap();
        // Interleave QMP freezes with the watch.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(20));
            let f = vm.freeze(Duration::from_secs(10)).unwrap();
            drop(f);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !watch.finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            watch.finished(),
            "watch did not fire 5 times: {:?}",
            hits.lock().unwrap()
        );
        watch.stop().unwrap();
        let h = hits.lock().unwrap().clone();
        eprintln!("hits: {h:?}");
        assert_eq!(h.len(), 5);
        assert!(h[0].0 > before, "new value {} not after {before}", h[0].0);
        for w in h.windows(2) {
            assert!(w[1].0 > w[0].0, "{h:?}");
        }
        assert!(
            h.iter().any(|(_, sym)| sym
                .as_deref()
                .is_some_and(|s| s.contains("jiffies") || s.contains("tick"))),
            "{h:?}"
        );
        // The guest keeps running after the watch is gone.
        let f = vm.freeze(Duration::from_secs(10)).unwrap();
        let k = ktstr::introspect::kernel::Kernel::new(
            f.mem_arc(),
            image.clone(),
            params,
            ktstr::introspect::kernel::KaslrSource::Given,
        );
        assert!(k.read_u64(jiffies_kva).unwrap() >= h[4].0);
        drop(f);
    });
}

/// QEMU failing to start (here: a "kernel" that is not one) is a clear
/// error carrying QEMU's own words, and leaves no process behind.
#[test]
fn qemu_failing_to_start_is_a_clear_error() {
    let Some(env) = vm_env(None) else { return };
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-kernel");
    std::fs::write(&bogus, vec![0x55u8; 8192]).unwrap();
    let path = Initramfs::base()
        .write_cached(&env.initramfs_dir())
        .unwrap();
    let mut spec = env.spec(path, Topology::flat(1), 256, Duration::from_secs(30));
    spec.kernel = bogus;
    let text = match ktstr_vmm::RunningVm::boot(&spec) {
        Err(e) => e.to_string(),
        Ok(vm) => match vm.wait() {
            VmExit::EngineError(e) => e,
            other => panic!("expected an engine error, got {other:?}"),
        },
    };
    assert!(
        text.contains("QEMU") && text.to_lowercase().contains("kernel"),
        "{text}"
    );
}
