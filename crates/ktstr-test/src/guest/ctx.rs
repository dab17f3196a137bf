//! The test context a body gets inside the guest: duration, topology,
//! CPU sets per LLC and node, and the relay to the host for kernel ops.

use ktstr_vmm::Topology;
use ktstr_wire::{KernelOp, KernelOpReplyPayload, RelayClient};
use std::sync::Mutex;
use std::time::Duration;

/// What a test body gets: its duration, the topology, CPU sets per LLC
/// and node, and a channel for requests to the host.
pub struct Ctx {
    pub duration: Duration,
    pub topology: Topology,
    /// CPU ids per LLC index.
    pub llc_cpus: Vec<Vec<u32>>,
    /// CPU ids per NUMA node.
    pub node_cpus: Vec<Vec<u32>>,
    relay: Mutex<Option<RelayClient>>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("duration", &self.duration)
            .field("topology", &self.topology)
            .field("llc_cpus", &self.llc_cpus)
            .finish()
    }
}

impl Ctx {
    /// The context inside a guest (from the environment ktstr sets).
    pub fn from_guest_env() -> Self {
        let ms = std::env::var("KTSTR_DURATION_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let topology = std::env::var("KTSTR_TOPOLOGY")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(Topology::flat(1));
        let mut llc_cpus: Vec<Vec<u32>> = Vec::new();
        let mut node_cpus: Vec<Vec<u32>> = Vec::new();
        for cpu in 0..1024u32 {
            let base = format!("/sys/devices/system/cpu/cpu{cpu}");
            if std::fs::metadata(&base).is_err() {
                break;
            }
            let pkg = std::fs::read_to_string(format!("{base}/topology/physical_package_id"))
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let node = (0..64usize)
                .find(|n| std::fs::metadata(format!("{base}/node{n}")).is_ok())
                .unwrap_or(0);
            // One LLC per socket in ktstr's topologies.
            if llc_cpus.len() <= pkg {
                llc_cpus.resize(pkg + 1, Vec::new());
            }
            llc_cpus[pkg].push(cpu);
            if node_cpus.len() <= node {
                node_cpus.resize(node + 1, Vec::new());
            }
            node_cpus[node].push(cpu);
        }
        Self {
            duration: Duration::from_millis(ms),
            topology,
            llc_cpus,
            node_cpus,
            relay: Mutex::new(None),
        }
    }

    /// Send a batch of kernel ops to the host; one reply per op.
    pub fn kernel_ops(&self, ops: Vec<KernelOp>) -> anyhow::Result<Vec<KernelOpReplyPayload>> {
        let mut g = self.relay.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(RelayClient::from_env().map_err(anyhow::Error::msg)?);
        }
        let c = g.as_mut().ok_or_else(|| anyhow::anyhow!("no relay"))?;
        c.kernel_ops(ops).map_err(anyhow::Error::msg)
    }

    /// Every CPU of the guest.
    pub fn all_cpus(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.llc_cpus.iter().flatten().copied().collect();
        v.sort_unstable();
        v
    }
}
