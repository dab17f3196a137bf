//! End-to-end tests of the kvm engine (ktstr's own KVM microVM).
//!
//! On hosts whose KVM emulates guest kernel mode (this project's build
//! machines; `ktstr-vmm`'s probe tells) Linux cannot boot at a useful
//! speed, but guest user-mode code runs natively. So most tests here run
//! small ring-3 programs, hand-assembled below: serial output, vCPU
//! bring-up, 1000 freezes with register capture and memory access, a
//! write watchpoint, the timeout teardown and leaks across many VMs.
//! Linux on this engine is tested where kernels and the harness are, in
//! the workspace's `tests/kvm_linux.rs`.
//!
//! They need a usable `/dev/kvm`; without one they skip with the reason
//! (fail with `KTSTR_REQUIRE_VM=1`).

use ktstr_introspect::mem::PhysMemExt;
use ktstr_vmm::console::Console;
use ktstr_vmm::kvm::raw::{CODE, DATA, RawGuest};
use ktstr_vmm::watch::WatchAction;
use ktstr_vmm::{RunningVm, VmExit};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests here run one at a time: the leak check counts this
/// process's fds and threads.
static SERIAL: Mutex<()> = Mutex::new(());

fn kvm_usable() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        let why = "no usable /dev/kvm on this host";
        if std::env::var("KTSTR_REQUIRE_VM").is_ok_and(|v| v == "1") {
            panic!("KTSTR_REQUIRE_VM=1 but {why}");
        }
        eprintln!("SKIPPED (the kvm engine needs KVM): {why}");
    }
    ok
}

fn boot(code: &[u8], cpus: u32, timeout: Duration) -> RunningVm {
    RunningVm::boot_raw(
        &RawGuest::new(code, cpus),
        timeout,
        Console::new(64 * 1024, None),
    )
    .expect("boot raw guest")
}

use ktstr_vmm::kvm::raw::programs::{self, COUNT as COUNT_PROGRAM};

/// Where the counting loop lives.
const LOOP_START: u64 = CODE + programs::COUNT_LOOP.start;
const LOOP_END: u64 = CODE + programs::COUNT_LOOP.end;

fn counter(vm: &RunningVm, cpu: u64) -> u64 {
    vm.memory().read_u64(DATA + cpu * 64).unwrap()
}

#[test]
fn serial_output_reaches_the_console_and_the_exit_port_powers_off() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    let vm = boot(&programs::hello(), 1, Duration::from_secs(10));
    assert_eq!(vm.wait(), VmExit::PowerOff);
    assert!(
        vm.console().contents().contains("hello from ring 3"),
        "console: {:?}",
        vm.console().contents()
    );
}

#[test]
fn one_to_eight_vcpus_come_up() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    for n in [1u32, 2, 4, 8] {
        let vm = boot(&COUNT_PROGRAM, n, Duration::from_secs(30));
        let t0 = Instant::now();
        while (0..n).any(|i| counter(&vm, i.into()) == 0) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{n} vCPUs: not all counting: {:?}",
                (0..n).map(|i| counter(&vm, i.into())).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let digits: String = (0..n).map(|i| char::from(b'0' + i as u8)).collect();
        assert!(
            vm.console().wait_for("", Duration::from_millis(1)),
            "console ring is live"
        );
        let out = vm.console().contents();
        for d in digits.chars() {
            assert!(
                out.contains(d),
                "{n} vCPUs: vCPU {d} did not print: {out:?}"
            );
        }
        assert_eq!(vm.nr_cpus(), n);
        vm.kill();
        eprintln!("{n} vCPUs up in {:?}", t0.elapsed());
    }
}

#[test]
fn four_vcpus_frozen_and_thawed_1000_times() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    let vm = boot(&COUNT_PROGRAM, 4, Duration::from_secs(120));
    while (0..4).any(|i| counter(&vm, i) == 0) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lat = Vec::with_capacity(1000);
    const MARK: u64 = 1 << 40;
    for k in 0..1000u64 {
        let t = Instant::now();
        let f = vm.freeze(Duration::from_secs(5)).expect("freeze");
        lat.push(t.elapsed());
        assert_eq!(f.regs().len(), 4);
        for (i, r) in f.regs().iter().enumerate() {
            assert_eq!(r.cpu, i as u32);
            assert!(
                (LOOP_START..LOOP_END).contains(&r.rip),
                "vCPU {i} RIP {:#x} outside its loop",
                r.rip
            );
            assert_eq!(r.rbx, DATA + i as u64 * 64, "vCPU {i} rbx");
            assert_eq!(r.cs & 3, 3, "ring 3");
        }
        let before: Vec<u64> = (0..4)
            .map(|i| f.mem().read_u64(DATA + i * 64).unwrap())
            .collect();
        std::hint::black_box((0..2000).sum::<u64>());
        let after: Vec<u64> = (0..4)
            .map(|i| f.mem().read_u64(DATA + i * 64).unwrap())
            .collect();
        assert_eq!(before, after, "freeze {k}: the guest ran while frozen");
        // Write while frozen: every 100th freeze moves vCPU 0's counter up.
        f.mem().write_u64(DATA + 8, k).unwrap();
        assert_eq!(f.mem().read_u64(DATA + 8).unwrap(), k);
        if k == 500 {
            f.mem().write_u64(DATA, MARK).unwrap();
        }
        drop(f);
    }
    // Back-to-back freezes may not let a vCPU run in between; once thawed
    // for good, the guest goes on counting from the host's write.
    let t0 = Instant::now();
    while counter(&vm, 0) <= MARK {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the guest did not continue from the host's write: {:#x}",
            counter(&vm, 0)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        counter(&vm, 0) < MARK + (1 << 39),
        "the counter kept the write"
    );
    lat.sort();
    eprintln!(
        "1000 freezes of 4 vCPUs: median {:?}, p99 {:?}, max {:?}",
        lat[500], lat[990], lat[999]
    );
    vm.kill();
}

