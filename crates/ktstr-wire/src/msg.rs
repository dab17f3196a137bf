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
    pub cpu: u32,
    pub package: u32,
    pub core: u32,
    pub node: u32,
    /// `cache/index3/id` (or the highest level present).
    pub llc: u32,
    /// `thread_siblings_list`.
    pub siblings: String,
}

/// What guest-init reports first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hello {
    pub proto: u32,
    pub kernel_release: String,
    pub nr_cpus: u32,
    /// `_text` from /proc/kallsyms (the runtime kernel base): gives the
    /// host the KASLR slide without any memory scan.
    pub kallsyms_text: u64,
    /// CLOCK_BOOTTIME at Hello, ns.
    pub boot_time_ns: u64,
    pub cpus: Vec<CpuTopo>,
    /// Does /sys/kernel/sched_ext exist?
    pub sched_ext_sysfs: bool,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    SchedulerStarting,
    SchedulerAttached,
    /// The scheduler process died (detail: exit status, probable cause).
    SchedulerDied,
    /// It never attached (detail: `timeout`, `sched_ext sysfs absent`, ...).
    SchedulerNotAttached,
    PayloadStarting,
    PayloadFinished,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Guest -> host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestMsg {
    Hello(Hello),
    Lifecycle {
        phase: Phase,
        detail: String,
    },
    /// A chunk of the scheduler's log (bounded by [`MAX_CHUNK`]).
    SchedLog(Vec<u8>),
    /// A chunk of the payload's output.
    Output {
        stream: Stream,
        data: Vec<u8>,
    },
    /// The payload's structured result (JSON of ktstr-test's AssertResult).
    TestResult {
        passed: bool,
        json: String,
    },
    /// A batch of cold-path kernel ops; the host replies with the same id.
    KernelOpRequest {
        id: u64,
        ops: Vec<KernelOp>,
    },
    /// The payload's exit code; guest-init powers off after this.
    Exit {
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
    pub cpuset: Option<String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunSpec {
    /// None: EEVDF, no sched_ext scheduler.
    pub scheduler: Option<SchedSpec>,
    pub payload_argv: Vec<String>,
    pub payload_env: Vec<(String, String)>,
    pub payload_timeout_ms: u64,
    pub cgroups: Vec<CgroupSpec>,
    /// Test hook: pretend /sys/kernel/sched_ext is absent.
    pub force_no_sched_ext: bool,
}

/// Host -> guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMsg {
    Run(RunSpec),
    KernelOpReply {
        id: u64,
        replies: Vec<KernelOpReplyPayload>,
    },
    /// Stop now (with a reason, e.g. a protocol version mismatch).
    Shutdown {
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
