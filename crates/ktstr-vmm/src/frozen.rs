//! The frozen guard: every vCPU stopped, registers captured, guest memory
//! quiescent; dropping it resumes the guest. Engine-neutral: an engine
//! resumes through [`Thaw`], so this module depends on no engine.

use crate::VmError;
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::regs::CpuRegs;
use std::sync::Arc;

/// How an engine resumes a guest it stopped, and writes its own dump of
/// guest memory while stopped.
pub trait Thaw {
    /// Resume every vCPU.
    fn thaw(&self) -> Result<(), VmError>;
    /// The engine's own dump of guest memory (qemu: `dump-guest-memory`).
    fn engine_dump(&self, path: &std::path::Path) -> Result<(), VmError>;
}

/// Every vCPU stopped; guest memory is quiescent. Dropping it thaws
/// (for a watchpoint hit, the watcher resumes the guest after the
/// callback returns).
pub struct Frozen<'a> {
    thaw: Option<&'a dyn Thaw>,
    dump: Option<&'a dyn Thaw>,
    regs: Vec<CpuRegs>,
    mem: Arc<dyn PhysMem + Send + Sync>,
}

impl<'a> Frozen<'a> {
    /// A guard whose drop resumes the guest through `engine`.
    pub(crate) fn owned(
        engine: &'a dyn Thaw,
        regs: Vec<CpuRegs>,
        mem: Arc<dyn PhysMem + Send + Sync>,
    ) -> Self {
        Self {
            thaw: Some(engine),
            dump: Some(engine),
            regs,
            mem,
        }
    }

    /// A guard for a stop someone else resumes (a watchpoint hit).
    pub(crate) fn borrowed(regs: Vec<CpuRegs>, mem: Arc<dyn PhysMem + Send + Sync>) -> Self {
        Self {
            thaw: None,
            dump: None,
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
        match self.dump {
            Some(e) => e.engine_dump(path),
            None => Err(VmError::Engine(
                "no engine dump from a watchpoint callback".into(),
            )),
        }
    }

    /// Thaw now, reporting errors (drop thaws silently).
    pub fn thaw(mut self) -> Result<(), VmError> {
        match self.thaw.take() {
            Some(e) => e.thaw(),
            None => Ok(()),
        }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.thaw.take()
            && let Err(err) = e.thaw()
        {
            tracing::warn!(error = %err, "thaw failed");
        }
    }
}