#[test]
fn a_write_watchpoint_catches_the_new_value_and_rip() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    // Both vCPUs store to their own slots; only vCPU 0's is watched, and
    // vCPU 1's slot shares the watched page.
    let vm = boot(&programs::STORE, 2, Duration::from_secs(60));
    /// (writing vCPU, its RIP, its rax, the watched memory) per hit.
    type Seen = Vec<(Option<u32>, u64, u64, u64)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = seen.clone();
    let w = vm
        .watch_write(
            DATA,
            8,
            Box::new(move |f, cpu| {
                let c = cpu.unwrap_or(0) as usize;
                let r = &f.regs()[c];
                let v = f.mem().read_u64(DATA).unwrap();
                let mut s = s2.lock().unwrap();
                s.push((cpu, r.rip, r.rax, v));
                if s.len() >= 5 {
                    WatchAction::Remove
                } else {
                    WatchAction::Continue
                }
            }),
        )
        .expect("watch");
    let t0 = Instant::now();
    while !w.finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "watch did not fire 5 times"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    w.stop().unwrap();
    let s = seen.lock().unwrap().clone();
    assert!(!vm.exited(), "the guest ended: {:?}", vm.wait());
    assert_eq!(s.len(), 5);
    for (i, (cpu, rip, rax, v)) in s.iter().enumerate() {
        assert_eq!(*cpu, Some(0), "only vCPU 0 writes the watched slot");
        assert_eq!(
            *rip,
            CODE + programs::STORE_NEXT,
            "stopped right after the store"
        );
        assert_eq!(v, rax, "memory holds the value just written");
        if i > 0 {
            assert_eq!(*v, s[i - 1].3 + 1, "every write is caught");
        }
    }
    // Removed: the guest keeps running with no more hits.
    let a = counter(&vm, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert!(counter(&vm, 0) > a + 1000);
    vm.kill();
}

#[test]
fn a_guest_that_never_stops_is_torn_down_at_its_timeout_without_leaks() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let t0 = Instant::now();
    let vm = boot(&COUNT_PROGRAM, 2, Duration::from_millis(500));
    assert_eq!(vm.wait(), VmExit::Timeout);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "teardown took {took:?}");
    drop(vm);
    // Many VMs in one process leave no threads or fds behind.
    let rss_kib = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let (fds, threads, rss) = (count("/proc/self/fd"), count("/proc/self/task"), rss_kib());
    let t0 = Instant::now();
    for _ in 0..300 {
        let vm = boot(&COUNT_PROGRAM, 2, Duration::from_millis(2));
        assert_eq!(vm.wait(), VmExit::Timeout);
    }
    eprintln!("300 VMs booted and torn down in {:?}", t0.elapsed());
    assert_eq!(count("/proc/self/fd"), fds, "fds leaked");
    assert_eq!(count("/proc/self/task"), threads, "threads leaked");
    // 300 VMs of 4 MiB each: anything near that stayed would be a leak.
    let grown = rss_kib().saturating_sub(rss);
    eprintln!("RSS grew by {grown} KiB over 300 VMs");
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB over 300 VMs");
}

#[test]
fn an_emulation_failure_is_a_clear_error() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    // Ring 0: lock cmpxchg16b [rbx]; then power off through the exit port.
    let prog = [
        0xf0, 0x48, 0x0f, 0xc7, 0x0b, // lock cmpxchg16b [rbx]
        0x66, 0xba, 0x01, 0x05, // mov dx, 0x501
        0x31, 0xc0, // xor eax, eax
        0xee, // out dx, al
    ];
    let mut g = RawGuest::new(prog, 1);
    g.ring0 = true;
    let vm = RunningVm::boot_raw(&g, Duration::from_secs(30), Console::new(4096, None)).unwrap();
    match vm.wait() {
        // Hardware KVM runs it.
        VmExit::PowerOff => eprintln!("this host's KVM ran cmpxchg16b natively"),
        // A KVM that emulates ring 0 may not emulate it: the error must
        // say where, what, and what to do.
        VmExit::EngineError(e) => {
            assert!(e.contains("RIP 0x10000"), "{e}");
            assert!(e.contains("f0 48 0f c7 0b"), "{e}");
            assert!(e.contains("KTSTR_ENGINE=qemu"), "{e}");
            eprintln!("{e}");
        }
        other => panic!("unexpected end: {other:?}"),
    }
}

#[test]
fn frozen_time_is_hidden_from_the_guest_clock() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !kvm_usable() {
        return;
    }
    let vm = ktstr_vmm::kvm::KvmVm::boot_raw(
        &RawGuest::new(programs::COUNT, 2),
        Duration::from_secs(30),
        Console::new(4096, None),
    )
    .unwrap();
    let t0 = Instant::now();
    let c0 = vm.guest_clock_ns().unwrap();
    vm.stop(Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    vm.cont();
    let c1 = vm.guest_clock_ns().unwrap();
    let wall = t0.elapsed();
    let guest = Duration::from_nanos(c1.saturating_sub(c0));
    eprintln!("wall {wall:?}, guest clock advanced {guest:?} across a 300 ms freeze");
    assert!(
        guest + Duration::from_millis(250) < wall,
        "the guest clock ran while frozen: wall {wall:?}, guest {guest:?}"
    );
    vm.kill();
}
