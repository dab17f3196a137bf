//! The guest side: what runs inside the test VM — the test [`ctx::Ctx`],
//! scenarios of cgroups and workers, steps of ops, and the workload
//! workers' test-side API.

pub mod ctx;
pub mod ops;
pub mod scenario;
pub mod workload;
