//! Write watches on the qemu engine, through QEMU's gdbstub: `Z2` on the
//! watched address, then the guest runs until a vCPU writes it and the
//! stub reports the stop. While a watch is active the watcher owns the
//! stub, and freezes are served through it (interrupt, then continue)
//! rather than through QMP, so the stub and QEMU never disagree about
//! whether the guest runs.
//!
//! The watcher is a small state machine ([`GdbWatcher::run`]): serve
//! pause requests from freezers, wait for a stop, and on a watch hit take
//! the pause gate, capture registers, run the callback, then continue or
//! remove the watchpoint and detach.

use super::gdb::{Gdb, GdbError};
use super::qmp::Qmp;
use super::{DebugCmd, DebugLink, PauseGate, QemuVm, capture_regs};
use crate::VmError;
use crate::frozen::Frozen;
use crate::ram::GuestRam;
use crate::watch::{Watch, WatchAction, WatchCallback, WatchShared};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

/// How long a freezer may hold a pause served by the watcher.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Arm a gdbstub watch of `len` bytes at guest virtual `gva`.
pub(crate) fn start(q: &QemuVm, gva: u64, len: u64, cb: WatchCallback) -> Result<Watch, VmError> {
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
    let (cmd_tx, cmds) = std::sync::mpsc::channel::<DebugCmd>();
    if setup.is_ok() {
        *debug.lock().unwrap_or_else(|e| e.into_inner()) = Some(cmd_tx);
    }
    gate.release();
    let g = setup.map_err(|e| VmError::Engine(format!("watchpoint at {gva:#x}: {e}")))?;
    let w = GdbWatcher {
        g,
        gva,
        len,
        cmds,
        debug,
        gate,
        qmp,
        ram,
        nr_cpus,
        pending_hit: None,
        cb,
    };
    Watch::spawn(move |shared| w.run(&shared))
}

/// Where the watcher is after waiting for the guest.
enum Event {
    /// Nothing happened within the poll interval.
    Idle,
    /// The watchpoint fired (the vCPU, 0-based, when the stub says).
    Hit(Option<u32>),
}

/// The watcher thread's state.
struct GdbWatcher {
    g: Gdb,
    gva: u64,
    len: u64,
    cmds: Receiver<DebugCmd>,
    debug: DebugLink,
    gate: Arc<PauseGate>,
    qmp: Arc<Qmp>,
    ram: Arc<GuestRam>,
    nr_cpus: u32,
    /// A hit that raced a pause request, handled after it.
    pending_hit: Option<Option<u32>>,
    cb: WatchCallback,
}

impl GdbWatcher {
    fn run(mut self, shared: &WatchShared) -> Result<(), VmError> {
        let r = self.run_inner(shared);
        // However the watcher ends, freezers go back to QMP.
        *self.debug.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    }

    fn run_inner(&mut self, shared: &WatchShared) -> Result<(), VmError> {
        loop {
            if shared.stop_requested() {
                return self.remove_and_detach(true);
            }
            self.serve_pause_requests()?;
            let Event::Hit(cpu) = self.next_event()? else {
                continue;
            };
            shared.hit();
            if self.handle_hit(cpu)? == WatchAction::Remove {
                return Ok(());
            }
        }
    }

    /// Answer every queued pause request (the guest is running).
    fn serve_pause_requests(&mut self) -> Result<(), VmError> {
        while let Ok(cmd) = self.cmds.try_recv() {
            if let DebugCmd::Pause(reply) = cmd {
                self.serve_pause(reply, false)?;
            }
        }
        Ok(())
    }

    /// Stop the guest through the stub (unless it already is), report, and
    /// wait (bounded) for the freezer to resume it. A watch hit that
    /// races the interrupt is remembered and handled afterwards.
    fn serve_pause(
        &mut self,
        reply: SyncSender<Result<(), String>>,
        already_stopped: bool,
    ) -> Result<(), VmError> {
        if !already_stopped {
            self.g.interrupt()?;
            let s = self.g.wait_stop(Duration::from_secs(10))?;
            if s.watch.is_some() {
                self.pending_hit = Some(s.thread.map(|t| t.saturating_sub(1)));
            }
        }
        let _ = reply.send(Ok(()));
        let _ = self.cmds.recv_timeout(MAX_PAUSE);
        if !already_stopped && self.pending_hit.is_none() {
            self.g.cont()?;
        }
        Ok(())
    }

    /// Wait briefly for the guest to stop.
    fn next_event(&mut self) -> Result<Event, VmError> {
        if let Some(cpu) = self.pending_hit.take() {
            return Ok(Event::Hit(cpu));
        }
        match self.g.wait_stop(Duration::from_millis(50)) {
            Ok(s) if s.watch.is_some() => Ok(Event::Hit(s.thread.map(|t| t.saturating_sub(1)))),
            // Nobody else stops the guest while we own the stub.
            Ok(_) => {
                self.g.cont()?;
                Ok(Event::Idle)
            }
            Err(GdbError::Timeout) => Ok(Event::Idle),
            Err(e) => Err(e.into()),
        }
    }

    /// The guest is stopped at the write: take the gate (serving freezers
    /// that hold it meanwhile), run the callback on a frozen view, then
    /// continue or remove.
    fn handle_hit(&mut self, cpu: Option<u32>) -> Result<WatchAction, VmError> {
        while !self.gate.try_acquire() {
            if let Ok(DebugCmd::Pause(reply)) = self.cmds.recv_timeout(Duration::from_millis(5)) {
                self.serve_pause(reply, true)?;
            }
        }
        let regs =
            capture_regs(&self.qmp, Duration::from_secs(10), self.nr_cpus).unwrap_or_default();
        let f = Frozen::borrowed(regs, self.ram.clone());
        let action = (self.cb)(&f, cpu);
        drop(f);
        let r = match action {
            WatchAction::Continue => self.g.cont().map_err(VmError::from),
            WatchAction::Remove => self.remove_and_detach(false),
        };
        self.gate.release();
        r.map(|_| action)
    }

    /// Remove the watchpoint and detach (which resumes the guest); stop
    /// the guest first when it runs.
    fn remove_and_detach(&mut self, running: bool) -> Result<(), VmError> {
        *self.debug.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if running {
            let _ = self.g.interrupt();
            let _ = self.g.wait_stop(Duration::from_secs(5));
        }
        if running {
            let _ = self.g.remove_write_watch(self.gva, self.len);
        } else {
            self.g.remove_write_watch(self.gva, self.len)?;
        }
        self.g.detach()?;
        Ok(())
    }
}
