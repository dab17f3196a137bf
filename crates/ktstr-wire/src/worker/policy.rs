//! Scheduling policies a worker runs under ([`SchedPolicy`]) and the
//! coarser scheduling classes grouped work types take as parameters
//! ([`SchedClass`]), with the checks the kernel would otherwise answer
//! with a bare EINVAL.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Scheduling policy for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SchedPolicy {
    /// SCHED_OTHER (EEVDF, or sched_ext when it is switched on globally).
    #[default]
    Normal,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at this priority (1..=99).
    Fifo(u32),
    /// SCHED_RR at this priority (1..=99).
    RoundRobin(u32),
    /// SCHED_DEADLINE (set with `sched_setattr`): `runtime` of CPU every
    /// `period`, finished within `deadline` of the period's start.
    Deadline {
        /// CPU budget per period (>= 1024 ns, <= deadline).
        runtime: Duration,
        /// Relative deadline (> 0, <= period).
        deadline: Duration,
        /// Period; zero means "equal to the deadline".
        period: Duration,
    },
    /// SCHED_EXT (7).
    Ext,
}

impl SchedPolicy {
    /// `Fifo`.
    pub const fn fifo(prio: u32) -> Self {
        Self::Fifo(prio)
    }

    /// `RoundRobin`.
    pub const fn round_robin(prio: u32) -> Self {
        Self::RoundRobin(prio)
    }

    /// `Deadline`.
    pub const fn deadline(runtime: Duration, deadline: Duration, period: Duration) -> Self {
        Self::Deadline {
            runtime,
            deadline,
            period,
        }
    }

    /// Why the kernel would refuse this policy's parameters, if it would
    /// (checked before any worker starts, so the error names the field
    /// instead of a bare EINVAL from `sched_setattr`).
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Fifo(p) | Self::RoundRobin(p) if !(1..=99).contains(&p) => {
                Err(format!("{self:?}: real-time priority must be 1..=99"))
            }
            Self::Deadline {
                runtime,
                deadline,
                period,
            } => {
                let limit = Duration::from_nanos(1 << 62);
                if deadline.is_zero() {
                    Err("Deadline: deadline must be > 0".into())
                } else if runtime < Duration::from_nanos(1024) {
                    Err(format!(
                        "Deadline: runtime {runtime:?} is below the kernel's 1024 ns minimum"
                    ))
                } else if runtime > deadline {
                    Err(format!(
                        "Deadline: runtime {runtime:?} exceeds deadline {deadline:?}"
                    ))
                } else if !period.is_zero() && deadline > period {
                    Err(format!(
                        "Deadline: deadline {deadline:?} exceeds period {period:?}"
                    ))
                } else if deadline > limit || period > limit {
                    Err("Deadline: deadline and period must be below 2^62 ns".into())
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// A scheduling class, for work types whose members run in different
/// classes (`AsymmetricWaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SchedClass {
    /// The fair class (SCHED_OTHER).
    #[default]
    Cfs,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at priority 50.
    Rt,
    /// SCHED_DEADLINE, 100 µs every 10 ms within 1 ms (the reference
    /// system's 1 µs is below the kernel's 1024 ns floor and is refused
    /// with EINVAL).
    Deadline,
    /// SCHED_EXT where a BPF scheduler runs; otherwise the fair class.
    Ext,
}

impl SchedClass {
    /// The policy a member of this class runs under.
    pub const fn to_policy(self) -> SchedPolicy {
        match self {
            Self::Cfs | Self::Ext => SchedPolicy::Normal,
            Self::Batch => SchedPolicy::Batch,
            Self::Idle => SchedPolicy::Idle,
            Self::Rt => SchedPolicy::Fifo(50),
            Self::Deadline => SchedPolicy::Deadline {
                runtime: Duration::from_micros(100),
                deadline: Duration::from_millis(1),
                period: Duration::from_millis(10),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_checked_field_by_field() {
        let us = Duration::from_micros;
        let ok = SchedPolicy::deadline(us(100), us(1000), us(10_000));
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            SchedPolicy::deadline(us(100), us(1000), Duration::ZERO).validate(),
            Ok(()),
            "a zero period means the deadline"
        );
        let bad = [
            (
                SchedPolicy::deadline(us(100), Duration::ZERO, us(10)),
                "deadline must",
            ),
            (
                SchedPolicy::deadline(Duration::from_nanos(1000), us(10), us(10)),
                "1024 ns",
            ),
            (
                SchedPolicy::deadline(us(20), us(10), us(10)),
                "exceeds deadline",
            ),
            (
                SchedPolicy::deadline(us(2), us(20), us(10)),
                "exceeds period",
            ),
            (
                SchedPolicy::deadline(us(2), us(20), Duration::from_secs(u64::MAX)),
                "2^62",
            ),
        ];
        for (p, want) in bad {
            let e = p.validate().unwrap_err();
            assert!(e.contains(want), "{p:?}: {e}");
        }
        assert!(SchedPolicy::fifo(0).validate().is_err());
        assert!(SchedPolicy::round_robin(100).validate().is_err());
        assert!(SchedPolicy::fifo(99).validate().is_ok());
    }

    #[test]
    fn classes_map_to_policies_the_kernel_takes() {
        for c in [
            SchedClass::Cfs,
            SchedClass::Batch,
            SchedClass::Idle,
            SchedClass::Rt,
            SchedClass::Deadline,
            SchedClass::Ext,
        ] {
            assert_eq!(c.to_policy().validate(), Ok(()), "{c:?}");
        }
    }
}
