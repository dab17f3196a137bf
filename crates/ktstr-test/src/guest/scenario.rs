//! Scenarios (guest side): cgroup definitions, running them for the
//! test's duration with the standard checks, and the built-in scenarios of
//! `ktstr run`.

use super::ctx::Ctx;
use super::workload::{WorkType, WorkloadConfig, WorkloadHandle};
use crate::assert::AssertResult;

/// A cgroup with workers.
#[derive(Debug, Clone)]
pub struct CgroupDef {
    pub name: String,
    pub workers: u32,
    pub cpuset: Option<Vec<u32>>,
    pub work_type: WorkType,
    /// cgroup v2 `cpu` controller knobs.
    pub cpu: CpuLimits,
}

/// The `cpu` controller knobs of a cgroup (written when set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLimits {
    /// `cpu.max` quota in µs per period; `None` writes `max` (unlimited)
    /// when `max_period_us` is set, and nothing otherwise.
    pub max_quota_us: Option<u64>,
    /// `cpu.max` period in µs (0: leave `cpu.max` alone).
    pub max_period_us: u64,
    /// `cpu.weight` (1..=10000; the kernel's default is 100).
    pub weight: Option<u32>,
}

impl CpuLimits {
    /// The `cpu.max` line to write, if any.
    pub fn cpu_max_line(&self) -> Option<String> {
        if self.max_period_us == 0 {
            return None;
        }
        Some(match self.max_quota_us {
            Some(q) => format!("{q} {}", self.max_period_us),
            None => format!("max {}", self.max_period_us),
        })
    }

    /// The CPU share the quota allows, in CPUs (0.25 = a quarter of one).
    pub fn quota_cpus(&self) -> Option<f64> {
        match (self.max_quota_us, self.max_period_us) {
            (Some(q), p) if p > 0 => Some(q as f64 / p as f64),
            _ => None,
        }
    }
}

/// The period `cpu_quota_pct` uses (the kernel's default, 100 ms).
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

impl CgroupDef {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            workers: 1,
            cpuset: None,
            work_type: WorkType::SpinWait,
            cpu: CpuLimits::default(),
        }
    }
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }
    pub fn cpuset(mut self, cpus: Vec<u32>) -> Self {
        self.cpuset = Some(cpus);
        self
    }
    pub fn work_type(mut self, w: WorkType) -> Self {
        self.work_type = w;
        self
    }
    /// `cpu.max` as a percentage of one CPU over the default 100 ms period
    /// (100 = one whole CPU, 250 = two and a half). Panics on 0, which the
    /// kernel would refuse (a quota must be at least 1 ms).
    pub fn cpu_quota_pct(mut self, pct: u32) -> Self {
        assert!(pct > 0, "cpu_quota_pct(0): a quota must be positive");
        self.cpu.max_quota_us = Some(u64::from(pct) * DEFAULT_CPU_PERIOD_US / 100);
        self.cpu.max_period_us = DEFAULT_CPU_PERIOD_US;
        self
    }
    /// `cpu.max` as quota and period. Panics outside the kernel's range
    /// (quota >= 1 ms, 1 ms <= period <= 1 s).
    pub fn cpu_quota(mut self, quota: std::time::Duration, period: std::time::Duration) -> Self {
        let (q, p) = (quota.as_micros(), period.as_micros());
        assert!(
            q >= 1000,
            "cpu_quota: quota {quota:?} is below the kernel's 1 ms minimum"
        );
        assert!(
            (1000..=1_000_000).contains(&p),
            "cpu_quota: period {period:?} is outside the kernel's 1 ms ..= 1 s"
        );
        self.cpu.max_quota_us = Some(u64::try_from(q).unwrap_or(u64::MAX));
        self.cpu.max_period_us = u64::try_from(p).unwrap_or(u64::MAX);
        self
    }
    /// `cpu.max` = `max` (no quota); the weight is kept.
    pub fn cpu_unlimited(mut self) -> Self {
        self.cpu.max_quota_us = None;
        self.cpu.max_period_us = DEFAULT_CPU_PERIOD_US;
        self
    }
    /// `cpu.weight` (1..=10000). Panics outside that range.
    pub fn cpu_weight(mut self, w: u32) -> Self {
        assert!(
            (1..=10_000).contains(&w),
            "cpu_weight({w}): cpu.weight takes 1..=10000"
        );
        self.cpu.weight = Some(w);
        self
    }
}

