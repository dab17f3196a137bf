//! ktstr-test: the frontend that ties ktstr's layers into tests.
//!
//! Value types every side shares: [`assert`] (check results and the
//! standard checks), [`def`] (what a test and its scheduler are),
//! [`result`] (what the host learns from a run). Then the two sides of the
//! VM boundary: [`host`] (boot, session, cold ops, failure capture) and
//! [`guest`] (the test context, scenarios, ops, workloads). [`harness`]
//! joins them: one binary that boots a VM on the host and runs the body
//! inside it. Kernels and schedulers come from `ktstr-kernels`.

pub mod assert;
pub mod def;
pub mod guest;
pub mod harness;
pub mod host;
pub mod result;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

/// What `#[ktstr_test]` expansions name (not a public API).
#[doc(hidden)]
pub mod __macro_support {
    pub use crate::def::TestDef;
    pub use crate::harness::run_test;
    pub use ktstr_vmm::Topology;
}

/// What most tests need.
pub mod prelude {
    pub use crate::assert::AssertResult;
    pub use crate::def::{Scheduler, SchedulerSpec};
    pub use crate::guest::ctx::Ctx;
    pub use crate::guest::ops::{HoldSpec, Op, Step, execute_steps};
    pub use crate::guest::scenario::{CgroupDef, execute_defs};
    pub use crate::guest::workload::{
        AffinityIntent, SchedPolicy, WorkPhase, WorkType, WorkerReport, WorkloadConfig,
        WorkloadHandle,
    };
    pub use crate::host::cold::SnapshotBridge;
    pub use crate::result::VmResult;
    pub use ktstr_vmm::Topology;
    pub use ktstr_wire::{
        KernelOpReplyPayload, KernelOpValue, KernelTarget, KernelValue, KernelValueWidth,
    };
}
