//! Cold-path kernel operations on a frozen guest: resolve a
//! [`KernelTarget`] to an address and a field size, validate, then read or
//! write. A task-field write passes every validation layer before memory
//! is touched, and a refusal names the first layer that refused.
#![deny(clippy::arithmetic_side_effects)]

use crate::helpers::{for_each_scx_task, for_each_task};
use crate::kernel::{Kernel, KernelError, field_addr};
use crate::mem::PhysMem;
use crate::offsets::Offsets;
use ktstr_wire::{
    KernelOp, KernelOpReplyPayload, KernelOpValue, KernelTarget, KernelValue, KernelValueWidth,
};

/// `SCHED_NORMAL`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_EXT` (uapi sched.h):
/// the policies a task managed by sched_ext can have (the first three
/// when the scheduler switched all fair tasks).
pub const SCX_POLICIES: [u32; 4] = [0, 3, 5, 7];
/// `PF_EXITING` in `task_struct.flags`.
pub const PF_EXITING: u32 = 0x4;
/// `/proc/<pid>/stat` reports times in USER_HZ (100 on x86) ticks.
pub const USER_HZ_NS: u64 = 10_000_000;
/// Largest bytes read or write.
pub const MAX_BYTES: usize = 4096;

/// Where a target lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub kva: u64,
    /// Size of the field when known (symbol size, BTF field size).
    pub size: Option<u64>,
}

/// The validation layers a task-field write passes, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// L1: a task with the pid exists.
    Pid,
    /// L2: it started when the caller says (not a reused pid).
    StartTime,
    /// L3: it is not exiting.
    Lifetime,
    /// L4: it is not on a run queue.
    OnRq,
    /// L5: it is not on a DSQ or a runnable list.
    ScxQueued,
    /// L6: it is in the ext class.
    SchedClass,
    /// L7: its policy is one sched_ext manages.
    Policy,
    /// L8: it is fully forked.
    StartBoottime,
}

impl Layer {
    fn tag(self) -> &'static str {
        match self {
            Layer::Pid => "L1 pid",
            Layer::StartTime => "L2 start_time",
            Layer::Lifetime => "L3 lifetime",
            Layer::OnRq => "L4 on_rq",
            Layer::ScxQueued => "L5 scx queued",
            Layer::SchedClass => "L6 sched_class",
            Layer::Policy => "L7 policy",
            Layer::StartBoottime => "L8 start_boottime",
        }
    }
}

/// Why an op was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A validation layer refused a task-field write or read.
    #[error("{}: {detail}", layer.tag())]
    Refused { layer: Layer, detail: String },
    /// The target or width makes no sense for this kernel.
    #[error("{0}")]
    Target(String),
    /// The kernel model could not read or write.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

fn refused<T>(layer: Layer, detail: String) -> Result<T, OpError> {
    Err(OpError::Refused { layer, detail })
}

fn bad_target<T>(why: impl Into<String>) -> Result<T, OpError> {
    Err(OpError::Target(why.into()))
}

