//! vsock packet headers as the device sees them: the operations, the
//! header fields in host order, and moving them in and out of the
//! virtio-vsock crate's packet view.

use virtio_vsock::packet::VsockPacket;
use vm_memory::bitmap::BitmapSlice;

/// The host's context id.
pub const HOST_CID: u64 = 2;
/// The guest's context id.
pub const GUEST_CID: u64 = 3;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type the device serves.
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND`.
pub const SHUTDOWN_BOTH: u32 = 3;

/// `VIRTIO_VSOCK_OP_*`.
pub mod op {
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// A packet header, in host order. On packets to the guest the source is
/// the host port and the destination the guest port; from the guest, the
/// other way round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hdr {
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    /// The header of a packet the guest sent.
    pub fn from_packet<B: BitmapSlice>(p: &VsockPacket<'_, B>) -> Self {
        Self {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            len: p.len(),
            op: p.op(),
            flags: p.flags(),
            buf_alloc: p.buf_alloc(),
            fwd_cnt: p.fwd_cnt(),
        }
    }

    /// Write this header, host to guest, into an RX packet.
    pub fn write_to<B: BitmapSlice>(&self, p: &mut VsockPacket<'_, B>) {
        p.set_src_cid(HOST_CID)
            .set_dst_cid(GUEST_CID)
            .set_src_port(self.src_port)
            .set_dst_port(self.dst_port)
            .set_type(TYPE_STREAM)
            .set_op(self.op)
            .set_flags(self.flags)
            .set_len(self.len)
            .set_buf_alloc(self.buf_alloc)
            .set_fwd_cnt(self.fwd_cnt);
    }

    /// A control packet (no payload) on connection (host port, guest port).
    pub fn control(host_port: u32, guest_port: u32, op: u16) -> Self {
        Self {
            src_port: host_port,
            dst_port: guest_port,
            op,
            ..Default::default()
        }
    }
}
