//! The device's connection multiplexer: host ports the guest may connect
//! to, connections keyed by (host port, guest port), control packets
//! waiting for RX buffers, and the two queue directions — TX chains from
//! the guest become packets for their connection; RX buffers are filled
//! with control packets first, then host data served round-robin across
//! connections within each guest's credit.

use super::connection::{Conn, ConnState, Flush};
use super::packet::{GUEST_CID, HOST_CID, Hdr, SHUTDOWN_BOTH, TYPE_STREAM, op};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{GuestMemoryMmap, bitmap::BitmapSlice};

/// Our receive buffer per connection (what the guest may have in flight).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload we accept or send in one packet.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Control packets waiting for RX buffers; beyond this the oldest are
/// dropped rather than growing without bound.
const MAX_CTRL: usize = 1024;
/// Connections at once.
const MAX_CONNS: usize = 256;
/// The first port of host-initiated connections.
const FIRST_HOST_PORT: u32 = 0x4000_0000;

/// Counters of what the device refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub bad_chains: u64,
    pub resets_sent: u64,
    /// Connections reset because their host end failed.
    pub host_errors: u64,
}

/// The device's connection state (the transport owns the queues).
#[derive(Default)]
pub struct Vsock {
    /// Host ports the guest may connect to, with the device end of the
    /// socket pair whose other end the host holds.
    listeners: HashMap<u32, UnixStream>,
    /// (host port, guest port) -> connection.
    pub(super) conns: BTreeMap<(u32, u32), Conn>,
    ctrl: VecDeque<Hdr>,
    next_host_port: u32,
    /// The connection served last (round-robin RX).
    last_served: Option<(u32, u32)>,
    pub stats: Stats,
}

fn socketpair() -> Result<(UnixStream, UnixStream), String> {
    let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    b.set_nonblocking(true)
        .map_err(|e| format!("socketpair: {e}"))?;
    Ok((a, b))
}

/// What one RX buffer will carry.
enum Next {
    Data { key: (u32, u32), len: usize },
    Eof((u32, u32)),
    Nothing,
}

