//! Per-iteration measurement of a worker: clocks, the kernel's schedstat,
//! the [`Meter`] every work loop ticks, and latency percentiles.

use ktstr_wire::worker::WorkerReport;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(super) fn now_ns(clock: libc::clockid_t) -> u64 {
    // SAFETY: zeroed timespec is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(super) fn cpu() -> u32 {
    // SAFETY: no arguments.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

/// The kernel's `sched_info` of every thread of this process: (cpu time,
/// run delay, times scheduled in), from `/proc/self/task/*/schedstat`.
/// Threads that exited in between are lost, which is why workers sample
/// while their threads are alive.
pub(super) fn schedstat() -> (u64, u64, u64) {
    let mut sum = (0u64, 0u64, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return sum;
    };
    for e in dir.flatten().take(4096) {
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        let v: Vec<u64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [a, b, c] = v[..] {
            sum.0 = sum.0.saturating_add(a);
            sum.1 = sum.1.saturating_add(b);
            sum.2 = sum.2.saturating_add(c);
        }
    }
    sum
}

/// The most wake-latency samples kept (the rest are counted).
const MAX_SAMPLES: usize = 100_000;

/// Per-iteration bookkeeping.
pub(super) struct Meter {
    pub(super) start: Instant,
    pub(super) last: Instant,
    pub(super) last_cpu: u32,
    pub(super) r: WorkerReport,
    pub(super) lat: Vec<u64>,
}

impl Meter {
    pub(super) fn tick(&mut self) {
        let now = Instant::now();
        let gap = (now - self.last).as_nanos() as u64;
        let c = cpu();
        if gap > self.r.max_gap_ns {
            self.r.max_gap_ns = gap;
            self.r.max_gap_cpu = c;
            self.r.max_gap_at_ns = (now - self.start).as_nanos() as u64;
        }
        self.last = now;
        self.r.work_units += 1;
        if c != self.last_cpu {
            self.r.migrations += 1;
            self.last_cpu = c;
        }
        if !self.r.cpus.contains(&c) {
            self.r.cpus.push(c);
        }
    }

    pub(super) fn sleep(&mut self, d: Duration, stop: &AtomicBool) {
        // Sleep in slices so a stop is honoured promptly.
        let end = Instant::now() + d;
        while !stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let want = left.min(Duration::from_millis(50));
            let t = Instant::now();
            std::thread::sleep(want);
            let late = t.elapsed().saturating_sub(want);
            self.sample(late.as_nanos() as u64);
        }
        // A sleep is a gap we asked for: do not count it as starvation.
        self.last = Instant::now();
    }

    /// Record one wake-latency sample.
    pub(super) fn sample(&mut self, ns: u64) {
        self.r.wake_sample_total += 1;
        if self.lat.len() < MAX_SAMPLES {
            self.lat.push(ns);
        }
    }

    pub(super) fn count(&mut self, name: &str) {
        self.add(name, 1);
    }

    /// Add `n` to work-type counter `name`.
    pub(super) fn add(&mut self, name: &str, n: u64) {
        match self.r.counters.iter_mut().find(|(c, _)| c == name) {
            Some((_, v)) => *v = v.saturating_add(n),
            None => self.r.counters.push((name.to_string(), n)),
        }
    }
}

/// p50, p90, p99, p99.9 and max of the samples (empty for none).
pub(super) fn percentiles(v: &mut [u64]) -> Vec<u64> {
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_unstable();
    let n = v.len();
    let at = |per_mille: usize| v[(n * per_mille / 1000).min(n - 1)];
    vec![at(500), at(900), at(990), at(999), v[n - 1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::cpu::spin_iters;

    #[test]
    fn percentiles_are_monotone() {
        assert!(percentiles(&mut []).is_empty());
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let p = percentiles(&mut v);
        assert_eq!(p, vec![501, 901, 991, 1000, 1000]);
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(percentiles(&mut [7]), vec![7; 5]);
    }

    #[test]
    fn schedstat_of_this_process_moves() {
        let a = schedstat();
        spin_iters(5_000_000);
        let b = schedstat();
        assert!(b.0 >= a.0 && b.2 >= a.2, "{a:?} -> {b:?}");
    }
}
