//! Check results: [`AssertResult`] (pass/fail with named details and
//! numbers) and the standard checks over worker reports — not starved,
//! fairness spread, isolation, longest scheduling gap.

use ktstr_wire::worker::WorkerReport;
use serde::{Deserialize, Serialize};

/// One named check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detail {
    pub name: String,
    pub passed: bool,
    pub message: String,
}

/// The outcome of a test body or a set of checks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AssertResult {
    pub details: Vec<Detail>,
}

impl AssertResult {
    /// A passing result with no details.
    pub fn pass() -> Self {
        Self::default()
    }

    /// A single failed check.
    pub fn fail(name: &str, message: impl Into<String>) -> Self {
        let mut r = Self::default();
        r.check(name, false, message);
        r
    }

    /// Record a check.
    pub fn check(&mut self, name: &str, passed: bool, message: impl Into<String>) -> &mut Self {
        self.details.push(Detail {
            name: name.into(),
            passed,
            message: message.into(),
        });
        self
    }

    /// Fold another result in.
    pub fn merge(mut self, other: AssertResult) -> Self {
        self.details.extend(other.details);
        self
    }

    pub fn passed(&self) -> bool {
        self.details.iter().all(|d| d.passed)
    }

    /// A readable summary: every failed check with its numbers.
    pub fn summary(&self) -> String {
        let failed: Vec<String> = self
            .details
            .iter()
            .filter(|d| !d.passed)
            .map(|d| format!("FAILED {}: {}", d.name, d.message))
            .collect();
        if failed.is_empty() {
            format!("passed ({} checks)", self.details.len())
        } else {
            failed.join("\n")
        }
    }

