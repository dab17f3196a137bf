//! ktstr's own vmcores of a frozen guest: every RAM region, per-vCPU
//! registers, and the guest's VMCOREINFO (read from its memory), so
//! `crash`, `drgn` and `ktstr analyze` can open them.

use ktstr_introspect::kernel::Kernel;
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::vmcore_write::{VmcoreNotes, write_vmcore};
use ktstr_vmm::Frozen;
use std::path::Path;

/// Write a vmcore of the frozen guest; returns its size in bytes.
pub fn write_frozen_vmcore<M: PhysMem>(
    f: &Frozen<'_>,
    k: &Kernel<M>,
    path: &Path,
) -> Result<u64, ktstr_introspect::vmcore::VmcoreError> {
    let p = k.params();
    let vmcoreinfo = k.vmcoreinfo_text().or_else(|| {
        Some(format!(
            "KERNELOFFSET={:x}\nNUMBER(phys_base)={}\nNUMBER(pgtable_l5_enabled)={}\nPAGESIZE=4096\n",
            p.kaslr_offset, p.phys_base as i64, p.la57 as u8
        ))
    });
    let notes = VmcoreNotes {
        vmcoreinfo,
        cpus: f.regs().to_vec(),
    };
    write_vmcore(path, f.mem(), &notes, p.page_offset_base)
}
