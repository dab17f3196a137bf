//! ktstr-vmm: the VM API and its two engines.
//!
//! Filled by the engine issues; nothing here yet.
