//! Prints boot and freeze figures for the qemu engine on the default
//! kernel (median of >= 10 each):
//! - QEMU alone booting the kernel + guest-init initramfs to init (init
//!   finds no channel and powers off at once; time to QEMU's exit);
//! - ktstr's qemu engine booting the same to guest-init's Hello, and the
//!   ratio of the two (target <= 1.10);
//! - boot to Hello with the real initramfs (guest-init + scx_simple + a
//!   payload);
//! - freeze+thaw latency (median, p99 over 1000) while the guest spins.
//!
//! Run: `cargo bench -p ktstr-test --bench boot`.

use ktstr_test::host::env::vm_env;
use ktstr_test::host::initramfs::Initramfs;
use ktstr_vmm::qemu::cmdline::BASE_CMDLINE;
use ktstr_vmm::{RunningVm, Topology};
use ktstr_wire::{GuestMsg, read_msg};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N: usize = 10;

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn boot_to_hello(env: &ktstr_test::host::env::VmEnv, initramfs: &std::path::Path) -> Duration {
    let spec = env.spec(
        initramfs.to_path_buf(),
        Topology::flat(2),
        256,
        Duration::from_secs(60),
    );
    let t0 = Instant::now();
    let vm = RunningVm::boot(&spec).expect("boot");
    let mut ch = loop {
        match vm.channel(0) {
            Ok(c) => break c,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    match read_msg::<GuestMsg, _>(&mut ch) {
        Ok(GuestMsg::Hello(_)) => {}
        other => panic!("expected Hello, got {other:?}"),
    }
    let d = t0.elapsed();
    vm.kill();
    d
}

fn main() {
    let Some(env) = vm_env(None) else {
        println!("boot bench: SKIPPED (no kernel or VM engine)");
        return;
    };
    println!(
        "engine: {}",
        ktstr_vmm::engine::select()
            .map(|s| s.why)
            .unwrap_or_default()
    );
    let dir = env.initramfs_dir();
    let base = Initramfs::base().write_cached(&dir).expect("initramfs");
    // QEMU alone.
    let mut alone = Vec::new();
    for _ in 0..N {
        let t0 = Instant::now();
        let st = Command::new(ktstr_vmm::qemu::qemu_binary())
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-no-reboot",
                "-M",
                "pc",
                "-accel",
                "tcg,thread=multi",
            ])
            .args(["-smp", "2", "-m", "256M", "-serial", "null"])
            .arg("-kernel")
            .arg(&env.kernel.bzimage)
            .arg("-initrd")
            .arg(&base)
            .arg("-append")
            .arg(BASE_CMDLINE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("qemu");
        assert!(st.success(), "plain QEMU run failed: {st}");
        alone.push(t0.elapsed());
    }
    let mut ktstr = Vec::new();
    for _ in 0..N {
        ktstr.push(boot_to_hello(&env, &base));
    }
    let (a, _) = stats(alone);
    let (k, _) = stats(ktstr);
    println!(
        "QEMU alone, boot to init (powers off at once): median {:.0} ms",
        ms(a)
    );
    println!(
        "ktstr qemu engine, boot to guest-init Hello:   median {:.0} ms",
        ms(k)
    );
    println!(
        "ratio ktstr / QEMU alone: {:.3} (target <= 1.10)",
        k.as_secs_f64() / a.as_secs_f64()
    );

    // Real initramfs: guest-init + scx_simple + a payload.
    if let Ok(s) = env.scheduler("scx_simple") {
        let mut i = Initramfs::base();
        i.add_file("/bin/scx_simple", &s).expect("scheduler");
        i.add_executable_with_libs("/bin/payload", std::path::Path::new("/bin/true"))
            .expect("payload");
        let real = i.write_cached(&dir).expect("initramfs");
        let size = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(0);
        let v: Vec<Duration> = (0..N).map(|_| boot_to_hello(&env, &real)).collect();
        let (m, _) = stats(v);
        println!(
            "boot to Hello, initramfs with scx_simple + payload ({:.1} MiB): median {:.0} ms",
            size as f64 / 1048576.0,
            ms(m)
        );
    }

    // Freeze + thaw latency while the guest spins on both vCPUs.
    ktstr_test::test_utils::with_spinning_guest(&env, 2, |vm| {
        let mut lat = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            let f = vm.freeze(Duration::from_secs(10)).expect("freeze");
            f.thaw().expect("thaw");
            lat.push(t.elapsed());
        }
        let (m, p99) = stats(lat);
        println!(
            "freeze+thaw (QMP stop, registers of 2 vCPUs, cont): median {:.2} ms, p99 {:.2} ms over 1000",
            ms(m),
            ms(p99)
        );
    });
}
