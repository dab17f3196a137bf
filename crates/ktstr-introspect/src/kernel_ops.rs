//! Cold-path kernel operations on a frozen guest: resolve a
//! [`KernelTarget`] to an address and a field size, validate, then read or
//! write. A task-field write passes every validation layer before memory
//! is touched, and a refusal names the first layer that refused.

use crate::kernel::Kernel;
use crate::mem::PhysMem;
use crate::offsets::Offsets;
use crate::walk::list_entries;
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

fn refuse<T>(r: impl Into<String>) -> Result<T, String> {
    Err(r.into())
}

/// Find a task by pid on `scx_tasks` (every task, threads included, on
/// kernels with sched_ext), falling back to the `init_task.tasks` ring.
pub fn find_task<M: PhysMem>(k: &Kernel<M>, o: &Offsets, pid: u32) -> Result<Option<u64>, String> {
    let to = o
        .task
        .ok_or("this kernel's BTF has no task_struct layout")?;
    let cands = match (k.sym("scx_tasks"), o.see, to.scx) {
        (Ok(head), Some(see), Some(scx)) => {
            let flags_rel = see.flags.off as i64 - see.tasks_node as i64;
            list_entries(
                k,
                head,
                scx + see.tasks_node,
                crate::collect::MAX_TASKS,
                |n| {
                    k.read_u32(n.wrapping_add(flags_rel as u64))
                        .is_ok_and(|f| f & crate::collect::SCX_TASK_CURSOR != 0)
                },
            )
            .items
        }
        _ => {
            let init = k.sym("init_task").map_err(|e| e.to_string())?;
            let off = to.tasks.ok_or("task_struct has no tasks list")?;
            let mut v = vec![init];
            v.extend(list_entries(k, init + off, off, crate::collect::MAX_TASKS, |_| false).items);
            v
        }
    };
    for t in cands {
        if k.read_u32(t + to.pid.off).ok() == Some(pid) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// Validate a task for a write; the error names the first failing layer.
pub fn validate_task_write<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    pid: u32,
    start_time_ns: u64,
) -> Result<u64, String> {
    let to = o
        .task
        .ok_or("this kernel's BTF has no task_struct layout")?;
    let see = o
        .see
        .ok_or("this kernel has no sched_ext_entity (no sched_ext)")?;
    let scx = to.scx.ok_or("task_struct has no scx member")?;
    let rd = |t: u64, f: Option<crate::offsets::Field>| {
        f.and_then(|f| k.read_uint(t + f.off, f.size).ok())
    };
    // L1: pid.
    let Some(t) = find_task(k, o, pid)? else {
        return refuse(format!("L1 pid: no task with pid {pid}"));
    };
    // L2: start_time identity at /proc's USER_HZ granularity (/proc shows
    // boot time; without suspend it equals the monotonic start_time).
    let actual = rd(t, to.start_time.or(to.start_boottime)).unwrap_or(0);
    if actual / USER_HZ_NS != start_time_ns / USER_HZ_NS {
        return refuse(format!(
            "L2 start_time: pid {pid} started at {actual} ns, not {start_time_ns} ns (pid reused?)"
        ));
    }
    // L3: alive.
    let flags = rd(t, Some(to.flags)).unwrap_or(0) as u32;
    let exit_state = rd(t, to.exit_state).unwrap_or(0);
    if flags & PF_EXITING != 0 || exit_state != 0 {
        return refuse(format!(
            "L3 lifetime: pid {pid} is exiting (flags {flags:#x}, exit_state {exit_state})"
        ));
    }
    // L4: not on a run queue.
    let on_rq = rd(t, to.on_rq).unwrap_or(u64::MAX);
    if on_rq != 0 {
        return refuse(format!(
            "L4 on_rq: pid {pid} has on_rq = {on_rq} (running or queued)"
        ));
    }
    // L5: not queued on any sched_ext list.
    let dsq = k
        .read_u64(t + scx + see.dsq.off)
        .map_err(|e| e.to_string())?;
    let rn = t + scx + see.runnable_node;
    let rn_next = k.read_u64(rn).map_err(|e| e.to_string())?;
    if dsq != 0 || rn_next != rn {
        return refuse(format!(
            "L5 scx queued: pid {pid} is on a DSQ ({dsq:#x}) or a runnable list"
        ));
    }
    // L6: managed by the ext class.
    let class = rd(t, to.sched_class).unwrap_or(0);
    let ext = k.sym("ext_sched_class").map_err(|e| e.to_string())?;
    if class != ext {
        return refuse(format!(
            "L6 sched_class: pid {pid} is in class {}, not ext",
            crate::getters::sched_class_name(k, class)
        ));
    }
    // L7: a policy sched_ext manages.
    let policy = rd(t, to.policy).unwrap_or(u64::MAX) as u32;
    if !SCX_POLICIES.contains(&policy) {
        return refuse(format!(
            "L7 policy: pid {pid} has policy {policy}, which sched_ext does not manage"
        ));
    }
    // L8: fully set up.
    if rd(t, to.start_boottime).unwrap_or(0) == 0 {
        return refuse(format!(
            "L8 start_boottime: pid {pid} has start_boottime 0 (not fully forked)"
        ));
    }
    Ok(t)
}

/// Resolve a target (for reads; writes to task fields validate first).
pub fn resolve<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    target: &KernelTarget,
    for_write: bool,
) -> Result<Resolved, String> {
    let btf = k.image().btf();
    match target {
        KernelTarget::Symbol { name } => {
            let s = k
                .image()
                .symbols()
                .get(name)
                .ok_or_else(|| format!("no symbol `{name}` in vmlinux"))?;
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
            let ty = ty.ok_or_else(|| format!("no BTF type for per-CPU symbol `{symbol}`"))?;
            let sname = btf.composite_name(ty).unwrap_or_else(|| symbol.clone());
            let f = btf.field_in(ty, &sname, field).map_err(|e| e.to_string())?;
            if f.bitfield.is_some() {
                return refuse(format!("{sname}.{field} is a bitfield"));
            }
            let base = k.per_cpu_sym(symbol, *cpu).map_err(|e| e.to_string())?;
            Ok(Resolved {
                kva: base + f.offset,
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
                .map_err(|e| e.to_string())?;
            if f.bitfield.is_some() {
                return refuse(format!("task_struct.{field_path} is a bitfield"));
            }
            let t = if for_write {
                validate_task_write(k, o, *pid, *start_time_ns)?
            } else {
                let t = find_task(k, o, *pid)?
                    .ok_or_else(|| format!("L1 pid: no task with pid {pid}"))?;
                let to = o.task.ok_or("no task_struct layout")?;
                let actual = to
                    .start_time
                    .or(to.start_boottime)
                    .and_then(|f| k.read_uint(t + f.off, f.size).ok())
                    .unwrap_or(0);
                if actual / USER_HZ_NS != start_time_ns / USER_HZ_NS {
                    return refuse(format!(
                        "L2 start_time: pid {pid} started at {actual} ns, not {start_time_ns} ns"
                    ));
                }
                t
            };
            Ok(Resolved {
                kva: t + f.offset,
                size: Some(f.size),
            })
        }
        KernelTarget::Kva { addr } => Ok(Resolved {
            kva: *addr,
            size: None,
        }),
    }
}

fn check_width(r: &Resolved, len: usize, numeric: bool) -> Result<(), String> {
    if len == 0 || len > MAX_BYTES {
        return refuse(format!("width {len} out of range 1..={MAX_BYTES}"));
    }
    if let Some(size) = r.size {
        if size > len as u64 && numeric {
            return refuse(format!(
                "field is {size} bytes, larger than the {len}-byte width"
            ));
        }
        if (len as u64) > size {
            return refuse(format!("width {len} is larger than the {size}-byte field"));
        }
    }
    if numeric && !r.kva.is_multiple_of(len as u64) {
        return refuse(format!("address {:#x} is not {len}-byte aligned", r.kva));
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
                    KernelValueWidth::U32 => {
                        KernelOpValue::U32(k.read_u32(res.kva).map_err(|e| e.to_string())?)
                    }
                    KernelValueWidth::U64 => {
                        KernelOpValue::U64(k.read_u64(res.kva).map_err(|e| e.to_string())?)
                    }
                    KernelValueWidth::Bytes(n) => {
                        let mut b = vec![0u8; *n as usize];
                        k.read(res.kva, &mut b).map_err(|e| e.to_string())?;
                        KernelOpValue::Bytes(b)
                    }
                };
                Ok::<_, String>(v)
            })();
            let reply = match r {
                Ok(v) => KernelOpReplyPayload::ok(vec![v]),
                Err(e) => KernelOpReplyPayload::refused(e),
            };
            (Some(tag.clone()), reply)
        }
        KernelOp::Write { target, value } => {
            let r = (|| {
                let res = resolve(k, o, target, true)?;
                let numeric = !matches!(value, KernelValue::Bytes(_));
                check_width(&res, value.len(), numeric)?;
                k.write(res.kva, &value.to_bytes())
                    .map_err(|e| e.to_string())
            })();
            let reply = match r {
                Ok(()) => KernelOpReplyPayload::ok(Vec::new()),
                Err(e) => KernelOpReplyPayload::refused(e),
            };
            (None, reply)
        }
    }
}
