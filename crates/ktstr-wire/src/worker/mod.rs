//! Workload workers: what a worker process runs ([`WorkerSpec`]) and what
//! it reports ([`WorkerReport`]). Workers are guest-init run as
//! `/init worker <hex postcard spec>`; the report comes back as one hex
//! postcard line on stdout. Shared here so the workload library (in the
//! test binary) and guest-init agree on the format.

use serde::{Deserialize, Serialize};

mod policy;
mod work_type;

pub use policy::{SchedClass, SchedPolicy};
pub use work_type::{AluWidth, WakeMechanism, WorkPhase, WorkType};

/// A worker's full instructions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The worker's index in its group.
    pub index: u32,
    /// What to do.
    pub work: WorkType,
    /// Scheduling policy to set first.
    pub policy: SchedPolicy,
    /// Nice value to set first.
    pub nice: i32,
    /// CPUs to pin to (empty: inherit).
    pub cpus: Vec<u32>,
    /// Cgroup path below /sys/fs/cgroup to join (empty: stay).
    pub cgroup: String,
    /// The group this worker belongs to, for grouped work types.
    pub group: Option<GroupSpec>,
}

/// Bytes of the file a worker group shares (futex words, timestamps).
pub const GROUP_SHM_BYTES: usize = 64 * 1024;

/// The most members one group may have.
pub const MAX_GROUP_SIZE: u32 = 256;

/// Where a grouped worker meets its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// Directory (on the guest's tmpfs) holding the shared file `shm`
    /// ([`GROUP_SHM_BYTES`] long) and the group's FIFOs.
    pub dir: String,
    /// This worker's index in the group.
    pub member: u32,
    /// Members in the group ([`WorkType::worker_group_size`]).
    pub size: u32,
}

/// What a worker measured.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's index in its group.
    pub index: u32,
    /// Its pid in the guest.
    pub pid: i32,
    /// Loop iterations of useful work.
    pub work_units: u64,
    /// CPU time consumed (CLOCK_THREAD_CPUTIME summed over its threads), ns.
    pub cpu_time_ns: u64,
    /// Wall time from start to stop, ns.
    pub wall_time_ns: u64,
    /// CPUs it was seen running on.
    pub cpus: Vec<u32>,
    /// How often it was seen on a different CPU than before.
    pub migrations: u64,
    /// Longest observed gap between two consecutive work iterations.
    pub max_gap_ns: u64,
    /// Wake-latency percentiles (p50, p90, p99, p99.9, max) for sleeping
    /// work types; empty for the others.
    pub wake_latency_ns: Vec<u64>,
    /// Wake-latency samples taken (more than were kept when it hit the
    /// cap).
    pub wake_sample_total: u64,
    /// Outer-loop iterations (forks, timer wakes, moves, ...).
    pub iterations: u64,
    /// wall - cpu time, ns.
    pub off_cpu_ns: u64,
    /// CPU the longest gap ended on.
    pub max_gap_cpu: u32,
    /// When the longest gap ended, ns after the start.
    pub max_gap_at_ns: u64,
    /// The kernel's `sched_info` over the run (`/proc/self/task/*/schedstat`
    /// deltas of the threads alive at both ends; helper threads a work type
    /// joins before the end are not in it): time on CPU ...
    pub schedstat_cpu_time_ns: u64,
    /// ... time runnable but waiting for a CPU (run delay) ...
    pub schedstat_run_delay_ns: u64,
    /// ... and the number of times it was scheduled in.
    pub schedstat_run_count: u64,
    /// Work-type counters (`forks`, `nice_changes`, `affinity_moves`, ...).
    pub counters: Vec<(String, u64)>,
    /// Setup problems (policy or affinity refused, ...).
    pub errors: Vec<String>,
}

/// Hex-encode a postcard value (argv-safe).
pub fn to_hex<T: Serialize>(v: &T) -> String {
    postcard::to_allocvec(v)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Decode [`to_hex`] output.
pub fn from_hex<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || s.len() > 2 * crate::MAX_FRAME {
        return Err("bad hex length".into());
    }
    let bytes: Result<Vec<u8>, _> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
        .collect();
    let bytes = bytes.map_err(|e| e.to_string())?;
    postcard::from_bytes(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let s = WorkerSpec {
            index: 3,
            work: WorkType::Sequence {
                first: WorkPhase::Sleep(std::time::Duration::from_secs(15)),
                rest: vec![],
            },
            policy: SchedPolicy::Fifo(5),
            nice: -2,
            cpus: vec![0, 2],
            cgroup: "cg_0".into(),
            group: Some(GroupSpec {
                dir: "/tmp/g".into(),
                member: 1,
                size: 2,
            }),
        };
        assert_eq!(from_hex::<WorkerSpec>(&to_hex(&s)).unwrap(), s);
        assert!(from_hex::<WorkerSpec>("zz").is_err());
        assert!(from_hex::<WorkerSpec>("abc").is_err());
    }
}
