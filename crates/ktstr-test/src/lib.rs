//! ktstr-test: the frontend that ties ktstr's layers into tests.
//!
//! This crate owns the kernel and scheduler cache ([`cache`]) and the
//! provisioning that fills it ([`provision`]).

pub mod assert;
pub mod cache;
pub mod cold;
pub mod initramfs;
pub mod libs;
pub mod provision;
pub mod scenario;
pub mod session;
pub mod test_support;
pub mod vmcore_dump;
pub mod vmtest;
pub mod workload;

/// What most tests need.
pub mod prelude {
    pub use crate::assert::AssertResult;
    pub use crate::cold::SnapshotBridge;
    pub use crate::scenario::ops::{HoldSpec, Op, Step, execute_steps};
    pub use crate::scenario::{CgroupDef, Ctx, execute_defs};
    pub use crate::test_support::{Scheduler, SchedulerSpec, VmResult};
    pub use crate::workload::{
        AffinityIntent, SchedPolicy, WorkPhase, WorkType, WorkloadConfig, WorkloadHandle,
    };
    pub use ktstr_vmm::Topology;
    pub use ktstr_wire::{
        KernelOpReplyPayload, KernelOpValue, KernelTarget, KernelValue, KernelValueWidth,
    };
}
pub mod dump;
pub mod failure;
pub mod runner;
