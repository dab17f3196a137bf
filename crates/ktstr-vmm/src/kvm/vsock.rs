//! The virtio-vsock device of the kvm engine, in userspace: the guest is
//! CID 3, the host CID 2. Each host endpoint is one end of a Unix socket
//! pair inside this process (never the host's own AF_VSOCK): a guest
//! connection to host port P is accepted when the VM was given channel P,
//! and the host can connect to a guest port. Stream sockets only;
//! REQUEST/RESPONSE/RST/SHUTDOWN, data both ways, credit-based flow
//! control (we never send more than the guest's credit, and a guest that
//! sends more than ours is reset).
//!
//! Queues are virtio-queue split rings; packets are parsed with the
//! virtio-vsock crate. A malformed chain (bad addresses, wrong
//! direction, lengths, loops) is consumed with length 0 and counted; it
//! never panics or stalls the device.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{GuestMemoryMmap, bitmap::BitmapSlice};

pub const HOST_CID: u64 = 2;
pub const GUEST_CID: u64 = 3;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
const SHUTDOWN_BOTH: u32 = 3;
/// Our receive buffer per connection (what the guest may have in flight).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload we accept or send in one packet.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Control packets waiting for RX buffers; beyond this the oldest
/// connections are reset rather than growing without bound.
const MAX_CTRL: usize = 1024;
/// Connections at once.
const MAX_CONNS: usize = 256;

/// A packet header, in host order.
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

struct Conn {
    sock: UnixStream,
    established: bool,
    /// Guest bytes not yet written to the host socket.
    pending: VecDeque<u8>,
    /// Bytes received from the guest, and forwarded to the host socket.
    rx_cnt: u32,
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// The guest's credit: its buffer and what it has consumed; what we sent.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    host_eof: bool,
    /// A host-initiated connection waiting for the guest's RESPONSE.
    on_connect: Option<mpsc::Sender<Result<UnixStream, String>>>,
    host_end: Option<UnixStream>,
}

impl Conn {
    fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            established: false,
            pending: VecDeque::new(),
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            host_eof: false,
            on_connect: None,
            host_end: None,
        }
    }

    fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// Counters of what the device refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub bad_chains: u64,
    pub resets_sent: u64,
}

/// The device's connection state (the transport owns the queues).
#[derive(Default)]
pub struct Vsock {
    /// Host ports the guest may connect to, with the device end of the
    /// socket pair whose other end the host holds.
    listeners: HashMap<u32, UnixStream>,
    /// (host port, guest port) -> connection.
    conns: HashMap<(u32, u32), Conn>,
    ctrl: VecDeque<Hdr>,
    next_host_port: u32,
    pub stats: Stats,
}

fn socketpair() -> Result<(UnixStream, UnixStream), String> {
    let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    b.set_nonblocking(true)
        .map_err(|e| format!("socketpair: {e}"))?;
    Ok((a, b))
}

impl Vsock {
    pub fn new() -> Self {
        Self {
            next_host_port: 0x4000_0000,
            ..Default::default()
        }
    }

    /// Accept one guest connection to host `port`; returns the host end.
    pub fn listen(&mut self, port: u32) -> Result<UnixStream, String> {
        if self.listeners.contains_key(&port) {
            return Err(format!("vsock port {port} is already listening"));
        }
        let (host, dev) = socketpair()?;
        self.listeners.insert(port, dev);
        Ok(host)
    }

