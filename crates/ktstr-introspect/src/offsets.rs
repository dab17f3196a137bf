//! Struct field offsets, discovered per kernel from BTF and kept in small
//! per-struct groups. A field some kernels lack is an `Option`; a group
//! whose mandatory fields are missing is `None` as a whole. A field whose
//! offset is unknown is never read.
#![deny(clippy::arithmetic_side_effects)]

use crate::btf::{Btf, FieldInfo};

/// A field's offset and size within its struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Field {
    pub off: u64,
    pub size: u64,
}

impl From<FieldInfo> for Field {
    fn from(f: FieldInfo) -> Self {
        Self {
            off: f.offset,
            size: f.size,
        }
    }
}

fn f(btf: &Btf, s: &str, path: &str) -> Option<Field> {
    btf.field(s, path)
        .ok()
        .filter(|i| i.bitfield.is_none())
        .map(Field::from)
}

/// `struct list_head` / `struct rhash_head` linkage.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ListHeadOffsets {
    pub next: u64,
    pub prev: u64,
}

/// `struct rq` fields.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RqOffsets {
    pub size: u64,
    pub cpu: Option<Field>,
    pub curr: Field,
    pub nr_running: Field,
    pub clock: Option<Field>,
    pub cpu_capacity: Option<Field>,
    pub scx: Option<u64>,
    pub cfs: Option<u64>,
}

/// `struct scx_rq` fields (inside `rq.scx`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ScxRqOffsets {
    pub local_dsq: u64,
    pub runnable_list: u64,
    pub nr_running: Field,
    pub flags: Field,
    pub cpu_released: Option<Field>,
    /// Not in 6.12 nor 7.2; read only where BTF has it.
    pub ops_qseq: Option<Field>,
    /// 7.x name of the pick-next sequence.
    pub kick_sync: Option<Field>,
    /// 6.12 name of the same counter.
    pub pnt_seq: Option<Field>,
    pub nr_immed: Option<Field>,
    pub clock: Option<Field>,
}

/// `struct scx_dispatch_q`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DsqOffsets {
    pub size: u64,
    pub list: u64,
    pub nr: Field,
    pub seq: Option<Field>,
    pub id: Field,
    pub hash_node: Option<u64>,
}

/// `struct scx_dsq_list_node`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DsqListNodeOffsets {
    pub node: u64,
    pub flags: Field,
}

/// `struct sched_ext_entity` (inside `task_struct.scx`).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SeeOffsets {
    pub dsq: Field,
    pub dsq_list: u64,
    pub runnable_node: u64,
    pub runnable_at: Option<Field>,
    pub flags: Field,
    pub weight: Option<Field>,
    pub slice: Option<Field>,
    pub dsq_vtime: Option<Field>,
    pub tasks_node: u64,
    pub sticky_cpu: Option<Field>,
    pub holding_cpu: Option<Field>,
    pub ops_state: Option<Field>,
    pub sched: Option<Field>,
}

/// `struct task_struct`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct TaskOffsets {
    pub pid: Field,
    pub tgid: Field,
    pub comm: Field,
    pub state: Field,
    pub flags: Field,
    pub exit_state: Option<Field>,
    pub on_rq: Option<Field>,
    pub on_cpu: Option<Field>,
    pub prio: Option<Field>,
    pub static_prio: Option<Field>,
    pub policy: Option<Field>,
    pub sched_class: Option<Field>,
    pub start_time: Option<Field>,
    pub start_boottime: Option<Field>,
    pub nr_cpus_allowed: Option<Field>,
    pub cpus_mask: Option<Field>,
    pub cpu: Option<Field>,
    pub se: Option<u64>,
    pub scx: Option<u64>,
    pub tasks: Option<u64>,
}

/// `struct scx_sched` (6.16+; absent on 6.12).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SchedOffsets {
    pub dsq_hash: u64,
    pub exit_kind: Field,
    pub aborting: Option<Field>,
    pub bypass_depth: Option<Field>,
    pub watchdog_timeout: Option<Field>,
    pub exit_info: Option<Field>,
    pub ops_name: Option<Field>,
    pub pcpu: Option<Field>,
    pub pnode: Option<Field>,
    /// `scx_sched_pcpu.bypass_dsq` within a per-CPU area.
    pub pcpu_bypass_dsq: Option<u64>,
    /// `scx_sched_pnode.global_dsq`.
    pub pnode_global_dsq: Option<u64>,
}