/// Find a task by pid on `scx_tasks` (every task, threads included, on
/// kernels with sched_ext), falling back to the `init_task.tasks` ring.
pub fn find_task<M: PhysMem>(k: &Kernel<M>, o: &Offsets, pid: u32) -> Result<Option<u64>, OpError> {
    let to = o
        .task
        .ok_or_else(|| OpError::Target("this kernel's BTF has no task_struct layout".into()))?;
    let cands = match for_each_scx_task(k, o) {
        Ok(w) => w.items,
        Err(_) => for_each_task(k, o)?,
    };
    for t in cands {
        if field_addr(t, to.pid.off).is_ok_and(|a| k.read_u32(a).ok() == Some(pid)) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Read field `f` of the object at `base`.
fn rd<M: PhysMem>(k: &Kernel<M>, base: u64, f: Option<crate::offsets::Field>) -> Option<u64> {
    let f = f?;
    k.read_uint(field_addr(base, f.off).ok()?, f.size).ok()
}

/// Validate a task for a write; the error names the first failing layer.
pub fn validate_task_write<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    pid: u32,
    start_time_ns: u64,
) -> Result<u64, OpError> {
    let to = o
        .task
        .ok_or_else(|| OpError::Target("this kernel's BTF has no task_struct layout".into()))?;
    let see = o.see.ok_or_else(|| {
        OpError::Target("this kernel has no sched_ext_entity (no sched_ext)".into())
    })?;
    let scx = to
        .scx
        .ok_or_else(|| OpError::Target("task_struct has no scx member".into()))?;
    let Some(t) = find_task(k, o, pid)? else {
        return refused(Layer::Pid, format!("no task with pid {pid}"));
    };
    // L2: start_time identity at /proc's USER_HZ granularity (/proc shows
    // boot time; without suspend it equals the monotonic start_time).
    let actual = rd(k, t, to.start_time.or(to.start_boottime)).unwrap_or(0);
    if actual / USER_HZ_NS != start_time_ns / USER_HZ_NS {
        return refused(
            Layer::StartTime,
            format!("pid {pid} started at {actual} ns, not {start_time_ns} ns (pid reused?)"),
        );
    }
    let flags = rd(k, t, Some(to.flags)).unwrap_or(0) as u32;
    let exit_state = rd(k, t, to.exit_state).unwrap_or(0);
    if flags & PF_EXITING != 0 || exit_state != 0 {
        return refused(
            Layer::Lifetime,
            format!("pid {pid} is exiting (flags {flags:#x}, exit_state {exit_state})"),
        );
    }
    let on_rq = rd(k, t, to.on_rq).unwrap_or(u64::MAX);
    if on_rq != 0 {
        return refused(
            Layer::OnRq,
            format!("pid {pid} has on_rq = {on_rq} (running or queued)"),
        );
    }
    let se = field_addr(t, scx)?;
    let dsq = k.read_u64(field_addr(se, see.dsq.off)?)?;
    let rn = field_addr(se, see.runnable_node)?;
    let rn_next = k.read_u64(rn)?;
    if dsq != 0 || rn_next != rn {
        return refused(
            Layer::ScxQueued,
            format!("pid {pid} is on a DSQ ({dsq:#x}) or a runnable list"),
        );
    }
    let class = rd(k, t, to.sched_class).unwrap_or(0);
    let ext = k.sym("ext_sched_class")?;
    if class != ext {
        return refused(
            Layer::SchedClass,
            format!(
                "pid {pid} is in class {}, not ext",
                crate::getters::sched_class_name(k, class)
            ),
        );
    }
    let policy = rd(k, t, to.policy).unwrap_or(u64::MAX) as u32;
    if !SCX_POLICIES.contains(&policy) {
        return refused(
            Layer::Policy,
            format!("pid {pid} has policy {policy}, which sched_ext does not manage"),
        );
    }
    if rd(k, t, to.start_boottime).unwrap_or(0) == 0 {
        return refused(
            Layer::StartBoottime,
            format!("pid {pid} has start_boottime 0 (not fully forked)"),
        );
    }
    Ok(t)
}

/// Resolve a target (for reads; writes to task fields validate first).
pub fn resolve<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    target: &KernelTarget,
    for_write: bool,
) -> Result<Resolved, OpError> {
    let btf = k.image().btf();
    match target {
        KernelTarget::Symbol { name } => {
            let s = k
                .image()
                .symbols()
                .get(name)
                .ok_or_else(|| OpError::Target(format!("no symbol `{name}` in vmlinux")))?;
            Ok(Resolved {
                kva: k.slide_link(s.addr),
                size: (s.size > 0).then_some(s.size),
            })
        }
        KernelTarget::PerCpuField { symbol, field, cpu } => {
            let ty = btf.var_type(symbol).or_else(|| match symbol.as_str() {
                "runqueues" => btf.struct_id("rq").ok(),
                _ => None,
            });
            let ty = ty.ok_or_else(|| {
                OpError::Target(format!("no BTF type for per-CPU symbol `{symbol}`"))
            })?;
            let sname = btf.composite_name(ty).unwrap_or_else(|| symbol.clone());
            let f = btf
                .field_in(ty, &sname, field)
                .map_err(|e| OpError::Target(e.to_string()))?;
            if f.bitfield.is_some() {
                return bad_target(format!("{sname}.{field} is a bitfield"));
            }
            let base = k.per_cpu_sym(symbol, *cpu)?;
            Ok(Resolved {
                kva: field_addr(base, f.offset)?,
                size: Some(f.size),
            })
        }
        KernelTarget::TaskField {
            pid,
            start_time_ns,
            field_path,
        } => {
            let f = btf
                .field("task_struct", field_path)
                .map_err(|e| OpError::Target(e.to_string()))?;
            if f.bitfield.is_some() {
                return bad_target(format!("task_struct.{field_path} is a bitfield"));
            }
            let t = if for_write {
                validate_task_write(k, o, *pid, *start_time_ns)?
            } else {
                let Some(t) = find_task(k, o, *pid)? else {
                    return refused(Layer::Pid, format!("no task with pid {pid}"));
                };
                let to = o
                    .task
                    .ok_or_else(|| OpError::Target("no task_struct layout".into()))?;
                let actual = rd(k, t, to.start_time.or(to.start_boottime)).unwrap_or(0);
                if actual / USER_HZ_NS != start_time_ns / USER_HZ_NS {
                    return refused(
                        Layer::StartTime,
                        format!("pid {pid} started at {actual} ns, not {start_time_ns} ns"),
                    );
                }
                t
            };
            Ok(Resolved {
                kva: field_addr(t, f.offset)?,
                size: Some(f.size),
            })
        }
        KernelTarget::Kva { addr } => Ok(Resolved {
            kva: *addr,
            size: None,
        }),
    }
}

