//! ktstr: a test harness for Linux process schedulers, above all sched_ext.
//!
//! This facade re-exports the library crates under the names tests use
//! (`ktstr::ktstr_test`, `ktstr::assert`, `ktstr::prelude`,
//! `ktstr::scenario`, `ktstr::test_support`, `ktstr::workload`); the
//! `ktstr` binary is a thin CLI over them.

pub use ktstr_introspect as introspect;
pub use ktstr_macros::ktstr_test;
pub use ktstr_test::{assert, cache, prelude, provision, scenario, test_support, workload};
