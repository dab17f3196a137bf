//! Write watchpoints: QEMU's gdbstub stops the guest when a vCPU writes
//! the watched address; a watcher thread captures registers, runs the
//! callback with a frozen guard, then resumes (or removes the watch).
//! Stops the watcher did not cause (QMP freezes) are ignored.

use crate::VmError;
use crate::qemu::gdb::{Gdb, GdbError};
use crate::qemu::{QemuVm, capture_regs};
use crate::vm::Frozen;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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

/// A running watch; dropping it removes the watchpoint.
pub struct Watch {
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), GdbError>>>,
}

impl Watch {
    pub(crate) fn start(
        q: &QemuVm,
        gva: u64,
        len: u64,
        mut cb: WatchCallback,
    ) -> Result<Self, VmError> {
        let (qmp, ram, gate, nr_cpus) = q.watch_parts();
        let path = q.gdb_socket();
        // Hold the pause gate while attaching: QEMU pauses on attach.
        gate.acquire(Duration::from_secs(10))?;
        let setup = (|| {
            let mut g = Gdb::connect(&path, Duration::from_secs(10))?;
            g.insert_write_watch(gva, len)?;
            g.cont()?;
            Ok::<_, GdbError>(g)
        })();
        gate.release();
        let mut g = setup.map_err(|e| VmError::Engine(format!("watchpoint at {gva:#x}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = std::thread::Builder::new()
            .name("ktstr-watch".into())
            .spawn(move || {
                loop {
                    if stop2.load(Ordering::SeqCst) {
                        // Stop the guest to talk to the stub, clean up, detach.
                        gate.acquire(Duration::from_secs(10)).ok();
                        let _ = g.interrupt();
                        let _ = g.wait_stop(Duration::from_secs(5));
                        let _ = g.remove_write_watch(gva, len);
                        let r = g.detach();
                        gate.release();
                        return r;
                    }
                    let s = match g.wait_stop(Duration::from_millis(100)) {
                        Ok(s) => s,
                        Err(GdbError::Timeout) => continue,
                        Err(e) => return Err(e),
                    };
                    if s.watch.is_none() {
                        // A QMP freeze paused the guest and the stub reported
                        // it. Once that freeze has resumed the guest, tell the
                        // stub to continue too, or it stops reporting hits.
                        let _ = gate.acquire(Duration::from_secs(60));
                        let r = g.cont();
                        gate.release();
                        r?;
                        continue;
                    }
                    hits2.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.acquire(Duration::from_secs(30));
                    let regs =
                        capture_regs(&qmp, Duration::from_secs(10), nr_cpus).unwrap_or_default();
                    let f = Frozen::borrowed(regs, ram.clone());
                    let action = cb(&f, s.thread.map(|t| t.saturating_sub(1)));
                    drop(f);
                    let r = match action {
                        WatchAction::Continue => g.cont(),
                        WatchAction::Remove => {
                            g.remove_write_watch(gva, len).and_then(|_| g.detach())
                        }
                    };
                    gate.release();
                    r?;
                    if action == WatchAction::Remove {
                        return Ok(());
                    }
                }
            })
            .map_err(|e| VmError::Io(e.to_string()))?;
        Ok(Self {
            stop,
            hits,
            thread: Some(thread),
        })
    }

    /// How many times the watchpoint fired.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
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
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r.map_err(|e| VmError::Engine(e.to_string())),
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
