//! The host side: boot a VM with the right initramfs, speak the session
//! protocol with guest-init, answer cold-path kernel ops, catch scheduler
//! failures at their instant and write the dumps.
//!
//! [`env`] (kernel + engine, or why not), [`initramfs`] and [`libs`] (what
//! the guest boots), [`session`] (the protocol), [`runner`] (one run end
//! to end), [`cold`] (kernel ops), [`failure`] + [`dump`] +
//! [`vmcore_dump`] (failure capture), [`kallsyms`] (symbols of a kernel
//! shipped without them).

pub mod cache_gc;
pub mod cold;
pub mod dump;
pub mod env;
pub mod error;
pub mod failure;
pub mod initramfs;
pub mod kallsyms;
pub mod libs;
pub mod runner;
pub mod session;
pub mod vmcore_dump;