impl Vsock {
    pub fn new() -> Self {
        Self {
            next_host_port: FIRST_HOST_PORT,
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
            Ok((host_end, dev)) => {
                let hp = self.next_host_port;
                self.next_host_port = self.next_host_port.wrapping_add(1).max(FIRST_HOST_PORT);
                let state = ConnState::Connecting {
                    reply: tx,
                    host_end,
                };
                self.conns.insert((hp, port), Conn::new(dev, state));
                self.push_ctrl(Hdr::control(hp, port, op::REQUEST));
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
        if let Some(c) = self.conns.remove(&(host_port, guest_port))
            && let ConnState::Connecting { reply, .. } = c.state
        {
            let _ = reply.send(Err(format!("guest port {guest_port} was reset")));
        }
        self.stats.resets_sent += 1;
        self.push_ctrl(Hdr::control(host_port, guest_port, op::RST));
    }

    /// A packet from the guest (CIDs and type already checked), with its
    /// payload.
    pub fn on_guest_packet(&mut self, h: &Hdr, data: &[u8]) {
        let key = (h.dst_port, h.src_port);
        if let Some(c) = self.conns.get_mut(&key) {
            c.update_peer_credit(h.buf_alloc, h.fwd_cnt);
        }
        match h.op {
            op::REQUEST => {
                if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNS {
                    return self.reset(key.0, key.1);
                }
                let Some(sock) = self.listeners.remove(&h.dst_port) else {
                    return self.reset(key.0, key.1);
                };
                let mut c = Conn::new(sock, ConnState::Established);
                c.update_peer_credit(h.buf_alloc, h.fwd_cnt);
                self.conns.insert(key, c);
                self.push_ctrl(Hdr::control(key.0, key.1, op::RESPONSE));
            }
            op::RESPONSE => {
                let Some(c) = self.conns.get_mut(&key).filter(|c| !c.is_open()) else {
                    return self.reset(key.0, key.1);
                };
                if let ConnState::Connecting { reply, host_end } =
                    std::mem::replace(&mut c.state, ConnState::Established)
                {
                    let _ = reply.send(Ok(host_end));
                }
            }
            op::RW => {
                let Some(c) = self.conns.get_mut(&key).filter(|c| c.is_open()) else {
                    return self.reset(key.0, key.1);
                };
                if c.would_overrun(data.len(), BUF_ALLOC) {
                    tracing::warn!("guest overran its vsock credit; resetting");
                    return self.reset(key.0, key.1);
                }
                c.accept_guest_data(data);
                self.flush(key);
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.push_ctrl(Hdr::control(key.0, key.1, op::CREDIT_UPDATE));
                }
            }
            op::SHUTDOWN => {
                if let Some(c) = self.conns.get_mut(&key) {
                    let _ = c.sock.shutdown(std::net::Shutdown::Write);
                    let host_closed = matches!(c.state, ConnState::HostClosed);
                    if h.flags & SHUTDOWN_BOTH == SHUTDOWN_BOTH || host_closed {
                        self.reset(key.0, key.1);
                    }
                }
            }
            op::RST => {
                if let Some(c) = self.conns.remove(&key)
                    && let ConnState::Connecting { reply, .. } = c.state
                {
                    let _ = reply.send(Err(format!("guest port {} refused", key.1)));
                }
            }
            _ => self.reset(key.0, key.1),
        }
    }

    /// Write pending guest bytes to the host socket; announce credit. A
    /// host end that failed is reset towards the guest.
    fn flush(&mut self, key: (u32, u32)) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.flush() == Flush::HostGone {
            self.stats.host_errors += 1;
            return self.reset(key.0, key.1);
        }
        if c.credit_update_due(BUF_ALLOC) {
            c.fwd_cnt_sent = c.fwd_cnt;
            self.push_ctrl(Hdr::control(key.0, key.1, op::CREDIT_UPDATE));
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
            .filter(|c| c.is_open())
            .map(|c| {
                (
                    c.sock.as_raw_fd(),
                    c.host_readable() && c.peer_credit() > 0,
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
        let h = Hdr::from_packet(p);
        if p.src_cid() != GUEST_CID || p.dst_cid() != HOST_CID || p.type_() != TYPE_STREAM {
            self.stats.bad_chains += 1;
            if h.op != op::RST {
                self.reset(h.dst_port, h.src_port);
            }
            return;
        }
        let mut data = Vec::new();
        if h.op == op::RW && h.len > 0 {
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

    /// Connection keys in round-robin order: those after the last one
    /// served, then the rest.
    fn rr_order(&self) -> Vec<(u32, u32)> {
        use std::ops::Bound::{Excluded, Unbounded};
        match self.last_served {
            Some(last) => self
                .conns
                .range((Excluded(last), Unbounded))
                .chain(self.conns.range(..=last))
                .map(|(k, _)| *k)
                .collect(),
            None => self.conns.keys().copied().collect(),
        }
    }

    /// Read host data for the next connection in round-robin order that
    /// has data and guest credit. Host-side errors reset the connection.
    fn pick_host_data(&mut self, buf: &mut [u8]) -> Next {
        for key in self.rr_order() {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            if !c.host_readable() {
                continue;
            }
            let n = (c.peer_credit() as usize).min(buf.len());
            if n == 0 {
                continue;
            }
            match c.sock.read(&mut buf[..n]) {
                Ok(0) => {
                    c.state = ConnState::HostClosed;
                    self.last_served = Some(key);
                    return Next::Eof(key);
                }
                Ok(k) => {
                    c.tx_cnt = c.tx_cnt.wrapping_add(k as u32);
                    self.last_served = Some(key);
                    return Next::Data { key, len: k };
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => {
                    tracing::debug!(error = %e, ?key, "vsock host end failed; resetting");
                    self.stats.host_errors += 1;
                    self.reset(key.0, key.1);
                }
            }
        }
        Next::Nothing
    }

    /// Write the next packet for the guest into `p`; its used length, or
    /// `None` if there is nothing to send.
    fn next_rx<B: BitmapSlice>(&mut self, p: &mut VsockPacket<'_, B>) -> Option<u32> {
        let hdr_size = p.header_slice().len() as u32;
        if let Some(h) = self.ctrl.pop_front() {
            h.write_to(p);
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
        match self.pick_host_data(&mut buf) {
            Next::Data { key, len } => {
                if let Some(s) = p.data_slice() {
                    s.copy_from(&buf[..len]);
                }
                let fwd_cnt = self.conns.get(&key).map_or(0, |c| c.fwd_cnt);
                Hdr {
                    src_port: key.0,
                    dst_port: key.1,
                    len: len as u32,
                    op: op::RW,
                    flags: 0,
                    buf_alloc: BUF_ALLOC,
                    fwd_cnt,
                }
                .write_to(p);
                // `len` <= cap <= MAX_PKT_DATA.
                Some(hdr_size + len as u32)
            }
            Next::Eof(key) => {
                Hdr {
                    flags: SHUTDOWN_BOTH,
                    buf_alloc: BUF_ALLOC,
                    ..Hdr::control(key.0, key.1, op::SHUTDOWN)
                }
                .write_to(p);
                Some(hdr_size)
            }
            // A reset may have queued an RST meanwhile.
            Next::Nothing => self.ctrl.pop_front().map(|h| {
                h.write_to(p);
                hdr_size
            }),
        }
    }

    /// Anything queued for the guest right now (ignoring host data)?
    pub fn has_ctrl(&self) -> bool {
        !self.ctrl.is_empty()
    }
}
