//! Write watches on the kvm engine: the page holding the watched address
//! is mapped read-only in a KVM memory slot (see [`super::slots`]); a
//! store into the range parks the writing vCPU right after the
//! instruction, the rest are stopped, and the watcher runs the callback.
//! (Debug-register watchpoints through KVM_SET_GUEST_DEBUG never exit on
//! nested KVM; the memslot way works on any KVM and reports the bytes.)

use super::KvmVm;
use super::rendezvous::Rendezvous;
use crate::VmError;
use crate::frozen::Frozen;
use crate::watch::{Watch, WatchAction, WatchCallback};
use std::time::Duration;

/// Arm a watch of `len` bytes at guest virtual `gva`.
pub(crate) fn start(
    k: &KvmVm,
    gva: u64,
    len: u64,
    mut cb: WatchCallback,
) -> Result<Watch, VmError> {
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
    Watch::spawn(move |shared| {
        let remove = |rv: &Rendezvous| -> Result<(), VmError> {
            if rv.freeze(Duration::from_secs(10)).is_ok() {
                let r = slots.disarm();
                rv.clear_hits();
                rv.thaw();
                return r.map_err(VmError::Engine);
            }
            Ok(())
        };
        loop {
            if shared.stop_requested() {
                return remove(&rv);
            }
            let Some((hit, regs)) = rv.take_hit(Duration::from_millis(50)) else {
                if rv.stopping() {
                    return Ok(());
                }
                continue;
            };
            shared.hit();
            let f = Frozen::borrowed(regs, mem.clone());
            let action = cb(&f, Some(hit.cpu));
            drop(f);
            let removed = (action == WatchAction::Remove).then(|| {
                rv.clear_hits();
                slots.disarm()
            });
            rv.thaw();
            if let Some(r) = removed {
                return r.map_err(VmError::Engine);
            }
        }
    })
}
