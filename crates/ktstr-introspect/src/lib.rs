//! ktstr-introspect: read a Linux guest kernel's scheduler state straight
//! from its physical memory, with struct layouts from the kernel's own BTF.
//!
//! Pure: files and bytes only (no KVM, no network, no processes), so it can
//! analyse a vmcore on its own. Data flow: a physical-memory source →
//! [`image::KernelImage`] (symbols + BTF) → address translation → typed
//! reads → walkers → views.
//!
//! Features: `kernel-ops` adds [`kernel_ops`], the host side of ktstr's
//! cold-path kernel operations (it brings in the `ktstr-wire` protocol);
//! `test-utils` adds `synth`, a synthetic guest laid out from real BTF for
//! tests (it panics on misuse, so it is never in a default build).

pub mod btf;
pub mod collect;
pub mod getters;
pub mod helpers;
pub mod image;
pub mod kernel;
#[cfg(feature = "kernel-ops")]
pub mod kernel_ops;
pub mod mem;
pub mod offsets;
pub mod regs;
pub mod render;
pub mod scx_exit;
pub mod snapshot;
pub mod symbols;
#[cfg(any(test, feature = "test-utils"))]
pub mod synth;
pub mod translate;
pub mod validate;
pub mod vmcore;
pub mod vmcore_write;
pub mod walk;

pub use collect::{CollectOptions, snapshot};
pub use image::KernelImage;
pub use kernel::{Kernel, KernelError};
pub use mem::{PhysMem, PhysMemExt};
pub use render::render_text;
pub use snapshot::SchedSnapshot;
pub use vmcore::Vmcore;