fn check_width(r: &Resolved, len: usize, numeric: bool) -> Result<(), OpError> {
    if len == 0 || len > MAX_BYTES {
        return bad_target(format!("width {len} out of range 1..={MAX_BYTES}"));
    }
    if let Some(size) = r.size {
        if size > len as u64 && numeric {
            return bad_target(format!(
                "field is {size} bytes, larger than the {len}-byte width"
            ));
        }
        if (len as u64) > size {
            return bad_target(format!("width {len} is larger than the {size}-byte field"));
        }
    }
    if numeric && !r.kva.is_multiple_of(len as u64) {
        return bad_target(format!("address {:#x} is not {len}-byte aligned", r.kva));
    }
    Ok(())
}

/// Perform one op. Returns the read tag (for reads) and the reply.
pub fn execute<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    op: &KernelOp,
) -> (Option<String>, KernelOpReplyPayload) {
    match op {
        KernelOp::Read { tag, target, width } => {
            let r = (|| {
                let res = resolve(k, o, target, false)?;
                let numeric = !matches!(width, KernelValueWidth::Bytes(_));
                check_width(&res, width.len(), numeric)?;
                let v = match width {
                    KernelValueWidth::U32 => KernelOpValue::U32(k.read_u32(res.kva)?),
                    KernelValueWidth::U64 => KernelOpValue::U64(k.read_u64(res.kva)?),
                    KernelValueWidth::Bytes(n) => {
                        // n <= MAX_BYTES, checked above.
                        let mut b = vec![0u8; *n as usize];
                        k.read(res.kva, &mut b)?;
                        KernelOpValue::Bytes(b)
                    }
                };
                Ok::<_, OpError>(v)
            })();
            let reply = match r {
                Ok(v) => KernelOpReplyPayload::ok(vec![v]),
                Err(e) => KernelOpReplyPayload::refused(e.to_string()),
            };
            (Some(tag.clone()), reply)
        }
        KernelOp::Write { target, value } => {
            let r = (|| {
                let res = resolve(k, o, target, true)?;
                let numeric = !matches!(value, KernelValue::Bytes(_));
                check_width(&res, value.len(), numeric)?;
                k.write(res.kva, &value.to_bytes())?;
                Ok::<_, OpError>(())
            })();
            let reply = match r {
                Ok(()) => KernelOpReplyPayload::ok(Vec::new()),
                Err(e) => KernelOpReplyPayload::refused(e.to_string()),
            };
            (None, reply)
        }
    }
}
