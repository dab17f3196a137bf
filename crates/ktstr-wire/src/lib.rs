//! ktstr-wire: the host<->guest protocol.
//!
//! Messages ([`msg`]) are postcard-encoded inside checksummed, bounded
//! frames ([`frame`]) over any blocking `Read`/`Write` (virtio-serial port
//! or vsock). The kernel-op types ([`kernel_op`]) are here because the
//! guest sends them.

#![deny(missing_docs)]

pub mod frame;
pub mod kernel_op;
pub mod msg;

pub use frame::{FrameError, MAX_FRAME, read_msg, write_msg};
pub use kernel_op::*;
pub use msg::*;
pub use relay::RelayClient;

pub mod relay;
pub mod sched_diag;
#[cfg(test)]
mod tests;
pub mod worker;
