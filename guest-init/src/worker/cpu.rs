//! CPU-bound loops: spinning, yielding, cache pressure and `Sequence`
//! phases.

use super::meter::Meter;
use ktstr_wire::worker::WorkPhase;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(super) fn spin_iters(n: u64) {
    let mut x = 0u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_add(i));
    }
}

/// Strided read-modify-write passes over a private buffer.
pub(super) fn cache_pressure(size_kib: usize, stride: usize, m: &mut Meter, stop: &AtomicBool) {
    let mut buf = vec![0u8; size_kib.saturating_mul(1024)];
    let stride = stride.max(1);
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0;
        while i < buf.len() {
            buf[i] = buf[i].wrapping_add(1);
            i += stride;
        }
        std::hint::black_box(&mut buf);
        m.r.iterations += 1;
        m.tick();
    }
}

pub(super) fn spin_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        spin_iters(2000);
        m.tick();
    }
}

pub(super) fn yield_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        m.tick();
    }
}

pub(super) fn phase(p: &WorkPhase, m: &mut Meter, stop: &AtomicBool) {
    match p {
        WorkPhase::Spin(d) => spin_for(*d, m, stop),
        WorkPhase::Sleep(d) => m.sleep(*d, stop),
        WorkPhase::Yield(d) => yield_for(*d, m, stop),
    }
}
