//! Catching a scheduler failure at its instant: once the scheduler
//! attaches, find where the kernel records its exit (7.x:
//! `(*scx_root)->exit_kind`; 6.12: the `scx_exit_kind` global) and put a
//! write watchpoint on it. When the guest writes an error kind, the VM is
//! frozen before teardown and a [`FailureDump`] is captured. If the
//! watchpoint cannot be armed, a thread samples the exit kind from guest
//! RAM without stopping the guest and the session freezes on its signal;
//! failing that, the dump is taken when guest-init reports the
//! scheduler's death (each path says so in the dump's provenance).

use super::error::HostError;
use crate::host::cold::frozen_kernel;
use crate::host::dump::{
    FailureDump, PROVENANCE_AFTER_TEARDOWN, PROVENANCE_SAMPLED, PROVENANCE_SAMPLED_BACKSTOP,
    PROVENANCE_WATCHPOINT, PROVENANCE_WATCHPOINT_DONE, capture,
};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::{KaslrSource, Kernel};
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::scx_exit::{ExitKind, exit_kind_kva};
use ktstr_introspect::translate::TranslationParams;
use ktstr_vmm::watch::{Watch, WatchAction};
use ktstr_vmm::{Frozen, RunningVm};
use ktstr_wire::{Hello, Phase};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the sampler reads the exit kind.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(10);

/// How the capture learns of the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureMode {
    /// A write watchpoint on the exit kind (sampling if it cannot be armed).
    #[default]
    Watchpoint,
    /// Sampling only (`KTSTR_CAPTURE=sample`): no watchpoint is armed.
    Sampled,
}

impl CaptureMode {
    /// From `KTSTR_CAPTURE` (`watch`, the default, or `sample`).
    pub fn from_env() -> Self {
        match std::env::var("KTSTR_CAPTURE").as_deref() {
            Ok("sample") => CaptureMode::Sampled,
            _ => CaptureMode::Watchpoint,
        }
    }
}

/// Capture the dump from a frozen guest, with a vmcore when asked for.
fn capture_frozen<M: PhysMem>(
    f: &Frozen<'_>,
    k: &Kernel<M>,
    provenance: &str,
    writer_cpu: Option<u32>,
    vmcore: Option<&PathBuf>,
) -> FailureDump {
    let mut d = capture(k, f.regs(), provenance, writer_cpu);
    if let Some(p) = vmcore {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match crate::host::vmcore_dump::write_frozen_vmcore(f, k, p) {
            Ok(_) => d.vmcore = Some(p.clone()),
            Err(e) => tracing::warn!(error = %e, "vmcore at failure"),
        }
    }
    d
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
    mode: CaptureMode,
    sampled: Arc<Sampler>,
}

/// Shared state of the lock-free exit-kind sampler.
#[derive(Default)]
struct Sampler {
    stop: AtomicBool,
    hit: AtomicBool,
    running: AtomicBool,
}

impl FailureCapture {
    pub fn new(image: Arc<KernelImage>, vmcore: Option<PathBuf>, mode: CaptureMode) -> Self {
        Self {
            image,
            captured: Arc::default(),
            watch: None,
            vmcore,
            arm_error: None,
            mode,
            sampled: Arc::default(),
        }
    }

    /// Is the sampler the only capture source (no watchpoint armed)?
    pub fn sampling(&self) -> bool {
        self.sampled.running.load(Ordering::SeqCst) && self.watch.is_none()
    }

