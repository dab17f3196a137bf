//! The sched_ext exit kind, as the kernel defines it: its values (`enum
//! scx_exit_kind`, named from the kernel's own BTF when it has the enum),
//! the reason text `scx_exit_reason()` prints for each, and where a
//! kernel records the current scheduler's exit kind — `(*scx_root)->
//! exit_kind` from 6.16 on, the `scx_exit_kind` global on 6.12.
#![deny(clippy::arithmetic_side_effects)]

use crate::kernel::{Kernel, KernelError};
use crate::mem::PhysMem;
use crate::offsets::Offsets;

/// A value of `enum scx_exit_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExitKind(pub u32);

impl ExitKind {
    /// `SCX_EXIT_NONE`: no exit recorded.
    pub const NONE: Self = Self(0);
    /// `SCX_EXIT_DONE`: the disable work has claimed the exit.
    pub const DONE: Self = Self(1);
    /// `SCX_EXIT_UNREG`: the first of the clean unregistrations.
    pub const UNREG: Self = Self(64);
    pub const UNREG_BPF: Self = Self(65);
    pub const UNREG_KERN: Self = Self(66);
    pub const SYSRQ: Self = Self(67);
    /// `SCX_EXIT_ERROR`: kinds at or above it are errors.
    pub const ERROR: Self = Self(1024);
    pub const ERROR_BPF: Self = Self(1025);
    pub const ERROR_STALL: Self = Self(1026);

    /// The kernel's names and the reason text `scx_exit_reason()` prints.
    const TABLE: &'static [(ExitKind, &'static str, &'static str)] = &[
        (Self::NONE, "SCX_EXIT_NONE", ""),
        (Self::DONE, "SCX_EXIT_DONE", ""),
        (
            Self::UNREG,
            "SCX_EXIT_UNREG",
            "unregistered from user space",
        ),
        (
            Self::UNREG_BPF,
            "SCX_EXIT_UNREG_BPF",
            "unregistered from BPF",
        ),
        (
            Self::UNREG_KERN,
            "SCX_EXIT_UNREG_KERN",
            "unregistered from the main kernel",
        ),
        (Self::SYSRQ, "SCX_EXIT_SYSRQ", "disabled by sysrq-S"),
        (Self::ERROR, "SCX_EXIT_ERROR", "runtime error"),
        (Self::ERROR_BPF, "SCX_EXIT_ERROR_BPF", "scx_bpf_error"),
        (
            Self::ERROR_STALL,
            "SCX_EXIT_ERROR_STALL",
            "runnable task stall",
        ),
    ];

    /// An error exit (the scheduler was kicked out)?
    pub fn is_error(self) -> bool {
        self >= Self::ERROR
    }

    /// A clean unregistration (user space, BPF, kernel, sysrq)?
    pub fn is_unreg(self) -> bool {
        (Self::UNREG..Self::ERROR).contains(&self)
    }

    /// The kernel's name: from this kernel's BTF `enum scx_exit_kind`
    /// when given and it names the value, else the built-in table, else
    /// the number.
    pub fn name(self, btf_variants: &[(String, i64)]) -> String {
        if let Some((n, _)) = btf_variants.iter().find(|(_, v)| *v == i64::from(self.0)) {
            return n.clone();
        }
        Self::TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, n, _)| (*n).to_string())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// The kind whose reason text appears in a console line (`sched_ext:
    /// BPF scheduler "x" disabled (runnable task stall)`), for dumps
    /// frozen after the kind was swapped for DONE.
    pub fn from_reason_line(line: &str) -> Option<Self> {
        Self::TABLE
            .iter()
            .filter(|(_, _, r)| !r.is_empty())
            .find(|(_, _, r)| line.contains(&format!("({r})")))
            .map(|(k, _, _)| *k)
    }
}

/// Where a kernel keeps the exit kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKindHome {
    /// `struct scx_sched::exit_kind` of the attached scheduler (6.16+).
    SchedInstance { sch: u64 },
    /// The `scx_exit_kind` global (6.12 .. 6.15).
    Global,
}

/// The runtime address of the current scheduler's exit kind, and which
/// kind of kernel this is. On 6.16+ there must be an attached scheduler.
pub fn exit_kind_kva<M: PhysMem>(k: &Kernel<M>) -> Result<(u64, ExitKindHome), KernelError> {
    if let Ok(root) = k.sym("scx_root") {
        let sch = k.read_u64(root)?;
        if sch == 0 {
            return Err(KernelError::Invalid(
                "scx_root is NULL: no scheduler attached".into(),
            ));
        }
        let off = Offsets::from_btf(k.image().btf())
            .sched
            .ok_or_else(|| {
                KernelError::Invalid("BTF has scx_root but no struct scx_sched layout".into())
            })?
            .exit_kind
            .off;
        let kva = sch.checked_add(off).ok_or_else(|| {
            KernelError::Invalid(format!("scx_root {sch:#x} + {off:#x} overflows"))
        })?;
        return Ok((kva, ExitKindHome::SchedInstance { sch }));
    }
    Ok((k.sym("scx_exit_kind")?, ExitKindHome::Global))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_and_name_themselves() {
        assert!(ExitKind::ERROR_STALL.is_error() && !ExitKind::ERROR_STALL.is_unreg());
        assert!(ExitKind::UNREG_BPF.is_unreg() && !ExitKind::DONE.is_unreg());
        assert!(!ExitKind::DONE.is_error());
        assert_eq!(ExitKind::ERROR_BPF.name(&[]), "SCX_EXIT_ERROR_BPF");
        assert_eq!(ExitKind(7).name(&[]), "7");
        let btf = vec![("SCX_EXIT_NEWER".to_string(), 1030i64)];
        assert_eq!(ExitKind(1030).name(&btf), "SCX_EXIT_NEWER");
        let l = r#"[ 9.2] sched_ext: BPF scheduler "qmap" disabled (runnable task stall)"#;
        assert_eq!(ExitKind::from_reason_line(l), Some(ExitKind::ERROR_STALL));
        assert_eq!(
            ExitKind::from_reason_line("disabled (unregistered from the main kernel)"),
            Some(ExitKind::UNREG_KERN)
        );
        assert_eq!(ExitKind::from_reason_line("all fine"), None);
    }
}
