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
    /// Spin `burst_duration`, then sleep `sleep_duration`.
    Bursty {
        /// How long to spin.
        burst_duration: std::time::Duration,
        /// How long to sleep after.
        sleep_duration: std::time::Duration,
    },
    /// A wake chain: two tasks (threads of the worker) passing a token
    /// through a pair of pipes.
    PipeIo,
    /// The same token passing through a futex word (FUTEX_WAIT/WAKE).
    FutexPingPong,
    /// Strided read-modify-write over a `size_kib` buffer (cache pressure).
    CachePressure {
        /// Working-set size in KiB (1 ..= 1048576).
        size_kib: usize,
        /// Bytes between touched elements (1 ..= size).
        stride: usize,
    },
    /// fork, the child `_exit(0)`s, the parent `waitpid`s: the new-task
    /// wake-up and exit paths. Counter `forks`.
    ForkExit,
    /// Spin, then `setpriority` to the next nice value in -20..=19, then
    /// yield: reweighting a running task.
    NiceSweep,
    /// Spin `spin_iters`, then `sched_setaffinity` itself to a random CPU
    /// of its allowed set, then yield: migration of a running task.
    AffinityChurn {
        /// Spin iterations between moves (>= 1).
        spin_iters: u64,
    },
    /// cyclictest-style: sleep to an absolute CLOCK_MONOTONIC deadline
    /// every `interval_us`; the wake latency is how late each wake-up was.
    TimerLatency {
        /// Period in µs (10 ..= 1_000_000).
        interval_us: u64,
    },
    /// Phases in order, then repeat.
    Sequence {
        /// The first phase.
        first: WorkPhase,
        /// The phases after it.
        rest: Vec<WorkPhase>,
    },
}

impl WorkType {
    /// Every work type's name, in declaration order.
    pub const ALL_NAMES: &'static [&'static str] = &[
        "SpinWait",
        "YieldHeavy",
        "Mixed",
        "Bursty",
        "PipeIo",
        "FutexPingPong",
        "CachePressure",
        "ForkExit",
        "NiceSweep",
        "AffinityChurn",
        "TimerLatency",
        "Sequence",
    ];

    /// The variant's name (as in [`WorkType::ALL_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Self::SpinWait => "SpinWait",
            Self::YieldHeavy => "YieldHeavy",
            Self::Mixed => "Mixed",
            Self::Bursty { .. } => "Bursty",
            Self::PipeIo => "PipeIo",
            Self::FutexPingPong => "FutexPingPong",
            Self::CachePressure { .. } => "CachePressure",
            Self::ForkExit => "ForkExit",
            Self::NiceSweep => "NiceSweep",
            Self::AffinityChurn { .. } => "AffinityChurn",
            Self::TimerLatency { .. } => "TimerLatency",
            Self::Sequence { .. } => "Sequence",
        }
    }

    /// The work type of this exact name with default parameters; `None`
    /// for unknown names and for `Sequence` (it has no sensible default).
    pub fn from_name(name: &str) -> Option<Self> {
        use std::time::Duration;
        Some(match name {
            "SpinWait" => Self::SpinWait,
            "YieldHeavy" => Self::YieldHeavy,
            "Mixed" => Self::Mixed,
            "Bursty" => Self::bursty(Duration::from_millis(50), Duration::from_millis(100)),
            "PipeIo" => Self::PipeIo,
            "FutexPingPong" => Self::FutexPingPong,
            "CachePressure" => Self::cache_pressure(32, 64),
            "ForkExit" => Self::ForkExit,
            "NiceSweep" => Self::NiceSweep,
            "AffinityChurn" => Self::affinity_churn(1024),
            "TimerLatency" => Self::timer_latency(1000),
            _ => return None,
        })
    }

    /// The name in [`WorkType::ALL_NAMES`] equal to `name` ignoring case
    /// (for "did you mean").
    pub fn suggest(name: &str) -> Option<&'static str> {
        Self::ALL_NAMES
            .iter()
            .copied()
            .find(|n| n.eq_ignore_ascii_case(name))
    }

    /// `Bursty`.
    pub const fn bursty(
        burst_duration: std::time::Duration,
        sleep_duration: std::time::Duration,
    ) -> Self {
        Self::Bursty {
            burst_duration,
            sleep_duration,
        }
    }

    /// `CachePressure`.
    pub const fn cache_pressure(size_kib: usize, stride: usize) -> Self {
        Self::CachePressure { size_kib, stride }
    }

    /// `AffinityChurn`.
    pub const fn affinity_churn(spin_iters: u64) -> Self {
        Self::AffinityChurn { spin_iters }
    }

    /// `TimerLatency`.
    pub const fn timer_latency(interval_us: u64) -> Self {
        Self::TimerLatency { interval_us }
    }

    /// Why these parameters are meaningless, if they are (checked before
    /// any worker starts).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Bursty { burst_duration, .. } if burst_duration.is_zero() => {
                Err("Bursty burst_duration must be > 0: a zero burst does no work".into())
            }
            Self::CachePressure { size_kib, stride }
                if *size_kib == 0
                    || *size_kib > 1 << 20
                    || *stride == 0
                    || *stride > size_kib.saturating_mul(1024) =>
            {
                Err(format!(
                    "CachePressure {{ size_kib: {size_kib}, stride: {stride} }}: size_kib takes \
                     1..=1048576 and stride 1..=size_kib*1024"
                ))
            }
            Self::AffinityChurn { spin_iters: 0 } => {
                Err("AffinityChurn spin_iters must be >= 1".into())
            }
            Self::TimerLatency { interval_us } if !(10..=1_000_000).contains(interval_us) => Err(
                format!("TimerLatency interval_us {interval_us} is outside 10..=1000000"),
            ),
            _ => Ok(()),
        }
    }
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
        };
        assert_eq!(from_hex::<WorkerSpec>(&to_hex(&s)).unwrap(), s);
        assert!(from_hex::<WorkerSpec>("zz").is_err());
        assert!(from_hex::<WorkerSpec>("abc").is_err());
    }

    #[test]
    fn names_round_trip_and_validation() {
        for n in WorkType::ALL_NAMES {
            match WorkType::from_name(n) {
                Some(w) => {
                    assert_eq!(w.name(), *n);
                    assert_eq!(w.validate(), Ok(()), "{n} defaults are valid");
                }
                None => assert_eq!(*n, "Sequence"),
            }
        }
        assert_eq!(WorkType::from_name("spinwait"), None);
        assert_eq!(WorkType::suggest("spinwait"), Some("SpinWait"));
        assert!(WorkType::cache_pressure(0, 64).validate().is_err());
        assert!(WorkType::cache_pressure(1, 2048).validate().is_err());
        assert!(WorkType::cache_pressure(1, 1024).validate().is_ok());
        assert!(WorkType::affinity_churn(0).validate().is_err());
        assert!(WorkType::timer_latency(5).validate().is_err());
        assert!(WorkType::timer_latency(2_000_000).validate().is_err());
        let zero = std::time::Duration::ZERO;
        assert!(WorkType::bursty(zero, zero).validate().is_err());
    }
}
