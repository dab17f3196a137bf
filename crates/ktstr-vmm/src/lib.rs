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
pub mod kernel_log;
pub mod kvm;
pub mod probe;
pub mod qemu;
pub mod ram;
pub mod spec;
pub mod vm;
pub mod watch;

pub use console::Console;
pub use engine::EngineKind;
pub use spec::{Topology, VmExit, VmSpec};
pub use vm::{Frozen, RunningVm};

/// A VM-level failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM spec: {0}")]
    Spec(String),
    #[error("VM engine unavailable: {0}")]
    Unavailable(String),
    #[error("VM engine error: {0}")]
    Engine(String),
    #[error("I/O: {0}")]
    Io(String),
}
