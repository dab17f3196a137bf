//! The engine-independent handle on a running VM, and the frozen guard.

use crate::VmError;
use crate::console::Console;
use crate::engine::{EngineKind, Selection};
pub use crate::frozen::Frozen;
use crate::kvm::KvmVm;
use crate::qemu::QemuVm;
use crate::spec::{VmExit, VmSpec};
use ktstr_introspect::mem::PhysMem;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The engine behind a [`RunningVm`].
enum Engine {
    Qemu(QemuVm),
    Kvm(KvmVm),
}

/// A booted VM.
pub struct RunningVm {
    engine: Engine,
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

/// Call the same method on whichever engine runs.
macro_rules! dispatch {
    ($self:expr, $v:ident => $e:expr) => {
        match &$self.engine {
            Engine::Qemu($v) => $e,
            Engine::Kvm($v) => $e,
        }
    };
}

impl RunningVm {
    /// Boot with the engine `KTSTR_ENGINE` selects.
    pub fn boot(spec: &VmSpec) -> Result<Self, VmError> {
        Self::boot_with(spec, crate::engine::select()?)
    }

    /// Boot with an explicit engine selection.
    pub fn boot_with(spec: &VmSpec, selection: Selection) -> Result<Self, VmError> {
        tracing::info!(engine = %selection.kind, why = %selection.why, "booting VM");
        let engine = match selection.kind {
            EngineKind::Qemu(accel) => Engine::Qemu(QemuVm::boot(spec, accel)?),
            EngineKind::Kvm => Engine::Kvm(KvmVm::boot(spec)?),
        };
        Ok(Self {
            engine,
            selection,
            booted_at: Instant::now(),
        })
    }

    /// Boot a small ring-3 program on the kvm engine (see
    /// [`crate::kvm::raw`]): the engine's tests and benchmarks on hosts
    /// whose KVM cannot run a Linux guest at speed.
    pub fn boot_raw(
        guest: &crate::kvm::raw::RawGuest,
        timeout: Duration,
        console: Console,
    ) -> Result<Self, VmError> {
        Ok(Self {
            engine: Engine::Kvm(KvmVm::boot_raw(guest, timeout, console)?),
            selection: Selection {
                kind: EngineKind::Kvm,
                why: "a raw ring-3 guest".into(),
            },
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
        dispatch!(self, v => v.console())
    }

    /// Host end of byte channel `port`.
    pub fn channel(&self, port: u32) -> Result<UnixStream, VmError> {
        dispatch!(self, v => v.channel(port))
    }

    /// Guest physical memory, readable (and writable) while the guest
    /// runs: reads may be torn; freeze for a consistent view.
    pub fn memory(&self) -> Arc<dyn PhysMem + Send + Sync> {
        dispatch!(self, v => v.ram())
    }

    pub fn nr_cpus(&self) -> u32 {
        dispatch!(self, v => v.nr_cpus())
    }

    /// Stop every vCPU and capture registers; dropping the guard thaws.
    pub fn freeze(&self, timeout: Duration) -> Result<Frozen<'_>, VmError> {
        let (regs, engine): (_, &dyn crate::frozen::Thaw) = match &self.engine {
            Engine::Qemu(q) => (q.stop(timeout)?, q),
            Engine::Kvm(k) => (k.stop(timeout)?, k),
        };
        Ok(Frozen::owned(engine, regs, self.memory()))
    }

    /// Wait for the run to end (or its timeout).
    pub fn wait(&self) -> VmExit {
        dispatch!(self, v => v.wait())
    }

    /// Has the engine (QEMU, or every vCPU of the kvm engine) stopped?
    pub fn exited(&self) -> bool {
        dispatch!(self, v => v.exited())
    }

    /// Has the spec's wall-clock limit passed?
    pub fn deadline_passed(&self) -> bool {
        dispatch!(self, v => v.deadline_passed())
    }

    /// Wait up to `grace` for the guest to end by itself, else kill it.
    pub fn wait_or_kill(&self, grace: Duration) -> VmExit {
        dispatch!(self, v => v.wait_or_kill(grace))
    }

    /// Kill the VM now.
    pub fn kill(&self) {
        dispatch!(self, v => v.kill())
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
        match &self.engine {
            Engine::Qemu(q) => crate::qemu::watch::start(q, gva, len, callback),
            Engine::Kvm(k) => crate::kvm::watch::start(k, gva, len, callback),
        }
    }

    /// The engine process id (qemu), for leak checks; `None` on kvm.
    pub fn engine_pid(&self) -> Option<u32> {
        match &self.engine {
            Engine::Qemu(q) => q.pid(),
            Engine::Kvm(_) => None,
        }
    }
}
