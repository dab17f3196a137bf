//! Build a [`SchedSnapshot`] from a [`Kernel`]: per-CPU `rq->scx`, every
//! DSQ (local, bypass, global, user), `scx_tasks`, the scheduler instance,
//! task details and the EEVDF view. Works on 6.16+ kernels (`scx_root`)
//! and on 6.12 (globals). Problems are recorded, never panicked on.

use crate::getters;
use crate::kernel::Kernel;
use crate::mem::PhysMem;
use crate::offsets::{DsqOffsets, Offsets};
use crate::snapshot::*;
use crate::walk::{MAX_NODES_PER_LIST, list_entries, rhashtable_entries};
use std::collections::{BTreeMap, HashMap};

/// `SCX_TASK_CURSOR` in `sched_ext_entity.flags`: a `scx_tasks` entry that
/// is an iterator's cursor, not a task.
pub const SCX_TASK_CURSOR: u32 = 1 << 31;
/// `SCX_DSQ_LNODE_ITER_CURSOR` in `scx_dsq_list_node.flags`.
pub const SCX_DSQ_LNODE_ITER_CURSOR: u32 = 1;
/// Most task details collected in one snapshot.
pub const MAX_TASKS: usize = 8192;

/// Knobs for one collection.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// CONFIG_HZ of the guest kernel (for runnable ages in ms).
    pub hz: u32,
    /// Collect task details.
    pub tasks: bool,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            hz: 1000,
            tasks: true,
        }
    }
}

/// Collector state: the kernel, its offsets, and what was found so far.
struct Collector<'a, M: PhysMem> {
    k: &'a Kernel<M>,
    o: &'a Offsets,
    problems: Vec<String>,
    found: BTreeMap<u64, Vec<String>>,
    comm_cache: HashMap<u64, TaskRef>,
}

/// Collect a snapshot with offsets freshly resolved from the image's BTF.
pub fn snapshot<M: PhysMem>(k: &Kernel<M>, opts: &CollectOptions) -> SchedSnapshot {
    let o = Offsets::from_btf(k.image().btf());
    snapshot_with(k, &o, opts)
}

/// Collect a snapshot with pre-resolved offsets (the fast path).
pub fn snapshot_with<M: PhysMem>(
    k: &Kernel<M>,
    o: &Offsets,
    opts: &CollectOptions,
) -> SchedSnapshot {
    let mut c = Collector {
        k,
        o,
        problems: Vec::new(),
        found: BTreeMap::new(),
        comm_cache: HashMap::new(),
    };
    let p = k.params();
    let mut s = SchedSnapshot {
        translation: TranslationInfo {
            source: format!("{:?}", k.kaslr_source()).to_lowercase(),
            kaslr_offset: p.kaslr_offset,
            phys_base: p.phys_base,
            page_offset_base: p.page_offset_base,
            la57: p.la57,
        },
        hz: opts.hz,
        ..Default::default()
    };
    s.jiffies =
        c.k.sym_u64("jiffies_64")
            .map_err(|e| c.problem("jiffies_64", e))
            .ok();
    let offs: Vec<u64> = match k.per_cpu_offsets() {
        Ok(v) => v.to_vec(),
        Err(e) => {
            c.problem("__per_cpu_offset", e);
            Vec::new()
        }
    };
    s.nr_cpus = offs.len() as u32;
    let rq_base = k
        .sym("runqueues")
        .map_err(|e| c.problem("runqueues", e))
        .ok();
    let rqs: Vec<(u32, u64)> = match rq_base {
        Some(b) => offs
            .iter()
            .enumerate()
            .map(|(i, o)| (i as u32, b.wrapping_add(*o)))
            .collect(),
        None => Vec::new(),
    };
    s.sched = c.sched_state();
    for &(cpu, rq) in &rqs {
        if let Some(st) = c.rq_state(cpu, rq) {
            s.cpus.push(st);
        }
        if let Some(cfs) = c.cfs_state(cpu, rq) {
            s.cfs.push(cfs);
        }
    }
    s.dsqs = c.dsqs(&rqs, &offs);
    let (tasks, trunc) = c.scx_tasks();
    s.scx_tasks = tasks;
    s.scx_tasks_truncated = trunc;
    if opts.tasks {
        let found = std::mem::take(&mut c.found);
        for (kva, lists) in found.into_iter().take(MAX_TASKS) {
            match c.task_info(kva, s.jiffies, opts.hz) {
                Ok(mut t) => {
                    t.found_on = lists;
                    s.tasks.push(t);
                }
                Err(e) => c.problems.push(format!("task at {kva:#x}: {e}")),
            }
        }
        s.tasks.sort_by_key(|t| t.pid);
    }
    s.problems = c.problems;
    s
}

