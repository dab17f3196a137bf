//! ktstr-kernels: the kernel and scheduler cache, resolution (which kernel
//! and scheduler a run boots), and — with the `provision` feature —
//! building them (Debian `linux-source-*` kernels with ktstr's config
//! fragment, sched_ext schedulers and their BPF toolchains).
//!
//! Tests need only resolution; building is a CLI concern, so its
//! dependencies (progress bars, apt plumbing) stay behind `provision`.
//!
//! Modules: [`cache`] (layout, manifests, atomic installs), [`resolve`]
//! (`KTSTR_KERNEL` / requests / defaults), [`artifact`] (what a bzImage and
//! a vmlinux must be), [`bzimage`] (the vmlinux ELF inside a compressed
//! image), [`distro`] (`debian:7.2` requests and their cache names),
//! [`kconfig`] (the fragment and its verification),
//! [`provision`] (builds).

pub mod artifact;
pub mod bzimage;
pub mod cache;
pub mod distro;
pub mod kconfig;
#[cfg(feature = "provision")]
pub mod provision;
pub mod resolve;

#[cfg(test)]
mod fixtures;

pub use cache::{Cache, CacheError, KernelArtifacts, KernelManifest};
pub use resolve::{KernelRequest, resolve_kernel, resolve_scheduler};
