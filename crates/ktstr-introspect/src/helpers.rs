//! Named helpers over a [`Kernel`], as the kernel (and drgn) name them:
//! iterate a list of typed entries, a CPU's run queue, a per-CPU
//! variable, every sched_ext task, every task. Each takes types and
//! fields by name, resolved from the kernel's BTF, and is bounded and
//! panic-free on guest data like the walkers beneath it.
#![deny(clippy::arithmetic_side_effects)]

use crate::kernel::{Kernel, KernelError};
use crate::mem::PhysMem;
use crate::offsets::Offsets;
use crate::walk::{MAX_NODES_PER_LIST, Walk, list_entries};

/// `SCX_TASK_CURSOR` in `sched_ext_entity.flags`: a `scx_tasks` entry that
/// is an iterator's cursor, not a task.
pub const SCX_TASK_CURSOR: u32 = 1 << 31;
/// Most tasks a task iteration returns.
pub const MAX_TASKS: usize = 8192;

/// `list_for_each_entry(pos, head, member)`: the `type_name` objects on
/// the list at `head`, linked through their `member_path` (a dotted BTF
/// field path such as `scx.tasks_node`).
///
/// ```no_run
/// # use ktstr_introspect::{helpers::list_for_each_entry, Kernel, Vmcore, KernelImage};
/// # fn f(k: &Kernel<Vmcore>) -> Result<(), ktstr_introspect::kernel::KernelError> {
/// let head = k.sym("scx_tasks")?;
/// let tasks = list_for_each_entry(k, head, "task_struct", "scx.tasks_node")?;
/// println!("{} tasks", tasks.items.len());
/// # Ok(()) }
/// ```
pub fn list_for_each_entry<M: PhysMem>(
    k: &Kernel<M>,
    head: u64,
    type_name: &str,
    member_path: &str,
) -> Result<Walk, KernelError> {
    let f = k
        .image()
        .btf()
        .field(type_name, member_path)
        .map_err(|e| KernelError::Invalid(e.to_string()))?;
    Ok(list_entries(k, head, f.offset, MAX_NODES_PER_LIST, |_| {
        false
    }))
}

/// `cpu_rq(cpu)`: the address of `cpu`'s `struct rq`.
pub fn cpu_rq<M: PhysMem>(k: &Kernel<M>, cpu: u32) -> Result<u64, KernelError> {
    k.per_cpu_sym("runqueues", cpu)
}

/// `per_cpu_ptr(&sym, cpu)`: the address of per-CPU variable `sym` on `cpu`.
pub fn per_cpu_ptr<M: PhysMem>(k: &Kernel<M>, sym: &str, cpu: u32) -> Result<u64, KernelError> {
    k.per_cpu_sym(sym, cpu)
}

/// Every task on `scx_tasks` (all tasks, threads included, on kernels with
/// sched_ext), iterator cursors skipped.
pub fn for_each_scx_task<M: PhysMem>(k: &Kernel<M>, o: &Offsets) -> Result<Walk, KernelError> {
    let head = k.sym("scx_tasks")?;
    let (Some(see), Some(to)) = (o.see, o.task) else {
        return Err(KernelError::Invalid(
            "this kernel's BTF has no sched_ext_entity / task_struct layout".into(),
        ));
    };
    let scx = to
        .scx
        .ok_or_else(|| KernelError::Invalid("task_struct has no scx member".into()))?;
    let flags_rel = see.flags.off.wrapping_sub(see.tasks_node);
    Ok(list_entries(
        k,
        head,
        scx.saturating_add(see.tasks_node),
        MAX_TASKS,
        |node| {
            k.read_u32(node.wrapping_add(flags_rel))
                .is_ok_and(|f| f & SCX_TASK_CURSOR != 0)
        },
    ))
}

/// Every task on the `init_task.tasks` ring (thread-group leaders), with
/// `init_task` itself first.
pub fn for_each_task<M: PhysMem>(k: &Kernel<M>, o: &Offsets) -> Result<Vec<u64>, KernelError> {
    let init = k.sym("init_task")?;
    let off = o
        .task
        .and_then(|t| t.tasks)
        .ok_or_else(|| KernelError::Invalid("task_struct has no tasks list".into()))?;
    let head = crate::kernel::field_addr(init, off)?;
    let mut v = vec![init];
    v.extend(list_entries(k, head, off, MAX_TASKS, |_| false).items);
    Ok(v)
}
