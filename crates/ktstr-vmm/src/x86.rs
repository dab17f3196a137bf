//! x86-64 boot state, once: the control-register and EFER bits of long
//! mode, GDT descriptors, segment registers, and the identity-mapped page
//! tables every guest this crate starts directly in 64-bit mode uses (the
//! Linux boot protocol's entry, the ring-3 test programs, the KVM probe).

use kvm_bindings::{kvm_segment, kvm_sregs};

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1, always set.
pub const RFLAGS_RESERVED: u64 = 1 << 1;
/// RFLAGS.IOPL = 3: `in`/`out` allowed at CPL 3.
pub const RFLAGS_IOPL3: u64 = 3 << 12;

/// Flat 64-bit code segment, DPL 0 (accessed, readable).
pub const GDT_CODE64_DPL0: u64 = 0x00af_9b00_0000_ffff;
/// Flat data segment, DPL 0 (accessed, writable).
pub const GDT_DATA_DPL0: u64 = 0x00cf_9300_0000_ffff;
/// Flat 64-bit code segment, DPL 3.
pub const GDT_CODE64_DPL3: u64 = 0x00af_fb00_0000_ffff;
/// Flat data segment, DPL 3.
pub const GDT_DATA_DPL3: u64 = 0x00cf_f300_0000_ffff;
/// A busy 64-bit TSS descriptor (the boot protocol's TR).
pub const GDT_TSS64: u64 = 0x0080_8b00_0000_ffff;

/// Segment type: code, execute/read, accessed.
pub const SEG_TYPE_CODE: u8 = 0xb;
/// Segment type: data, read/write, accessed.
pub const SEG_TYPE_DATA: u8 = 0x3;
/// System segment type: busy 64-bit TSS.
pub const SEG_TYPE_TSS_BUSY: u8 = 0xb;

/// Page-table entry bits.
pub const PTE_PRESENT: u64 = 1 << 0;
pub const PTE_WRITABLE: u64 = 1 << 1;
pub const PTE_USER: u64 = 1 << 2;
/// Page-directory entry maps a 2 MiB page.
pub const PDE_PS: u64 = 1 << 7;

/// A flat segment register value: `s = true` for code/data, false for
/// system segments (TSS); `long` marks 64-bit code.
pub fn segment(selector: u16, type_: u8, dpl: u8, long: bool, s: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: (!long && s) as u8,
        s: s as u8,
        l: long as u8,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Long mode with paging: CS/DS from the given GDT, CR3 = `pml4`.
pub fn long_mode(
    mut s: kvm_sregs,
    cs: kvm_segment,
    ds: kvm_segment,
    gdt_base: u64,
    gdt_entries: usize,
    pml4: u64,
) -> kvm_sregs {
    s.cs = cs;
    (s.ds, s.es, s.ss, s.fs, s.gs) = (ds, ds, ds, ds, ds);
    s.gdt.base = gdt_base;
    // At most a few entries: fits a u16 limit.
    s.gdt.limit = (gdt_entries * 8 - 1) as u16;
    s.cr3 = pml4;
    s.cr4 |= CR4_PAE;
    s.cr0 |= CR0_PG | CR0_PE | CR0_ET;
    s.efer |= EFER_LME | EFER_LMA;
    s
}

/// The (guest-physical address, value) writes that identity-map the first
/// 1 GiB with 2 MiB pages: PML4 at `pml4`, its PDPT and PD in the two
/// pages after it; user-accessible when `user`.
pub fn identity_map(pml4: u64, user: bool) -> Vec<(u64, u64)> {
    let (pdpt, pd) = (pml4 + 0x1000, pml4 + 0x2000);
    let flags = PTE_PRESENT | PTE_WRITABLE | if user { PTE_USER } else { 0 };
    let mut w = vec![(pml4, pdpt | flags), (pdpt, pd | flags)];
    w.extend((0..512u64).map(|i| (pd + i * 8, (i << 21) | flags | PDE_PS)));
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_maps_2mib_pages_in_order() {
        let w = identity_map(0x1000, true);
        assert_eq!(w[0], (0x1000, 0x2000 | 7));
        assert_eq!(w[1], (0x2000, 0x3000 | 7));
        assert_eq!(w[2], (0x3000, 0x87));
        assert_eq!(w[513], (0x3000 + 511 * 8, (511 << 21) | 0x87));
        let k = identity_map(0x9000, false);
        assert_eq!(k[0].1 & PTE_USER, 0);
    }

    #[test]
    fn long_mode_sets_the_architectural_bits() {
        let s = long_mode(
            kvm_sregs::default(),
            segment(0x08, SEG_TYPE_CODE, 0, true, true),
            segment(0x10, SEG_TYPE_DATA, 0, false, true),
            0x4000,
            3,
            0x1000,
        );
        assert_eq!(s.cr0 & (CR0_PG | CR0_PE), CR0_PG | CR0_PE);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!((s.gdt.base, s.gdt.limit, s.cr3), (0x4000, 23, 0x1000));
        assert_eq!((s.cs.l, s.cs.db, s.ds.db), (1, 0, 1));
    }
}
