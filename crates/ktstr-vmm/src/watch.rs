//! Write watchpoints, engine-neutral part: what a callback gets and
//! returns, and the handle on a running watcher thread. Each engine owns
//! how it watches (`qemu::watch`: QEMU's gdbstub; `kvm::watch`: a
//! read-only memory slot over the watched page).

use crate::VmError;
use crate::frozen::Frozen;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What to do after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchAction {
    /// Keep the watchpoint and resume.
    Continue,
    /// Remove it and resume.
    Remove,
}

/// The callback: the frozen guest, the vCPU (0-based) that wrote, if known.
pub type WatchCallback = Box<dyn FnMut(&Frozen<'_>, Option<u32>) -> WatchAction + Send>;

/// What a watcher thread shares with its handle.
#[derive(Debug, Default)]
pub struct WatchShared {
    /// Set by the handle: stop watching (remove the watchpoint, resume).
    pub stop: AtomicBool,
    /// Hits seen so far.
    pub hits: AtomicU64,
}

impl WatchShared {
    /// Has the handle asked the watcher to stop?
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Count a hit.
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::SeqCst);
    }
}

/// A running watch; dropping it removes the watchpoint.
pub struct Watch {
    shared: Arc<WatchShared>,
    thread: Option<std::thread::JoinHandle<Result<(), VmError>>>,
}

impl Watch {
    /// Run `body` as the watcher thread.
    pub(crate) fn spawn(
        body: impl FnOnce(Arc<WatchShared>) -> Result<(), VmError> + Send + 'static,
    ) -> Result<Self, VmError> {
        let shared = Arc::new(WatchShared::default());
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ktstr-watch".into())
            .spawn(move || body(s2))
            .map_err(VmError::io("spawning the watch thread"))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// How many times the watchpoint fired.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Has the watcher ended (removed after a hit, or failed)?
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop watching and report any error the watcher hit.
    pub fn stop(mut self) -> Result<(), VmError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), VmError> {
        self.shared.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(_) => Err(VmError::Engine("watch thread panicked".into())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
