//! The payload's side of guest-init's relay socket (`KTSTR_GUEST_RELAY`):
//! send kernel-op batches and test results without knowing the transport.

use crate::{GuestMsg, HostMsg, KernelOp, KernelOpReplyPayload, read_msg, write_msg};
use std::os::unix::net::UnixStream;

/// A connection to guest-init's relay.
pub struct RelayClient {
    sock: UnixStream,
    next: u64,
}

impl RelayClient {
    /// Connect to the socket named by `KTSTR_GUEST_RELAY`.
    pub fn from_env() -> Result<Self, String> {
        let path = std::env::var("KTSTR_GUEST_RELAY").map_err(|_| {
            "KTSTR_GUEST_RELAY is not set: not running under ktstr's guest-init".to_string()
        })?;
        Self::connect(&path)
    }

    /// Connect to the relay socket at `path`.
    pub fn connect(path: &str) -> Result<Self, String> {
        let sock = UnixStream::connect(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(Self { sock, next: 1 })
    }

    /// Send a batch of ops; block until the host replies (one reply per op).
    pub fn kernel_ops(&mut self, ops: Vec<KernelOp>) -> Result<Vec<KernelOpReplyPayload>, String> {
        let id = self.next;
        self.next += 1;
        let n = ops.len();
        write_msg(&mut self.sock, &GuestMsg::KernelOpRequest { id, ops })
            .map_err(|e| e.to_string())?;
        match read_msg::<HostMsg, _>(&mut self.sock).map_err(|e| e.to_string())? {
            HostMsg::KernelOpReply { id: rid, replies } if rid == id && replies.len() == n => {
                Ok(replies)
            }
            HostMsg::KernelOpReply { id: rid, replies } => Err(format!(
                "reply mismatch: id {rid} (want {id}), {} replies (want {n})",
                replies.len()
            )),
            other => Err(format!("unexpected relay message {other:?}")),
        }
    }

    /// Send any guest message (e.g. a TestResult) to the host.
    pub fn send(&mut self, m: &GuestMsg) -> Result<(), String> {
        write_msg(&mut self.sock, m).map_err(|e| e.to_string())
    }
}