/// `struct rhashtable`, `bucket_table`, `rhash_head`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RhtOffsets {
    pub tbl: u64,
    pub size: Field,
    pub buckets: u64,
    pub next: u64,
}

/// `struct scx_exit_info`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ExitInfoOffsets {
    pub kind: Field,
    pub exit_code: Option<Field>,
    pub reason: Option<Field>,
    pub msg: Option<Field>,
}

/// `struct sched_entity` / `cfs_rq` / `sched_avg` for the EEVDF view.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FairOffsets {
    pub se_vruntime: Field,
    pub se_deadline: Option<Field>,
    pub se_vlag: Option<Field>,
    pub se_on_rq: Option<Field>,
    pub se_load_weight: Option<Field>,
    pub se_avg: Option<u64>,
    pub cfs_nr_running: Option<Field>,
    pub cfs_h_nr_running: Option<Field>,
    pub cfs_min_vruntime: Option<Field>,
    pub cfs_zero_vruntime: Option<Field>,
    pub cfs_avg: Option<u64>,
    pub cfs_load_weight: Option<Field>,
    pub avg_load_avg: Option<Field>,
    pub avg_runnable_avg: Option<Field>,
    pub avg_util_avg: Option<Field>,
    pub avg_util_est: Option<Field>,
}

/// Every group, resolved once per kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offsets {
    pub list: ListHeadOffsets,
    pub rq: Option<RqOffsets>,
    pub scx_rq: Option<ScxRqOffsets>,
    pub dsq: Option<DsqOffsets>,
    pub dsq_lnode: Option<DsqListNodeOffsets>,
    pub see: Option<SeeOffsets>,
    pub task: Option<TaskOffsets>,
    pub sched: Option<SchedOffsets>,
    pub rht: Option<RhtOffsets>,
    pub exit_info: Option<ExitInfoOffsets>,
    pub fair: Option<FairOffsets>,
}

