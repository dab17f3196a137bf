//! x86-64 kernel virtual → guest physical address translation.
//!
//! Three regions, cheapest first:
//! - the kernel image (`__START_KERNEL_map` + 1 GiB, KASLR-slid):
//!   `pa = kva - __START_KERNEL_map + phys_base`;
//! - the direct map: `pa = kva - page_offset_base`;
//! - anything else (vmalloc, per-CPU chunks, fixmaps): a page-table walk
//!   from CR3, 4- or 5-level, with 1 GiB and 2 MiB pages, present bits
//!   checked. Walk results are cached per 4 KiB page for the life of the
//!   translator (one snapshot).
#![deny(clippy::arithmetic_side_effects)]

use crate::mem::{MemError, PhysMem, PhysMemExt};
use std::collections::HashMap;
use std::sync::Mutex;

/// Where the kernel image is mapped before the KASLR slide.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Size of the kernel image mapping.
pub const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// Direct-map size bound on 4-level paging (64 TiB) and 5-level (32 PiB).
pub const DIRECT_MAP_SIZE_L4: u64 = 1 << 46;
pub const DIRECT_MAP_SIZE_L5: u64 = 1 << 55;
/// The non-randomized direct-map base, for reference and tests.
pub const DEFAULT_PAGE_OFFSET_L4: u64 = 0xffff_8880_0000_0000;

const PTE_PRESENT: u64 = 1;
const PTE_PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A translation failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("kva {kva:#x}: page-table entry at level {level} (pa {entry_pa:#x}) is not present")]
    NotPresent { kva: u64, level: u8, entry_pa: u64 },
    #[error("kva {kva:#x} is not canonical")]
    NonCanonical { kva: u64 },
    #[error("kva {kva:#x}: no CR3 known, cannot walk page tables")]
    NoCr3 { kva: u64 },
    #[error("kva {kva:#x}: page-table read failed: {source}")]
    Mem {
        kva: u64,
        #[source]
        source: MemError,
    },
}

/// The values a translation needs, discovered per kernel and boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TranslationParams {
    /// Virtual KASLR slide of the kernel image (runtime - link-time).
    pub kaslr_offset: u64,
    /// `phys_base` (may be "negative" as a u64 when physical KASLR moved
    /// the kernel below its link-time physical address).
    pub phys_base: u64,
    /// `page_offset_base`: start of the direct map.
    pub page_offset_base: u64,
    /// Physical address of the top-level page table (CR3 without flags),
    /// or 0 when unknown.
    pub cr3: u64,
    /// 5-level paging (LA57) in use.
    pub la57: bool,
    /// How far the direct map extends from `page_offset_base` (0: the
    /// architectural maximum). With memory randomisation the vmalloc area
    /// can start 1 TiB after the direct map, so this is bounded by RAM and
    /// `vmalloc_base` when known.
    #[serde(default)]
    pub direct_map_size: u64,
}

/// Translates kernel virtual addresses for one snapshot.
#[derive(Debug)]
pub struct Translator {
    p: TranslationParams,
    cache: Mutex<HashMap<u64, u64>>,
}

/// Is `va` canonical for the paging mode?
pub fn is_canonical(va: u64, la57: bool) -> bool {
    // The top implemented bit: 56 with LA57, else 47.
    let top: u32 = if la57 { 56 } else { 47 };
    let shifted = (va as i64) >> top;
    shifted == 0 || shifted == -1
}

