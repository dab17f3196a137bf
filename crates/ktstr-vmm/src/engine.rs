//! Engine selection: `KTSTR_ENGINE=qemu|kvm|auto` (default `auto`).
//!
//! `auto` uses the kvm engine only where KVM runs guest kernel code at
//! native speed; the kvm engine is not built yet, so today `auto` always
//! picks qemu (TCG) and says why.

use crate::VmError;
use crate::qemu::cmdline::Accel;

/// Which engine boots VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// QEMU with the given accelerator.
    Qemu(Accel),
    /// ktstr's own KVM microVM.
    Kvm,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineKind::Qemu(Accel::Tcg) => f.write_str("qemu (TCG)"),
            EngineKind::Qemu(Accel::Kvm) => f.write_str("qemu (KVM)"),
            EngineKind::Kvm => f.write_str("kvm"),
        }
    }
}

/// The engine choice and the reason for it.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kind: EngineKind,
    pub why: String,
}

/// Resolve an engine name (`qemu`, `qemu-kvm`, `kvm`, `auto`).
pub fn select_named(name: &str) -> Result<Selection, VmError> {
    match name {
        "qemu" | "qemu-tcg" => Ok(Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: "requested: QEMU with TCG".into(),
        }),
        "qemu-kvm" => Ok(Selection {
            kind: EngineKind::Qemu(Accel::Kvm),
            why: "requested: QEMU with KVM".into(),
        }),
        "kvm" => Err(VmError::Unavailable(
            "the kvm engine (ktstr's own KVM microVM) is not built yet; use KTSTR_ENGINE=qemu or auto".into(),
        )),
        "auto" | "" => Ok(Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: "auto: the kvm engine is not available in this build, so QEMU with TCG".into(),
        }),
        other => Err(VmError::Spec(format!(
            "unknown engine `{other}`: use qemu, qemu-kvm, kvm or auto"
        ))),
    }
}

/// The engine named by `KTSTR_ENGINE` (default `auto`).
pub fn select() -> Result<Selection, VmError> {
    select_named(&std::env::var("KTSTR_ENGINE").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            select_named("qemu").unwrap().kind,
            EngineKind::Qemu(Accel::Tcg)
        );
        assert_eq!(
            select_named("auto").unwrap().kind,
            EngineKind::Qemu(Accel::Tcg)
        );
        assert!(select_named("auto").unwrap().why.contains("TCG"));
        let e = select_named("kvm").unwrap_err().to_string();
        assert!(e.contains("KTSTR_ENGINE=qemu"), "{e}");
        assert!(select_named("vmware").is_err());
    }
}
