//! Applying a [`SchedPolicy`] to the calling task: `sched_setscheduler`
//! for the classic policies, `sched_setattr` for SCHED_DEADLINE.

use ktstr_wire::worker::SchedPolicy;

/// SCHED_EXT's policy number (include/uapi/linux/sched.h).
const SCHED_EXT: i32 = 7;
/// SCHED_DEADLINE's policy number.
const SCHED_DEADLINE: u32 = 6;

/// `struct sched_attr` as of SCHED_ATTR_SIZE_VER0 (48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Put the calling task under `policy` (a no-op for `Normal`).
pub(super) fn apply(policy: SchedPolicy) -> Result<(), String> {
    policy.validate()?;
    let (p, prio) = match policy {
        SchedPolicy::Normal => return Ok(()),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
        SchedPolicy::Ext => (SCHED_EXT, 0),
        SchedPolicy::Deadline {
            runtime,
            deadline,
            period,
        } => {
            let attr = SchedAttr {
                size: size_of::<SchedAttr>() as u32,
                sched_policy: SCHED_DEADLINE,
                sched_flags: 0,
                sched_nice: 0,
                sched_priority: 0,
                // validate() bounded these below 2^62 ns.
                sched_runtime: runtime.as_nanos() as u64,
                sched_deadline: deadline.as_nanos() as u64,
                sched_period: period.as_nanos() as u64,
            };
            // SAFETY: a valid, fully initialised sched_attr whose size
            // field matches; pid 0 is the calling thread.
            let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const _, 0) };
            if rc != 0 {
                return Err(format!(
                    "sched_setattr {policy:?}: {} (SCHED_DEADLINE needs root, an \
                     affinity spanning its root domain and free bandwidth)",
                    std::io::Error::last_os_error()
                ));
            }
            return Ok(());
        }
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: valid param pointer for pid 0.
    if unsafe { libc::sched_setscheduler(0, p, &param) } != 0 {
        return Err(format!(
            "sched_setscheduler {policy:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_is_ver0_sized() {
        assert_eq!(size_of::<SchedAttr>(), 48);
    }

    #[test]
    fn a_malformed_deadline_never_reaches_the_kernel() {
        let d = std::time::Duration::from_micros;
        let e = apply(SchedPolicy::deadline(d(20), d(10), d(10))).unwrap_err();
        assert!(e.contains("exceeds deadline"), "{e}");
        assert_eq!(apply(SchedPolicy::Normal), Ok(()));
    }
}
