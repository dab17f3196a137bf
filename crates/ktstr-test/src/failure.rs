//! Catching a scheduler failure at its instant: once the scheduler
//! attaches, find where the kernel records its exit (7.x:
//! `(*scx_root)->exit_kind`; 6.12: the `scx_exit_kind` global) and put a
//! write watchpoint on it. When the guest writes an error kind, the VM is
//! frozen before teardown and a [`FailureDump`] is captured. If the
//! watchpoint cannot be armed, the dump is taken when guest-init reports
//! the scheduler's death instead (and says so in its provenance).

use crate::cold::frozen_kernel;
use crate::dump::{
    FailureDump, PROVENANCE_AFTER_TEARDOWN, PROVENANCE_WATCHPOINT, SCX_EXIT_ERROR, capture,
};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::{KaslrSource, Kernel};
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::offsets::Offsets;
use ktstr_vmm::RunningVm;
use ktstr_vmm::watch::{Watch, WatchAction};
use ktstr_wire::{Hello, Phase};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the exit kind lives on this kernel.
pub fn exit_kind_kva<M: PhysMem>(k: &Kernel<M>) -> Result<u64, String> {
    if let Ok(root) = k.sym("scx_root") {
        let sch = k.read_u64(root).map_err(|e| e.to_string())?;
        if sch == 0 {
            return Err("scx_root is NULL: no scheduler attached".into());
        }
        let off = Offsets::from_btf(k.image().btf())
            .sched
            .ok_or("BTF has scx_root but no struct scx_sched layout")?
            .exit_kind
            .off;
        return Ok(sch + off);
    }
    k.sym("scx_exit_kind").map_err(|e| e.to_string())
}

/// The failure watch of one test run.
pub struct FailureCapture {
    image: Arc<KernelImage>,
    captured: Arc<Mutex<Option<FailureDump>>>,
    watch: Option<Watch>,
    /// Also write a vmcore here at the instant of failure.
    vmcore: Option<PathBuf>,
    /// Why the watchpoint could not be armed, if it could not.
    pub arm_error: Option<String>,
}

impl FailureCapture {
    pub fn new(image: Arc<KernelImage>, vmcore: Option<PathBuf>) -> Self {
        Self {
            image,
            captured: Arc::default(),
            watch: None,
            vmcore,
            arm_error: None,
        }
    }

    /// Feed lifecycle events from the session.
    pub fn on_lifecycle(&mut self, vm: &RunningVm, hello: Option<&Hello>, phase: &Phase) {
        match phase {
            Phase::SchedulerAttached => {
                if let Err(e) = self.arm(vm, hello) {
                    tracing::warn!(error = %e, "cannot watch the scheduler's exit kind; falling back to a dump after teardown");
                    self.arm_error = Some(e);
                }
            }
            Phase::SchedulerDied
                if self
                    .captured
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none() =>
            {
                // Give a watchpoint hit in flight time to land first.
                std::thread::sleep(Duration::from_millis(200));
                if self
                    .captured
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                {
                    self.capture_after_teardown(vm, hello);
                }
            }
            _ => {}
        }
    }

    fn arm(&mut self, vm: &RunningVm, hello: Option<&Hello>) -> Result<(), String> {
        let (params, addr) = {
            let f = vm
                .freeze(Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let k = frozen_kernel(&f, &self.image, hello)?;
            (*k.params(), exit_kind_kva(&k)?)
        };
        let (image, captured, vmcore) = (
            self.image.clone(),
            self.captured.clone(),
            self.vmcore.clone(),
        );
        let watch = vm
            .watch_write(
                addr,
                4,
                Box::new(move |f, cpu| {
                    let k = Kernel::new(f.mem_arc(), image.clone(), params, KaslrSource::Given);
                    let kind = k.read_u32(addr).unwrap_or(0);
                    if kind >= SCX_EXIT_ERROR {
                        let mut d = capture(&k, f.regs(), PROVENANCE_WATCHPOINT, cpu);
                        if let Some(p) = &vmcore {
                            if let Some(dir) = p.parent() {
                                let _ = std::fs::create_dir_all(dir);
                            }
                            match crate::vmcore_dump::write_frozen_vmcore(f, &k, p) {
                                Ok(_) => d.vmcore = Some(p.clone()),
                                Err(e) => tracing::warn!(error = %e, "vmcore at failure"),
                            }
                        }
                        *captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                    }
                    // One exit per scheduler instance: stop watching either way.
                    WatchAction::Remove
                }),
            )
            .map_err(|e| e.to_string())?;
        self.watch = Some(watch);
        Ok(())
    }

    fn capture_after_teardown(&mut self, vm: &RunningVm, hello: Option<&Hello>) {
        let Ok(f) = vm.freeze(Duration::from_secs(10)) else {
            return;
        };
        if let Ok(k) = frozen_kernel(&f, &self.image, hello) {
            let d = capture(&k, f.regs(), PROVENANCE_AFTER_TEARDOWN, None);
            *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }

    /// The captured dump, if the scheduler failed.
    pub fn take(&mut self) -> Option<FailureDump> {
        if let Some(w) = self.watch.take() {
            let _ = w.stop();
        }
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
