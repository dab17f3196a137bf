//! Test utilities for the vsock device: a builder for guest packets (no
//! raw header offsets in tests), a parser for what the device wrote, and
//! a rig of mock virtqueues over a guest memory.

use super::muxer::Vsock;
use super::packet::{GUEST_CID, HOST_CID, Hdr, TYPE_STREAM};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{RawDescriptor, split::Descriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;

/// A guest-to-host packet header, field by field.
#[derive(Debug, Clone, Copy)]
pub struct PacketBuilder {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub hdr: Hdr,
    pub type_: u16,
}

impl PacketBuilder {
    /// From guest port `src` to host port `dst`, with `op` and a 4 KiB
    /// guest buffer.
    pub fn new(src: u32, dst: u32, op: u16) -> Self {
        Self {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            hdr: Hdr {
                src_port: src,
                dst_port: dst,
                op,
                buf_alloc: 4096,
                ..Default::default()
            },
            type_: TYPE_STREAM,
        }
    }
    pub fn len(mut self, len: u32) -> Self {
        self.hdr.len = len;
        self
    }
    pub fn buf_alloc(mut self, b: u32) -> Self {
        self.hdr.buf_alloc = b;
        self
    }
    pub fn fwd_cnt(mut self, f: u32) -> Self {
        self.hdr.fwd_cnt = f;
        self
    }
    pub fn dst_cid(mut self, cid: u64) -> Self {
        self.dst_cid = cid;
        self
    }
    /// The header's wire bytes (little-endian, as the guest writes them).
    pub fn bytes(&self) -> Vec<u8> {
        let h = &self.hdr;
        let mut b = Vec::with_capacity(HDR_LEN);
        b.extend_from_slice(&self.src_cid.to_le_bytes());
        b.extend_from_slice(&self.dst_cid.to_le_bytes());
        b.extend_from_slice(&h.src_port.to_le_bytes());
        b.extend_from_slice(&h.dst_port.to_le_bytes());
        b.extend_from_slice(&h.len.to_le_bytes());
        b.extend_from_slice(&self.type_.to_le_bytes());
        b.extend_from_slice(&h.op.to_le_bytes());
        b.extend_from_slice(&h.flags.to_le_bytes());
        b.extend_from_slice(&h.buf_alloc.to_le_bytes());
        b.extend_from_slice(&h.fwd_cnt.to_le_bytes());
        b
    }
}

/// A packet the device wrote for the guest.
#[derive(Debug, Clone)]
pub struct RxPacket {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub hdr: Hdr,
    pub data: Vec<u8>,
}

impl RxPacket {
    fn parse(h: &[u8], data: Vec<u8>) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            hdr: Hdr {
                src_port: u32_at(16),
                dst_port: u32_at(20),
                len: u32_at(24),
                op: u16::from_le_bytes([h[30], h[31]]),
                flags: u32_at(32),
                buf_alloc: u32_at(36),
                fwd_cnt: u32_at(40),
            },
            data,
        }
    }
}

/// Guest memory with room for mock queues and buffers.
pub struct Rig {
    pub mem: GuestMemoryMmap,
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}

impl Rig {
    pub fn new() -> Self {
        Self {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap(),
        }
    }

    /// Send one TX packet (header + payload) through a fresh queue.
    pub fn tx(&self, v: &mut Vsock, pkt: &PacketBuilder, data: &[u8]) -> bool {
        self.tx_raw(v, &pkt.bytes(), data)
    }

    /// Send raw header bytes (for malformed headers).
    pub fn tx_raw(&self, v: &mut Vsock, hdr: &[u8], data: &[u8]) -> bool {
        let vq = MockSplitQueue::create(&self.mem, GuestAddress(0x1000), 16);
        self.mem.write_slice(hdr, GuestAddress(0x10_0000)).unwrap();
        self.mem.write_slice(data, GuestAddress(0x20_0000)).unwrap();
        let mut descs = vec![RawDescriptor::from(Descriptor::new(
            0x10_0000,
            hdr.len() as u32,
            0,
            0,
        ))];
        if !data.is_empty() {
            descs.push(RawDescriptor::from(Descriptor::new(
                0x20_0000,
                data.len() as u32,
                0,
                0,
            )));
        }
        vq.build_desc_chain(&descs).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        v.process_tx(&self.mem, &mut q)
    }

    /// Offer `n` RX buffers of `data_len` bytes each; the packets written.
    pub fn rx_sized(&self, v: &mut Vsock, n: u16, data_len: u32) -> Vec<RxPacket> {
        let vq = MockSplitQueue::create(&self.mem, GuestAddress(0x8000), 16);
        let slot = |i: u64| 0x30_0000 + i * 0x1_0000;
        let mut descs = Vec::new();
        for i in 0..u64::from(n) {
            descs.push(RawDescriptor::from(Descriptor::new(
                slot(i),
                HDR_LEN as u32,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                (i * 2 + 1) as u16,
            )));
            descs.push(RawDescriptor::from(Descriptor::new(
                slot(i) + 0x100,
                data_len,
                VRING_DESC_F_WRITE as u16,
                0,
            )));
        }
        for c in 0..n as usize {
            vq.add_desc_chains(&descs[c * 2..c * 2 + 2], (c * 2) as u16)
                .unwrap();
        }
        let mut q: Queue = vq.create_queue().unwrap();
        v.fill_rx(&self.mem, &mut q);
        let used = q.next_used();
        (0..u64::from(used))
            .map(|i| {
                let mut h = vec![0u8; HDR_LEN];
                self.mem.read_slice(&mut h, GuestAddress(slot(i))).unwrap();
                let p = RxPacket::parse(&h, Vec::new());
                let mut d = vec![0u8; (p.hdr.len as usize).min(data_len as usize)];
                self.mem
                    .read_slice(&mut d, GuestAddress(slot(i) + 0x100))
                    .unwrap();
                RxPacket { data: d, ..p }
            })
            .collect()
    }

    /// Offer `n` RX buffers of 4 KiB.
    pub fn rx(&self, v: &mut Vsock, n: u16) -> Vec<RxPacket> {
        self.rx_sized(v, n, 4096)
    }
}
