//! Semantics BTF cannot carry, in named getters. Each documents the kernel
//! rule it encodes, so a change in the kernel has one place to follow.
#![deny(clippy::arithmetic_side_effects)]

use crate::kernel::Kernel;
use crate::mem::PhysMem;

/// `UTIL_AVG_UNCHANGED` (kernel/sched/pelt.h): the top bit of
/// `sched_avg.util_est` is a flag meaning "util_avg has not changed since
/// the last util_est update", not part of the value. Mask it off.
pub const UTIL_AVG_UNCHANGED: u32 = 0x8000_0000;

/// The util_est value without its flag bit.
pub fn util_est_value(raw: u32) -> u32 {
    raw & !UTIL_AVG_UNCHANGED
}

/// `SCX_TASK_QUEUED` (include/linux/sched/ext.h, `enum scx_ent_flags`):
/// set while the task is on the BPF scheduler's side of the runnable
/// state; `runnable_at` is only meaningful then.
pub const SCX_TASK_QUEUED: u32 = 1 << 0;

/// Is `runnable_at` meaningful for these `p->scx.flags`? The kernel sets
/// `runnable_at` when a task becomes runnable (`set_task_runnable`) and
/// uses it for the watchdog only while the task is queued.
pub fn scx_task_runnable(flags: u32) -> bool {
    flags & SCX_TASK_QUEUED != 0
}

/// Jiffies to milliseconds at `hz`.
pub fn jiffies_to_ms(j: u64, hz: u32) -> u64 {
    j.saturating_mul(1000)
        .checked_div(u64::from(hz))
        .unwrap_or(0)
}

/// The /proc state letter for `__state` and `exit_state`
/// (fs/proc/array.c `task_state_array` order: R S D T t X Z P I).
pub fn task_state_letter(state: u32, exit_state: u32) -> char {
    const TASK_INTERRUPTIBLE: u32 = 0x1;
    const TASK_UNINTERRUPTIBLE: u32 = 0x2;
    const TASK_STOPPED: u32 = 0x4;
    const TASK_TRACED: u32 = 0x8;
    const EXIT_DEAD: u32 = 0x10;
    const EXIT_ZOMBIE: u32 = 0x20;
    const TASK_PARKED: u32 = 0x40;
    const TASK_NOLOAD: u32 = 0x400;
    if exit_state & EXIT_ZOMBIE != 0 {
        return 'Z';
    }
    if exit_state & EXIT_DEAD != 0 {
        return 'X';
    }
    // TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD reports as I.
    if state & (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) == (TASK_UNINTERRUPTIBLE | TASK_NOLOAD) {
        return 'I';
    }
    match () {
        _ if state & TASK_INTERRUPTIBLE != 0 => 'S',
        _ if state & TASK_UNINTERRUPTIBLE != 0 => 'D',
        _ if state & TASK_STOPPED != 0 => 'T',
        _ if state & TASK_TRACED != 0 => 't',
        _ if state & TASK_PARKED != 0 => 'P',
        _ if state == 0 => 'R',
        _ => '?',
    }
}

/// The `enum scx_enable_state` name (`SCX_ENABLING`, `SCX_ENABLED`,
/// `SCX_DISABLING`, `SCX_DISABLED`; 6.12 spells them `SCX_OPS_*` with the
/// same order).
pub fn enable_state_name(v: u32) -> String {
    match v {
        0 => "SCX_ENABLING".into(),
        1 => "SCX_ENABLED".into(),
        2 => "SCX_DISABLING".into(),
        3 => "SCX_DISABLED".into(),
        other => format!("unknown ({other})"),
    }
}

/// Which scheduling class a `task_struct.sched_class` points at, by
/// comparing it with the class symbols.
pub fn sched_class_name<M: PhysMem>(k: &Kernel<M>, ptr: u64) -> String {
    for (sym, name) in [
        ("ext_sched_class", "ext"),
        ("fair_sched_class", "fair"),
        ("rt_sched_class", "rt"),
        ("dl_sched_class", "dl"),
        ("idle_sched_class", "idle"),
        ("stop_sched_class", "stop"),
    ] {
        if k.sym(sym).is_ok_and(|a| a == ptr) {
            return name.into();
        }
    }
    format!("{ptr:#x}")
}

/// A cpumask's bits as a cpulist (`0-3,6`), first `nbits` bits.
pub fn cpulist(bytes: &[u8], nbits: usize) -> String {
    let set = |i: usize| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nbits {
        if set(i) {
            let s = i;
            while i.saturating_add(1) < nbits && set(i.saturating_add(1)) {
                i = i.saturating_add(1);
            }
            out.push(if s == i {
                format!("{s}")
            } else {
                format!("{s}-{i}")
            });
        }
        i = i.saturating_add(1);
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(util_est_value(0x8000_0123), 0x123);
        assert_eq!(task_state_letter(0, 0), 'R');
        assert_eq!(task_state_letter(1, 0), 'S');
        assert_eq!(task_state_letter(0x402, 0), 'I');
        assert_eq!(task_state_letter(0x2, 0), 'D');
        assert_eq!(task_state_letter(0, 0x20), 'Z');
        assert_eq!(cpulist(&[0b0100_1111], 8), "0-3,6");
        assert_eq!(cpulist(&[0xff, 0x01], 9), "0-8");
        assert_eq!(cpulist(&[], 8), "");
        assert_eq!(jiffies_to_ms(250, 250), 1000);
        assert_eq!(enable_state_name(1), "SCX_ENABLED");
    }
}
