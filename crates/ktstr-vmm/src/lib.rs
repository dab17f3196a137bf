//! ktstr-vmm: one VM API, two engines.
//!
//! Boot a kernel with an initramfs and a command line ([`VmSpec`]), get
//! the console and byte channels into the guest, freeze every vCPU at an
//! instant to read (and write) guest memory with ktstr-introspect, and
//! learn how the run ended ([`VmExit`]). Nothing here knows about
//! schedulers or tests.
//!
//! Engines: `qemu` (QEMU as a child process; TCG on hosts whose KVM
//! cannot run guest kernel code at speed) and `kvm` (our own microVM on
//! kvm-ioctls, vsock channels; boots Linux and small ring-3 programs).
//! [`engine::select`] picks one from `KTSTR_ENGINE`.

pub mod console;
pub mod engine;
pub mod frozen;
pub mod kernel_log;
pub mod kvm;
pub mod probe;
pub mod qemu;
pub mod ram;
pub mod spec;
pub mod vm;
pub mod watch;
pub mod x86;

pub use console::Console;
pub use engine::EngineKind;
pub use spec::{Topology, VmExit, VmSpec};
pub use vm::{Frozen, RunningVm};

/// A VM-level failure. Callers branch on the kind: `Unavailable` means
/// this host cannot run the engine (a test skips), `Spec` is the caller's
/// mistake, the rest are failures of a VM that was meant to run; typed
/// sources (QMP, gdbstub, I/O, KVM) are kept.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM spec: {0}")]
    Spec(String),
    #[error("VM engine unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Qmp(#[from] qemu::qmp::QmpError),
    #[error(transparent)]
    Gdb(#[from] qemu::gdb::GdbError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("VM engine error: {0}")]
    Engine(String),
}

impl VmError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| VmError::Io { what, source }
    }
}
