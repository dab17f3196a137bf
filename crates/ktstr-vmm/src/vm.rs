//! The engine-independent handle on a running VM, and the frozen guard.

use crate::VmError;
use crate::console::Console;
use crate::engine::{EngineKind, Selection};
use crate::qemu::QemuVm;
use crate::spec::{VmExit, VmSpec};
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::regs::CpuRegs;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A booted VM.
pub struct RunningVm {
    qemu: QemuVm,
    selection: Selection,
    booted_at: Instant,
}

impl std::fmt::Debug for RunningVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningVm")
            .field("engine", &self.selection.kind)
            .finish()
    }
}

impl RunningVm {
    /// Boot with the engine `KTSTR_ENGINE` selects.
    pub fn boot(spec: &VmSpec) -> Result<Self, VmError> {
        Self::boot_with(spec, crate::engine::select()?)
    }

    /// Boot with an explicit engine selection.
    pub fn boot_with(spec: &VmSpec, selection: Selection) -> Result<Self, VmError> {
        tracing::info!(engine = %selection.kind, why = %selection.why, "booting VM");
        let qemu = match selection.kind {
            EngineKind::Qemu(accel) => QemuVm::boot(spec, accel)?,
            EngineKind::Kvm => {
                return Err(VmError::Unavailable(
                    "the kvm engine is not built yet".into(),
                ));
            }
        };
        Ok(Self {
            qemu,
            selection,
            booted_at: Instant::now(),
        })
    }

    pub fn engine(&self) -> &Selection {
        &self.selection
    }

    pub fn booted_at(&self) -> Instant {
        self.booted_at
    }

    pub fn console(&self) -> &Console {
        self.qemu.console()
    }

    /// Host end of byte channel `port`.
    pub fn channel(&self, port: u32) -> Result<UnixStream, VmError> {
        self.qemu.channel(port)
    }

    /// Guest physical memory, readable (and writable) while the guest
    /// runs: reads may be torn; freeze for a consistent view.
    pub fn memory(&self) -> Arc<dyn PhysMem + Send + Sync> {
        self.qemu.ram()
    }

    pub fn nr_cpus(&self) -> u32 {
        self.qemu.nr_cpus()
    }

    /// Stop every vCPU and capture registers; dropping the guard thaws.
    pub fn freeze(&self, timeout: Duration) -> Result<Frozen<'_>, VmError> {
        let regs = self.qemu.stop(timeout)?;
        Ok(Frozen {
            thaw: Some(&self.qemu),
            regs,
            mem: self.qemu.ram(),
            vm_dump: Some(&self.qemu),
        })
    }

    /// Wait for the run to end (or its timeout).
    pub fn wait(&self) -> VmExit {
        self.qemu.wait()
    }

    /// Has the engine (QEMU) exited?
    pub fn exited(&self) -> bool {
        self.qemu.exited()
    }

    /// Has the spec's wall-clock limit passed?
    pub fn deadline_passed(&self) -> bool {
        self.qemu.deadline_passed()
    }

    /// Wait up to `grace` for the guest to end by itself, else kill it.
    pub fn wait_or_kill(&self, grace: Duration) -> VmExit {
        self.qemu.wait_or_kill(grace)
    }

    /// Kill the VM now.
    pub fn kill(&self) {
        self.qemu.kill()
    }

    /// Freeze the guest at the instant any vCPU writes `len` bytes at guest
    /// virtual `gva` (a hardware-style write watchpoint on every vCPU) and
    /// run `callback` with the frozen guard; its return says whether to
    /// keep watching. Returns a handle that stops watching when dropped.
    pub fn watch_write(
        &self,
        gva: u64,
        len: u64,
        callback: crate::watch::WatchCallback,
    ) -> Result<crate::watch::Watch, VmError> {
        crate::watch::Watch::start(&self.qemu, gva, len, callback)
    }

    /// The engine process id (qemu), for leak checks.
    pub fn engine_pid(&self) -> Option<u32> {
        self.qemu.pid()
    }
}

/// Every vCPU stopped; guest memory is quiescent. Dropping it thaws
/// (for a watchpoint hit, the watcher resumes the guest after the
/// callback returns).
pub struct Frozen<'a> {
    thaw: Option<&'a QemuVm>,
    vm_dump: Option<&'a QemuVm>,
    regs: Vec<CpuRegs>,
    mem: Arc<crate::ram::GuestRam>,
}

impl<'a> Frozen<'a> {
    /// A guard for a stop someone else resumes (a watchpoint hit).
    pub(crate) fn borrowed(regs: Vec<CpuRegs>, mem: Arc<crate::ram::GuestRam>) -> Self {
        Self {
            thaw: None,
            vm_dump: None,
            regs,
            mem,
        }
    }

    /// Registers of each vCPU at the freeze.
    pub fn regs(&self) -> &[CpuRegs] {
        &self.regs
    }

    /// Guest physical memory (read and write).
    pub fn mem(&self) -> &(dyn PhysMem + Send + Sync) {
        &*self.mem
    }

    /// A shareable handle on the same memory.
    pub fn mem_arc(&self) -> Arc<dyn PhysMem + Send + Sync> {
        self.mem.clone()
    }

    /// The engine's own dump of guest memory (qemu: `dump-guest-memory`).
    pub fn engine_dump(&self, path: &std::path::Path) -> Result<(), VmError> {
        match self.vm_dump {
            Some(q) => q.dump_guest_memory(path),
            None => Err(VmError::Engine(
                "no engine dump from a watchpoint callback".into(),
            )),
        }
    }

    /// Thaw now, reporting errors (drop thaws silently).
    pub fn thaw(mut self) -> Result<(), VmError> {
        match self.thaw.take() {
            Some(q) => q.cont(),
            None => Ok(()),
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Some(q) = self.thaw.take()
            && let Err(e) = q.cont()
        {
            tracing::warn!(error = %e, "thaw failed");
        }
    }
}
