//! Scenarios (guest side): the test [`Ctx`], cgroup definitions, and
//! steps of operations held for a while — including cold-path kernel ops
//! that travel to the host, which freezes the VM to apply them.

use crate::assert::AssertResult;
use crate::workload::{WorkType, WorkloadConfig, WorkloadHandle};
use ktstr_vmm::Topology;
use ktstr_wire::{KernelOp, KernelOpReplyPayload, RelayClient};
use std::sync::Mutex;
use std::time::Duration;

/// What a test body gets: its duration, the topology, CPU sets per LLC
/// and node, and a channel for requests to the host.
pub struct Ctx {
    pub duration: Duration,
    pub topology: Topology,
    /// CPU ids per LLC index.
    pub llc_cpus: Vec<Vec<u32>>,
    /// CPU ids per NUMA node.
    pub node_cpus: Vec<Vec<u32>>,
    relay: Mutex<Option<RelayClient>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("duration", &self.duration)
            .field("topology", &self.topology)
            .field("llc_cpus", &self.llc_cpus)
            .finish()
    }
}

impl Ctx {
    /// The context inside a guest (from the environment ktstr sets).
    pub fn from_guest_env() -> Self {
        let ms = std::env::var("KTSTR_DURATION_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let topology = std::env::var("KTSTR_TOPOLOGY")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(Topology::flat(1));
        let mut llc_cpus: Vec<Vec<u32>> = Vec::new();
        let mut node_cpus: Vec<Vec<u32>> = Vec::new();
        for cpu in 0..1024u32 {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}");
            if std::fs::metadata(&base).is_err() {
                break;
            }
            let pkg = std::fs::read_to_string(format!("{base}/topology/physical_package_id"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let node = (0..64usize)
                .find(|n| std::fs::metadata(format!("{base}/node{n}")).is_ok())
                .unwrap_or(0);
            // One LLC per socket in ktstr's topologies.
            if llc_cpus.len() <= pkg {
                llc_cpus.resize(pkg + 1, Vec::new());
            }
            llc_cpus[pkg].push(cpu);
            if node_cpus.len() <= node {
                node_cpus.resize(node + 1, Vec::new());
            }
            node_cpus[node].push(cpu);
        }
        Self {
            duration: Duration::from_millis(ms),
            topology,
            llc_cpus,
            node_cpus,
            relay: Mutex::new(None),
        }
    }

    /// Send a batch of kernel ops to the host; one reply per op.
    pub fn kernel_ops(&self, ops: Vec<KernelOp>) -> anyhow::Result<Vec<KernelOpReplyPayload>> {
        let mut g = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(RelayClient::from_env().map_err(anyhow::Error::msg)?);
        }
        let c = g.as_mut().ok_or_else(|| anyhow::anyhow!("no relay"))?;
        c.kernel_ops(ops).map_err(anyhow::Error::msg)
    }

    /// Every CPU of the guest.
    pub fn all_cpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.llc_cpus.iter().flatten().copied().collect();
        v.sort_unstable();
        v
    }
}

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

