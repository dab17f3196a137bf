//! What to boot: [`VmSpec`] and its [`Topology`], and how a run ended.

use crate::console::ConsoleSink;
use std::path::PathBuf;
use std::time::Duration;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 252;
/// Least guest memory, MiB (a kernel, an initramfs, a workload).
pub const MIN_MEMORY_MB: u32 = 128;
/// Most guest memory, MiB.
pub const MAX_MEMORY_MB: u32 = 1 << 20;

/// Check a guest memory size, naming the limits.
pub fn validate_memory_mb(mb: u32) -> Result<(), String> {
    if (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) {
        Ok(())
    } else {
        Err(format!(
            "guest memory {mb} MiB is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MiB"
        ))
    }
}

/// The CPU topology presented to the guest: `nodes` NUMA nodes, each with
/// `llcs` last-level caches (one socket each), each with `cores` cores of
/// `threads` SMT threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Topology {
    pub nodes: u32,
    pub llcs: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    /// `n` single-threaded cores sharing one LLC on one node.
    pub const fn flat(n: u32) -> Self {
        Self {
            nodes: 1,
            llcs: 1,
            cores: n,
            threads: 1,
        }
    }

    /// Total vCPUs (saturating: an absurd shape counts as `u32::MAX`, which
    /// [`Topology::validate`] refuses).
    pub fn nr_cpus(&self) -> u32 {
        self.checked_cpus().unwrap_or(u32::MAX)
    }

    fn checked_cpus(&self) -> Option<u32> {
        self.nodes
            .checked_mul(self.llcs)?
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }

    /// Check the shape is usable: every count >= 1 and at most
    /// [`MAX_VCPUS`] vCPUs (x86 without x2APIC routing: QEMU's `pc` machine
    /// and ktstr's MP table both address at most 255 APIC ids).
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.llcs == 0 || self.cores == 0 || self.threads == 0 {
            return Err(format!("topology {self} has a zero count"));
        }
        match self.checked_cpus() {
            Some(n) if n <= MAX_VCPUS => Ok(()),
            Some(n) => Err(format!(
                "topology {self} has {n} vCPUs; at most {MAX_VCPUS} are supported"
            )),
            None => Err(format!(
                "topology {self} multiplies past 2^32 vCPUs; at most {MAX_VCPUS} are supported"
            )),
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.nodes, self.llcs, self.cores, self.threads
        )
    }
}

impl std::str::FromStr for Topology {
    type Err = String;
    /// `N,L,C,T` (nodes, LLCs per node, cores per LLC, threads per core).
    fn from_str(s: &str) -> Result<Self, String> {
        let v: Vec<u32> = s
            .split(',')
            .take(5)
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("topology `{s}`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let [nodes, llcs, cores, threads] = v[..] else {
            return Err(format!(
                "topology `{s}`: want N,L,C,T (nodes,llcs,cores,threads)"
            ));
        };
        let t = Self {
            nodes,
            llcs,
            cores,
            threads,
        };
        t.validate()?;
        Ok(t)
    }
}

/// A VM to boot.
#[derive(Clone)]
pub struct VmSpec {
    /// bzImage (or, with PVH, an uncompressed vmlinux).
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    /// Extra kernel command line; the engine adds its console options.
    pub cmdline: String,
    pub topology: Topology,
    pub memory_mb: u32,
    /// Wall-clock limit for the whole run.
    pub timeout: Duration,
    /// Console lines are also streamed here.
    pub console_sink: Option<ConsoleSink>,
    /// Byte-channel ports to create (`/dev/virtio-ports/ktstr.N` on qemu,
    /// vsock port N on kvm).
    pub channels: Vec<u32>,
}

impl std::fmt::Debug for VmSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSpec")
            .field("kernel", &self.kernel)
            .field("initramfs", &self.initramfs)
            .field("cmdline", &self.cmdline)
            .field("topology", &self.topology)
            .field("memory_mb", &self.memory_mb)
            .field("timeout", &self.timeout)
            .field("channels", &self.channels)
            .finish()
    }
}

impl VmSpec {
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: String::new(),
            topology: Topology::flat(2),
            memory_mb: 512,
            timeout: Duration::from_secs(120),
            console_sink: None,
            channels: Vec::new(),
        }
    }
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted (or triple-faulted).
    Reset,
    /// The guest kernel panicked; the console tail shows why.
    Panic { console_tail: String },
    /// The wall-clock limit passed; the VM was killed.
    Timeout,
    /// The engine failed (QEMU died, bad options, ...).
    EngineError(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_topologies_are_checked_not_wrapped() {
        let e = "65536,65536,1,1".parse::<Topology>().unwrap_err();
        assert!(e.contains("252"), "{e}");
        let e = "1,1,253,1".parse::<Topology>().unwrap_err();
        assert!(e.contains("253 vCPUs") && e.contains("252"), "{e}");
        assert!("1,1,0,1".parse::<Topology>().unwrap_err().contains("zero"));
        assert!("1,2,3".parse::<Topology>().is_err());
        assert!("1,1,x,1".parse::<Topology>().is_err());
        assert_eq!("2,3,7,2".parse::<Topology>().unwrap().nr_cpus(), 84);
        let huge = Topology {
            nodes: u32::MAX,
            llcs: 2,
            cores: 1,
            threads: 1,
        };
        assert_eq!(huge.nr_cpus(), u32::MAX);
        assert!(validate_memory_mb(64).is_err() && validate_memory_mb(512).is_ok());
    }
}
