//! Engine selection: `KTSTR_ENGINE=qemu|kvm|auto` (default `auto`).
//!
//! `auto` probes KVM once per host boot (see [`crate::probe`]): where KVM
//! runs guest kernel code natively it picks QEMU with KVM (ktstr's own kvm
//! engine is chosen explicitly with `KTSTR_ENGINE=kvm` until its full-Linux
//! test has run on such a host), otherwise QEMU with TCG, and says why.

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
        "kvm" => Ok(Selection {
            kind: EngineKind::Kvm,
            why: "requested: ktstr's own KVM microVM".into(),
        }),
        "auto" | "" => Ok(auto(&probe_cache_dir())),
        other => Err(VmError::Spec(format!(
            "unknown engine `{other}`: use qemu, qemu-kvm, kvm or auto"
        ))),
    }
}

/// Where the per-boot probe result is cached.
pub fn probe_cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
        .join("ktstr")
}

/// `auto`: probe KVM (cached per host boot) and choose.
pub fn auto(cache: &std::path::Path) -> Selection {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: "auto: no /dev/kvm, so QEMU with TCG".into(),
        };
    }
    let r = crate::probe::cached_probe(cache);
    if r.native {
        Selection {
            kind: EngineKind::Qemu(Accel::Kvm),
            why: format!(
                "auto: {}; QEMU with KVM (KTSTR_ENGINE=kvm selects ktstr's own microVM)",
                r.detail
            ),
        }
    } else {
        Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: format!("auto: {}; QEMU with TCG", r.detail),
        }
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
        assert_eq!(select_named("kvm").unwrap().kind, EngineKind::Kvm);
        assert!(select_named("vmware").is_err());
    }
}
