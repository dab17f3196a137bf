//! Build a [`SchedSnapshot`] from a [`Kernel`]: per-CPU `rq->scx`, every
//! DSQ (local, bypass, global, user), `scx_tasks`, the scheduler instance,
//! task details and the EEVDF view. Works on 6.16+ kernels (`scx_root`)
//! and on 6.12 (globals). Problems are recorded, never panicked on;
//! values that break kernel guarantees carry a suspect mark
//! ([`crate::validate`]); every address computed from a guest value is
//! checked; and a global budget across walks bounds the work and the
//! output however the lists are crafted.
#![deny(clippy::arithmetic_side_effects)]

use crate::getters;
use crate::kernel::Kernel;
use crate::mem::PhysMem;
use crate::offsets::{DsqOffsets, Offsets};
use crate::snapshot::*;
use crate::validate::{self, DsqKind};
use crate::walk::{MAX_NODES_PER_LIST, Walk, field_addr as at, list_entries, rhashtable_entries};
use std::collections::{BTreeMap, HashMap};

pub use crate::helpers::SCX_TASK_CURSOR;
/// `SCX_DSQ_LNODE_ITER_CURSOR` in `scx_dsq_list_node.flags`.
pub const SCX_DSQ_LNODE_ITER_CURSOR: u32 = 1;
/// Most task details collected in one snapshot.
pub const MAX_TASKS: usize = crate::helpers::MAX_TASKS;
/// Most task references (list entries) across every walk of a snapshot.
pub const MAX_TASK_REFS: usize = 65_536;
/// Most DSQs reported.
pub const MAX_DSQS: usize = 8192;

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
    /// Task references left in the global budget.
    refs_left: usize,
    budget_exhausted: bool,
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
        refs_left: MAX_TASK_REFS,
        budget_exhausted: false,
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
    // Ages from impossible jiffies would be impossible too: drop them.
    let age_jiffies = match s.jiffies.map(|j| (j, validate::jiffies(j))) {
        Some((_, Some(why))) => {
            s.suspect.push(why);
            None
        }
        Some((j, None)) => Some(j),
        None => None,
    };
    // (cpu, offset) of every possible CPU whose per-CPU offset is sane.
    let offs: Vec<(u32, u64)> = match k.per_cpu() {
        Ok(pc) => {
            s.nr_cpus = pc.offsets.len() as u32;
            s.suspect.extend(pc.count_suspect.clone());
            for (cpu, why) in &pc.bad {
                s.suspect.push(format!("cpu {cpu}: {why}; not read"));
            }
            pc.good().collect()
        }
        Err(e) => {
            c.problem("__per_cpu_offset", e);
            Vec::new()
        }
    };
    let rq_base = k
        .sym("runqueues")
        .map_err(|e| c.problem("runqueues", e))
        .ok();
    let rqs: Vec<(u32, u64)> = match rq_base {
        Some(b) => offs
            .iter()
            // Modular, as per_cpu_ptr() (see Kernel::per_cpu_ptr).
            .map(|&(cpu, o)| (cpu, b.wrapping_add(o)))
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
        if found.len() > MAX_TASKS {
            c.problems.push(format!(
                "{} tasks found; details for the first {MAX_TASKS}",
                found.len()
            ));
        }
        for (kva, lists) in found.into_iter().take(MAX_TASKS) {
            match c.task_info(kva, age_jiffies, opts.hz) {
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
    s.budget_exhausted = c.budget_exhausted;
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
        let pid = self.k.read_u32(at(kva, to.pid.off)?).ok()? as i32;
        let comm = self
            .k
            .read_cstr(at(kva, to.comm.off)?, to.comm.size as usize)
            .ok()?;
        let suspect = validate::pid(pid)
            .into_iter()
            .chain(validate::comm(&comm))
            .collect();
        let t = TaskRef {
            pid,
            comm,
            kva,
            suspect,
        };
        if self.comm_cache.len() < MAX_TASK_REFS {
            self.comm_cache.insert(kva, t.clone());
        }
        Some(t)
    }

    /// Record a walk's problems under `what`.
    fn walk_problems(&mut self, what: &str, w: &Walk) {
        if let Some(r) = &w.reason {
            let rec = if w.recovered > 0 {
                format!(" ({} entries recovered walking backwards)", w.recovered)
            } else {
                String::new()
            };
            self.problems.push(format!("{what}: {r}{rec}"));
        }
    }

    /// Tasks from a walk, tagging each with where it was found; bounded by
    /// the global budget of task references.
    fn refs(&mut self, items: &[u64], where_: &str) -> Vec<TaskRef> {
        let take = items.len().min(self.refs_left);
        if take < items.len() && !self.budget_exhausted {
            self.budget_exhausted = true;
            self.problems.push(format!(
                "budget of {MAX_TASK_REFS} task references across walks exhausted at {where_}; \
                 later lists are cut short"
            ));
        }
        self.refs_left = self.refs_left.saturating_sub(take);
        let items = &items[..take];
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
        st.rq_nr_running = rd(k, rq, Some(ro.nr_running)).unwrap_or(0) as u32;
        st.suspect.extend(validate::task_count(
            "rq->nr_running",
            u64::from(st.rq_nr_running),
        ));
        if let Some(curr) = rd(k, rq, Some(ro.curr)).filter(|&c| c != 0) {
            st.curr = self.task_ref(curr);
            if st.curr.is_some() {
                self.note(curr, format!("curr cpu {cpu}"));
            }
        }
        let (Some(scx), Some(so)) = (ro.scx, self.o.scx_rq) else {
            return Some(st);
        };
        let base = at(rq, scx)?;
        st.nr_running = rd(k, base, Some(so.nr_running)).unwrap_or(0) as u32;
        st.suspect.extend(validate::task_count(
            "rq->scx.nr_running",
            u64::from(st.nr_running),
        ));
        st.flags = rd(k, base, Some(so.flags)).unwrap_or(0) as u32;
        st.cpu_released = rd(k, base, so.cpu_released).map(|v| v != 0);
        st.ops_qseq = rd(k, base, so.ops_qseq);
        st.kick_sync = rd(k, base, so.kick_sync.or(so.pnt_seq));
        st.nr_immed = rd(k, base, so.nr_immed).map(|v| v as u32);
        st.clock = rd(k, base, so.clock);
        if let (Some(see), Some(to)) = (self.o.see, self.o.task)
            && let Some(scx_in_task) = to.scx
            && let Some(head) = at(base, so.runnable_list)
        {
            let w = list_entries(
                k,
                head,
                scx_in_task.saturating_add(see.runnable_node),
                MAX_NODES_PER_LIST,
                |_| false,
            );
            self.walk_problems(&format!("cpu {cpu} runnable_list"), &w);
            st.runnable_truncated = w.truncated;
            st.runnable = self.refs(&w.items, &format!("runnable cpu {cpu}"));
        }
        Some(st)
    }

    fn cfs_state(&mut self, cpu: u32, rq: u64) -> Option<CfsRqState> {
        let (ro, fo) = (self.o.rq?, self.o.fair?);
        let cfs = at(rq, ro.cfs?)?;
        let k = self.k;
        let avg = fo.cfs_avg.and_then(|a| at(cfs, a));
        Some(CfsRqState {
            cpu,
            nr_queued: rd(k, cfs, fo.cfs_nr_running).map(|v| v as u32),
            h_nr_queued: rd(k, cfs, fo.cfs_h_nr_running).map(|v| v as u32),
            min_vruntime: rd(k, cfs, fo.cfs_min_vruntime.or(fo.cfs_zero_vruntime)),
            load_avg: avg.and_then(|a| rd(k, a, fo.avg_load_avg)),
            runnable_avg: avg.and_then(|a| rd(k, a, fo.avg_runnable_avg)),
            util_avg: avg.and_then(|a| rd(k, a, fo.avg_util_avg)),
            util_est: avg
                .and_then(|a| rd(k, a, fo.avg_util_est))
                .map(|v| getters::util_est_value(v as u32)),
            cpu_capacity: rd(k, rq, ro.cpu_capacity),
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
            let exit_kind = rd(k, sch, Some(so.exit_kind)).unwrap_or(0) as u32;
            let ops_name = so
                .ops_name
                .and_then(|f| k.read_cstr(at(sch, f.off)?, f.size.min(128) as usize).ok());
            let (exit_reason, exit_msg) = match rd(k, sch, so.exit_info) {
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
                aborting: rd(k, sch, so.aborting).map(|v| v != 0),
                bypass_depth: rd(k, sch, so.bypass_depth).map(|v| v as u32 as i32),
                watchdog_timeout: rd(k, sch, so.watchdog_timeout),
            });
        }
        // Kernels before 6.16: globals.
        let exit_kind = k.sym_u32("scx_exit_kind").ok()?;
        let ops_name = k.sym("scx_ops").ok().and_then(|a| {
            let f = btf.field("sched_ext_ops", "name").ok()?;
            k.read_cstr(at(a, f.offset)?, f.size.min(128) as usize).ok()
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
            let p = k.read_u64(at(ei, f?.off)?).ok()?;
            (p != 0)
                .then(|| k.read_cstr(p, max).ok())
                .flatten()
                .filter(|s| !s.is_empty())
        };
        (s(eo.reason, 256), s(eo.msg, 1024))
    }

    fn one_dsq(&mut self, dsq: u64, kind: DsqKind, origin: String, d: &DsqOffsets) -> DsqState {
        let k = self.k;
        let mut st = DsqState {
            origin,
            kva: dsq,
            ..Default::default()
        };
        st.id = rd(k, dsq, Some(d.id)).unwrap_or(0);
        st.nr = rd(k, dsq, Some(d.nr)).unwrap_or(0) as u32;
        st.seq = rd(k, dsq, d.seq).map(|v| v as u32);
        st.suspect.extend(validate::dsq_id(kind, st.id));
        st.suspect
            .extend(validate::task_count("nr", u64::from(st.nr)));
        let (Some(ln), Some(see), Some(to)) = (self.o.dsq_lnode, self.o.see, self.o.task) else {
            return st;
        };
        let Some(scx) = to.scx else { return st };
        let Some(head) = at(dsq, d.list) else {
            return st;
        };
        // List entries are scx_dsq_list_node.node; iterator cursors are
        // bare list nodes flagged SCX_DSQ_LNODE_ITER_CURSOR.
        let node_in_task = scx.saturating_add(see.dsq_list).saturating_add(ln.node);
        let flags_rel = ln.flags.off.wrapping_sub(ln.node);
        let w = list_entries(k, head, node_in_task, MAX_NODES_PER_LIST, |node| {
            k.read_u32(node.wrapping_add(flags_rel))
                .is_ok_and(|f| f & SCX_DSQ_LNODE_ITER_CURSOR != 0)
        });
        self.walk_problems(&format!("dsq {:#x} ({})", st.id, st.origin), &w);
        st.truncated = w.truncated;
        let where_ = format!("dsq {}", st.origin);
        st.tasks = self.refs(&w.items, &where_);
        if !w.truncated && !w.broken && !self.budget_exhausted && w.items.len() != st.nr as usize {
            st.suspect.push(format!(
                "nr {} but {} tasks on its list",
                st.nr,
                w.items.len()
            ));
        }
        st
    }

    fn push_dsq(&mut self, out: &mut Vec<DsqState>, dsq: DsqState) {
        if out.len() < MAX_DSQS {
            out.push(dsq);
        } else if out.len() == MAX_DSQS {
            self.problems
                .push(format!("more than {MAX_DSQS} DSQs; the rest are not shown"));
        }
    }

    fn dsqs(&mut self, rqs: &[(u32, u64)], pcpu_offs: &[(u32, u64)]) -> Vec<DsqState> {
        let mut out = Vec::new();
        let Some(d) = self.o.dsq else { return out };
        let k = self.k;
        // Local DSQs: always there, scheduler or not.
        if let (Some(ro), Some(so)) = (self.o.rq, self.o.scx_rq)
            && let Some(scx) = ro.scx
        {
            for &(cpu, rq) in rqs {
                if let Some(local) = at(rq, scx.saturating_add(so.local_dsq)) {
                    let st = self.one_dsq(local, DsqKind::Local, format!("local cpu {cpu}"), &d);
                    self.push_dsq(&mut out, st);
                }
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
                    && let Some(pcpu) = rd(k, sch, Some(pf)).filter(|&p| p != 0)
                {
                    for &(cpu, off) in pcpu_offs {
                        if let Some(dsq) = at(pcpu.wrapping_add(off), bo) {
                            let st =
                                self.one_dsq(dsq, DsqKind::Bypass, format!("bypass cpu {cpu}"), &d);
                            self.push_dsq(&mut out, st);
                        }
                    }
                }
                // Per-node global DSQs: sch->pnode[node]->global_dsq.
                if let (Some(pf), Some(go)) = (so.pnode, so.pnode_global_dsq)
                    && let Some(arr) = rd(k, sch, Some(pf))
                {
                    for node in 0..nodes {
                        let slot = at(arr, u64::from(node).saturating_mul(8));
                        match slot.map(|a| k.read_u64(a)) {
                            Some(Ok(pn)) if pn != 0 => {
                                if let Some(g) = at(pn, go) {
                                    let st = self.one_dsq(
                                        g,
                                        DsqKind::Global,
                                        format!("global node {node}"),
                                        &d,
                                    );
                                    self.push_dsq(&mut out, st);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => self.problem(&format!("sch->pnode[{node}]"), e),
                            None => {
                                self.problem(&format!("sch->pnode[{node}]"), "address overflow")
                            }
                        }
                    }
                }
                if let (Some(rht), Some(h)) = (self.o.rht, at(sch, so.dsq_hash)) {
                    self.user_dsqs(h, &rht, &d, &mut out);
                }
            }
            _ => {
                // 6.12: global_dsqs[node] and the dsq_hash global.
                if let Ok(arr) = k.sym_u64("global_dsqs")
                    && arr != 0
                {
                    for node in 0..nodes {
                        let slot = at(arr, u64::from(node).saturating_mul(8));
                        if let Some(Ok(p)) = slot.map(|a| k.read_u64(a))
                            && p != 0
                        {
                            let st =
                                self.one_dsq(p, DsqKind::Global, format!("global node {node}"), &d);
                            self.push_dsq(&mut out, st);
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
        self.walk_problems("dsq_hash", &w);
        if w.truncated {
            self.problems
                .push("dsq_hash: walk truncated at a cap".into());
        }
        for dsq in w.items {
            if out.len() > MAX_DSQS {
                break;
            }
            let st = self.one_dsq(dsq, DsqKind::User, "user".into(), d);
            self.push_dsq(out, st);
        }
    }

    fn scx_tasks(&mut self) -> (Vec<TaskRef>, bool) {
        if self.k.sym("scx_tasks").is_err() {
            return (Vec::new(), false);
        }
        let w = match crate::helpers::for_each_scx_task(self.k, self.o) {
            Ok(w) => w,
            Err(e) => {
                self.problem("scx_tasks", e);
                return (Vec::new(), false);
            }
        };
        self.walk_problems("scx_tasks", &w);
        (self.refs(&w.items, "scx_tasks"), w.truncated)
    }

    fn task_info(
        &mut self,
        t: u64,
        jiffies: Option<u64>,
        hz: u32,
    ) -> Result<TaskInfo, crate::kernel::KernelError> {
        use crate::kernel::{KernelError, field_addr};
        let k = self.k;
        let to = self
            .o
            .task
            .ok_or_else(|| KernelError::Invalid("no task_struct layout".into()))?;
        let state = k.read_uint(field_addr(t, to.state.off)?, to.state.size)? as u32;
        let exit_state = rd(k, t, to.exit_state).unwrap_or(0) as u32;
        let class_ptr = rd(k, t, to.sched_class).unwrap_or(0);
        let mut info = TaskInfo {
            pid: k.read_u32(field_addr(t, to.pid.off)?)? as i32,
            tgid: k.read_u32(field_addr(t, to.tgid.off)?)? as i32,
            comm: k.read_cstr(field_addr(t, to.comm.off)?, to.comm.size as usize)?,
            state: getters::task_state_letter(state, exit_state).to_string(),
            class: getters::sched_class_name(k, class_ptr),
            policy: rd(k, t, to.policy).map(|v| v as u32),
            on_rq: rd(k, t, to.on_rq).map(|v| v as u32),
            cpu: rd(k, t, to.cpu).map(|v| v as u32),
            start_time_ns: rd(k, t, to.start_time),
            kva: t,
            ..Default::default()
        };
        info.suspect.extend(validate::pid(info.pid));
        info.suspect
            .extend(validate::pid(info.tgid).map(|w| format!("tgid: {w}")));
        info.suspect.extend(validate::comm(&info.comm));
        if let Some(m) = to.cpus_mask {
            let nbits = k.per_cpu().map(|p| p.offsets.len()).unwrap_or(64).min(8192);
            let bytes = nbits.div_ceil(8).min(m.size as usize);
            let mut b = vec![0u8; bytes];
            if k.read(field_addr(t, m.off)?, &mut b).is_ok() {
                info.cpus_allowed = getters::cpulist(&b, nbits);
            }
        }
        if let (Some(scx), Some(see)) = (to.scx, self.o.see) {
            let b = field_addr(t, scx)?;
            info.scx_flags = rd(k, b, Some(see.flags)).unwrap_or(0) as u32;
            info.dsq_vtime = rd(k, b, see.dsq_vtime);
            info.slice = rd(k, b, see.slice);
            info.weight = rd(k, b, see.weight).map(|v| v as u32);
            if let Some(dsq) = rd(k, b, Some(see.dsq)).filter(|&p| p != 0)
                && let Some(d) = self.o.dsq
            {
                info.dsq_id = rd(k, dsq, Some(d.id));
            }
            if let (Some(ra), Some(j)) = (rd(k, b, see.runnable_at), jiffies)
                && getters::scx_task_runnable(info.scx_flags)
            {
                let age = getters::jiffies_to_ms(j.saturating_sub(ra), hz);
                info.suspect.extend(validate::runnable_age_ms(age));
                info.runnable_age_ms = Some(age);
            }
        }
        if let (Some(se), Some(fo)) = (to.se, self.o.fair) {
            let b = field_addr(t, se)?;
            info.vruntime = rd(k, b, Some(fo.se_vruntime));
            info.deadline = rd(k, b, fo.se_deadline);
            info.vlag = rd(k, b, fo.se_vlag).map(|v| v as i64);
            if let Some(avg) = fo.se_avg.and_then(|a| at(b, a)) {
                info.util_est =
                    rd(k, avg, fo.avg_util_est).map(|v| getters::util_est_value(v as u32));
            }
        }
        Ok(info)
    }
}

/// Read field `f` of the object at `base` (None: no such field, an
/// overflowing address, or unreadable memory).
fn rd<M: PhysMem>(k: &Kernel<M>, base: u64, f: Option<crate::offsets::Field>) -> Option<u64> {
    let f = f?;
    k.read_uint(at(base, f.off)?, f.size).ok()
}
