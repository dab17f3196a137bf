//! What to boot: [`VmSpec`] and its [`Topology`], and how a run ended.

use crate::console::ConsoleSink;
use std::path::PathBuf;
use std::time::Duration;

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

    pub fn nr_cpus(&self) -> u32 {
        self.nodes * self.llcs * self.cores * self.threads
    }

    /// Check the shape is usable: every count >= 1 and at most 64 vCPUs
    /// (the test kernels' NR_CPUS).
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.llcs == 0 || self.cores == 0 || self.threads == 0 {
            return Err(format!("topology {self} has a zero count"));
        }
        if self.nr_cpus() > 64 {
            return Err(format!(
                "topology {self} has {} vCPUs; at most 64 are supported",
                self.nr_cpus()
            ));
        }
        Ok(())
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
