//! The work-type catalogue: what a worker does until told to stop, one
//! variant per kernel scheduling path, with names ([`WorkType::ALL_NAMES`],
//! [`WorkType::from_name`]), defaults, constructors, parameter checks
//! ([`WorkType::validate`]) and group sizes
//! ([`WorkType::worker_group_size`]).

use super::MAX_GROUP_SIZE;
use super::policy::SchedClass;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One phase of a `Sequence` work type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkPhase {
    /// Spin for this long.
    Spin(Duration),
    /// Sleep for this long.
    Sleep(Duration),
    /// Call `sched_yield()` in a loop for this long.
    Yield(Duration),
}

/// How a `WakeChain` hop wakes the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum WakeMechanism {
    /// A pipe per hop: the write is a WF_SYNC wake-up.
    #[default]
    Pipe,
    /// A futex word per hop (FUTEX_WAKE, no WF_SYNC hint).
    Futex,
}

/// The SIMD width `AluHot` multiplies at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AluWidth {
    /// General-purpose registers.
    Scalar,
    /// 128-bit vectors (SSE2).
    Vec128,
    /// 256-bit vectors (AVX2 when the CPU has it, else the widest below).
    Vec256,
    /// 512-bit vectors (AVX-512F when the CPU has it, else the widest below).
    Vec512,
    /// Tile units; runs as the widest vectors available.
    Amx,
    /// The widest vectors the guest CPU has.
    #[default]
    Widest,
}