impl Translator {
    pub fn new(p: TranslationParams) -> Self {
        Self {
            p,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn params(&self) -> &TranslationParams {
        &self.p
    }

    /// Runtime address of a link-time kernel image address.
    pub fn slide(&self, link_kva: u64) -> u64 {
        link_kva.wrapping_add(self.p.kaslr_offset)
    }

    /// Is this runtime address inside the kernel image mapping?
    pub fn in_kernel_image(&self, kva: u64) -> bool {
        kva.wrapping_sub(START_KERNEL_MAP) < KERNEL_IMAGE_SIZE
    }

    fn in_direct_map(&self, kva: u64) -> bool {
        let size = if self.p.direct_map_size != 0 {
            self.p.direct_map_size
        } else if self.p.la57 {
            DIRECT_MAP_SIZE_L5
        } else {
            DIRECT_MAP_SIZE_L4
        };
        self.p.page_offset_base != 0 && kva.wrapping_sub(self.p.page_offset_base) < size
    }

    /// Translate a runtime kernel virtual address.
    pub fn kva_to_pa(&self, mem: &dyn PhysMem, kva: u64) -> Result<u64, TranslateError> {
        if self.in_kernel_image(kva) {
            return Ok(kva
                .wrapping_sub(START_KERNEL_MAP)
                .wrapping_add(self.p.phys_base));
        }
        if self.in_direct_map(kva) {
            return Ok(kva.wrapping_sub(self.p.page_offset_base));
        }
        self.walk(mem, kva)
    }

    /// Translate through the page tables only (no shortcuts); the oracle
    /// the shortcuts are tested against.
    pub fn walk(&self, mem: &dyn PhysMem, kva: u64) -> Result<u64, TranslateError> {
        if !is_canonical(kva, self.p.la57) {
            return Err(TranslateError::NonCanonical { kva });
        }
        let page = kva & !0xfff;
        if let Some(&pa) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&page)
        {
            return Ok(pa | (kva & 0xfff));
        }
        let pa = walk_page_tables(mem, self.p.cr3, self.p.la57, kva)?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(page, pa & !0xfff);
        Ok(pa)
    }
}

/// Walk x86-64 page tables rooted at `cr3` for `va`.
pub fn walk_page_tables(
    mem: &dyn PhysMem,
    cr3: u64,
    la57: bool,
    va: u64,
) -> Result<u64, TranslateError> {
    if cr3 == 0 {
        return Err(TranslateError::NoCr3 { kva: va });
    }
    let mut table = cr3 & ADDR_MASK;
    let levels: &[u8] = if la57 {
        &[5, 4, 3, 2, 1]
    } else {
        &[4, 3, 2, 1]
    };
    for &level in levels {
        // level is 1..=5: shift is 12..=48.
        let shift = 9u32
            .saturating_mul(u32::from(level).saturating_sub(1))
            .saturating_add(12);
        let idx = (va >> shift) & 0x1ff;
        // table is masked to the address bits, idx < 512.
        let entry_pa = table.wrapping_add(idx.wrapping_mul(8));
        let e = mem
            .read_u64(entry_pa)
            .map_err(|source| TranslateError::Mem { kva: va, source })?;
        if e & PTE_PRESENT == 0 {
            return Err(TranslateError::NotPresent {
                kva: va,
                level,
                entry_pa,
            });
        }
        if (level == 3 || level == 2) && e & PTE_PS != 0 {
            let page_mask = (1u64 << shift).wrapping_sub(1);
            return Ok((e & ADDR_MASK & !page_mask) | (va & page_mask));
        }
        table = e & ADDR_MASK;
    }
    Ok(table | (va & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SliceMem;

    #[test]
    fn canonical() {
        assert!(is_canonical(0xffff_8880_0000_0000, false));
        assert!(!is_canonical(0x0000_8000_0000_0000, false));
        assert!(is_canonical(0x00ff_ffff_ffff_ffff, true));
        assert!(is_canonical(0xff00_0000_0000_0000, true));
        assert!(!is_canonical(0xff00_0000_0000_0000, false));
    }

    #[test]
    fn shortcuts_and_walk() {
        let mut m = SliceMem::new();
        m.add_range(0, 0x40_0000);
        // 4-level: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
        let va: u64 = 0xffff_c900_0012_3456;
        let i4 = (va >> 39) & 0x1ff;
        let i3 = (va >> 30) & 0x1ff;
        let i2 = (va >> 21) & 0x1ff;
        let i1 = (va >> 12) & 0x1ff;
        m.write_u64(0x1000 + i4 * 8, 0x2000 | 3).unwrap();
        m.write_u64(0x2000 + i3 * 8, 0x3000 | 3).unwrap();
        m.write_u64(0x3000 + i2 * 8, 0x4000 | 3).unwrap();
        m.write_u64(0x4000 + i1 * 8, 0x20_0000 | 3).unwrap();
        let t = Translator::new(TranslationParams {
            cr3: 0x1000,
            page_offset_base: DEFAULT_PAGE_OFFSET_L4,
            phys_base: 0x100_0000,
            kaslr_offset: 0x200_0000,
            la57: false,
            direct_map_size: 0,
        });
        assert_eq!(t.kva_to_pa(&m, va).unwrap(), 0x20_0456);
        // Cached: clearing the PTE does not change the answer in this snapshot.
        m.write_u64(0x4000 + i1 * 8, 0).unwrap();
        assert_eq!(t.kva_to_pa(&m, va).unwrap(), 0x20_0456);
        let fresh = Translator::new(*t.params());
        assert!(matches!(
            fresh.kva_to_pa(&m, va),
            Err(TranslateError::NotPresent { level: 1, .. })
        ));
        // 2 MiB page.
        m.write_u64(0x3000 + i2 * 8, 0x20_0000 | 3 | PTE_PS)
            .unwrap();
        assert_eq!(fresh.walk(&m, va).unwrap(), 0x20_0000 | (va & 0x1f_ffff));
        // 1 GiB page.
        m.write_u64(0x2000 + i3 * 8, 0x4000_0000 | 3 | PTE_PS)
            .unwrap();
        let f2 = Translator::new(*t.params());
        assert_eq!(f2.walk(&m, va).unwrap(), 0x4000_0000 | (va & 0x3fff_ffff));
        // Shortcuts.
        assert_eq!(
            t.kva_to_pa(&m, START_KERNEL_MAP + 0x300_0000).unwrap(),
            0x400_0000
        );
        assert_eq!(
            t.kva_to_pa(&m, DEFAULT_PAGE_OFFSET_L4 + 0x5000).unwrap(),
            0x5000
        );
        assert!(matches!(
            t.kva_to_pa(&m, 0x8000_0000_0000),
            Err(TranslateError::NonCanonical { .. })
        ));
    }

    #[test]
    fn five_level_walk() {
        let mut m = SliceMem::new();
        m.add_range(0, 0x10_0000);
        let va: u64 = 0xff11_0000_0000_1000;
        let idx = |l: u32| (va >> (12 + 9 * (l - 1))) & 0x1ff;
        m.write_u64(0x1000 + idx(5) * 8, 0x2000 | 1).unwrap();
        m.write_u64(0x2000 + idx(4) * 8, 0x3000 | 1).unwrap();
        m.write_u64(0x3000 + idx(3) * 8, 0x4000 | 1).unwrap();
        m.write_u64(0x4000 + idx(2) * 8, 0x5000 | 1).unwrap();
        m.write_u64(0x5000 + idx(1) * 8, 0x7000 | 1).unwrap();
        assert_eq!(walk_page_tables(&m, 0x1000, true, va + 8).unwrap(), 0x7008);
        // The same tables read as 4-level give a different (absent) path.
        assert!(walk_page_tables(&m, 0x1000, false, va).is_err());
    }
}