impl Offsets {
    pub fn from_btf(btf: &Btf) -> Self {
        let list = ListHeadOffsets {
            next: f(btf, "list_head", "next").map_or(0, |x| x.off),
            prev: f(btf, "list_head", "prev").map_or(8, |x| x.off),
        };
        let rq = (|| {
            Some(RqOffsets {
                size: btf.struct_size("rq").ok()?,
                cpu: f(btf, "rq", "cpu"),
                curr: f(btf, "rq", "curr")?,
                nr_running: f(btf, "rq", "nr_running")?,
                clock: f(btf, "rq", "clock"),
                cpu_capacity: f(btf, "rq", "cpu_capacity"),
                scx: f(btf, "rq", "scx").map(|x| x.off),
                cfs: f(btf, "rq", "cfs").map(|x| x.off),
            })
        })();
        let scx_rq = (|| {
            Some(ScxRqOffsets {
                local_dsq: f(btf, "scx_rq", "local_dsq")?.off,
                runnable_list: f(btf, "scx_rq", "runnable_list")?.off,
                nr_running: f(btf, "scx_rq", "nr_running")?,
                flags: f(btf, "scx_rq", "flags")?,
                cpu_released: f(btf, "scx_rq", "cpu_released"),
                ops_qseq: f(btf, "scx_rq", "ops_qseq"),
                kick_sync: f(btf, "scx_rq", "kick_sync"),
                pnt_seq: f(btf, "scx_rq", "pnt_seq"),
                nr_immed: f(btf, "scx_rq", "nr_immed"),
                clock: f(btf, "scx_rq", "clock"),
            })
        })();
        let dsq = (|| {
            Some(DsqOffsets {
                size: btf.struct_size("scx_dispatch_q").ok()?,
                list: f(btf, "scx_dispatch_q", "list")?.off,
                nr: f(btf, "scx_dispatch_q", "nr")?,
                seq: f(btf, "scx_dispatch_q", "seq"),
                id: f(btf, "scx_dispatch_q", "id")?,
                hash_node: f(btf, "scx_dispatch_q", "hash_node").map(|x| x.off),
            })
        })();
        let dsq_lnode = (|| {
            Some(DsqListNodeOffsets {
                node: f(btf, "scx_dsq_list_node", "node")?.off,
                flags: f(btf, "scx_dsq_list_node", "flags")?,
            })
        })();
        let see = (|| {
            let s = "sched_ext_entity";
            Some(SeeOffsets {
                dsq: f(btf, s, "dsq")?,
                dsq_list: f(btf, s, "dsq_list")?.off,
                runnable_node: f(btf, s, "runnable_node")?.off,
                runnable_at: f(btf, s, "runnable_at"),
                flags: f(btf, s, "flags")?,
                weight: f(btf, s, "weight"),
                slice: f(btf, s, "slice"),
                dsq_vtime: f(btf, s, "dsq_vtime"),
                tasks_node: f(btf, s, "tasks_node")?.off,
                sticky_cpu: f(btf, s, "sticky_cpu"),
                holding_cpu: f(btf, s, "holding_cpu"),
                ops_state: f(btf, s, "ops_state"),
                sched: f(btf, s, "sched"),
            })
        })();
        let task = (|| {
            let t = "task_struct";
            Some(TaskOffsets {
                pid: f(btf, t, "pid")?,
                tgid: f(btf, t, "tgid")?,
                comm: f(btf, t, "comm")?,
                state: f(btf, t, "__state").or_else(|| f(btf, t, "state"))?,
                flags: f(btf, t, "flags")?,
                exit_state: f(btf, t, "exit_state"),
                on_rq: f(btf, t, "on_rq"),
                on_cpu: f(btf, t, "on_cpu"),
                prio: f(btf, t, "prio"),
                static_prio: f(btf, t, "static_prio"),
                policy: f(btf, t, "policy"),
                sched_class: f(btf, t, "sched_class"),
                start_time: f(btf, t, "start_time"),
                start_boottime: f(btf, t, "start_boottime"),
                nr_cpus_allowed: f(btf, t, "nr_cpus_allowed"),
                cpus_mask: f(btf, t, "cpus_mask"),
                cpu: f(btf, t, "thread_info.cpu").or_else(|| f(btf, t, "cpu")),
                se: f(btf, t, "se").map(|x| x.off),
                scx: f(btf, t, "scx").map(|x| x.off),
                tasks: f(btf, t, "tasks").map(|x| x.off),
            })
        })();
        let sched = (|| {
            let s = "scx_sched";
            Some(SchedOffsets {
                dsq_hash: f(btf, s, "dsq_hash")?.off,
                exit_kind: f(btf, s, "exit_kind")?,
                aborting: f(btf, s, "aborting"),
                bypass_depth: f(btf, s, "bypass_depth"),
                watchdog_timeout: f(btf, s, "watchdog_timeout"),
                exit_info: f(btf, s, "exit_info"),
                ops_name: f(btf, s, "ops.name"),
                pcpu: f(btf, s, "pcpu"),
                pnode: f(btf, s, "pnode"),
                pcpu_bypass_dsq: f(btf, "scx_sched_pcpu", "bypass_dsq").map(|x| x.off),
                pnode_global_dsq: f(btf, "scx_sched_pnode", "global_dsq").map(|x| x.off),
            })
        })();
        let rht = (|| {
            Some(RhtOffsets {
                tbl: f(btf, "rhashtable", "tbl")?.off,
                size: f(btf, "bucket_table", "size")?,
                buckets: f(btf, "bucket_table", "buckets")?.off,
                next: f(btf, "rhash_head", "next")?.off,
            })
        })();
        let exit_info = (|| {
            Some(ExitInfoOffsets {
                kind: f(btf, "scx_exit_info", "kind")?,
                exit_code: f(btf, "scx_exit_info", "exit_code"),
                reason: f(btf, "scx_exit_info", "reason"),
                msg: f(btf, "scx_exit_info", "msg"),
            })
        })();
        let fair = (|| {
            Some(FairOffsets {
                se_vruntime: f(btf, "sched_entity", "vruntime")?,
                se_deadline: f(btf, "sched_entity", "deadline"),
                se_vlag: f(btf, "sched_entity", "vlag"),
                se_on_rq: f(btf, "sched_entity", "on_rq"),
                se_load_weight: f(btf, "sched_entity", "load.weight"),
                se_avg: f(btf, "sched_entity", "avg").map(|x| x.off),
                cfs_nr_running: f(btf, "cfs_rq", "nr_queued")
                    .or_else(|| f(btf, "cfs_rq", "nr_running")),
                cfs_h_nr_running: f(btf, "cfs_rq", "h_nr_queued")
                    .or_else(|| f(btf, "cfs_rq", "h_nr_running")),
                cfs_min_vruntime: f(btf, "cfs_rq", "min_vruntime"),
                cfs_zero_vruntime: f(btf, "cfs_rq", "zero_vruntime"),
                cfs_avg: f(btf, "cfs_rq", "avg").map(|x| x.off),
                cfs_load_weight: f(btf, "cfs_rq", "load.weight"),
                avg_load_avg: f(btf, "sched_avg", "load_avg"),
                avg_runnable_avg: f(btf, "sched_avg", "runnable_avg"),
                avg_util_avg: f(btf, "sched_avg", "util_avg"),
                avg_util_est: f(btf, "sched_avg", "util_est"),
            })
        })();
        Self {
            list,
            rq,
            scx_rq,
            dsq,
            dsq_lnode,
            see,
            task,
            sched,
            rht,
            exit_info,
            fair,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::KernelImage;
    use std::path::Path;

    fn shared(k: &str) -> Option<KernelImage> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/kernels")
            .join(k)
            .join("vmlinux");
        if !p.is_file() {
            eprintln!("skipped: {} not present", p.display());
            return None;
        }
        Some(KernelImage::open(&p).expect("shared vmlinux opens"))
    }

    /// The two shared kernels really differ; discovery must reflect it.
    #[test]
    fn per_kernel_field_sets_differ_as_documented() {
        if let Some(img) = shared("7.2") {
            let o = Offsets::from_btf(img.btf());
            let srq = o.scx_rq.expect("7.2 scx_rq");
            assert!(srq.ops_qseq.is_none(), "7.2 has no rq->scx.ops_qseq");
            assert!(srq.kick_sync.is_some() && srq.nr_immed.is_some() && srq.pnt_seq.is_none());
            let s = o.sched.expect("7.2 has struct scx_sched");
            // Offsets depend on the build's config: compare with BTF, never
            // with numbers from one build.
            let ek = img.btf().field("scx_sched", "exit_kind").unwrap();
            assert_eq!((s.exit_kind.off, s.exit_kind.size), (ek.offset, ek.size));
            assert!(s.pcpu_bypass_dsq.is_some() && s.pnode_global_dsq.is_some());
            let dv = img.btf().field("sched_ext_entity", "dsq_vtime").unwrap();
            assert_eq!(o.see.unwrap().dsq_vtime.unwrap().off, dv.offset);
            assert!(o.task.is_some() && o.rq.is_some() && o.dsq.is_some() && o.rht.is_some());
        }
        if let Some(img) = shared("6.12") {
            let o = Offsets::from_btf(img.btf());
            let srq = o.scx_rq.expect("6.12 scx_rq");
            assert!(srq.ops_qseq.is_none() && srq.kick_sync.is_none() && srq.nr_immed.is_none());
            let ps = img.btf().field("scx_rq", "pnt_seq").unwrap();
            assert_eq!(srq.pnt_seq.unwrap().off, ps.offset);
            assert!(o.sched.is_none(), "6.12 has no struct scx_sched");
            let dv = img.btf().field("sched_ext_entity", "dsq_vtime").unwrap();
            assert_eq!(o.see.unwrap().dsq_vtime.unwrap().off, dv.offset);
            assert!(o.exit_info.is_some());
        }
    }

    #[test]
    fn field_paths_resolve_through_nesting() {
        let Some(img) = shared("7.2") else { return };
        let btf = img.btf();
        let scx = btf.field("task_struct", "scx").unwrap().offset;
        let inner = btf.field("sched_ext_entity", "dsq_vtime").unwrap().offset;
        let v = btf.field("task_struct", "scx.dsq_vtime").unwrap();
        assert_eq!(v.offset, scx + inner);
        assert_eq!(v.size, 8);
        let ue = btf.field("task_struct", "se.avg.util_est").unwrap();
        assert_eq!(ue.size, 4);
        assert!(btf.field("task_struct", "scx.nope").is_err());
        let err = btf
            .field("task_struct", "scx.nope")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("task_struct.scx") && err.contains("nope"),
            "{err}"
        );
        // A bitfield is reported as such.
        let bf = btf.field("scx_sched", "warned_zero_slice").unwrap();
        assert!(bf.bitfield.is_some());
        assert_eq!(btf.enum_value("SCX_EXIT_ERROR"), Some(1024));
    }
}