/// What a worker does until told to stop. Grouped types
/// ([`WorkType::worker_group_size`]) run as groups of separate worker
/// processes that wake each other; every member reports on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkType {
    /// Burn CPU.
    SpinWait,
    /// sched_yield() in a loop.
    YieldHeavy,
    /// Spin ~1 ms, sleep ~100 us, repeatedly.
    Mixed,
    /// 16 x 4 KiB `pwrite` to an O_SYNC file, then `fdatasync`; the
    /// sample is the fdatasync latency. Counters `fsyncs`, `bytes_written`.
    IoSyncWrite,
    /// Spin `burst_duration`, then sleep `sleep_duration`.
    Bursty {
        /// How long to spin.
        burst_duration: Duration,
        /// How long to sleep after.
        sleep_duration: Duration,
    },
    /// Pairs passing a stamped message through two pipes, spinning
    /// `burst_iters` per hop (WF_SYNC wake-ups). Groups of 2.
    PipeIo {
        /// Spin iterations per hop.
        burst_iters: u64,
    },
    /// Pairs handing a turn back and forth through a shared futex word,
    /// spinning `spin_iters` per turn. Groups of 2.
    FutexPingPong {
        /// Spin iterations per turn.
        spin_iters: u64,
    },
    /// Strided read-modify-write over a `size_kib` buffer (cache pressure).
    CachePressure {
        /// Working-set size in KiB (1 ..= 1048576).
        size_kib: usize,
        /// Bytes between touched elements (1 ..= size).
        stride: usize,
    },
    /// `CachePressure`'s pass, then `sched_yield`.
    CacheYield {
        /// Working-set size in KiB (1 ..= 1048576).
        size_kib: usize,
        /// Bytes between touched elements (1 ..= size).
        stride: usize,
    },
    /// `PipeIo` with a cache-hot working set walked every hop: a wake-up
    /// placed away from the cache pays for it. Groups of 2.
    CachePipe {
        /// Working-set size in KiB (1 ..= 1048576).
        size_kib: usize,
        /// Spin iterations per hop.
        burst_iters: u64,
    },
    /// One messenger wakes `fan_out` receivers with one FUTEX_WAKE per
    /// round and waits for all of them; receivers measure wake-to-run
    /// latency and spin `spin_iters`. Groups of `fan_out + 1`.
    FutexFanOut {
        /// Receivers per messenger (1 ..= 255).
        fan_out: usize,
        /// Spin iterations per wake.
        spin_iters: u64,
    },
    /// Phases in order, then repeat.
    Sequence {
        /// The first phase.
        first: WorkPhase,
        /// The phases after it.
        rest: Vec<WorkPhase>,
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
    /// Spin, then cycle its own policy OTHER -> BATCH -> IDLE -> FIFO 1 ->
    /// RR 1: class switches of a running task. Counters `policy_changes`,
    /// `policy_refused`.
    PolicyChurn {
        /// Spin iterations between switches.
        spin_iters: u64,
    },
    /// `FutexFanOut` whose receivers sleep `sleep_usec` and then multiply
    /// matrices over a `cache_footprint_kib` working set `operations`
    /// times per wake (think time). Groups of `fan_out + 1`.
    FanOutCompute {
        /// Receivers per messenger (1 ..= 255).
        fan_out: usize,
        /// Matrix working set in KiB (1 ..= 65536).
        cache_footprint_kib: usize,
        /// Matrix products per wake.
        operations: usize,
        /// Sleep before computing, µs.
        sleep_usec: u64,
    },
    /// Fault `touches_per_cycle` random pages of a `region_kib` anonymous
    /// mapping, spin `spin_iters`, `MADV_DONTNEED` it, repeat. Counter
    /// `minor_faults` (the kernel's).
    PageFaultChurn {
        /// Region size in KiB (4 ..= 4194304).
        region_kib: usize,
        /// Pages faulted per cycle (>= 1).
        touches_per_cycle: usize,
        /// Spin iterations per cycle.
        spin_iters: u64,
    },
    /// `contenders` workers sharing one futex mutex: work `work_iters`,
    /// lock, hold `hold_iters`, unlock. The sample is the time to acquire;
    /// counters `futex_waits` (waits that slept) and `acquisitions`.
    /// Groups of `contenders`.
    MutexContention {
        /// Workers per lock (1 ..= 256).
        contenders: usize,
        /// Spin iterations holding the lock.
        hold_iters: u64,
        /// Spin iterations between holds.
        work_iters: u64,
    },
    /// One waker sleeps `inter_batch_ms`, then wakes all `waiters` with one
    /// broadcast FUTEX_WAKE; `batches` broadcasts per outer iteration.
    /// Every waiter measures its wake latency. Groups of `waiters + 1`.
    ThunderingHerd {
        /// Waiters per waker (1 ..= 255).
        waiters: usize,
        /// Broadcasts per outer iteration (>= 1).
        batches: u64,
        /// Sleep between broadcasts, ms.
        inter_batch_ms: u64,
    },
    /// `rt_workers` SCHED_FIFO spinners beside `cfs_workers` SCHED_OTHER
    /// ones, never yielding: what starves under FIFO. Groups of
    /// `rt_workers + cfs_workers`.
    RtStarvation {
        /// SCHED_FIFO members.
        rt_workers: usize,
        /// SCHED_OTHER members.
        cfs_workers: usize,
        /// FIFO priority (1 ..= 99).
        rt_priority: i32,
        /// Spin iterations per work unit.
        burst_iters: u64,
    },
    /// A waker in `waker_class` bumps a futex word every `burst_iters`; a
    /// wakee in `wakee_class` waits for it (the sample) and spins: a
    /// cross-class wake. Groups of 2.
    AsymmetricWaker {
        /// The waker's class.
        waker_class: SchedClass,
        /// The wakee's class.
        wakee_class: SchedClass,
        /// Spin iterations per wake, both sides.
        burst_iters: u64,
    },
    /// A ring of `depth` members: each waits for the token, spins
    /// `work_per_hop`, and wakes the next. Groups of `depth`.
    WakeChain {
        /// Hops in the ring (2 ..= 256).
        depth: usize,
        /// How a hop wakes the next.
        wake: WakeMechanism,
        /// Spin time per hop.
        work_per_hop: Duration,
    },
    /// Move itself between the CPUs of each NUMA node in turn, sleeping
    /// `period_ms` on each.
    NumaMigrationChurn {
        /// Time on a node, ms (>= 1).
        period_ms: u64,
    },
    /// Move itself round `groups` sibling cgroups (created beside its
    /// own cgroup as `wt-cgroup-churn-<i>`) every `cycle_ms`. Counter
    /// `cgroup_moves`.
    CgroupChurn {
        /// Cgroups to cycle through (1 ..= 64).
        groups: usize,
        /// Time in a cgroup, ms (>= 1).
        cycle_ms: u64,
    },
    /// Pairs: `tkill` the partner with SIGUSR2 `signals_per_iter` times,
    /// then spin `work_iters`. Counters `signals_sent`,
    /// `signals_received`. Groups of 2.
    SignalStorm {
        /// Signals per iteration (1 ..= 65536).
        signals_per_iter: u64,
        /// Spin iterations per iteration.
        work_iters: u64,
    },
    /// One SCHED_FIFO member spins `rt_burst_iters` and sleeps
    /// `rt_sleep_us` (a preemption every period) beside `cfs_workers`
    /// SCHED_OTHER spinners. Groups of `cfs_workers + 1`.
    PreemptStorm {
        /// SCHED_OTHER spinners.
        cfs_workers: usize,
        /// The FIFO member's spin per period.
        rt_burst_iters: u64,
        /// The FIFO member's sleep per period, µs (>= 1).
        rt_sleep_us: u64,
    },
    /// `producers` write `events_per_burst` events to one eventfd every
    /// millisecond; `consumers` `epoll_wait` on it with EPOLLEXCLUSIVE.
    /// Groups of `producers + consumers`.
    EpollStorm {
        /// Members writing events (>= 1).
        producers: usize,
        /// Members waiting in epoll (>= 1).
        consumers: usize,
        /// Events per burst (1 ..= 65536).
        events_per_burst: u64,
    },
    /// Spin `burst_duration`, then `nanosleep(sleep_duration)`: the hrtimer
    /// and idle paths. The sample is the oversleep.
    IdleChurn {
        /// Spin time (> 0).
        burst_duration: Duration,
        /// Sleep time (> 0).
        sleep_duration: Duration,
        /// Set the timer slack to 1 ns first.
        precise_timing: bool,
    },
    /// Independent multiply chains at `width`: high IPC, no memory
    /// traffic. Counter `alu_width_bits` (the width used).
    AluHot {
        /// SIMD width.
        width: AluWidth,
    },
    /// PAUSE-spin; meant for a pair pinned to SMT siblings. Groups of 2.
    SmtSiblingSpin,
    /// `period_iters` x (`hot_iters` multiply steps, then `cold_iters`
    /// random read-modify-writes in a 512 KiB buffer) per iteration.
    IpcVariance {
        /// Multiply steps per cycle (>= 1).
        hot_iters: u64,
        /// Random accesses per cycle (>= 1).
        cold_iters: u64,
        /// Cycles per iteration (>= 1).
        period_iters: u64,
    },
    /// cyclictest-style: sleep to an absolute CLOCK_MONOTONIC deadline
    /// every `interval_us`; the wake latency is how late each wake-up was.
    TimerLatency {
        /// Period in µs (10 ..= 1_000_000).
        interval_us: u64,
    },
}

