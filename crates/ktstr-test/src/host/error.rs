//! What can go wrong setting up or driving a VM run on the host, with
//! the typed source kept so callers can branch (skip vs fail, a missing
//! kernel vs a bad path, an engine that cannot run here).

use std::path::PathBuf;

/// A host-side failure of a run's machinery (not of the test).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Cache(#[from] ktstr_kernels::CacheError),
    #[error(transparent)]
    Vm(#[from] ktstr_vmm::VmError),
    #[error(transparent)]
    Initramfs(#[from] super::initramfs::InitramfsError),
    #[error("kernel image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: ktstr_introspect::image::ImageError,
    },
    #[error("guest kernel: {0}")]
    Kernel(#[from] ktstr_introspect::kernel::KernelError),
    #[error(transparent)]
    Vmcore(#[from] ktstr_introspect::vmcore::VmcoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl HostError {
    /// Is this "this host cannot run VMs" (skip) rather than a failure?
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HostError::Vm(ktstr_vmm::VmError::Unavailable(_))
                | HostError::Cache(ktstr_kernels::CacheError::NoKernel { .. })
        )
    }
}
