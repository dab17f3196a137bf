//! What the kernel guarantees about values the walkers read, as named
//! checks: a value that breaks one is shown with a suspect mark and the
//! reason, never as fact (a guest may be corrupt or mid-update).
//!
//! Each check returns `None` for a plausible value, or why it is not.
#![deny(clippy::arithmetic_side_effects)]

/// `PID_MAX_LIMIT` on 64-bit: no pid, and no count of tasks, exceeds it.
pub const PID_MAX_LIMIT: i64 = 4 * 1024 * 1024;

/// The smallest jiffies value a running kernel can show: `INITIAL_JIFFIES`
/// is `(u32)(-300 * HZ)`, i.e. 2^32 - 300 * HZ, and HZ is at most 1000.
pub const MIN_JIFFIES: u64 = (1u64 << 32) - 300 * 1000;

/// Jiffies past this are more than a century of uptime at HZ=1000.
pub const MAX_JIFFIES: u64 = MIN_JIFFIES + 1000 * 86_400 * 365 * 100;

/// A runnable task older than this (a day) is not a stall, it is a bad
/// `runnable_at` or jiffies.
pub const MAX_RUNNABLE_AGE_MS: u64 = 86_400_000;

/// `SCX_DSQ_FLAG_BUILTIN`.
pub const DSQ_FLAG_BUILTIN: u64 = 1 << 63;
/// `SCX_DSQ_FLAG_LOCAL_ON`.
pub const DSQ_FLAG_LOCAL_ON: u64 = 1 << 62;
/// `SCX_DSQ_GLOBAL`, `SCX_DSQ_LOCAL`, `SCX_DSQ_BYPASS`.
pub const DSQ_GLOBAL: u64 = DSQ_FLAG_BUILTIN | 1;
pub const DSQ_LOCAL: u64 = DSQ_FLAG_BUILTIN | 2;
pub const DSQ_BYPASS: u64 = DSQ_FLAG_BUILTIN | 3;

/// A task's pid: 0 (the idle tasks) ..= PID_MAX_LIMIT.
pub fn pid(p: i32) -> Option<String> {
    (i64::from(p) < 0 || i64::from(p) > PID_MAX_LIMIT)
        .then(|| format!("pid {p} outside 0..={PID_MAX_LIMIT}"))
}

/// A task's `comm`: printable ASCII only (the kernel's `set_task_comm`
/// input is a user string, but a NUL ends it and tasks ktstr sees name
/// themselves in ASCII; control bytes mean a read of the wrong memory).
pub fn comm(c: &str) -> Option<String> {
    c.chars()
        .any(|ch| !(' '..='~').contains(&ch))
        .then(|| "comm has non-printable bytes".to_string())
}

/// A count of tasks (`nr_running`, a DSQ's `nr`).
pub fn task_count(what: &str, n: u64) -> Option<String> {
    (n > PID_MAX_LIMIT as u64)
        .then(|| format!("{what} {n} exceeds PID_MAX_LIMIT ({PID_MAX_LIMIT})"))
}

/// `jiffies_64` of a running kernel.
pub fn jiffies(j: u64) -> Option<String> {
    if j < MIN_JIFFIES {
        Some(format!(
            "jiffies {j} is below INITIAL_JIFFIES ({MIN_JIFFIES} at most)"
        ))
    } else if j > MAX_JIFFIES {
        Some(format!("jiffies {j} is more than a century of uptime"))
    } else {
        None
    }
}

/// A runnable age derived from jiffies.
pub fn runnable_age_ms(ms: u64) -> Option<String> {
    (ms > MAX_RUNNABLE_AGE_MS).then(|| format!("runnable for {ms} ms (more than a day)"))
}

/// What kind of DSQ a walker is looking at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsqKind {
    Local,
    Global,
    Bypass,
    User,
}

/// A DSQ's id must be of its kind: the builtin ids for local, global and
/// bypass DSQs; no builtin flag on a user DSQ.
pub fn dsq_id(kind: DsqKind, id: u64) -> Option<String> {
    let ok = match kind {
        DsqKind::Local => id == DSQ_LOCAL,
        DsqKind::Global => id == DSQ_GLOBAL,
        DsqKind::Bypass => id == DSQ_BYPASS,
        DsqKind::User => id & DSQ_FLAG_BUILTIN == 0,
    };
    (!ok).then(|| format!("id {id:#x} is not a {kind:?} DSQ id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_guarantees_are_checked() {
        assert!(pid(1).is_none() && pid(0).is_none() && pid(4194304).is_none());
        assert!(pid(-1).is_some() && pid(i32::MAX).is_some());
        assert!(comm("kworker/0:1").is_none());
        assert!(comm("evil\u{1b}[2J").is_some() && comm("a\u{7}").is_some());
        assert!(task_count("nr_running", 3).is_none());
        assert!(task_count("nr_running", u64::from(u32::MAX)).is_some());
        // Real values seen on the test kernels: 4294670757 shortly after boot.
        assert!(jiffies(4_294_670_757).is_none());
        assert!(jiffies(0).is_some() && jiffies(u64::MAX).is_some());
        assert!(dsq_id(DsqKind::Local, DSQ_LOCAL).is_none());
        assert!(dsq_id(DsqKind::Local, 0x1234).is_some());
        assert!(dsq_id(DsqKind::User, 0x1234).is_none());
        assert!(dsq_id(DsqKind::User, DSQ_GLOBAL).is_some());
        assert!(runnable_age_ms(30_000).is_none() && runnable_age_ms(u64::MAX).is_some());
    }
}