impl WorkType {
    /// Every work type's name, in declaration order.
    pub const ALL_NAMES: &'static [&'static str] = &[
        "SpinWait",
        "YieldHeavy",
        "Mixed",
        "IoSyncWrite",
        "Bursty",
        "PipeIo",
        "FutexPingPong",
        "CachePressure",
        "CacheYield",
        "CachePipe",
        "FutexFanOut",
        "Sequence",
        "ForkExit",
        "NiceSweep",
        "AffinityChurn",
        "PolicyChurn",
        "FanOutCompute",
        "PageFaultChurn",
        "MutexContention",
        "ThunderingHerd",
        "RtStarvation",
        "AsymmetricWaker",
        "WakeChain",
        "NumaMigrationChurn",
        "CgroupChurn",
        "SignalStorm",
        "PreemptStorm",
        "EpollStorm",
        "IdleChurn",
        "AluHot",
        "SmtSiblingSpin",
        "IpcVariance",
        "TimerLatency",
    ];

    /// The variant's name (as in [`WorkType::ALL_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Self::SpinWait => "SpinWait",
            Self::YieldHeavy => "YieldHeavy",
            Self::Mixed => "Mixed",
            Self::IoSyncWrite => "IoSyncWrite",
            Self::Bursty { .. } => "Bursty",
            Self::PipeIo { .. } => "PipeIo",
            Self::FutexPingPong { .. } => "FutexPingPong",
            Self::CachePressure { .. } => "CachePressure",
            Self::CacheYield { .. } => "CacheYield",
            Self::CachePipe { .. } => "CachePipe",
            Self::FutexFanOut { .. } => "FutexFanOut",
            Self::Sequence { .. } => "Sequence",
            Self::ForkExit => "ForkExit",
            Self::NiceSweep => "NiceSweep",
            Self::AffinityChurn { .. } => "AffinityChurn",
            Self::PolicyChurn { .. } => "PolicyChurn",
            Self::FanOutCompute { .. } => "FanOutCompute",
            Self::PageFaultChurn { .. } => "PageFaultChurn",
            Self::MutexContention { .. } => "MutexContention",
            Self::ThunderingHerd { .. } => "ThunderingHerd",
            Self::RtStarvation { .. } => "RtStarvation",
            Self::AsymmetricWaker { .. } => "AsymmetricWaker",
            Self::WakeChain { .. } => "WakeChain",
            Self::NumaMigrationChurn { .. } => "NumaMigrationChurn",
            Self::CgroupChurn { .. } => "CgroupChurn",
            Self::SignalStorm { .. } => "SignalStorm",
            Self::PreemptStorm { .. } => "PreemptStorm",
            Self::EpollStorm { .. } => "EpollStorm",
            Self::IdleChurn { .. } => "IdleChurn",
            Self::AluHot { .. } => "AluHot",
            Self::SmtSiblingSpin => "SmtSiblingSpin",
            Self::IpcVariance { .. } => "IpcVariance",
            Self::TimerLatency { .. } => "TimerLatency",
        }
    }

    /// The work type of this exact name with default parameters; `None`
    /// for unknown names and for `Sequence` (it has no sensible default).
    pub fn from_name(name: &str) -> Option<Self> {
        let ms = Duration::from_millis;
        Some(match name {
            "SpinWait" => Self::SpinWait,
            "YieldHeavy" => Self::YieldHeavy,
            "Mixed" => Self::Mixed,
            "IoSyncWrite" => Self::IoSyncWrite,
            "Bursty" => Self::bursty(ms(50), ms(100)),
            "PipeIo" => Self::pipe_io(1024),
            "FutexPingPong" => Self::futex_ping_pong(1024),
            "CachePressure" => Self::cache_pressure(32, 64),
            "CacheYield" => Self::cache_yield(32, 64),
            "CachePipe" => Self::cache_pipe(32, 1024),
            "FutexFanOut" => Self::futex_fan_out(4, 1024),
            "ForkExit" => Self::ForkExit,
            "NiceSweep" => Self::NiceSweep,
            "AffinityChurn" => Self::affinity_churn(1024),
            "PolicyChurn" => Self::policy_churn(1024),
            "FanOutCompute" => Self::fan_out_compute(4, 256, 5, 100),
            "PageFaultChurn" => Self::page_fault_churn(4096, 256, 64),
            "MutexContention" => Self::mutex_contention(4, 256, 1024),
            "ThunderingHerd" => Self::thundering_herd(7, 1000, 5),
            "RtStarvation" => Self::rt_starvation(1, 1, 50, 1024),
            "AsymmetricWaker" => Self::asymmetric_waker(SchedClass::Cfs, SchedClass::Cfs, 1024),
            "WakeChain" => Self::wake_chain(4, WakeMechanism::Pipe, Duration::from_micros(100)),
            "NumaMigrationChurn" => Self::numa_migration_churn(100),
            "CgroupChurn" => Self::cgroup_churn(2, 100),
            "SignalStorm" => Self::signal_storm(16, 1024),
            "PreemptStorm" => Self::preempt_storm(2, 1024, 1000),
            "EpollStorm" => Self::epoll_storm(1, 2, 32),
            "IdleChurn" => Self::idle_churn(ms(1), ms(5)),
            "AluHot" => Self::alu_hot(AluWidth::Widest),
            "SmtSiblingSpin" => Self::SmtSiblingSpin,
            "IpcVariance" => Self::IpcVariance {
                hot_iters: 100_000,
                cold_iters: 1024,
                period_iters: 64,
            },
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

    /// How many workers make one group of this type (`None`: workers are
    /// independent). A workload's worker count must be a multiple.
    pub fn worker_group_size(&self) -> Option<usize> {
        match *self {
            Self::PipeIo { .. }
            | Self::FutexPingPong { .. }
            | Self::CachePipe { .. }
            | Self::AsymmetricWaker { .. }
            | Self::SignalStorm { .. }
            | Self::SmtSiblingSpin => Some(2),
            Self::FutexFanOut { fan_out, .. } | Self::FanOutCompute { fan_out, .. } => {
                Some(fan_out.saturating_add(1))
            }
            Self::MutexContention { contenders, .. } => Some(contenders),
            Self::ThunderingHerd { waiters, .. } => Some(waiters.saturating_add(1)),
            Self::RtStarvation {
                rt_workers,
                cfs_workers,
                ..
            } => Some(rt_workers.saturating_add(cfs_workers)),
            Self::WakeChain { depth, .. } => Some(depth),
            Self::PreemptStorm { cfs_workers, .. } => Some(cfs_workers.saturating_add(1)),
            Self::EpollStorm {
                producers,
                consumers,
                ..
            } => Some(producers.saturating_add(consumers)),
            _ => None,
        }
    }

    /// `Bursty`.
    pub const fn bursty(burst_duration: Duration, sleep_duration: Duration) -> Self {
        Self::Bursty {
            burst_duration,
            sleep_duration,
        }
    }

    /// `PipeIo`.
    pub const fn pipe_io(burst_iters: u64) -> Self {
        Self::PipeIo { burst_iters }
    }

    /// `FutexPingPong`.
    pub const fn futex_ping_pong(spin_iters: u64) -> Self {
        Self::FutexPingPong { spin_iters }
    }

    /// `CachePressure`.
    pub const fn cache_pressure(size_kib: usize, stride: usize) -> Self {
        Self::CachePressure { size_kib, stride }
    }

    /// `CacheYield`.
    pub const fn cache_yield(size_kib: usize, stride: usize) -> Self {
        Self::CacheYield { size_kib, stride }
    }

    /// `CachePipe`.
    pub const fn cache_pipe(size_kib: usize, burst_iters: u64) -> Self {
        Self::CachePipe {
            size_kib,
            burst_iters,
        }
    }

    /// `FutexFanOut`.
    pub const fn futex_fan_out(fan_out: usize, spin_iters: u64) -> Self {
        Self::FutexFanOut {
            fan_out,
            spin_iters,
        }
    }

    /// `Sequence`.
    pub fn sequence(first: WorkPhase, rest: impl IntoIterator<Item = WorkPhase>) -> Self {
        Self::Sequence {
            first,
            rest: rest.into_iter().collect(),
        }
    }

    /// `AffinityChurn`.
    pub const fn affinity_churn(spin_iters: u64) -> Self {
        Self::AffinityChurn { spin_iters }
    }

    /// `PolicyChurn`.
    pub const fn policy_churn(spin_iters: u64) -> Self {
        Self::PolicyChurn { spin_iters }
    }

    /// `FanOutCompute`.
    pub const fn fan_out_compute(
        fan_out: usize,
        cache_footprint_kib: usize,
        operations: usize,
        sleep_usec: u64,
    ) -> Self {
        Self::FanOutCompute {
            fan_out,
            cache_footprint_kib,
            operations,
            sleep_usec,
        }
    }

    /// `PageFaultChurn`.
    pub const fn page_fault_churn(
        region_kib: usize,
        touches_per_cycle: usize,
        spin_iters: u64,
    ) -> Self {
        Self::PageFaultChurn {
            region_kib,
            touches_per_cycle,
            spin_iters,
        }
    }

    /// `MutexContention`.
    pub const fn mutex_contention(contenders: usize, hold_iters: u64, work_iters: u64) -> Self {
        Self::MutexContention {
            contenders,
            hold_iters,
            work_iters,
        }
    }

    /// `ThunderingHerd`.
    pub const fn thundering_herd(waiters: usize, batches: u64, inter_batch_ms: u64) -> Self {
        Self::ThunderingHerd {
            waiters,
            batches,
            inter_batch_ms,
        }
    }

    /// `RtStarvation`.
    pub const fn rt_starvation(
        rt_workers: usize,
        cfs_workers: usize,
        rt_priority: i32,
        burst_iters: u64,
    ) -> Self {
        Self::RtStarvation {
            rt_workers,
            cfs_workers,
            rt_priority,
            burst_iters,
        }
    }

    /// `AsymmetricWaker`.
    pub const fn asymmetric_waker(
        waker_class: SchedClass,
        wakee_class: SchedClass,
        burst_iters: u64,
    ) -> Self {
        Self::AsymmetricWaker {
            waker_class,
            wakee_class,
            burst_iters,
        }
    }

    /// `WakeChain`.
    pub const fn wake_chain(depth: usize, wake: WakeMechanism, work_per_hop: Duration) -> Self {
        Self::WakeChain {
            depth,
            wake,
            work_per_hop,
        }
    }

    /// `NumaMigrationChurn`.
    pub const fn numa_migration_churn(period_ms: u64) -> Self {
        Self::NumaMigrationChurn { period_ms }
    }

    /// `CgroupChurn`.
    pub const fn cgroup_churn(groups: usize, cycle_ms: u64) -> Self {
        Self::CgroupChurn { groups, cycle_ms }
    }

    /// `SignalStorm`.
    pub const fn signal_storm(signals_per_iter: u64, work_iters: u64) -> Self {
        Self::SignalStorm {
            signals_per_iter,
            work_iters,
        }
    }

    /// `PreemptStorm`.
    pub const fn preempt_storm(cfs_workers: usize, rt_burst_iters: u64, rt_sleep_us: u64) -> Self {
        Self::PreemptStorm {
            cfs_workers,
            rt_burst_iters,
            rt_sleep_us,
        }
    }

    /// `EpollStorm`.
    pub const fn epoll_storm(producers: usize, consumers: usize, events_per_burst: u64) -> Self {
        Self::EpollStorm {
            producers,
            consumers,
            events_per_burst,
        }
    }

    /// `IdleChurn` (default timer slack).
    pub const fn idle_churn(burst_duration: Duration, sleep_duration: Duration) -> Self {
        Self::IdleChurn {
            burst_duration,
            sleep_duration,
            precise_timing: false,
        }
    }

    /// `AluHot`.
    pub const fn alu_hot(width: AluWidth) -> Self {
        Self::AluHot { width }
    }

    /// `IpcVariance`, refusing a zero parameter.
    pub fn ipc_variance(
        hot_iters: u64,
        cold_iters: u64,
        period_iters: u64,
    ) -> Result<Self, String> {
        let w = Self::IpcVariance {
            hot_iters,
            cold_iters,
            period_iters,
        };
        w.validate().map(|()| w)
    }

    /// `TimerLatency`.
    pub const fn timer_latency(interval_us: u64) -> Self {
        Self::TimerLatency { interval_us }
    }

    /// Why these parameters are meaningless, if they are (checked before
    /// any worker starts).
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        if let Some(g) = self.worker_group_size()
            && !(1..=MAX_GROUP_SIZE as usize).contains(&g)
        {
            return Err(format!(
                "{name}: a group of {g} workers is outside 1..={MAX_GROUP_SIZE}"
            ));
        }
        let cache = |size_kib: usize, stride: usize| {
            if size_kib == 0 || size_kib > 1 << 20 || stride == 0 || stride > size_kib * 1024 {
                Err(format!(
                    "{name} {{ size_kib: {size_kib}, stride: {stride} }}: size_kib takes \
                     1..=1048576 and stride 1..=size_kib*1024"
                ))
            } else {
                Ok(())
            }
        };
        let positive = |field: &str, v: u64| {
            if v == 0 {
                Err(format!("{name} {field} must be >= 1"))
            } else {
                Ok(())
            }
        };
        match *self {
            Self::Bursty { burst_duration, .. } if burst_duration.is_zero() => {
                Err("Bursty burst_duration must be > 0: a zero burst does no work".into())
            }
            Self::CachePressure { size_kib, stride } | Self::CacheYield { size_kib, stride } => {
                cache(size_kib, stride)
            }
            Self::CachePipe { size_kib, .. } => cache(size_kib, 64.min(size_kib * 1024)),
            Self::FutexFanOut { fan_out, .. } => positive("fan_out", fan_out as u64),
            Self::FanOutCompute {
                fan_out,
                cache_footprint_kib,
                ..
            } => positive("fan_out", fan_out as u64).and_then(|()| {
                if (1..=65536).contains(&cache_footprint_kib) {
                    Ok(())
                } else {
                    Err(format!(
                        "FanOutCompute cache_footprint_kib {cache_footprint_kib} is outside \
                         1..=65536"
                    ))
                }
            }),
            Self::AffinityChurn { spin_iters: 0 } => {
                Err("AffinityChurn spin_iters must be >= 1".into())
            }
            Self::PageFaultChurn {
                region_kib,
                touches_per_cycle,
                ..
            } => {
                if !(4..=1 << 22).contains(&region_kib) {
                    Err(format!(
                        "PageFaultChurn region_kib {region_kib} is outside 4..=4194304"
                    ))
                } else {
                    positive("touches_per_cycle", touches_per_cycle as u64)
                }
            }
            Self::MutexContention { contenders, .. } => positive("contenders", contenders as u64),
            Self::ThunderingHerd {
                waiters, batches, ..
            } => positive("waiters", waiters as u64).and(positive("batches", batches)),
            Self::RtStarvation {
                rt_workers,
                cfs_workers,
                rt_priority,
                ..
            } => {
                if !(1..=99).contains(&rt_priority) {
                    Err(format!(
                        "RtStarvation rt_priority {rt_priority} is outside 1..=99"
                    ))
                } else {
                    positive(
                        "rt_workers + cfs_workers",
                        (rt_workers + cfs_workers) as u64,
                    )
                }
            }
            Self::AsymmetricWaker {
                waker_class,
                wakee_class,
                ..
            } => waker_class
                .to_policy()
                .validate()
                .and(wakee_class.to_policy().validate()),
            Self::WakeChain { depth, .. } if depth < 2 => Err(format!(
                "WakeChain depth {depth}: a chain needs at least 2 hops"
            )),
            Self::NumaMigrationChurn { period_ms } => positive("period_ms", period_ms),
            Self::CgroupChurn { groups, cycle_ms } => {
                if !(1..=64).contains(&groups) {
                    Err(format!("CgroupChurn groups {groups} is outside 1..=64"))
                } else {
                    positive("cycle_ms", cycle_ms)
                }
            }
            Self::SignalStorm {
                signals_per_iter, ..
            } if !(1..=65536).contains(&signals_per_iter) => Err(format!(
                "SignalStorm signals_per_iter {signals_per_iter} is outside 1..=65536"
            )),
            Self::PreemptStorm { rt_sleep_us, .. } => positive("rt_sleep_us", rt_sleep_us),
            Self::EpollStorm {
                producers,
                consumers,
                events_per_burst,
            } => positive("producers", producers as u64)
                .and(positive("consumers", consumers as u64))
                .and(if (1..=65536).contains(&events_per_burst) {
                    Ok(())
                } else {
                    Err(format!(
                        "EpollStorm events_per_burst {events_per_burst} is outside 1..=65536"
                    ))
                }),
            Self::IdleChurn {
                burst_duration,
                sleep_duration,
                ..
            } => {
                if burst_duration.is_zero() {
                    Err("IdleChurn burst_duration must be > 0".into())
                } else if sleep_duration.is_zero() {
                    Err("IdleChurn sleep_duration must be > 0".into())
                } else {
                    Ok(())
                }
            }
            Self::IpcVariance {
                hot_iters,
                cold_iters,
                period_iters,
            } => positive("hot_iters", hot_iters)
                .and(positive("cold_iters", cold_iters))
                .and(positive("period_iters", period_iters)),
            Self::TimerLatency { interval_us } if !(10..=1_000_000).contains(&interval_us) => Err(
                format!("TimerLatency interval_us {interval_us} is outside 10..=1000000"),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_defaults_are_valid() {
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
        assert_eq!(WorkType::suggest("nope"), None);
    }

    #[test]
    fn meaningless_parameters_are_refused() {
        let zero = Duration::ZERO;
        let ms = Duration::from_millis(1);
        for w in [
            WorkType::cache_pressure(0, 64),
            WorkType::cache_pressure(1, 2048),
            WorkType::cache_yield(1 << 21, 64),
            WorkType::cache_pipe(0, 1),
            WorkType::affinity_churn(0),
            WorkType::timer_latency(5),
            WorkType::timer_latency(2_000_000),
            WorkType::bursty(zero, zero),
            WorkType::futex_fan_out(0, 1),
            WorkType::futex_fan_out(256, 1),
            WorkType::fan_out_compute(2, 0, 1, 1),
            WorkType::page_fault_churn(2, 1, 1),
            WorkType::page_fault_churn(64, 0, 1),
            WorkType::mutex_contention(0, 1, 1),
            WorkType::mutex_contention(257, 1, 1),
            WorkType::thundering_herd(3, 0, 1),
            WorkType::rt_starvation(1, 1, 0, 1),
            WorkType::rt_starvation(0, 0, 10, 1),
            WorkType::wake_chain(1, WakeMechanism::Futex, ms),
            WorkType::cgroup_churn(0, 1),
            WorkType::cgroup_churn(2, 0),
            WorkType::signal_storm(0, 1),
            WorkType::preempt_storm(1, 1, 0),
            WorkType::epoll_storm(0, 1, 1),
            WorkType::epoll_storm(1, 1, 0),
            WorkType::idle_churn(zero, ms),
            WorkType::idle_churn(ms, zero),
            WorkType::numa_migration_churn(0),
        ] {
            assert!(w.validate().is_err(), "{w:?} passed");
        }
        assert!(
            WorkType::ipc_variance(1, 0, 1)
                .unwrap_err()
                .contains("cold_iters")
        );
        assert!(WorkType::ipc_variance(1, 1, 1).is_ok());
        assert!(WorkType::cache_pressure(1, 1024).validate().is_ok());
    }

    #[test]
    fn group_sizes() {
        use WorkType as W;
        let ms = Duration::from_millis(1);
        assert_eq!(W::SpinWait.worker_group_size(), None);
        assert_eq!(W::pipe_io(1).worker_group_size(), Some(2));
        assert_eq!(W::futex_fan_out(4, 1).worker_group_size(), Some(5));
        assert_eq!(W::thundering_herd(7, 1, 1).worker_group_size(), Some(8));
        assert_eq!(W::rt_starvation(2, 3, 5, 1).worker_group_size(), Some(5));
        assert_eq!(
            W::wake_chain(6, WakeMechanism::Pipe, ms).worker_group_size(),
            Some(6)
        );
        assert_eq!(W::epoll_storm(1, 2, 1).worker_group_size(), Some(3));
        assert_eq!(W::preempt_storm(2, 1, 1).worker_group_size(), Some(3));
        assert_eq!(
            W::futex_fan_out(usize::MAX, 1).worker_group_size(),
            Some(usize::MAX),
            "saturates, and validate refuses it"
        );
        assert!(W::futex_fan_out(usize::MAX, 1).validate().is_err());
    }
}