impl<M: PhysMem> Collector<'_, M> {
    fn problem(&mut self, what: &str, e: impl std::fmt::Display) {
        self.problems.push(format!("{what}: {e}"));
    }

    fn note(&mut self, task: u64, where_: String) {
        let v = self.found.entry(task).or_default();
        if !v.contains(&where_) {
            v.push(where_);
        }
    }

    /// pid + comm of the task at `kva` (cached per snapshot).
    fn task_ref(&mut self, kva: u64) -> Option<TaskRef> {
        if let Some(t) = self.comm_cache.get(&kva) {
            return Some(t.clone());
        }
        let to = self.o.task.as_ref()?;
        let pid = self.k.read_u32(kva + to.pid.off).ok()? as i32;
        let comm = self
            .k
            .read_cstr(kva + to.comm.off, to.comm.size as usize)
            .ok()?;
        let t = TaskRef { pid, comm, kva };
        self.comm_cache.insert(kva, t.clone());
        Some(t)
    }

    /// Tasks from a walk, tagging each with where it was found.
    fn refs(&mut self, items: &[u64], where_: &str) -> Vec<TaskRef> {
        let mut out = Vec::with_capacity(items.len());
        for &kva in items {
            match self.task_ref(kva) {
                Some(t) => {
                    self.note(kva, where_.to_string());
                    out.push(t);
                }
                None => self
                    .problems
                    .push(format!("{where_}: task at {kva:#x} unreadable")),
            }
        }
        out
    }

    fn rq_state(&mut self, cpu: u32, rq: u64) -> Option<RqScxState> {
        let k = self.k;
        let ro = self.o.rq?;
        let mut st = RqScxState {
            cpu,
            ..Default::default()
        };
        st.rq_nr_running = k.read_u32(rq + ro.nr_running.off).unwrap_or(0);
        if let Ok(curr) = k.read_u64(rq + ro.curr.off)
            && curr != 0
        {
            st.curr = self.task_ref(curr);
            if st.curr.is_some() {
                self.note(curr, format!("curr cpu {cpu}"));
            }
        }
        let (Some(scx), Some(so)) = (ro.scx, self.o.scx_rq) else {
            return Some(st);
        };
        let base = rq + scx;
        let rd = |f: Option<crate::offsets::Field>| {
            f.and_then(|f| k.read_uint(base + f.off, f.size).ok())
        };
        st.nr_running = rd(Some(so.nr_running)).unwrap_or(0) as u32;
        st.flags = rd(Some(so.flags)).unwrap_or(0) as u32;
        st.cpu_released = rd(so.cpu_released).map(|v| v != 0);
        st.ops_qseq = rd(so.ops_qseq);
        st.kick_sync = rd(so.kick_sync.or(so.pnt_seq));
        st.nr_immed = rd(so.nr_immed).map(|v| v as u32);
        st.clock = rd(so.clock);
        if let (Some(see), Some(to)) = (self.o.see, self.o.task)
            && let Some(scx_in_task) = to.scx
        {
            let w = list_entries(
                k,
                base + so.runnable_list,
                scx_in_task + see.runnable_node,
                MAX_NODES_PER_LIST,
                |_| false,
            );
            if w.broken {
                self.problems.push(format!(
                    "cpu {cpu} runnable_list: broken pointer after {} entries",
                    w.items.len()
                ));
            }
            st.runnable_truncated = w.truncated;
            st.runnable = self.refs(&w.items, &format!("runnable cpu {cpu}"));
        }
        Some(st)
    }

    fn cfs_state(&mut self, cpu: u32, rq: u64) -> Option<CfsRqState> {
        let (ro, fo) = (self.o.rq?, self.o.fair?);
        let cfs = rq + ro.cfs?;
        let k = self.k;
        let rd = |base: u64, f: Option<crate::offsets::Field>| {
            f.and_then(|f| k.read_uint(base + f.off, f.size).ok())
        };
        let avg = fo.cfs_avg.map(|a| cfs + a);
        Some(CfsRqState {
            cpu,
            nr_queued: rd(cfs, fo.cfs_nr_running).map(|v| v as u32),
            h_nr_queued: rd(cfs, fo.cfs_h_nr_running).map(|v| v as u32),
            min_vruntime: rd(cfs, fo.cfs_min_vruntime.or(fo.cfs_zero_vruntime)),
            load_avg: avg.and_then(|a| rd(a, fo.avg_load_avg)),
            runnable_avg: avg.and_then(|a| rd(a, fo.avg_runnable_avg)),
            util_avg: avg.and_then(|a| rd(a, fo.avg_util_avg)),
            util_est: avg
                .and_then(|a| rd(a, fo.avg_util_est))
                .map(|v| getters::util_est_value(v as u32)),
            cpu_capacity: rd(rq, ro.cpu_capacity),
        })
    }

    /// The scheduler instance: `*scx_root` on 6.16+, globals on 6.12.
    fn sched_state(&mut self) -> Option<ScxSchedState> {
        let k = self.k;
        let btf = k.image().btf();
        let kinds = btf.enum_variants("scx_exit_kind");
        let kind_name = |v: u32| crate::scx_exit::ExitKind(v).name(&kinds);
        let enable_state = ["scx_enable_state_var", "scx_ops_enable_state_var"]
            .iter()
            .find_map(|s| k.sym_u32(s).ok())
            .map(getters::enable_state_name);
        if let Ok(root) = k.sym("scx_root") {
            let so = self.o.sched?;
            let sch = match k.read_u64(root) {
                Ok(0) => {
                    return Some(ScxSchedState {
                        source: "scx_root".into(),
                        enable_state,
                        exit_kind_name: "none attached".into(),
                        ..Default::default()
                    });
                }
                Ok(p) => p,
                Err(e) => {
                    self.problem("scx_root", e);
                    return None;
                }
            };
            let rd = |f: Option<crate::offsets::Field>| {
                f.and_then(|f| k.read_uint(sch + f.off, f.size).ok())
            };
            let exit_kind = rd(Some(so.exit_kind)).unwrap_or(0) as u32;
            let ops_name = so
                .ops_name
                .and_then(|f| k.read_cstr(sch + f.off, f.size.min(128) as usize).ok());
            let (exit_reason, exit_msg) = match rd(so.exit_info) {
                Some(ei) if ei != 0 => self.exit_info(ei),
                _ => (None, None),
            };
            return Some(ScxSchedState {
                source: "scx_root".into(),
                sched_kva: Some(sch),
                ops_name,
                enable_state,
                exit_kind,
                exit_kind_name: kind_name(exit_kind),
                exit_reason,
                exit_msg,
                aborting: rd(so.aborting).map(|v| v != 0),
                bypass_depth: rd(so.bypass_depth).map(|v| v as u32 as i32),
                watchdog_timeout: rd(so.watchdog_timeout),
            });
        }
        // Kernels before 6.16: globals.
        let exit_kind = k.sym_u32("scx_exit_kind").ok()?;
        let ops_name = k.sym("scx_ops").ok().and_then(|a| {
            let f = btf.field("sched_ext_ops", "name").ok()?;
            k.read_cstr(a + f.offset, f.size.min(128) as usize).ok()
        });
        let (exit_reason, exit_msg) = match k.sym_u64("scx_exit_info") {
            Ok(ei) if ei != 0 => self.exit_info(ei),
            _ => (None, None),
        };
        Some(ScxSchedState {
            source: "globals".into(),
            sched_kva: None,
            ops_name: ops_name.filter(|n| !n.is_empty()),
            enable_state,
            exit_kind,
            exit_kind_name: kind_name(exit_kind),
            exit_reason,
            exit_msg,
            aborting: None,
            bypass_depth: k.sym_u32("scx_ops_bypass_depth").ok().map(|v| v as i32),
            watchdog_timeout: k.sym_u64("scx_watchdog_timeout").ok(),
        })
    }

    fn exit_info(&mut self, ei: u64) -> (Option<String>, Option<String>) {
        let Some(eo) = self.o.exit_info else {
            return (None, None);
        };
        let k = self.k;
        let s = |f: Option<crate::offsets::Field>, max: usize| {
            let p = k.read_u64(ei + f?.off).ok()?;
            (p != 0)
                .then(|| k.read_cstr(p, max).ok())
                .flatten()
                .filter(|s| !s.is_empty())
        };
        (s(eo.reason, 256), s(eo.msg, 1024))
    }

    fn one_dsq(&mut self, dsq: u64, origin: String, d: &DsqOffsets) -> DsqState {
        let k = self.k;
        let mut st = DsqState {
            origin,
            kva: dsq,
            ..Default::default()
        };
        st.id = k.read_u64(dsq + d.id.off).unwrap_or(0);
        st.nr = k.read_u32(dsq + d.nr.off).unwrap_or(0);
        st.seq = d.seq.and_then(|f| k.read_u32(dsq + f.off).ok());
        let (Some(ln), Some(see), Some(to)) = (self.o.dsq_lnode, self.o.see, self.o.task) else {
            return st;
        };
        let Some(scx) = to.scx else { return st };
        // List entries are scx_dsq_list_node.node; iterator cursors are
        // bare list nodes flagged SCX_DSQ_LNODE_ITER_CURSOR.
        let node_in_task = scx + see.dsq_list + ln.node;
        let flags_rel = ln.flags.off as i64 - ln.node as i64;
        let w = list_entries(k, dsq + d.list, node_in_task, MAX_NODES_PER_LIST, |node| {
            k.read_u32(node.wrapping_add(flags_rel as u64))
                .is_ok_and(|f| f & SCX_DSQ_LNODE_ITER_CURSOR != 0)
        });
        if w.broken {
            self.problems.push(format!(
                "dsq {} ({}): broken list after {} entries",
                st.id,
                st.origin,
                w.items.len()
            ));
        }
        st.truncated = w.truncated;
        let where_ = format!("dsq {}", st.origin);
        st.tasks = self.refs(&w.items, &where_);
        st
    }

    fn dsqs(&mut self, rqs: &[(u32, u64)], pcpu_offs: &[u64]) -> Vec<DsqState> {
        let mut out = Vec::new();
        let Some(d) = self.o.dsq else { return out };
        let k = self.k;
        // Local DSQs: always there, scheduler or not.
        if let (Some(ro), Some(so)) = (self.o.rq, self.o.scx_rq)
            && let Some(scx) = ro.scx
        {
            for &(cpu, rq) in rqs {
                out.push(self.one_dsq(rq + scx + so.local_dsq, format!("local cpu {cpu}"), &d));
            }
        }
        let nodes = k.nr_node_ids();
        let sch = k
            .sym("scx_root")
            .ok()
            .and_then(|r| k.read_u64(r).ok())
            .filter(|&p| p != 0);
        match (sch, self.o.sched) {
            (Some(sch), Some(so)) => {
                // Per-CPU bypass DSQs in sch->pcpu.
                if let (Some(pf), Some(bo)) = (so.pcpu, so.pcpu_bypass_dsq)
                    && let Ok(pcpu) = k.read_u64(sch + pf.off)
                    && pcpu != 0
                {
                    for (cpu, off) in pcpu_offs.iter().enumerate() {
                        let dsq = pcpu.wrapping_add(*off).wrapping_add(bo);
                        out.push(self.one_dsq(dsq, format!("bypass cpu {cpu}"), &d));
                    }
                }
                // Per-node global DSQs: sch->pnode[node]->global_dsq.
                if let (Some(pf), Some(go)) = (so.pnode, so.pnode_global_dsq)
                    && let Ok(arr) = k.read_u64(sch + pf.off)
                {
                    for node in 0..nodes {
                        match k.read_u64(arr + node as u64 * 8) {
                            Ok(pn) if pn != 0 => {
                                out.push(self.one_dsq(pn + go, format!("global node {node}"), &d))
                            }
                            Ok(_) => {}
                            Err(e) => self.problem(&format!("sch->pnode[{node}]"), e),
                        }
                    }
                }
                if let Some(rht) = self.o.rht {
                    self.user_dsqs(sch + so.dsq_hash, &rht, &d, &mut out);
                }
            }
            _ => {
                // 6.12: global_dsqs[node] and the dsq_hash global.
                if let Ok(arr) = k.sym_u64("global_dsqs")
                    && arr != 0
                {
                    for node in 0..nodes {
                        if let Ok(p) = k.read_u64(arr + node as u64 * 8)
                            && p != 0
                        {
                            out.push(self.one_dsq(p, format!("global node {node}"), &d));
                        }
                    }
                }
                if let (Ok(h), Some(rht)) = (k.sym("dsq_hash"), self.o.rht) {
                    self.user_dsqs(h, &rht, &d, &mut out);
                }
            }
        }
        out
    }

    fn user_dsqs(
        &mut self,
        ht: u64,
        rht: &crate::offsets::RhtOffsets,
        d: &DsqOffsets,
        out: &mut Vec<DsqState>,
    ) {
        let Some(hn) = d.hash_node else { return };
        let w = rhashtable_entries(self.k, ht, rht, hn);
        if w.broken {
            self.problems.push(format!(
                "dsq_hash: broken chain after {} entries",
                w.items.len()
            ));
        }
        if w.truncated {
            self.problems
                .push("dsq_hash: walk truncated at a cap".into());
        }
        for dsq in w.items {
            out.push(self.one_dsq(dsq, "user".into(), d));
        }
    }

    fn scx_tasks(&mut self) -> (Vec<TaskRef>, bool) {
        let k = self.k;
        let (Ok(head), Some(see), Some(to)) = (k.sym("scx_tasks"), self.o.see, self.o.task) else {
            return (Vec::new(), false);
        };
        let Some(scx) = to.scx else {
            return (Vec::new(), false);
        };
        let flags_rel = see.flags.off as i64 - see.tasks_node as i64;
        let w = list_entries(
            k,
            head,
            scx + see.tasks_node,
            crate::collect::MAX_TASKS,
            |node| {
                k.read_u32(node.wrapping_add(flags_rel as u64))
                    .is_ok_and(|f| f & SCX_TASK_CURSOR != 0)
            },
        );
        if w.broken {
            self.problems.push(format!(
                "scx_tasks: broken list after {} entries",
                w.items.len()
            ));
        }
        (self.refs(&w.items, "scx_tasks"), w.truncated)
    }

    fn task_info(
        &mut self,
        t: u64,
        jiffies: Option<u64>,
        hz: u32,
    ) -> Result<TaskInfo, crate::kernel::KernelError> {
        let k = self.k;
        let to = self
            .o
            .task
            .ok_or_else(|| crate::kernel::KernelError::Invalid("no task_struct layout".into()))?;
        let rd =
            |f: Option<crate::offsets::Field>| f.and_then(|f| k.read_uint(t + f.off, f.size).ok());
        let state = k.read_uint(t + to.state.off, to.state.size)? as u32;
        let exit_state = rd(to.exit_state).unwrap_or(0) as u32;
        let class_ptr = rd(to.sched_class).unwrap_or(0);
        let mut info = TaskInfo {
            pid: k.read_u32(t + to.pid.off)? as i32,
            tgid: k.read_u32(t + to.tgid.off)? as i32,
            comm: k.read_cstr(t + to.comm.off, to.comm.size as usize)?,
            state: getters::task_state_letter(state, exit_state).to_string(),
            class: getters::sched_class_name(k, class_ptr),
            policy: rd(to.policy).map(|v| v as u32),
            on_rq: rd(to.on_rq).map(|v| v as u32),
            cpu: rd(to.cpu).map(|v| v as u32),
            start_time_ns: rd(to.start_time),
            kva: t,
            ..Default::default()
        };
        if let Some(m) = to.cpus_mask {
            let nbits = k.per_cpu_offsets().map(|o| o.len()).unwrap_or(64).min(8192);
            let bytes = nbits.div_ceil(8).min(m.size as usize);
            let mut b = vec![0u8; bytes];
            if k.read(t + m.off, &mut b).is_ok() {
                info.cpus_allowed = getters::cpulist(&b, nbits);
            }
        }
        if let (Some(scx), Some(see)) = (to.scx, self.o.see) {
            let b = t + scx;
            let r = |f: Option<crate::offsets::Field>| {
                f.and_then(|f| k.read_uint(b + f.off, f.size).ok())
            };
            info.scx_flags = r(Some(see.flags)).unwrap_or(0) as u32;
            info.dsq_vtime = r(see.dsq_vtime);
            info.slice = r(see.slice);
            info.weight = r(see.weight).map(|v| v as u32);
            if let Some(dsq) = r(Some(see.dsq)).filter(|&p| p != 0)
                && let Some(d) = self.o.dsq
            {
                info.dsq_id = k.read_u64(dsq + d.id.off).ok();
            }
            if let (Some(ra), Some(j)) = (r(see.runnable_at), jiffies)
                && getters::scx_task_runnable(info.scx_flags)
            {
                info.runnable_age_ms = Some(getters::jiffies_to_ms(j.saturating_sub(ra), hz));
            }
        }
        if let (Some(se), Some(fo)) = (to.se, self.o.fair) {
            let b = t + se;
            let r = |f: Option<crate::offsets::Field>| {
                f.and_then(|f| k.read_uint(b + f.off, f.size).ok())
            };
            info.vruntime = r(Some(fo.se_vruntime));
            info.deadline = r(fo.se_deadline);
            info.vlag = r(fo.se_vlag).map(|v| v as i64);
            if let Some(avg) = fo.se_avg {
                info.util_est = fo
                    .avg_util_est
                    .and_then(|f| k.read_uint(b + avg + f.off, f.size).ok())
                    .map(|v| getters::util_est_value(v as u32));
            }
        }
        Ok(info)
    }
}