    fn has_capture(&self) -> bool {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Feed lifecycle events from the session.
    pub fn on_lifecycle(&mut self, vm: &RunningVm, hello: Option<&Hello>, phase: &Phase) {
        match phase {
            Phase::SchedulerAttached => {
                let (params, addr) = match self.locate_exit_kind(vm, hello) {
                    Ok(at) => at,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot locate the exit kind; a dump after teardown remains");
                        self.arm_error = Some(e.to_string());
                        return;
                    }
                };
                let armed = match self.mode {
                    CaptureMode::Watchpoint => self.arm(vm, params, addr),
                    CaptureMode::Sampled => Err(HostError::Other(
                        "KTSTR_CAPTURE=sample: no watchpoint requested".into(),
                    )),
                };
                if let Err(e) = armed {
                    tracing::info!(error = %e, "not watching the scheduler's exit kind; sampling it instead");
                    self.arm_error = Some(e.to_string());
                }
                // The sampler runs beside an armed watchpoint too: under
                // TCG a watchpoint hit is not always reported (both the
                // claim and the DONE write were missed once in CI), and
                // without a backstop the dump came after teardown, when
                // the stalled task had exited.
                if let Err(e) = self.start_sampling(vm, params, addr) {
                    tracing::warn!(error = %e, "cannot sample the exit kind; a dump after teardown remains");
                }
            }
            Phase::SchedulerDied if !self.has_capture() => {
                // Give a watchpoint hit or a sampler hit in flight time to
                // land first.
                std::thread::sleep(Duration::from_millis(200));
                self.poll(vm, hello);
                if !self.has_capture() {
                    self.freeze_and_capture(vm, hello, PROVENANCE_AFTER_TEARDOWN);
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
    ) -> Result<(TranslationParams, u64), HostError> {
        let f = vm.freeze(Duration::from_secs(10))?;
        let k = frozen_kernel(&f, &self.image, hello)?;
        Ok((*k.params(), exit_kind_kva(&k)?.0))
    }

    fn arm(
        &mut self,
        vm: &RunningVm,
        params: TranslationParams,
        addr: u64,
    ) -> Result<(), HostError> {
        let (image, captured, vmcore) = (
            self.image.clone(),
            self.captured.clone(),
            self.vmcore.clone(),
        );
        let watch = vm.watch_write(
            addr,
            4,
            Box::new(move |f, cpu| {
                let k = Kernel::new(f.mem_arc(), image.clone(), params, KaslrSource::Given);
                let kind = ExitKind(k.read_u32(addr).unwrap_or(0));
                // The error claim writes the kind; the disable work then
                // swaps it for SCX_EXIT_DONE before tearing down. Under
                // TCG the claim's write is not always reported (seen for
                // watchdog stalls from the tick), so the DONE write, still
                // before teardown, is a capture point too.
                let done_first = kind == ExitKind::DONE
                    && captured.lock().unwrap_or_else(|e| e.into_inner()).is_none();
                if kind.is_error() || done_first {
                    let prov = if done_first {
                        PROVENANCE_WATCHPOINT_DONE
                    } else {
                        PROVENANCE_WATCHPOINT
                    };
                    let d = capture_frozen(f, &k, prov, cpu, vmcore.as_ref());
                    *captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
                    return WatchAction::Remove;
                }
                // SCX_EXIT_UNREG* (64..1024): a clean unregistration, the
                // scheduler's last exit. Anything lower (e.g. a reset to
                // SCX_EXIT_NONE) is not final: keep watching.
                if kind.is_unreg() {
                    WatchAction::Remove
                } else {
                    WatchAction::Continue
                }
            }),
        )?;
        self.watch = Some(watch);
        Ok(())
    }

    /// Fallback: read the exit kind every [`SAMPLE_PERIOD`] from guest RAM
    /// without stopping the guest (lock-free); the session's tick
    /// ([`FailureCapture::poll`]) freezes once it shows an error, or the
    /// disable work's DONE (which follows an error within microseconds).
    fn start_sampling(
        &mut self,
        vm: &RunningVm,
        params: TranslationParams,
        addr: u64,
    ) -> Result<(), HostError> {
        let mem = vm.memory();
        let image = self.image.clone();
        let flag = self.sampled.clone();
        std::thread::Builder::new()
            .name("ktstr-exit-sampler".into())
            .spawn(move || {
                let k = Kernel::new(mem, image, params, KaslrSource::Given);
                while !flag.stop.load(Ordering::SeqCst) {
                    let kind = k.read_u32(addr).map(ExitKind);
                    if kind.is_ok_and(|k| k.is_error() || k == ExitKind::DONE) {
                        flag.hit.store(true, Ordering::SeqCst);
                        return;
                    }
                    std::thread::sleep(SAMPLE_PERIOD);
                }
            })
            .map_err(|source| HostError::Io {
                what: "spawning the exit-kind sampler".into(),
                source,
            })?;
        self.sampled.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Poll the sampler (call from the session loop's thread): if it saw an
    /// error, freeze and capture now.
    pub fn poll(&mut self, vm: &RunningVm, hello: Option<&Hello>) {
        if self.sampled.hit.swap(false, Ordering::SeqCst) && !self.has_capture() {
            // With a watchpoint armed, a hit in flight holds the pause:
            // the freeze below waits for it and then finds its capture.
            let prov = if self.watch.is_some() {
                PROVENANCE_SAMPLED_BACKSTOP
            } else {
                PROVENANCE_SAMPLED
            };
            self.freeze_and_capture(vm, hello, prov);
        }
    }

    /// Freeze now and capture (with the vmcore when asked for).
    fn freeze_and_capture(&mut self, vm: &RunningVm, hello: Option<&Hello>, provenance: &str) {
        let Ok(f) = vm.freeze(Duration::from_secs(10)) else {
            return;
        };
        if self.has_capture() {
            return;
        }
        if let Ok(k) = frozen_kernel(&f, &self.image, hello) {
            let d = capture_frozen(&f, &k, provenance, None, self.vmcore.as_ref());
            *self.captured.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }

    /// The captured dump, if the scheduler failed.
    pub fn take(&mut self) -> Option<FailureDump> {
        self.sampled.stop.store(true, Ordering::SeqCst);
        if let Some(w) = self.watch.take() {
            let _ = w.stop();
        }
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
