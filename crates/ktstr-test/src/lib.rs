//! ktstr-test: the frontend that ties ktstr's layers into tests.
//!
//! This crate owns the kernel and scheduler cache ([`cache`]) and the
//! provisioning that fills it ([`provision`]).

pub mod cache;
pub mod cold;
pub mod initramfs;
pub mod libs;
pub mod provision;
pub mod session;
pub mod vmcore_dump;
pub mod vmtest;