fn cpulist(c: &[u32]) -> String {
    c.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

pub(crate) fn create_cgroup(name: &str, cpuset: Option<&[u32]>) -> anyhow::Result<()> {
    let dir = format!("/sys/fs/cgroup/{name}");
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("mkdir {dir}: {e}"))?;
    if let Some(c) = cpuset {
        std::fs::write(format!("{dir}/cpuset.cpus"), cpulist(c))
            .map_err(|e| anyhow::anyhow!("{dir}/cpuset.cpus: {e}"))?;
    }
    Ok(())
}

/// Write a cgroup's `cpu` controller knobs; an error names the file and
/// what the kernel needs for it.
pub(crate) fn apply_cpu_limits(name: &str, l: &CpuLimits) -> anyhow::Result<()> {
    let dir = format!("/sys/fs/cgroup/{name}");
    let write = |file: &str, v: String| {
        std::fs::write(format!("{dir}/{file}"), &v).map_err(|e| {
            anyhow::anyhow!(
                "{dir}/{file} = {v:?}: {e} (needs the cpu controller in the parent's \
                 cgroup.subtree_control; cpu.max needs CONFIG_CFS_BANDWIDTH)"
            )
        })
    };
    if let Some(line) = l.cpu_max_line() {
        write("cpu.max", line)?;
    }
    if let Some(w) = l.weight {
        write("cpu.weight", w.to_string())?;
    }
    Ok(())
}

/// Per-cgroup reports from a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CgroupReport {
    pub name: String,
    pub cpuset: Option<Vec<u32>>,
    pub reports: Vec<super::workload::WorkerReport>,
}

/// Run every cgroup's workers for the context's duration; check that no
/// worker starved, that equal workers were fair, and that cpuset-pinned
/// cgroups stayed on their CPUs.
pub fn execute_defs(ctx: &Ctx, defs: Vec<CgroupDef>) -> anyhow::Result<AssertResult> {
    Ok(run_defs(ctx, &defs)?.1)
}

/// Like [`execute_defs`], also returning the raw reports.
pub fn run_defs(
    ctx: &Ctx,
    defs: &[CgroupDef],
) -> anyhow::Result<(Vec<CgroupReport>, AssertResult)> {
    run_defs_with(ctx, defs, &crate::assert::Thresholds::default())
}

/// Like [`run_defs`], judged against the given thresholds.
pub fn run_defs_with(
    ctx: &Ctx,
    defs: &[CgroupDef],
    t: &crate::assert::Thresholds,
) -> anyhow::Result<(Vec<CgroupReport>, AssertResult)> {
    let mut handles = Vec::new();
    for d in defs {
        create_cgroup(&d.name, d.cpuset.as_deref())?;
        apply_cpu_limits(&d.name, &d.cpu)?;
        let cfg = WorkloadConfig {
            num_workers: d.workers,
            work_type: d.work_type.clone(),
            cgroup: d.name.clone(),
            ..Default::default()
        };
        handles.push((d, WorkloadHandle::spawn(&cfg)?));
    }
    for (_, h) in &mut handles {
        h.start();
    }
    std::thread::sleep(ctx.duration);
    let mut out = Vec::new();
    let mut a = AssertResult::pass();
    for (d, h) in handles {
        let reports = h.stop_and_collect();
        a = a.merge(crate::assert::not_starved(&reports));
        // Under a quota, CFS bandwidth hands runtime out in per-CPU slices
        // (5 ms), so the split among a capped cgroup's workers is lumpy by
        // design (measured 18-27 % over 500 ms each); the quota check
        // judges such a cgroup instead.
        if matches!(d.work_type, WorkType::SpinWait)
            && reports.len() > 1
            && d.cpu.quota_cpus().is_none()
        {
            a = a.merge(crate::assert::fairness(&reports, t.fairness_spread));
        }
        if let Some(c) = &d.cpuset {
            a = a.merge(crate::assert::isolation(&reports, c));
        }
        if let Some(q) = d.cpu.quota_cpus() {
            a = a.merge(crate::assert::cpu_quota(&reports, q, t.quota_tolerance));
        }
        out.push(CgroupReport {
            name: d.name.clone(),
            cpuset: d.cpuset.clone(),
            reports,
        });
    }
    Ok((out, a))
}

