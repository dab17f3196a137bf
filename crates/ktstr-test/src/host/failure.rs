//! Catching a scheduler failure at its instant: once the scheduler
//! attaches, find where the kernel records its exit (7.x:
//! `(*scx_root)->exit_kind`; 6.12: the `scx_exit_kind` global) and put a
//! write watchpoint on it. When the guest writes an error kind, the VM is
//! frozen before teardown and a [`FailureDump`] is captured. If the
//! watchpoint cannot be armed, a thread samples the exit kind from guest
//! RAM without stopping the guest and the session freezes on its signal;
//! failing that, the dump is taken when guest-init reports the
//! scheduler's death (each path says so in the dump's provenance).

use crate::host::cold::frozen_kernel;
use crate::host::dump::{
    FailureDump, PROVENANCE_AFTER_TEARDOWN, PROVENANCE_SAMPLED, PROVENANCE_WATCHPOINT,
    PROVENANCE_WATCHPOINT_DONE, SCX_EXIT_ERROR, capture,
};
use ktstr_introspect::image::KernelImage;

/// `SCX_EXIT_UNREG`: the first of the unregistration exit kinds.
const SCX_EXIT_UNREG: u32 = 64;
/// `SCX_EXIT_DONE`: the disable work has claimed the exit.
const SCX_EXIT_DONE: u32 = 1;
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
    sampled: Arc<Sampler>,
}

/// Shared state of the lock-free exit-kind sampler.
#[derive(Default)]
struct Sampler {
    stop: std::sync::atomic::AtomicBool,
    hit: std::sync::atomic::AtomicBool,
}

impl FailureCapture {
    pub fn new(image: Arc<KernelImage>, vmcore: Option<PathBuf>) -> Self {
        Self {
            image,
            captured: Arc::default(),
            watch: None,
            vmcore,
            arm_error: None,
            sampled: Arc::default(),
        }
    }

    /// Feed lifecycle events from the session.
    pub fn on_lifecycle(&mut self, vm: &RunningVm, hello: Option<&Hello>, phase: &Phase) {
        match phase {
            Phase::SchedulerAttached => {
                if let Err(e) = self.arm(vm, hello) {
                    tracing::warn!(error = %e, "cannot watch the scheduler's exit kind; sampling it instead");
                    self.arm_error = Some(e);
                    if let Err(e) = self.start_sampling(vm, hello) {
                        tracing::warn!(error = %e, "cannot sample the exit kind either; a dump after teardown remains");
                    }
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

    /// Freeze once to learn the kernel's translation parameters and where
    /// it records the scheduler's exit kind.
    fn locate_exit_kind(
        &self,
        vm: &RunningVm,
        hello: Option<&Hello>,
    ) -> Result<(ktstr_introspect::translate::TranslationParams, u64), String> {
        let f = vm
            .freeze(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let k = frozen_kernel(&f, &self.image, hello)?;
        Ok((*k.params(), exit_kind_kva(&k)?))
    }

    fn arm(&mut self, vm: &RunningVm, hello: Option<&Hello>) -> Result<(), String> {
        let (params, addr) = self.locate_exit_kind(vm, hello)?;
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
                    // The error claim writes the kind; the disable work then
                    // swaps it for SCX_EXIT_DONE before tearing down. Under
                    // TCG the claim's write is not always reported (seen for
                    // watchdog stalls from the tick), so the DONE write, still
                    // before teardown, is a capture point too.
                    let done_first = kind == SCX_EXIT_DONE
                        && captured.lock().unwrap_or_else(|e| e.into_inner()).is_none();
                    if kind >= SCX_EXIT_ERROR || done_first {
                        let prov = if done_first {
                            PROVENANCE_WATCHPOINT_DONE
                        } else {
                            PROVENANCE_WATCHPOINT
                        };
                        let mut d = capture(&k, f.regs(), prov, cpu);
                        if let Some(p) = &vmcore {
                            if let Some(dir) = p.parent() {
                                let _ = std::fs::create_dir_all(dir);
                            }
                            match crate::host::vmcore_dump::write_frozen_vmcore(f, &k, p) {
                                Ok(_) => d.vmcore = Some(p.clone()),
                                Err(e) => tracing::warn!(error = %e, "vmcore at failure"),
                            }
                        }
                        *captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                        return WatchAction::Remove;
                    }
                    // SCX_EXIT_UNREG* (64..1024): a clean unregistration, the
                    // scheduler's last exit. Anything lower (e.g. a reset to
                    // SCX_EXIT_NONE or SCX_EXIT_DONE) is not final: keep watching.
                    if kind >= SCX_EXIT_UNREG {
                        WatchAction::Remove
                    } else {
                        WatchAction::Continue
                    }
                }),
            )
            .map_err(|e| e.to_string())?;
        self.watch = Some(watch);
        Ok(())
    }

    /// Fallback: read the exit kind every 20 ms from guest RAM without
    /// stopping the guest (lock-free), and freeze once it shows an error.
    fn start_sampling(&mut self, vm: &RunningVm, hello: Option<&Hello>) -> Result<(), String> {
        let (params, addr) = self.locate_exit_kind(vm, hello)?;
        let mem = vm.memory();
        let image = self.image.clone();
        let flag = self.sampled.clone();
        std::thread::Builder::new()
            .name("ktstr-exit-sampler".into())
            .spawn(move || {
                let k = Kernel::new(mem, image, params, KaslrSource::Given);
                while !flag.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if k.read_u32(addr).is_ok_and(|v| v >= SCX_EXIT_ERROR) {
                        flag.hit.store(true, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Poll the sampler (call from the session loop's thread): if it saw an
    /// error, freeze and capture now.
    pub fn poll(&mut self, vm: &RunningVm, hello: Option<&Hello>) {
        if self
            .sampled
            .hit
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && self
                .captured
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
        {
            self.freeze_and_capture(vm, hello, PROVENANCE_SAMPLED);
        }
    }

    fn capture_after_teardown(&mut self, vm: &RunningVm, hello: Option<&Hello>) {
        self.freeze_and_capture(vm, hello, PROVENANCE_AFTER_TEARDOWN);
    }

    /// Freeze now and capture (with the vmcore when asked for).
    fn freeze_and_capture(&mut self, vm: &RunningVm, hello: Option<&Hello>, provenance: &str) {
        let Ok(f) = vm.freeze(Duration::from_secs(10)) else {
            return;
        };
        if let Ok(k) = frozen_kernel(&f, &self.image, hello) {
            let mut d = capture(&k, f.regs(), provenance, None);
            if let Some(p) = &self.vmcore {
                if let Some(dir) = p.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if crate::host::vmcore_dump::write_frozen_vmcore(&f, &k, p).is_ok() {
                    d.vmcore = Some(p.clone());
                }
            }
            *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }

    /// The captured dump, if the scheduler failed.
    pub fn take(&mut self) -> Option<FailureDump> {
        self.sampled
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(w) = self.watch.take() {
            let _ = w.stop();
        }
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
