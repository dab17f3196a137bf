//! Write watchpoints. On the kvm engine a read-only memory slot over the
//! watched page (see [`Watch::start_kvm`]); on the qemu engine QEMU's gdbstub stops the guest when a vCPU writes
//! the watched address; a watcher thread captures registers, runs the
//! callback with a frozen guard, then resumes (or removes the watch).
//! While a watch is active the watcher owns the gdbstub, and freezes are
//! served through it (interrupt, then continue) rather than through QMP,
//! so the stub and QEMU never disagree about whether the guest runs.

use crate::VmError;
use crate::kvm::KvmVm;
use crate::qemu::gdb::{Gdb, GdbError};
use crate::qemu::{DebugCmd, QemuVm, capture_regs};
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
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Watch {
    pub(crate) fn start(
        q: &QemuVm,
        gva: u64,
        len: u64,
        mut cb: WatchCallback,
    ) -> Result<Self, VmError> {
        let (qmp, ram, gate, debug, nr_cpus) = q.watch_parts();
        let path = q.gdb_socket();
        // Hold the pause gate while attaching (QEMU pauses on attach).
        gate.acquire(Duration::from_secs(10))?;
        let setup = (|| {
            let mut g = Gdb::connect(&path, Duration::from_secs(10))?;
            g.insert_write_watch(gva, len)?;
            g.cont()?;
            Ok::<_, GdbError>(g)
        })();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<DebugCmd>();
        if setup.is_ok() {
            *debug.lock().unwrap_or_else(|e| e.into_inner()) = Some(cmd_tx);
        }
        gate.release();
        let mut g = setup.map_err(|e| VmError::Engine(format!("watchpoint at {gva:#x}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let debug2 = debug.clone();
        let thread = std::thread::Builder::new()
            .name("ktstr-watch".into())
            .spawn(move || -> Result<(), String> {
                (|| -> Result<(), GdbError> {
                    let unregister = || *debug2.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    // A pause requested by a freezer: stop the guest through the
                    // stub, report, wait for the resume. A watch hit that races
                    // the interrupt is remembered and handled afterwards.
                    let mut pending_hit: Option<Option<u32>> = None;
                    let serve_pause = |g: &mut Gdb,
                                       reply: std::sync::mpsc::SyncSender<Result<(), String>>,
                                       already_stopped: bool,
                                       pending: &mut Option<Option<u32>>|
                     -> Result<(), GdbError> {
                        if !already_stopped {
                            g.interrupt()?;
                            let s = g.wait_stop(Duration::from_secs(10))?;
                            if s.watch.is_some() {
                                *pending = Some(s.thread.map(|t| t.saturating_sub(1)));
                            }
                        }
                        let _ = reply.send(Ok(()));
                        // Wait for the freezer to finish (bounded).
                        let _ = cmd_rx.recv_timeout(Duration::from_secs(600));
                        if !already_stopped && pending.is_none() {
                            g.cont()?;
                        }
                        Ok(())
                    };
                    loop {
                        if stop2.load(Ordering::SeqCst) {
                            unregister();
                            let _ = g.interrupt();
                            let _ = g.wait_stop(Duration::from_secs(5));
                            let _ = g.remove_write_watch(gva, len);
                            return g.detach();
                        }
                        while let Ok(cmd) = cmd_rx.try_recv() {
                            if let DebugCmd::Pause(reply) = cmd {
                                serve_pause(&mut g, reply, false, &mut pending_hit)?;
                            }
                        }
                        let hit_cpu = match pending_hit.take() {
                            Some(cpu) => cpu,
                            None => match g.wait_stop(Duration::from_millis(50)) {
                                Ok(s) if s.watch.is_some() => s.thread.map(|t| t.saturating_sub(1)),
                                // Nobody else stops the guest while we own the stub.
                                Ok(_) => {
                                    g.cont()?;
                                    continue;
                                }
                                Err(GdbError::Timeout) => continue,
                                Err(e) => {
                                    unregister();
                                    return Err(e);
                                }
                            },
                        };
                        hits2.fetch_add(1, Ordering::SeqCst);
                        // The guest is stopped at the write. Take the gate; serve
                        // freezers that hold it meanwhile (the guest is stopped).
                        while !gate.try_acquire() {
                            if let Ok(DebugCmd::Pause(reply)) =
                                cmd_rx.recv_timeout(Duration::from_millis(5))
                            {
                                let mut none = None;
                                serve_pause(&mut g, reply, true, &mut none)?;
                            }
                        }
                        let regs = capture_regs(&qmp, Duration::from_secs(10), nr_cpus)
                            .unwrap_or_default();
                        let f = Frozen::borrowed(regs, ram.clone());
                        let action = cb(&f, hit_cpu);
                        drop(f);
                        let r = match action {
                            WatchAction::Continue => g.cont(),
                            WatchAction::Remove => {
                                unregister();
                                g.remove_write_watch(gva, len).and_then(|_| g.detach())
                            }
                        };
                        gate.release();
                        r?;
                        if action == WatchAction::Remove {
                            return Ok(());
                        }
                    }
                })()
                .map_err(|e| e.to_string())
            })
            .map_err(|e| VmError::Io(e.to_string()))?;
        Ok(Self {
            stop,
            hits,
            thread: Some(thread),
        })
    }

    /// The kvm engine: the page holding `gva` is mapped read-only (see
    /// [`crate::kvm::slots`]); a store into the range parks the writing
    /// vCPU right after the instruction, the rest are stopped, and this
    /// watcher runs `cb`.
    pub(crate) fn start_kvm(
        k: &KvmVm,
        gva: u64,
        len: u64,
        mut cb: WatchCallback,
    ) -> Result<Self, VmError> {
        let rv = k.rendezvous();
        let slots = k.slots();
        let mem = k.ram();
        let regs = k.stop(Duration::from_secs(10))?;
        let armed = (|| {
            let cr3 = regs.first().map_or(0, |r| r.cr3);
            let la57 = regs.first().is_some_and(|r| r.la57());
            let gpa = ktstr_introspect::translate::walk_page_tables(&*mem, cr3, la57, gva)
                .map_err(|e| VmError::Spec(format!("watch at {gva:#x}: {e}")))?;
            slots.arm(gpa, len).map_err(VmError::Spec)
        })();
        k.cont();
        armed?;
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = std::thread::Builder::new()
            .name("ktstr-watch".into())
            .spawn(move || -> Result<(), String> {
                let remove = |rv: &crate::kvm::rendezvous::Rendezvous| {
                    if rv.freeze(Duration::from_secs(10)).is_ok() {
                        let r = slots.disarm();
                        rv.clear_hits();
                        rv.thaw();
                        return r;
                    }
                    Ok(())
                };
                loop {
                    if stop2.load(Ordering::SeqCst) {
                        return remove(&rv);
                    }
                    let Some((hit, regs)) = rv.take_hit(Duration::from_millis(50)) else {
                        if rv.stopping() {
                            return Ok(());
                        }
                        continue;
                    };
                    hits2.fetch_add(1, Ordering::SeqCst);
                    let f = Frozen::borrowed(regs, mem.clone());
                    let action = cb(&f, Some(hit.cpu));
                    drop(f);
                    let removed = (action == WatchAction::Remove).then(|| {
                        rv.clear_hits();
                        slots.disarm()
                    });
                    rv.thaw();
                    if let Some(r) = removed {
                        return r;
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
                Ok(r) => r.map_err(VmError::Engine),
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
