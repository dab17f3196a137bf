//! Signals and preemption: real-time members taking CPUs from fair ones
//! (`RtStarvation`, `PreemptStorm`) and pairs interrupting each other
//! with signals (`SignalStorm`). Member policies are applied by the
//! caller (see `member_policy` in the parent module).

use super::cpu::spin_iters;
use super::group::Group;
use super::meter::Meter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Spin `burst_iters` per work unit, never yielding (every member; the
/// FIFO ones starve the fair ones that share their CPUs).
pub(super) fn spin_bursts(burst_iters: u64, m: &mut Meter, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        spin_iters(burst_iters);
        m.r.iterations += 1;
        m.tick();
    }
}

/// Member 0 (FIFO 1): spin `rt_burst_iters`, sleep `rt_sleep_us`, so it
/// preempts the fair spinners once a period; the others spin.
pub(super) fn preempt_storm(
    g: &Group,
    rt_burst_iters: u64,
    rt_sleep_us: u64,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    if g.member != 0 {
        return spin_bursts(rt_burst_iters, m, stop);
    }
    let want = Duration::from_micros(rt_sleep_us);
    while !stop.load(Ordering::Relaxed) {
        spin_iters(rt_burst_iters);
        let t = Instant::now();
        std::thread::sleep(want);
        m.sample(t.elapsed().saturating_sub(want).as_nanos() as u64);
        m.count("preemptions");
        m.r.iterations += 1;
        m.tick();
        m.last = Instant::now();
    }
}

/// SIGUSR2 deliveries to this process.
static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr2(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Count SIGUSR2 instead of dying of it. Installed before the group
/// meets, so no partner's signal can arrive first.
pub(super) fn install_sigusr2_counter() {
    // SAFETY: a zeroed sigaction with a handler that only touches an
    // atomic is async-signal-safe; SA_RESTART keeps our syscalls going.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
}

/// Pairs: `tkill` the partner's main thread with SIGUSR2
/// `signals_per_iter` times, then spin `work_iters`.
pub(super) fn signal_storm(
    g: &Group,
    signals_per_iter: u64,
    work_iters: u64,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let partner = g.pid(1 - g.member.min(1));
    if partner <= 0 {
        return m.r.errors.push("SignalStorm: partner pid unknown".into());
    }
    let received0 = SIGNALS.load(Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..signals_per_iter {
            // SAFETY: plain syscall; the partner's pid is its main tid.
            if unsafe { libc::syscall(libc::SYS_tkill, partner, libc::SIGUSR2) } == 0 {
                m.count("signals_sent");
            }
        }
        spin_iters(work_iters);
        m.r.iterations += 1;
        m.tick();
    }
    m.add(
        "signals_received",
        SIGNALS.load(Ordering::Relaxed).saturating_sub(received0),
    );
}
