//! The messages, both directions.

use crate::kernel_op::{KernelOp, KernelOpReplyPayload};
use serde::{Deserialize, Serialize};

/// Protocol version carried in [`GuestMsg::Hello`]; bump on any change.
pub const PROTO_VERSION: u32 = 1;
/// Largest output/log chunk in one message.
pub const MAX_CHUNK: usize = 16 * 1024;

/// One CPU as the guest's sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CpuTopo {
    /// Logical CPU number.
    pub cpu: u32,
    /// `topology/physical_package_id`.
    pub package: u32,
    /// `topology/core_id`.
    pub core: u32,
    /// NUMA node (the `nodeN` link), 0 without NUMA.
    pub node: u32,
    /// `cache/index3/id` (or the highest level present).
    pub llc: u32,
    /// `thread_siblings_list`.
    pub siblings: String,
}

/// What guest-init reports first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hello {
    /// The guest's [`PROTO_VERSION`].
    pub proto: u32,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// `_text` from /proc/kallsyms (the runtime kernel base): gives the
    /// host the KASLR slide without any memory scan.
    pub kallsyms_text: u64,
    /// CLOCK_BOOTTIME at Hello, ns.
    pub boot_time_ns: u64,
    /// Every online CPU's topology.
    pub cpus: Vec<CpuTopo>,
    /// Does /sys/kernel/sched_ext exist?
    pub sched_ext_sysfs: bool,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// guest-init is starting the scheduler process.
    SchedulerStarting,
    /// `/sys/kernel/sched_ext/root/ops` names the scheduler: it is attached.
    SchedulerAttached,
    /// The scheduler process died (detail: exit status, probable cause).
    SchedulerDied,
    /// It never attached (detail: `timeout`, `sched_ext sysfs absent`, ...).
    SchedulerNotAttached,
    /// The payload is about to run.
    PayloadStarting,
    /// The payload exited (detail: its status).
    PayloadFinished,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// The payload's standard output.
    Stdout,
    /// The payload's standard error.
    Stderr,
}

/// Guest -> host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestMsg {
    /// First message: who the guest is.
    Hello(Hello),
    /// A run moved to another phase.
    Lifecycle {
        /// The new phase.
        phase: Phase,
        /// Free text about it (exit status, cause, timeout).
        detail: String,
    },
    /// A chunk of the scheduler's log (bounded by [`MAX_CHUNK`]).
    SchedLog(Vec<u8>),
    /// A chunk of the payload's output.
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes (bounded by [`MAX_CHUNK`]).
        data: Vec<u8>,
    },
    /// The payload's structured result (JSON of ktstr-test's AssertResult).
    TestResult {
        /// The payload's own verdict.
        passed: bool,
        /// The result, JSON.
        json: String,
    },
    /// A batch of cold-path kernel ops; the host replies with the same id.
    KernelOpRequest {
        /// Request id, echoed in the reply.
        id: u64,
        /// The operations, performed in order under one freeze.
        ops: Vec<KernelOp>,
    },
    /// The payload's exit code; guest-init powers off after this.
    Exit {
        /// The payload's exit code (128 + signal when killed).
        code: i32,
    },
    /// A free-form diagnostic from guest-init itself.
    Log(String),
}

/// How to start the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchedSpec {
    /// Path inside the guest.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it must stay alive before we trust it, ms (default 1000).
    pub liveness_ms: u64,
    /// How long to wait for `/sys/kernel/sched_ext/root/ops`, ms.
    pub attach_timeout_ms: u64,
}

/// A cgroup to create before the payload starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// Path below the cgroup2 root.
    pub path: String,
    /// `cpuset.cpus` to set (a CPU list), if any.
    pub cpuset: Option<String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunSpec {
    /// None: EEVDF, no sched_ext scheduler.
    pub scheduler: Option<SchedSpec>,
    /// The payload's argv (argv[0] is a path inside the guest).
    pub payload_argv: Vec<String>,
    /// Extra environment for the payload.
    pub payload_env: Vec<(String, String)>,
    /// Kill the payload after this long, ms.
    pub payload_timeout_ms: u64,
    /// Cgroups created before the payload starts.
    pub cgroups: Vec<CgroupSpec>,
    /// Test hook: pretend /sys/kernel/sched_ext is absent.
    pub force_no_sched_ext: bool,
}

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMsg {
    /// Run this.
    Run(RunSpec),
    /// Replies to a [`GuestMsg::KernelOpRequest`].
    KernelOpReply {
        /// The request's id.
        id: u64,
        /// One reply per op, in order.
        replies: Vec<KernelOpReplyPayload>,
    },
    /// Stop now (with a reason, e.g. a protocol version mismatch).
    Shutdown {
        /// Why.
        reason: String,
    },
}

/// Check a peer's protocol version; the error text is for both sides.
pub fn check_version(peer: u32) -> Result<(), String> {
    if peer == PROTO_VERSION {
        Ok(())
    } else {
        Err(format!(
            "protocol version mismatch: peer speaks {peer}, we speak {PROTO_VERSION}; rebuild guest-init and the host from the same ktstr"
        ))
    }
}
