//! Timer wake-ups: cyclictest-style absolute-deadline sleeps.

use super::meter::{Meter, now_ns};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Sleep to absolute deadlines `interval_us` apart; each wake-up's
/// lateness is a sample.
pub(super) fn timer_latency(interval_us: u64, m: &mut Meter, stop: &AtomicBool) {
    let step = interval_us.clamp(10, 1_000_000) * 1000;
    let mut next = now_ns(libc::CLOCK_MONOTONIC) + step;
    while !stop.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: (next / 1_000_000_000) as libc::time_t,
            tv_nsec: (next % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: valid timespec; no remainder needed with TIMER_ABSTIME.
        unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        let now = now_ns(libc::CLOCK_MONOTONIC);
        m.sample(now.saturating_sub(next));
        // Deadlines missed by more than a period are skipped, as
        // cyclictest does, so one long stall is one sample.
        next = next
            .saturating_add(step)
            .max(now.saturating_sub(now % step) + step);
        m.r.iterations += 1;
        m.tick();
        // The sleep itself is not a gap.
        m.last = Instant::now();
    }
}
