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
}

impl CgroupDef {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            workers: 1,
            cpuset: None,
            work_type: WorkType::SpinWait,
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
        if matches!(d.work_type, WorkType::SpinWait) && reports.len() > 1 {
            a = a.merge(crate::assert::fairness(&reports, t.fairness_spread));
        }
        if let Some(c) = &d.cpuset {
            a = a.merge(crate::assert::isolation(&reports, c));
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
                .workers(n)
                .work_type(WorkType::PipeIo),
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
