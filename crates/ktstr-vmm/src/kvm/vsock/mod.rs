//! The virtio-vsock device of the kvm engine, in userspace: the guest is
//! CID 3, the host CID 2. Each host endpoint is one end of a Unix socket
//! pair inside this process (never the host's own AF_VSOCK): a guest
//! connection to host port P is accepted when the VM was given channel P,
//! and the host can connect to a guest port. Stream sockets only;
//! REQUEST/RESPONSE/RST/SHUTDOWN, data both ways, credit-based flow
//! control (we never send more than the guest's credit, and a guest that
//! sends more than ours is reset).
//!
//! Split as Firecracker's vsock is: [`packet`] (headers and operations),
//! [`connection`] (one stream's state machine and credit), [`muxer`] (the
//! connections, control queue and both virtqueue directions), with
//! `test_utils` (a packet builder and mock-queue rig) for the tests.
//! A malformed chain (bad addresses, wrong direction, lengths, loops) is
//! consumed with length 0 and counted; it never panics or stalls the
//! device.

pub mod connection;
pub mod muxer;
pub mod packet;
#[cfg(test)]
mod test_utils;
#[cfg(test)]
mod tests;

pub use muxer::{BUF_ALLOC, MAX_PKT_DATA, Stats, Vsock};
pub use packet::{GUEST_CID, HOST_CID, Hdr};
