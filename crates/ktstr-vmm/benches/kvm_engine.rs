//! Benchmarks of the kvm engine, printed as figures:
//!
//! - freeze+thaw latency: 4 vCPUs running user-mode code (a ring-3
//!   counting loop), >= 1000 freezes, median and p99 (targets: median
//!   <= 100 us, p99 <= 1 ms);
//! - boot to first console output of a small ring-3 program;
//! - boot of Linux to its banner: only where the probe finds KVM native,
//!   else reported as "requires hardware KVM".
//!
//! `cargo bench -p ktstr-vmm --bench kvm_engine` (KTSTR_BENCH_FREEZES
//! sets the freeze count, default 5000).

use ktstr_introspect::mem::PhysMemExt;
use ktstr_vmm::RunningVm;
use ktstr_vmm::console::Console;
use ktstr_vmm::kvm::raw::{DATA, RawGuest, programs};
use std::time::{Duration, Instant};

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("kvm engine benchmarks: SKIPPED, no usable /dev/kvm");
        return;
    }
    let n: usize = std::env::var("KTSTR_BENCH_FREEZES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
        .max(1000);

    // Freeze + thaw: 4 vCPUs (the target's setup) and, since this host
    // may have fewer cores than that, as many vCPUs as host CPUs too.
    let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    for cpus in [4u32, host.min(4)] {
        freeze_bench(cpus, n, host);
        if host >= 4 {
            break;
        }
    }

    // Boot to first output of a ring-3 program.
    let mut boots = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let vm = RunningVm::boot_raw(
            &RawGuest::new(programs::hello(), 1),
            Duration::from_secs(10),
            Console::new(4096, None),
        )
        .expect("boot");
        assert!(vm.console().wait_for("hello", Duration::from_secs(5)));
        boots.push(t.elapsed());
        vm.wait();
    }
    boots.sort();
    println!(
        "kvm raw guest boot-to-hello (50 boots): median {:?}, p99 {:?}",
        pct(&boots, 0.5),
        pct(&boots, 0.99)
    );

    let probe = ktstr_vmm::probe::cached_probe(&ktstr_vmm::engine::probe_cache_dir());
    if probe.native {
        println!(
            "kvm Linux boot-to-hello: run tests/kvm_engine.rs with KTSTR_SLOW_KVM=1 ({})",
            probe.detail
        );
    } else {
        println!(
            "kvm Linux boot-to-hello: requires hardware KVM ({})",
            probe.detail
        );
    }
}

/// `n` freezes of `cpus` vCPUs counting in ring 3; prints the figures.
fn freeze_bench(cpus: u32, n: usize, host: u32) {
    let vm = RunningVm::boot_raw(
        &RawGuest::new(programs::COUNT, cpus),
        Duration::from_secs(600),
        Console::new(4096, None),
    )
    .expect("boot");
    let mem = vm.memory();
    while (0..u64::from(cpus)).any(|i| mem.read_u64(DATA + i * 64).unwrap_or(0) == 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (mut freeze, mut cycle) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let f = vm.freeze(Duration::from_secs(5)).expect("freeze");
        let frozen = t.elapsed();
        assert_eq!(f.regs().len(), cpus as usize);
        drop(f);
        freeze.push(frozen);
        cycle.push(t.elapsed());
        // Let the guest run between freezes, as a test would.
        std::thread::sleep(Duration::from_micros(200));
    }
    freeze.sort();
    cycle.sort();
    println!(
        "kvm freeze ({cpus} vCPUs in ring 3 on {host} host CPUs, {n} freezes): median {:?}, p99 {:?}, max {:?}",
        pct(&freeze, 0.5),
        pct(&freeze, 0.99),
        freeze[n - 1]
    );
    println!(
        "kvm freeze+thaw ({cpus} vCPUs): median {:?}, p99 {:?} (targets: median <= 100us, p99 <= 1ms)",
        pct(&cycle, 0.5),
        pct(&cycle, 0.99)
    );
    vm.kill();
}
