//! The serde types of a scheduler-state snapshot (the body of a failure
//! dump). Field names are the kernel's; optional fields are skipped when
//! the kernel lacks them. Every task list carries pid and comm, not only
//! addresses.

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why values of an object break what the kernel guarantees (see
/// [`crate::validate`]); empty when every value is plausible.
pub type Suspect = Vec<String>;

/// A task as listed on a queue: enough to recognise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    pub pid: i32,
    pub comm: String,
    /// `task_struct` address.
    pub kva: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Suspect,
}

/// One CPU's `rq->scx` (and a little of `rq`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RqScxState {
    pub cpu: u32,
    pub nr_running: u32,
    pub flags: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_released: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_qseq: Option<u64>,
    /// `kick_sync` (7.x) or `pnt_seq` (6.12): the pick-next sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kick_sync: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_immed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<u64>,
    /// `rq->nr_running` (all classes).
    pub rq_nr_running: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curr: Option<TaskRef>,
    pub runnable: Vec<TaskRef>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub runnable_truncated: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Suspect,
}

/// One dispatch queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DsqState {
    pub id: u64,
    /// `local cpu N`, `bypass cpu N`, `global node N` or `user`.
    pub origin: String,
    pub nr: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    /// Queued tasks in order (iterator cursors skipped).
    pub tasks: Vec<TaskRef>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    pub kva: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Suspect,
}

/// The scheduler instance (`*scx_root` on 6.16+, globals before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScxSchedState {
    /// `scx_root` for 6.16+, `globals` for older kernels.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched_kva: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_name: Option<String>,
    /// `SCX_ENABLED` etc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_state: Option<String>,
    pub exit_kind: u32,
    /// `SCX_EXIT_ERROR_STALL` etc.
    pub exit_kind_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass_depth: Option<i32>,
    /// Jiffies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_timeout: Option<u64>,
}

/// Details of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub pid: i32,
    pub tgid: i32,
    pub comm: String,
    /// `R`, `S`, `D`, `T`, `t`, `I`, `Z`, `X` as in /proc.
    pub state: String,
    /// `ext`, `fair`, `rt`, `dl`, `idle`, `stop`, or the address.
    pub class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rq: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    pub scx_flags: u32,
    /// `p->scx.dsq->id` when queued on a DSQ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsq_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsq_vtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `jiffies - p->scx.runnable_at`, in ms, for runnable tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runnable_age_ms: Option<u64>,
    /// Allowed CPUs as a list (`0-3,6`).
    pub cpus_allowed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vruntime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlag: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub util_est: Option<u32>,
    /// Where the walkers found it: `runnable cpu 1`, `dsq local cpu 0`,
    /// `scx_tasks`, `curr cpu 2`.
    pub found_on: Vec<String>,
    pub kva: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Suspect,
}

/// One CPU's CFS/EEVDF run queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CfsRqState {
    pub cpu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nr_queued: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h_nr_queued: Option<u32>,
    /// `min_vruntime` (6.12) or `zero_vruntime` (later kernels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_vruntime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_avg: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runnable_avg: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub util_avg: Option<u64>,
    /// util_est with the UTIL_AVG_UNCHANGED flag bit masked off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub util_est: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_capacity: Option<u64>,
}

/// How the snapshot's address translation was established.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranslationInfo {
    pub source: String,
    pub kaslr_offset: u64,
    pub phys_base: u64,
    pub page_offset_base: u64,
    pub la57: bool,
}

/// Everything the walkers found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedSnapshot {
    pub translation: TranslationInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jiffies: Option<u64>,
    pub hz: u32,
    pub nr_cpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sched: Option<ScxSchedState>,
    pub cpus: Vec<RqScxState>,
    pub dsqs: Vec<DsqState>,
    pub scx_tasks: Vec<TaskRef>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub scx_tasks_truncated: bool,
    pub tasks: Vec<TaskInfo>,
    pub cfs: Vec<CfsRqState>,
    /// What could not be read, and why (walkers are best effort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Snapshot-wide values that break kernel guarantees (jiffies, the
    /// CPU count, per-CPU offsets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspect: Suspect,
    /// The global budget across walks ran out: some lists are cut short.
    #[serde(default, skip_serializing_if = "is_false")]
    pub budget_exhausted: bool,
}

impl SchedSnapshot {
    /// The task with this pid, if the walkers found it.
    pub fn task(&self, pid: i32) -> Option<&TaskInfo> {
        self.tasks.iter().find(|t| t.pid == pid)
    }
}