fn create_cgroup(name: &str, cpuset: Option<&[u32]>) -> anyhow::Result<()> {
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
    pub reports: Vec<crate::workload::WorkerReport>,
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
    let t = crate::assert::Thresholds::default();
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

/// Operations a step applies.
pub mod ops {
    use super::*;
    pub use ktstr_wire::{KernelOp, KernelTarget, KernelValue, KernelValueWidth};

    /// One operation.
    #[derive(Debug, Clone)]
    pub enum Op {
        AddCgroup {
            name: String,
            cpuset: Option<Vec<u32>>,
        },
        RemoveCgroup {
            name: String,
        },
        SetCpuset {
            name: String,
            cpus: Vec<u32>,
        },
        SpawnWorkers(WorkloadConfig),
        WriteKernelCold {
            target: KernelTarget,
            value: KernelValue,
        },
        ReadKernelCold {
            tag: String,
            target: KernelTarget,
            width: KernelValueWidth,
        },
    }

    impl Op {
        pub fn add_cgroup(name: &str, cpuset: Option<Vec<u32>>) -> Self {
            Op::AddCgroup {
                name: name.into(),
                cpuset,
            }
        }
        pub fn remove_cgroup(name: &str) -> Self {
            Op::RemoveCgroup { name: name.into() }
        }
        pub fn set_cpuset(name: &str, cpus: Vec<u32>) -> Self {
            Op::SetCpuset {
                name: name.into(),
                cpus,
            }
        }
        pub fn spawn_workers(cfg: WorkloadConfig) -> Self {
            Op::SpawnWorkers(cfg)
        }
        pub fn write_kernel_cold(target: KernelTarget, value: KernelValue) -> Self {
            Op::WriteKernelCold { target, value }
        }
        pub fn read_kernel_cold(tag: &str, target: KernelTarget, width: KernelValueWidth) -> Self {
            Op::ReadKernelCold {
                tag: tag.into(),
                target,
                width,
            }
        }
    }

    /// How long a step holds after its ops.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub enum HoldSpec {
        /// The whole test duration.
        Full,
        Fixed(Duration),
        /// A fraction of the test duration.
        Frac(f64),
    }

    impl HoldSpec {
        pub const FULL: HoldSpec = HoldSpec::Full;
        fn duration(&self, ctx: &Ctx) -> Duration {
            match self {
                HoldSpec::Full => ctx.duration,
                HoldSpec::Fixed(d) => *d,
                HoldSpec::Frac(f) => ctx.duration.mul_f64(f.clamp(0.0, 1.0)),
            }
        }
    }

    /// Ops then a hold.
    #[derive(Debug, Clone)]
    pub struct Step {
        pub ops: Vec<Op>,
        pub hold: HoldSpec,
    }

    impl Step {
        pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
            Self { ops, hold }
        }
    }

    /// Apply each step's ops in order (consecutive kernel ops go to the
    /// host as one batch, under one freeze), then hold. Kernel-op replies
    /// are recorded host-side for `post_vm`; a refused op is reported here
    /// as a failed detail too.
    pub fn execute_steps(ctx: &Ctx, steps: Vec<Step>) -> anyhow::Result<AssertResult> {
        let mut a = AssertResult::pass();
        let mut workloads = Vec::new();
        for (si, step) in steps.into_iter().enumerate() {
            let mut batch: Vec<KernelOp> = Vec::new();
            let flush = |batch: &mut Vec<KernelOp>, a: &mut AssertResult| -> anyhow::Result<()> {
                if batch.is_empty() {
                    return Ok(());
                }
                let ops = std::mem::take(batch);
                let replies = ctx.kernel_ops(ops.clone())?;
                for (op, r) in ops.iter().zip(replies) {
                    let name = match op {
                        KernelOp::Read { tag, .. } => format!("step {si} read {tag}"),
                        KernelOp::Write { target, .. } => format!("step {si} write {target:?}"),
                    };
                    a.check(&name, r.success, r.reason);
                }
                Ok(())
            };
            for op in step.ops {
                match op {
                    Op::WriteKernelCold { target, value } => {
                        batch.push(KernelOp::Write { target, value })
                    }
                    Op::ReadKernelCold { tag, target, width } => {
                        batch.push(KernelOp::Read { tag, target, width })
                    }
                    other => {
                        flush(&mut batch, &mut a)?;
                        match other {
                            Op::AddCgroup { name, cpuset } => {
                                create_cgroup(&name, cpuset.as_deref())?
                            }
                            Op::RemoveCgroup { name } => {
                                let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{name}"));
                            }
                            Op::SetCpuset { name, cpus } => create_cgroup(&name, Some(&cpus))?,
                            Op::SpawnWorkers(cfg) => {
                                let mut h = WorkloadHandle::spawn(&cfg)?;
                                h.start();
                                workloads.push(h);
                            }
                            _ => {}
                        }
                    }
                }
            }
            flush(&mut batch, &mut a)?;
            std::thread::sleep(step.hold.duration(ctx));
        }
        for h in workloads {
            a = a.merge(crate::assert::not_starved(&h.stop_and_collect()));
        }
        Ok(a)
    }
}
