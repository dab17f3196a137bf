//! Steps of operations held for a while (guest side): cgroup changes,
//! worker spawns, and cold-path kernel ops that travel to the host, which
//! freezes the VM to apply them.

use super::ctx::Ctx;
use super::scenario::create_cgroup;
use super::workload::{WorkloadConfig, WorkloadHandle};
use crate::assert::AssertResult;
pub use ktstr_wire::{KernelOp, KernelTarget, KernelValue, KernelValueWidth};
use std::time::Duration;

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
                        Op::AddCgroup { name, cpuset } => create_cgroup(&name, cpuset.as_deref())?,
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
