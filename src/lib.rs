//! ktstr: a test harness for Linux process schedulers, above all sched_ext.
//!
//! This facade re-exports the library crates; the `ktstr` binary is a thin
//! CLI over them.

pub use ktstr_introspect as introspect;
pub use ktstr_test::{cache, provision};
