//! The host half of cold-path kernel ops: freeze the VM, resolve and
//! validate each op with ktstr-introspect on the frozen memory, perform
//! them in order, thaw, and record every reply under its tag in the
//! snapshot bridge for `post_vm`.

use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::{KaslrSource, Kernel, KernelError, params_from_slide};
use ktstr_introspect::kernel_ops::execute;
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::offsets::Offsets;
use ktstr_vmm::{Frozen, RunningVm};
use ktstr_wire::{Hello, KernelOp, KernelOpReplyPayload};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Replies recorded during a run, drained by `post_vm`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotBridge {
    replies: Arc<Mutex<Vec<(String, KernelOpReplyPayload)>>>,
}

impl SnapshotBridge {
    pub fn record(&self, tag: String, reply: KernelOpReplyPayload) {
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tag, reply));
    }

    /// Take every recorded (tag, reply), in the order they happened.
    pub fn drain_kernel_ops(&self) -> Vec<(String, KernelOpReplyPayload)> {
        std::mem::take(&mut *self.replies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Build a kernel model on frozen memory: the slide from Hello's
/// `_text` when known, else discovery from the CPU state (IDT).
pub fn frozen_kernel(
    f: &Frozen<'_>,
    image: &Arc<KernelImage>,
    hello: Option<&Hello>,
) -> Result<Kernel<Arc<dyn PhysMem + Send + Sync>>, KernelError> {
    let mem = f.mem_arc();
    let cpu = f
        .regs()
        .iter()
        .find(|r| r.cr3 != 0)
        .ok_or_else(|| KernelError::Invalid("no vCPU state with a CR3".into()))?;
    if let (Some(h), Some(text)) = (hello, image.symbols().addr("_text"))
        && h.kallsyms_text != 0
    {
        let slide = h.kallsyms_text.wrapping_sub(text);
        let p = params_from_slide(&*mem, image, cpu, slide)?;
        return Ok(Kernel::new(mem, image.clone(), p, KaslrSource::Given));
    }
    Kernel::discover(mem, image.clone(), f.regs(), None)
}

/// Executes kernel-op batches for one VM.
pub struct ColdOps {
    image: Arc<KernelImage>,
    offsets: Offsets,
    pub bridge: SnapshotBridge,
    /// Freezes performed and their total duration.
    pub freezes: u64,
    pub frozen_time: Duration,
}

impl ColdOps {
    pub fn new(image: Arc<KernelImage>) -> Self {
        let offsets = Offsets::from_btf(image.btf());
        Self {
            image,
            offsets,
            bridge: SnapshotBridge::default(),
            freezes: 0,
            frozen_time: Duration::ZERO,
        }
    }

    /// Run one batch: one freeze for the whole batch, ops in order.
    pub fn handle(
        &mut self,
        vm: &RunningVm,
        hello: Option<&Hello>,
        ops: &[KernelOp],
    ) -> Vec<KernelOpReplyPayload> {
        let start = std::time::Instant::now();
        let f = match vm.freeze(Duration::from_secs(10)) {
            Ok(f) => f,
            Err(e) => {
                return ops
                    .iter()
                    .map(|_| KernelOpReplyPayload::refused(format!("freeze failed: {e}")))
                    .collect();
            }
        };
        let replies = match frozen_kernel(&f, &self.image, hello) {
            Ok(k) => ops
                .iter()
                .map(|op| {
                    let (tag, reply) = execute(&k, &self.offsets, op);
                    if let Some(t) = tag {
                        self.bridge.record(t, reply.clone());
                    }
                    reply
                })
                .collect(),
            Err(e) => ops
                .iter()
                .map(|_| {
                    KernelOpReplyPayload::refused(format!(
                        "no kernel model on the frozen guest: {e}"
                    ))
                })
                .collect(),
        };
        drop(f);
        self.freezes += 1;
        self.frozen_time += start.elapsed();
        replies
    }
}

/// A session whose only hooks are cold-path kernel ops.
impl crate::host::session::SessionHooks<RunningVm> for ColdOps {
    fn kernel_ops(
        &mut self,
        vm: &RunningVm,
        hello: Option<&Hello>,
        ops: &[KernelOp],
    ) -> Vec<KernelOpReplyPayload> {
        self.handle(vm, hello, ops)
    }
}
