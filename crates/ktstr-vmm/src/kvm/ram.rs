//! Guest RAM of the kvm engine: anonymous memory owned by vm-memory (the
//! loaders write into it through `GuestMemory`), registered with KVM slot
//! by slot, and readable by ktstr-introspect through [`PhysMem`].

use ktstr_introspect::mem::{MemError, PhysMem};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Start of the 32-bit MMIO hole (LAPIC, IOAPIC, virtio-mmio live above).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Where RAM resumes above the hole.
pub const HIGH_RAM_START: u64 = 1 << 32;

/// The guest-physical RAM ranges for `size` bytes: below the 3 GiB hole,
/// the rest from 4 GiB.
pub fn layout(size: u64) -> Vec<(u64, u64)> {
    let low = size.min(MMIO_HOLE_START);
    let mut v = vec![(0, low)];
    if size > low {
        v.push((HIGH_RAM_START, size - low));
    }
    v
}

/// Guest memory shared by the vCPUs, the loaders and introspection.
#[derive(Debug)]
pub struct KvmRam {
    pub(crate) mem: GuestMemoryMmap,
}

impl KvmRam {
    /// Allocate `size` bytes of zeroed guest RAM laid out by [`layout`].
    pub fn new(size: u64) -> Result<Self, String> {
        let ranges: Vec<(GuestAddress, usize)> = layout(size)
            .into_iter()
            .map(|(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| format!("allocating {} MiB of guest RAM: {e}", size >> 20))?;
        Ok(Self { mem })
    }

    /// (guest-physical start, length, host address) of each region, for
    /// KVM_SET_USER_MEMORY_REGION.
    pub fn host_regions(&self) -> Vec<(u64, u64, u64)> {
        self.mem
            .iter()
            .map(|r| {
                let host = r
                    .get_host_address(vm_memory::MemoryRegionAddress(0))
                    .map_or(0, |p| p as u64);
                (r.start_addr().0, r.len(), host)
            })
            .collect()
    }

    /// End of the RAM below the MMIO hole.
    pub fn low_end(&self) -> u64 {
        self.mem
            .iter()
            .map(|r| r.start_addr().0 + r.len())
            .filter(|&e| e <= MMIO_HOLE_START)
            .max()
            .unwrap_or(0)
    }
}

impl PhysMem for KvmRam {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len();
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| MemError::Unmapped { addr, len })
    }

    fn write_phys(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|_| MemError::Unmapped {
                addr,
                len: data.len(),
            })
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_introspect::mem::PhysMemExt;

    #[test]
    fn layout_splits_at_the_hole() {
        assert_eq!(layout(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(layout(4 << 30), vec![(0, 3 << 30), (1 << 32, 1 << 30)]);
    }

    #[test]
    fn reads_and_writes_are_bounded() {
        let r = KvmRam::new(4 << 20).unwrap();
        r.write_u64(0x1000, 0xdead_beef).unwrap();
        assert_eq!(r.read_u64(0x1000).unwrap(), 0xdead_beef);
        assert!(r.read_u64((4 << 20) - 4).is_err(), "read past the end");
        assert_eq!(r.regions(), vec![(0, 4 << 20)]);
        assert_eq!(r.low_end(), 4 << 20);
        assert_eq!(r.host_regions().len(), 1);
        assert_ne!(r.host_regions()[0].2, 0);
    }
}
