//! Workload workers: what a worker process runs ([`WorkerSpec`]) and what
//! it reports ([`WorkerReport`]). Workers are guest-init run as
//! `/init worker <hex postcard spec>`; the report comes back as one hex
//! postcard line on stdout. Shared here so the workload library (in the
//! test binary) and guest-init agree on the format.

use serde::{Deserialize, Serialize};

/// One phase of a `Sequence` work type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkPhase {
    /// Spin for this long.
    Spin(std::time::Duration),
    /// Sleep for this long.
    Sleep(std::time::Duration),
    /// Call `sched_yield()` in a loop for this long.
    Yield(std::time::Duration),
}

/// What a worker does until told to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkType {
    /// Burn CPU.
    SpinWait,
    /// sched_yield() in a loop.
    YieldHeavy,
    /// Spin ~1 ms, sleep ~100 us, repeatedly.
    Mixed,
    /// Spin `burst`, then sleep `idle`.
    Bursty {
        /// How long to spin.
        burst: std::time::Duration,
        /// How long to sleep after.
        idle: std::time::Duration,
    },
    /// A wake chain: two tasks (threads of the worker) passing a token
    /// through a pair of pipes.
    PipeIo,
    /// The same token passing through a futex word (FUTEX_WAIT/WAKE).
    FutexPingPong,
    /// Phases in order, then repeat.
    Sequence {
        /// The first phase.
        first: WorkPhase,
        /// The phases after it.
        rest: Vec<WorkPhase>,
    },
}

/// Scheduling policy for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedPolicy {
    /// SCHED_OTHER (EEVDF, or sched_ext when it is switched on globally).
    Normal,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at this priority (1..=99).
    Fifo(u32),
    /// SCHED_RR at this priority (1..=99).
    RoundRobin(u32),
    /// SCHED_EXT (7).
    Ext,
}

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
    /// Wake-latency percentiles (p50, p90, p99) for sleeping work types.
    pub wake_latency_ns: Vec<u64>,
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
        };
        assert_eq!(from_hex::<WorkerSpec>(&to_hex(&s)).unwrap(), s);
        assert!(from_hex::<WorkerSpec>("zz").is_err());
        assert!(from_hex::<WorkerSpec>("abc").is_err());
    }
}