    /// Every check with its verdict and measurement, one per line.
    pub fn details_text(&self) -> String {
        self.details
            .iter()
            .map(|d| {
                let v = if d.passed { "ok" } else { "FAILED" };
                format!("{v} {}: {}", d.name, d.message)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Thresholds for the standard checks.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Max (max-min)/mean of CPU time among equal workers.
    pub fairness_spread: f64,
    /// Longest allowed gap between two work iterations, ms.
    pub max_gap_ms: u64,
    /// How far a cgroup's CPU use may sit from its `cpu.max` quota, in
    /// CPUs (0.05 = five percentage points of one CPU).
    pub quota_tolerance: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            fairness_spread: 0.15,
            max_gap_ms: 2000,
            quota_tolerance: 0.05,
        }
    }
}

/// Every worker made progress.
pub fn not_starved(reports: &[WorkerReport]) -> AssertResult {
    let starved: Vec<i32> = reports
        .iter()
        .filter(|r| r.work_units == 0)
        .map(|r| r.pid)
        .collect();
    let mut a = AssertResult::default();
    a.check(
        "not_starved",
        starved.is_empty() && !reports.is_empty(),
        if reports.is_empty() {
            "no worker reports".to_string()
        } else if starved.is_empty() {
            format!(
                "all {} workers progressed (min {} units)",
                reports.len(),
                reports.iter().map(|r| r.work_units).min().unwrap_or(0)
            )
        } else {
            format!("starved workers (pids): {starved:?}")
        },
    );
    a
}

/// CPU time among equal workers is within `spread` of the mean.
pub fn fairness(reports: &[WorkerReport], spread: f64) -> AssertResult {
    let v: Vec<f64> = reports.iter().map(|r| r.cpu_time_ns as f64).collect();
    let mut a = AssertResult::default();
    if v.is_empty() {
        a.check("fairness", false, "no worker reports");
        return a;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let (min, max) = v
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let s = if mean > 0.0 {
        (max - min) / mean
    } else {
        f64::INFINITY
    };
    let mut detail = format!(
        "CPU-time spread {:.1}% (min {:.0} ms, max {:.0} ms, mean {:.0} ms; threshold {:.0}%)",
        s * 100.0,
        min / 1e6,
        max / 1e6,
        mean / 1e6,
        spread * 100.0
    );
    if s > spread {
        // Which workers, and where they ran: the first question asked.
        for r in reports.iter().take(32) {
            detail += &format!(
                "\n  worker {} pid {}: {} ms CPU of {} ms wall, CPUs {:?}, {} migrations",
                r.index,
                r.pid,
                r.cpu_time_ns / 1_000_000,
                r.wall_time_ns / 1_000_000,
                r.cpus,
                r.migrations
            );
        }
    }
    a.check("fairness", s <= spread, detail);
    a
}

/// Workers ran only on `allowed` CPUs.
pub fn isolation(reports: &[WorkerReport], allowed: &[u32]) -> AssertResult {
    let bad: Vec<(i32, Vec<u32>)> = reports
        .iter()
        .map(|r| {
            (
                r.pid,
                r.cpus
                    .iter()
                    .copied()
                    .filter(|c| !allowed.contains(c))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    let mut a = AssertResult::default();
    a.check(
        "isolation",
        bad.is_empty(),
        if bad.is_empty() {
            format!("{} workers stayed on CPUs {allowed:?}", reports.len())
        } else {
            format!("workers ran outside {allowed:?}: {bad:?}")
        },
    );
    a
}

/// A cgroup limited by `cpu.max` to `quota` CPUs used `quota` ±
/// `tolerance` CPUs over the run: its workers' CPU time summed, over the
/// longest worker's wall time. A run too short to measure (under 1 s of
/// wall time) fails as unjudgeable, never passes.
pub fn cpu_quota(reports: &[WorkerReport], quota: f64, tolerance: f64) -> AssertResult {
    let mut a = AssertResult::default();
    let wall = reports.iter().map(|r| r.wall_time_ns).max().unwrap_or(0);
    if wall < 1_000_000_000 {
        a.check(
            "cpu_quota",
            false,
            format!(
                "cannot judge the quota: the workers ran {} ms (need >= 1 s)",
                wall / 1_000_000
            ),
        );
        return a;
    }
    let cpu: u64 = reports
        .iter()
        .map(|r| r.cpu_time_ns)
        .fold(0, u64::saturating_add);
    let used = cpu as f64 / wall as f64;
    let ok = (used - quota).abs() <= tolerance;
    a.check(
        "cpu_quota",
        ok,
        format!(
            "{} workers used {:.1}% of one CPU under a cpu.max quota of {:.1}% (tolerance ±{:.1} points; {} ms CPU in {} ms)",
            reports.len(),
            used * 100.0,
            quota * 100.0,
            tolerance * 100.0,
            cpu / 1_000_000,
            wall / 1_000_000
        ),
    );
    a
}

/// The longest gap between work iterations stays under `max_ms`.
pub fn max_gap(reports: &[WorkerReport], max_ms: u64) -> AssertResult {
    let worst = reports.iter().map(|r| r.max_gap_ns).max().unwrap_or(0);
    let mut a = AssertResult::default();
    a.check(
        "max_gap",
        worst <= max_ms * 1_000_000,
        format!(
            "longest scheduling gap {:.1} ms (threshold {max_ms} ms)",
            worst as f64 / 1e6
        ),
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(pid: i32, units: u64, cpu_ms: u64, cpus: &[u32]) -> WorkerReport {
        WorkerReport {
            pid,
            work_units: units,
            cpu_time_ns: cpu_ms * 1_000_000,
            cpus: cpus.to_vec(),
            max_gap_ns: 5_000_000,
            ..Default::default()
        }
    }

    fn timed(cpu_ms: u64, wall_ms: u64) -> WorkerReport {
        WorkerReport {
            cpu_time_ns: cpu_ms * 1_000_000,
            wall_time_ns: wall_ms * 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn quota_is_judged_on_the_cgroup_total() {
        // Two workers sharing a 25% quota over 4 s: 1000 ms in total.
        let ok = [timed(480, 4000), timed(530, 4000)];
        let r = cpu_quota(&ok, 0.25, 0.05);
        assert!(r.passed(), "{}", r.details_text());
        assert!(r.details_text().contains("25.2%"), "{}", r.details_text());
        // Unthrottled: each worker had a whole CPU.
        let over = [timed(4000, 4000), timed(3900, 4000)];
        assert!(!cpu_quota(&over, 0.25, 0.05).passed());
        let under = [timed(300, 4000)];
        assert!(!cpu_quota(&under, 0.25, 0.05).passed());
        let short = cpu_quota(&[timed(100, 500)], 0.25, 0.05);
        assert!(!short.passed() && short.summary().contains("cannot judge"));
        assert!(!cpu_quota(&[], 0.25, 0.05).passed());
    }

    #[test]
    fn checks_pass_and_fail_with_numbers() {
        let fair = [rep(1, 10, 1000, &[0]), rep(2, 11, 1050, &[1])];
        assert!(not_starved(&fair).passed());
        assert!(fairness(&fair, 0.15).passed());
        let unfair = [rep(1, 10, 1000, &[0]), rep(2, 0, 100, &[1])];
        let n = not_starved(&unfair);
        assert!(
            !n.passed() && n.summary().contains("[2]"),
            "{}",
            n.summary()
        );
        let f = fairness(&unfair, 0.15);
        assert!(
            !f.passed() && f.summary().contains("spread"),
            "{}",
            f.summary()
        );
        assert!(isolation(&fair, &[0, 1]).passed());
        let i = isolation(&fair, &[0]);
        assert!(
            !i.passed() && i.summary().contains("[1]"),
            "{}",
            i.summary()
        );
        assert!(max_gap(&fair, 10).passed());
        assert!(!max_gap(&fair, 1).passed());
        assert!(!not_starved(&[]).passed());
        assert!(
            AssertResult::pass()
                .merge(AssertResult::fail("x", "y"))
                .summary()
                .contains("FAILED x: y")
        );
    }
}
