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
        return decide_auto(None);
    }
    decide_auto(Some(&crate::probe::cached_probe(cache)))
}

/// The `auto` decision from what the host offers: no `/dev/kvm` (`None`)
/// or the probe's verdict on it. Pure, so it is tested without the host.
pub fn decide_auto(probe: Option<&crate::probe::ProbeResult>) -> Selection {
    match probe {
        None => Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: "auto: no /dev/kvm, so QEMU with TCG".into(),
        },
        Some(r) if r.native => Selection {
            kind: EngineKind::Qemu(Accel::Kvm),
            why: format!(
                "auto: {}; QEMU with KVM (KTSTR_ENGINE=kvm selects ktstr's own microVM)",
                r.detail
            ),
        },
        Some(r) => Selection {
            kind: EngineKind::Qemu(Accel::Tcg),
            why: format!("auto: {}; QEMU with TCG", r.detail),
        },
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
        // `auto` depends on the host; only that it decides something.
        assert!(select_named("auto").unwrap().why.starts_with("auto: "));
        assert_eq!(select_named("kvm").unwrap().kind, EngineKind::Kvm);
        assert!(select_named("vmware").is_err());
    }

    #[test]
    fn auto_decides_from_the_probe() {
        use crate::probe::ProbeResult;
        let none = decide_auto(None);
        assert_eq!(none.kind, EngineKind::Qemu(Accel::Tcg));
        assert!(none.why.contains("no /dev/kvm"));
        let p = |native| ProbeResult {
            native,
            detail: "probe says so".into(),
            iterations_per_sec: if native { 4e9 } else { 9e5 },
        };
        let native = decide_auto(Some(&p(true)));
        assert_eq!(native.kind, EngineKind::Qemu(Accel::Kvm));
        assert!(native.why.contains("probe says so"));
        let emulated = decide_auto(Some(&p(false)));
        assert_eq!(emulated.kind, EngineKind::Qemu(Accel::Tcg));
        assert!(emulated.why.contains("probe says so") && emulated.why.contains("TCG"));
    }
}
