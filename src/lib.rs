//! ktstr: a test harness for Linux process schedulers, above all sched_ext.
//!
//! This facade re-exports the library crates under the names tests use
//! (`ktstr::ktstr_test`, `ktstr::assert`, `ktstr::prelude`,
//! `ktstr::scenario`, `ktstr::test_support`, `ktstr::workload`); the
//! `ktstr` binary (feature `cli`, on by default) is a thin CLI over them.
//! A test crate that wants the lean graph (no CLI, no provisioning
//! dependencies) depends on `ktstr` with `default-features = false`.

pub use ktstr_introspect as introspect;
pub use ktstr_kernels as kernels;
pub use ktstr_kernels::cache;
#[cfg(feature = "cli")]
pub use ktstr_kernels::provision;
pub use ktstr_macros::ktstr_test;
#[doc(hidden)]
pub use ktstr_test::__macro_support;
pub use ktstr_test::{assert, guest, harness, host, prelude};
pub use ktstr_vmm as vmm;

/// Test definitions, schedulers and results (the reference system's
/// `ktstr::test_support`).
pub mod test_support {
    pub use ktstr_test::def::*;
    pub use ktstr_test::harness::*;
    pub use ktstr_test::result::*;
}

/// Scenarios: the context, cgroup definitions, steps and ops.
pub mod scenario {
    pub use ktstr_test::guest::ctx::Ctx;
    pub use ktstr_test::guest::ops;
    pub use ktstr_test::guest::scenario::*;
}

/// Workload workers.
pub mod workload {
    pub use ktstr_test::guest::workload::*;
}
