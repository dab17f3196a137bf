//! One vsock stream between a guest port and a host endpoint (one end of
//! an in-process Unix socket pair): its state, and the credit accounting
//! of both directions.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

/// Where a host-initiated connection's host end goes once the guest
/// answers (or why it will not).
pub type ConnectReply = mpsc::Sender<Result<UnixStream, String>>;

/// The life of a connection.
#[derive(Debug)]
pub enum ConnState {
    /// The host asked to connect; waiting for the guest's RESPONSE. The
    /// host end is handed over when it arrives.
    Connecting {
        reply: ConnectReply,
        host_end: UnixStream,
    },
    /// Data flows both ways.
    Established,
    /// The host end reached EOF: no more host data; the guest was (or is
    /// about to be) told with SHUTDOWN.
    HostClosed,
}

/// Result of pushing guest bytes to the host end.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything that could be written was; the host end is alive.
    Ok,
    /// The host end is gone: the connection must be reset.
    HostGone,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The device's end of the socket pair.
    pub sock: UnixStream,
    pub state: ConnState,
    /// Guest bytes not yet written to the host socket.
    pub pending: VecDeque<u8>,
    /// Bytes received from the guest, and forwarded to the host socket.
    pub rx_cnt: u32,
    pub fwd_cnt: u32,
    /// The `fwd_cnt` last announced to the guest.
    pub fwd_cnt_sent: u32,
    /// The guest's buffer and what it has consumed; what we sent it.
    pub peer_buf_alloc: u32,
    pub peer_fwd_cnt: u32,
    pub tx_cnt: u32,
}

impl Conn {
    /// A connection in `state` over the device end `sock`.
    pub fn new(sock: UnixStream, state: ConnState) -> Self {
        Self {
            sock,
            state,
            pending: VecDeque::new(),
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
        }
    }

    /// Is the connection past its handshake?
    pub fn is_open(&self) -> bool {
        !matches!(self.state, ConnState::Connecting { .. })
    }

    /// May host data still flow to the guest?
    pub fn host_readable(&self) -> bool {
        matches!(self.state, ConnState::Established)
    }

    /// How many more bytes the guest can take.
    pub fn peer_credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    /// Record the credit a guest packet carries.
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// Would `len` more guest bytes exceed the buffer we offered?
    pub fn would_overrun(&self, len: usize, buf_alloc: u32) -> bool {
        let in_flight = self.rx_cnt.wrapping_sub(self.fwd_cnt) as u64;
        in_flight.saturating_add(len as u64) > buf_alloc as u64
    }

    /// Take guest bytes for the host end.
    pub fn accept_guest_data(&mut self, data: &[u8]) {
        // `data` is at most MAX_PKT_DATA, checked by the caller.
        self.rx_cnt = self.rx_cnt.wrapping_add(data.len() as u32);
        self.pending.extend(data);
    }

    /// Write pending guest bytes to the host end.
    pub fn flush(&mut self) -> Flush {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            match self.sock.write(a) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.pending.clear();
                    return Flush::HostGone;
                }
            }
        }
        Flush::Ok
    }

    /// Should the guest hear of our forwarded count now (a quarter of the
    /// buffer freed, or everything written)?
    pub fn credit_update_due(&self, buf_alloc: u32) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= buf_alloc / 4
            || (self.pending.is_empty() && self.fwd_cnt != self.fwd_cnt_sent)
    }
}
