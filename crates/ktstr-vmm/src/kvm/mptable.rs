//! The Intel MultiProcessor table (spec 1.4) that tells Linux how many
//! CPUs there are and their APIC ids, plus the ISA bus, the IOAPIC and its
//! interrupt routing. Placed in the last KiB of base memory, where the
//! kernel scans for the `_MP_` floating pointer.

use super::cpuid::place;
use crate::spec::Topology;

/// Guest-physical address of the floating pointer (the table follows).
pub const MPTABLE_START: u64 = 0x9fc00;
/// The IOAPIC's MMIO address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;

fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x)).wrapping_neg()
}

/// The table's bytes for `t`, to be written at [`MPTABLE_START`].
pub fn build(t: &Topology) -> Vec<u8> {
    let n = t.nr_cpus();
    let ioapic_id = (0..n).map(|i| place(t, i).apic_id).max().unwrap_or(0) as u8 + 1;
    let mut entries = Vec::new();
    let mut count = 0u16;
    for i in 0..n {
        let mut e = vec![0u8, place(t, i).apic_id as u8, APIC_VERSION];
        e.push(1 | if i == 0 { 2 } else { 0 }); // enabled (| bootstrap)
        e.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        e.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        e.extend_from_slice(&[0; 8]);
        entries.extend(e);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..16u8 {
        // INT, conforming polarity/trigger, ISA bus irq -> IOAPIC pin irq.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0: ExtINT, LINT1: NMI, to every local APIC.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_at = MPTABLE_START as u32 + 16;
    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_at.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);

    let len = 44 + entries.len();
    let mut h = Vec::with_capacity(len);
    h.extend_from_slice(b"PCMP");
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(&[4, 0]); // spec rev, checksum (filled below)
    h.extend_from_slice(b"KTSTR   ");
    h.extend_from_slice(b"MICROVM     ");
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&count.to_le_bytes());
    h.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(&entries);
    h[7] = checksum(&h);
    fp.extend(h);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = Topology {
            nodes: 1,
            llcs: 2,
            cores: 2,
            threads: 2,
        };
        let b = build(&t);
        assert_eq!(&b[..4], b"_MP_");
        assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let table = &b[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 8 + 1 + 1 + 16 + 2);
        // The processor entries carry the packed APIC ids, BSP first.
        let ids: Vec<u8> = (0..8).map(|i| table[44 + i * 20 + 1]).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(table[44 + 3], 3, "cpu 0 is enabled and the BSP");
        assert!(b.len() < 0x400, "fits in the last KiB of base memory");
    }
}