/// The scenarios `ktstr run --scenario` knows.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "steady",
        "two spinning workers per CPU in one cgroup: starvation and fairness",
    ),
    (
        "cgroups",
        "two cgroups pinned to disjoint CPU halves, two spinners per CPU each: isolation and fairness",
    ),
    (
        "wake-chains",
        "pairs of tasks waking each other through pipes: wake latency and progress",
    ),
];

/// The cgroups of a built-in scenario.
pub fn builtin_defs(name: &str, ctx: &Ctx) -> anyhow::Result<Vec<CgroupDef>> {
    let cpus = ctx.all_cpus();
    let n = cpus.len().max(1) as u32;
    Ok(match name {
        "steady" => vec![CgroupDef::named("steady").workers(2 * n)],
        "cgroups" => {
            let half = cpus.len() / 2;
            let (a, b) = if half == 0 {
                (cpus.clone(), cpus.clone())
            } else {
                (cpus[..half].to_vec(), cpus[half..].to_vec())
            };
            let (na, nb) = (2 * a.len() as u32, 2 * b.len() as u32);
            vec![
                CgroupDef::named("cg_a").workers(na).cpuset(a),
                CgroupDef::named("cg_b").workers(nb).cpuset(b),
            ]
        }
        "wake-chains" => vec![
            CgroupDef::named("chains")
                .workers(2 * n)
                .work_type(WorkType::pipe_io(1024)),
        ],
        other => anyhow::bail!(
            "unknown scenario `{other}`; built-in: {}",
            BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// What a built-in scenario run reports back to the host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub duration_ms: u64,
    pub cgroups: Vec<CgroupReport>,
    pub checks: AssertResult,
}

/// Guest side of `ktstr run`: run a built-in scenario and report it.
pub fn run_builtin(name: &str) -> anyhow::Result<ScenarioReport> {
    let ctx = Ctx::from_guest_env();
    let defs = builtin_defs(name, &ctx)?;
    let (cgroups, checks) = run_defs(&ctx, &defs)?;
    Ok(ScenarioReport {
        scenario: name.into(),
        duration_ms: ctx.duration.as_millis() as u64,
        cgroups,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_knobs_write_what_the_kernel_reads() {
        let d = CgroupDef::named("q").cpu_quota_pct(25);
        assert_eq!(d.cpu.cpu_max_line().as_deref(), Some("25000 100000"));
        assert_eq!(d.cpu.quota_cpus(), Some(0.25));
        let d = d.cpu_unlimited().cpu_weight(200);
        assert_eq!(d.cpu.cpu_max_line().as_deref(), Some("max 100000"));
        assert_eq!((d.cpu.quota_cpus(), d.cpu.weight), (None, Some(200)));
        let d =
            CgroupDef::named("q").cpu_quota(Duration::from_millis(5), Duration::from_millis(10));
        assert_eq!(d.cpu.cpu_max_line().as_deref(), Some("5000 10000"));
        assert_eq!(CgroupDef::named("q").cpu.cpu_max_line(), None);
        assert_eq!(
            CgroupDef::named("q").cpu_quota_pct(250).cpu.quota_cpus(),
            Some(2.5)
        );
    }

    #[test]
    #[should_panic(expected = "1..=10000")]
    fn weight_out_of_range_is_refused() {
        let _ = CgroupDef::named("q").cpu_weight(0);
    }

    #[test]
    #[should_panic(expected = "1 ms minimum")]
    fn tiny_quota_is_refused() {
        let _ =
            CgroupDef::named("q").cpu_quota(Duration::from_micros(10), Duration::from_millis(100));
    }
}