    /// Start a connection to guest `port`; the receiver yields the host
    /// end once the guest answers (or why not).
    pub fn connect(&mut self, port: u32) -> mpsc::Receiver<Result<UnixStream, String>> {
        let (tx, rx) = mpsc::channel();
        if self.conns.len() >= MAX_CONNS {
            let _ = tx.send(Err("too many vsock connections".into()));
            return rx;
        }
        match socketpair() {
            Ok((host, dev)) => {
                let hp = self.next_host_port;
                self.next_host_port = self.next_host_port.wrapping_add(1).max(0x4000_0000);
                let mut c = Conn::new(dev);
                c.on_connect = Some(tx);
                c.host_end = Some(host);
                self.conns.insert((hp, port), c);
                self.push_ctrl(Hdr {
                    src_port: hp,
                    dst_port: port,
                    op: OP_REQUEST,
                    ..Default::default()
                });
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
        rx
    }

    fn push_ctrl(&mut self, mut h: Hdr) {
        if let Some(c) = self.conns.get(&(h.src_port, h.dst_port)) {
            h.fwd_cnt = c.fwd_cnt;
        }
        h.buf_alloc = BUF_ALLOC;
        if self.ctrl.len() >= MAX_CTRL {
            tracing::warn!("vsock control queue full; dropping the oldest");
            self.ctrl.pop_front();
        }
        self.ctrl.push_back(h);
    }

    fn reset(&mut self, host_port: u32, guest_port: u32) {
        self.conns.remove(&(host_port, guest_port));
        self.stats.resets_sent += 1;
        self.push_ctrl(Hdr {
            src_port: host_port,
            dst_port: guest_port,
            op: OP_RST,
            ..Default::default()
        });
    }

    /// A packet from the guest (header fields already validated for
    /// CIDs and type by the caller), with its payload.
    pub fn on_guest_packet(&mut self, h: &Hdr, data: &[u8]) {
        let key = (h.dst_port, h.src_port);
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
        }
        match h.op {
            OP_REQUEST => {
                if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNS {
                    return self.reset(key.0, key.1);
                }
                let Some(sock) = self.listeners.remove(&h.dst_port) else {
                    return self.reset(key.0, key.1);
                };
                let mut c = Conn::new(sock);
                c.established = true;
                c.peer_buf_alloc = h.buf_alloc;
                c.peer_fwd_cnt = h.fwd_cnt;
                self.conns.insert(key, c);
                self.push_ctrl(Hdr {
                    src_port: key.0,
                    dst_port: key.1,
                    op: OP_RESPONSE,
                    ..Default::default()
                });
            }
            OP_RESPONSE => match self.conns.get_mut(&key) {
                Some(c) if !c.established => {
                    c.established = true;
                    if let (Some(tx), Some(host)) = (c.on_connect.take(), c.host_end.take()) {
                        let _ = tx.send(Ok(host));
                    }
                }
                _ => self.reset(key.0, key.1),
            },
            OP_RW => {
                let Some(c) = self.conns.get_mut(&key).filter(|c| c.established) else {
                    return self.reset(key.0, key.1);
                };
                let in_flight = c.rx_cnt.wrapping_sub(c.fwd_cnt);
                if in_flight as u64 + data.len() as u64 > BUF_ALLOC as u64 {
                    tracing::warn!("guest overran its vsock credit; resetting");
                    return self.reset(key.0, key.1);
                }
                c.rx_cnt = c.rx_cnt.wrapping_add(data.len() as u32);
                c.pending.extend(data);
                self.flush(key);
            }
            OP_CREDIT_UPDATE => {}
            OP_CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.push_ctrl(Hdr {
                        src_port: key.0,
                        dst_port: key.1,
                        op: OP_CREDIT_UPDATE,
                        ..Default::default()
                    });
                }
            }
            OP_SHUTDOWN => {
                if let Some(c) = self.conns.get_mut(&key) {
                    let _ = c.sock.shutdown(std::net::Shutdown::Write);
                    if h.flags & SHUTDOWN_BOTH == SHUTDOWN_BOTH || c.host_eof {
                        self.reset(key.0, key.1);
                    }
                }
            }
            OP_RST => {
                if let Some(mut c) = self.conns.remove(&key)
                    && let Some(tx) = c.on_connect.take()
                {
                    let _ = tx.send(Err(format!("guest port {} refused", key.1)));
                }
            }
            _ => self.reset(key.0, key.1),
        }
    }

    /// Write pending guest bytes to the host socket; announce credit.
    fn flush(&mut self, key: (u32, u32)) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        while !c.pending.is_empty() {
            let (a, _) = c.pending.as_slices();
            match c.sock.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    c.pending.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The host end is gone.
                    c.pending.clear();
                    return self.reset(key.0, key.1);
                }
            }
        }
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) >= BUF_ALLOC / 4
            || (c.pending.is_empty() && c.fwd_cnt != c.fwd_cnt_sent)
        {
            c.fwd_cnt_sent = c.fwd_cnt;
            self.push_ctrl(Hdr {
                src_port: key.0,
                dst_port: key.1,
                op: OP_CREDIT_UPDATE,
                ..Default::default()
            });
        }
    }

    /// Flush every connection's pending bytes.
    pub fn flush_all(&mut self) {
        let keys: Vec<_> = self.conns.keys().copied().collect();
        for k in keys {
            self.flush(k);
        }
    }

    /// Host sockets to poll: (fd, want read, want write).
    pub fn poll_set(&self) -> Vec<(i32, bool, bool)> {
        use std::os::fd::AsRawFd;
        self.conns
            .values()
            .filter(|c| c.established)
            .map(|c| {
                (
                    c.sock.as_raw_fd(),
                    !c.host_eof && c.peer_credit() > 0,
                    !c.pending.is_empty(),
                )
            })
            .collect()
    }

    /// Process every TX chain the guest made available. Returns whether
    /// any chain was used (the guest may need an interrupt).
    pub fn process_tx(&mut self, mem: &GuestMemoryMmap, q: &mut Queue) -> bool {
        let mut used = false;
        while let Some(mut chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            match VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                Ok(p) => self.on_tx_packet(&p),
                Err(e) => {
                    self.stats.bad_chains += 1;
                    tracing::debug!(error = %e, "bad vsock TX chain");
                }
            }
            if q.add_used(mem, head, 0).is_err() {
                self.stats.bad_chains += 1;
            }
            used = true;
        }
        used
    }

    fn on_tx_packet<B: BitmapSlice>(&mut self, p: &VsockPacket<'_, B>) {
        let h = Hdr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            len: p.len(),
            op: p.op(),
            flags: p.flags(),
            buf_alloc: p.buf_alloc(),
            fwd_cnt: p.fwd_cnt(),
        };
        if p.src_cid() != GUEST_CID || p.dst_cid() != HOST_CID || p.type_() != TYPE_STREAM {
            self.stats.bad_chains += 1;
            if p.op() != OP_RST {
                self.reset(h.dst_port, h.src_port);
            }
            return;
        }
        let mut data = Vec::new();
        if h.op == OP_RW && h.len > 0 {
            match p.data_slice() {
                Some(s) if s.len() >= h.len as usize => {
                    data.resize(h.len as usize, 0);
                    if s.copy_to(&mut data[..]) != data.len() {
                        self.stats.bad_chains += 1;
                        return self.reset(h.dst_port, h.src_port);
                    }
                }
                _ => {
                    self.stats.bad_chains += 1;
                    return self.reset(h.dst_port, h.src_port);
                }
            }
        }
        self.on_guest_packet(&h, &data);
    }

    /// Fill RX buffers: control packets first, then host data within the
    /// guest's credit. Returns whether any chain was used.
    pub fn fill_rx(&mut self, mem: &GuestMemoryMmap, q: &mut Queue) -> bool {
        let mut used = false;
        while let Some(mut chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let mut p = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                Ok(p) => p,
                Err(e) => {
                    self.stats.bad_chains += 1;
                    tracing::debug!(error = %e, "bad vsock RX chain");
                    let _ = q.add_used(mem, head, 0);
                    used = true;
                    continue;
                }
            };
            let Some(hdr_len) = self.next_rx(&mut p) else {
                q.go_to_previous_position();
                break;
            };
            if q.add_used(mem, head, hdr_len).is_err() {
                self.stats.bad_chains += 1;
            }
            used = true;
        }
        used
    }

    /// Write the next packet for the guest into `p`; its used length, or
    /// `None` if there is nothing to send.
    fn next_rx<B: BitmapSlice>(&mut self, p: &mut VsockPacket<'_, B>) -> Option<u32> {
        let hdr_size = p.header_slice().len() as u32;
        let fill = |p: &mut VsockPacket<'_, B>, h: &Hdr| {
            p.set_src_cid(HOST_CID)
                .set_dst_cid(GUEST_CID)
                .set_src_port(h.src_port)
                .set_dst_port(h.dst_port)
                .set_type(TYPE_STREAM)
                .set_op(h.op)
                .set_flags(h.flags)
                .set_len(h.len)
                .set_buf_alloc(h.buf_alloc)
                .set_fwd_cnt(h.fwd_cnt);
        };
        if let Some(h) = self.ctrl.pop_front() {
            fill(p, &h);
            return Some(hdr_size);
        }
        let cap = p
            .data_slice()
            .map_or(0, |s| s.len())
            .min(MAX_PKT_DATA as usize);
        if cap == 0 {
            return None;
        }
        let mut buf = vec![0u8; cap];
        let mut eof_key = None;
        let mut sent = None;
        for (&(hp, gp), c) in self.conns.iter_mut() {
            if !c.established || c.host_eof {
                continue;
            }
            let n = (c.peer_credit() as usize).min(cap);
            if n == 0 {
                continue;
            }
            match c.sock.read(&mut buf[..n]) {
                Ok(0) => {
                    c.host_eof = true;
                    eof_key = Some((hp, gp));
                    break;
                }
                Ok(k) => {
                    c.tx_cnt = c.tx_cnt.wrapping_add(k as u32);
                    sent = Some((hp, gp, k, c.fwd_cnt));
                    break;
                }
                Err(_) => continue,
            }
        }
        if let Some((hp, gp, k, fwd_cnt)) = sent {
            if let Some(s) = p.data_slice() {
                s.copy_from(&buf[..k]);
            }
            fill(
                p,
                &Hdr {
                    src_port: hp,
                    dst_port: gp,
                    len: k as u32,
                    op: OP_RW,
                    flags: 0,
                    buf_alloc: BUF_ALLOC,
                    fwd_cnt,
                },
            );
            return Some(hdr_size + k as u32);
        }
        if let Some((hp, gp)) = eof_key {
            let h = Hdr {
                src_port: hp,
                dst_port: gp,
                op: OP_SHUTDOWN,
                flags: SHUTDOWN_BOTH,
                buf_alloc: BUF_ALLOC,
                ..Default::default()
            };
            fill(p, &h);
            return Some(hdr_size);
        }
        None
    }

    /// Anything queued for the guest right now (ignoring host data)?
    pub fn has_ctrl(&self) -> bool {
        !self.ctrl.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const HDR: usize = 44;

    fn hdr_bytes(src_port: u32, dst_port: u32, op: u16, len: u32, buf_alloc: u32) -> Vec<u8> {
        let mut b = Vec::with_capacity(HDR);
        b.extend_from_slice(&GUEST_CID.to_le_bytes());
        b.extend_from_slice(&HOST_CID.to_le_bytes());
        b.extend_from_slice(&src_port.to_le_bytes());
        b.extend_from_slice(&dst_port.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&TYPE_STREAM.to_le_bytes());
        b.extend_from_slice(&op.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&buf_alloc.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    struct Rig {
        mem: GuestMemoryMmap,
    }

    impl Rig {
        fn new() -> Self {
            Self {
                mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap(),
            }
        }

        /// Send one TX packet through a fresh queue.
        fn tx(&self, v: &mut Vsock, pkt: &[u8], data: &[u8]) -> bool {
            let vq = MockSplitQueue::create(&self.mem, GuestAddress(0x1000), 16);
            self.mem.write_slice(pkt, GuestAddress(0x10_0000)).unwrap();
            self.mem.write_slice(data, GuestAddress(0x20_0000)).unwrap();
            let mut descs = vec![RawDescriptor::from(Descriptor::new(
                0x10_0000,
                pkt.len() as u32,
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

        /// Offer `n` RX buffers and return the packets the device wrote.
        fn rx(&self, v: &mut Vsock, n: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
            let vq = MockSplitQueue::create(&self.mem, GuestAddress(0x8000), 16);
            let mut descs = Vec::new();
            for i in 0..n as u64 {
                descs.push(RawDescriptor::from(Descriptor::new(
                    0x30_0000 + i * 0x1_0000,
                    HDR as u32,
                    (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                    (i * 2 + 1) as u16,
                )));
                descs.push(RawDescriptor::from(Descriptor::new(
                    0x30_0000 + i * 0x1_0000 + 0x100,
                    4096,
                    VRING_DESC_F_WRITE as u16,
                    0,
                )));
            }
            // Chains of two descriptors each.
            for c in 0..n as usize {
                vq.add_desc_chains(&descs[c * 2..c * 2 + 2], (c * 2) as u16)
                    .unwrap();
            }
            let mut q: Queue = vq.create_queue().unwrap();
            v.fill_rx(&self.mem, &mut q);
            let used = q.next_used();
            (0..used as u64)
                .map(|i| {
                    let mut h = vec![0u8; HDR];
                    self.mem
                        .read_slice(&mut h, GuestAddress(0x30_0000 + i * 0x1_0000))
                        .unwrap();
                    let len = u32::from_le_bytes(h[24..28].try_into().unwrap()) as usize;
                    let mut d = vec![0u8; len.min(4096)];
                    self.mem
                        .read_slice(&mut d, GuestAddress(0x30_0000 + i * 0x1_0000 + 0x100))
                        .unwrap();
                    (h, d)
                })
                .collect()
        }
    }

    fn op(h: &[u8]) -> u16 {
        u16::from_le_bytes([h[30], h[31]])
    }

    #[test]
    fn guest_connects_sends_and_receives() {
        let r = Rig::new();
        let mut v = Vsock::new();
        let mut host = v.listen(1024).unwrap();
        assert!(r.tx(&mut v, &hdr_bytes(5000, 1024, OP_REQUEST, 0, 4096), &[]));
        let out = r.rx(&mut v, 4);
        assert_eq!(out.len(), 1);
        assert_eq!(op(&out[0].0), OP_RESPONSE);
        // Guest -> host.
        r.tx(&mut v, &hdr_bytes(5000, 1024, OP_RW, 5, 4096), b"hello");
        let mut b = [0u8; 5];
        host.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        // Host -> guest, within the guest's credit (4096).
        host.write_all(&[7u8; 6000]).unwrap();
        let out = r.rx(&mut v, 4);
        let data: usize = out
            .iter()
            .filter(|(h, _)| op(h) == OP_RW)
            .map(|(_, d)| d.len())
            .sum();
        assert_eq!(data, 4096, "never more than the guest's credit");
        assert!(out.iter().any(|(h, _)| op(h) == OP_CREDIT_UPDATE));
        // The host closes: the guest is told.
        drop(host);
        let mut v2 = v;
        // Give the guest more credit so the remaining bytes flow, then EOF.
        let mut credit = hdr_bytes(5000, 1024, OP_CREDIT_UPDATE, 0, 1 << 20);
        credit[40..44].copy_from_slice(&4096u32.to_le_bytes());
        r.tx(&mut v2, &credit, &[]);
        let out = r.rx(&mut v2, 8);
        assert!(
            out.iter().any(|(h, _)| op(h) == OP_SHUTDOWN),
            "EOF reported"
        );
    }

    #[test]
    fn unknown_ports_bad_cids_and_credit_overruns_are_reset() {
        let r = Rig::new();
        let mut v = Vsock::new();
        r.tx(&mut v, &hdr_bytes(1, 9999, OP_REQUEST, 0, 4096), &[]);
        let out = r.rx(&mut v, 2);
        assert_eq!(op(&out[0].0), OP_RST, "no listener");
        // Data on a connection that does not exist.
        r.tx(&mut v, &hdr_bytes(1, 9999, OP_RW, 3, 4096), b"abc");
        assert_eq!(op(&r.rx(&mut v, 2)[0].0), OP_RST);
        // Wrong destination CID.
        let mut bad = hdr_bytes(1, 1024, OP_REQUEST, 0, 4096);
        bad[8..16].copy_from_slice(&77u64.to_le_bytes());
        r.tx(&mut v, &bad, &[]);
        assert!(v.stats.bad_chains >= 1);
        // Credit overrun: more than BUF_ALLOC in flight while the host
        // reads nothing.
        let _host = v.listen(2000).unwrap();
        r.tx(&mut v, &hdr_bytes(2, 2000, OP_REQUEST, 0, 4096), &[]);
        r.rx(&mut v, 8);
        let chunk = vec![1u8; MAX_PKT_DATA as usize];
        for _ in 0..(BUF_ALLOC / MAX_PKT_DATA + 8) {
            r.tx(
                &mut v,
                &hdr_bytes(2, 2000, OP_RW, MAX_PKT_DATA, 4096),
                &chunk,
            );
        }
        let out = r.rx(&mut v, 8);
        assert!(out.iter().any(|(h, _)| op(h) == OP_RST), "overrun reset");
        assert!(v.conns.is_empty());
    }

    #[test]
    fn hostile_chains_are_consumed_without_panic() {
        let r = Rig::new();
        let mut v = Vsock::new();
        // Header descriptor pointing outside guest memory.
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
        vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
            0xffff_ffff_0000,
            HDR as u32,
            0,
            0,
        ))])
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(v.process_tx(&r.mem, &mut q));
        // Too-short header, and a write-only TX header.
        for (len, flags) in [(8u32, 0u16), (HDR as u32, VRING_DESC_F_WRITE as u16)] {
            let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
            vq.build_desc_chain(&[RawDescriptor::from(Descriptor::new(
                0x10_0000, len, flags, 0,
            ))])
            .unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            v.process_tx(&r.mem, &mut q);
        }
        // A descriptor loop: 0 -> 1 -> 0.
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0x1000), 16);
        let next = VRING_DESC_F_NEXT as u16;
        vq.desc_table()
            .store(
                0,
                RawDescriptor::from(Descriptor::new(0x10_0000, HDR as u32, next, 1)),
            )
            .unwrap();
        vq.desc_table()
            .store(
                1,
                RawDescriptor::from(Descriptor::new(0x20_0000, 16, next, 0)),
            )
            .unwrap();
        vq.avail().ring().ref_at(0).unwrap().store(0u16);
        vq.avail().idx().store(1u16);
        let mut q: Queue = vq.create_queue().unwrap();
        v.process_tx(&r.mem, &mut q);
        // A huge data length.
        r.tx(&mut v, &hdr_bytes(1, 1, OP_RW, u32::MAX, 4096), b"x");
        assert!(v.stats.bad_chains >= 4, "{:?}", v.stats);
    }

    #[test]
    fn host_connects_to_a_guest_port() {
        let r = Rig::new();
        let mut v = Vsock::new();
        let rx = v.connect(52);
        let out = r.rx(&mut v, 2);
        assert_eq!(op(&out[0].0), OP_REQUEST);
        let hp = u32::from_le_bytes(out[0].0[16..20].try_into().unwrap());
        // The guest answers from port 52 to our port.
        r.tx(&mut v, &hdr_bytes(52, hp, OP_RESPONSE, 0, 4096), &[]);
        let mut s = rx.try_recv().unwrap().unwrap();
        r.tx(&mut v, &hdr_bytes(52, hp, OP_RW, 2, 4096), b"ok");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
        // A refused connect is an error, not a hang.
        let rx = v.connect(53);
        let out = r.rx(&mut v, 4);
        let req = out.iter().find(|(h, _)| op(h) == OP_REQUEST).unwrap();
        assert_eq!(u32::from_le_bytes(req.0[20..24].try_into().unwrap()), 53);
        let hp = u32::from_le_bytes(req.0[16..20].try_into().unwrap());
        r.tx(&mut v, &hdr_bytes(53, hp, OP_RST, 0, 0), &[]);
        assert!(rx.try_recv().unwrap().is_err());
    }
}
