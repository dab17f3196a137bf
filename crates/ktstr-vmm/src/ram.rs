//! Guest RAM shared with the host: files the VMM maps as guest memory and
//! we map too, with the guest-physical layout of the machine type, so
//! introspection reads and writes guest memory directly.

use ktstr_introspect::mem::{MemError, PhysMem, locate};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where the x86 legacy VGA/ROM hole starts and ends (not RAM).
pub const LEGACY_HOLE: (u64, u64) = (0xa_0000, 0x10_0000);

/// One mapped backing file.
struct Backing {
    map: memmap2::MmapRaw,
    path: PathBuf,
}

/// Guest RAM made of backing files concatenated in order (one per NUMA
/// node), laid into guest-physical space by `layout`.
pub struct GuestRam {
    files: Vec<Backing>,
    /// (guest-physical start, length, RAM offset) sorted by start.
    layout: Vec<(u64, u64, u64)>,
    ranges: Vec<(u64, u64)>,
    unlink_on_drop: bool,
}

impl std::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRam")
            .field("ranges", &self.ranges)
            .finish()
    }
}

/// The i440fx `pc` machine's split of RAM around the PCI hole: RAM below
/// 4 GiB ends at 3.5 GiB, or 3 GiB when there is at least 3.5 GiB.
pub fn pc_layout(ram_size: u64) -> Vec<(u64, u64, u64)> {
    let lowmem = if ram_size >= 0xe000_0000 {
        0xc000_0000
    } else {
        0xe000_0000
    };
    let below = ram_size.min(lowmem);
    let mut v = vec![(0, LEGACY_HOLE.0, 0)];
    if below > LEGACY_HOLE.1 {
        v.push((LEGACY_HOLE.1, below - LEGACY_HOLE.1, LEGACY_HOLE.1));
    }
    if ram_size > below {
        v.push((1 << 32, ram_size - below, below));
    }
    v
}

impl GuestRam {
    /// Create `sizes.len()` zero-filled backing files under `dir` and map
    /// them. The files are removed when this is dropped.
    pub fn create(
        dir: &Path,
        stem: &str,
        sizes: &[u64],
        layout: Vec<(u64, u64, u64)>,
    ) -> std::io::Result<Self> {
        let mut files = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let path = dir.join(format!("{stem}-{i}.ram"));
            let f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.set_len(size)?;
            let map = memmap2::MmapOptions::new().len(size as usize).map_raw(&f)?;
            files.push(Backing { map, path });
        }
        let ranges = layout.iter().map(|&(s, l, _)| (s, l)).collect();
        Ok(Self {
            files,
            layout,
            ranges,
            unlink_on_drop: true,
        })
    }

    /// Paths of the backing files, in RAM order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|b| b.path.clone()).collect()
    }

    /// Remove the files now (the mappings and the VMM's stay valid).
    pub fn unlink(&mut self) {
        for b in &self.files {
            let _ = std::fs::remove_file(&b.path);
        }
        self.unlink_on_drop = false;
    }

    /// Host pointer and remaining length for a RAM offset.
    fn host(&self, mut ram_off: u64) -> Option<(*mut u8, u64)> {
        for b in &self.files {
            let len = b.map.len() as u64;
            if ram_off < len {
                // SAFETY: ram_off < len, so the pointer stays within the mapping.
                return Some((
                    unsafe { b.map.as_mut_ptr().add(ram_off as usize) },
                    len - ram_off,
                ));
            }
            ram_off -= len;
        }
        None
    }

    fn with_span(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), MemError> {
        let (i, off) = locate(&self.ranges, addr, len).ok_or(MemError::Unmapped { addr, len })?;
        let mut ram = self.layout[i].2 + off;
        let mut done = 0usize;
        while done < len {
            let (p, avail) = self.host(ram).ok_or(MemError::Unmapped { addr, len })?;
            let n = (avail as usize).min(len - done);
            f(p, done, n);
            done += n;
            ram += n as u64;
        }
        Ok(())
    }
}

impl PhysMem for GuestRam {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len();
        let dst = buf.as_mut_ptr();
        self.with_span(addr, len, |p, at, n| {
            // SAFETY: `p..p+n` lies inside a live shared mapping (checked by
            // with_span) and `dst+at..+n` inside `buf`. The guest may write
            // concurrently; we copy bytes, never form references into the map.
            unsafe { std::ptr::copy_nonoverlapping(p, dst.add(at), n) }
        })
    }

    fn write_phys(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let src = data.as_ptr();
        self.with_span(addr, data.len(), |p, at, n| {
            // SAFETY: as in read_phys, with the copy direction reversed.
            unsafe { std::ptr::copy_nonoverlapping(src.add(at), p, n) }
        })
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        if self.unlink_on_drop {
            self.unlink();
        }
    }
}

// SAFETY: the raw mappings are plain shared memory; all access goes through
// byte copies, so sharing the handle across threads is sound.
unsafe impl Send for GuestRam {}
// SAFETY: see above.
unsafe impl Sync for GuestRam {}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_introspect::mem::PhysMemExt;

    #[test]
    fn pc_layout_splits_around_holes() {
        assert_eq!(
            pc_layout(256 << 20),
            vec![
                (0, 0xa0000, 0),
                (0x100000, (256 << 20) - 0x100000, 0x100000)
            ]
        );
        let big = pc_layout(4 << 30);
        assert_eq!(big[2], (1 << 32, (4 << 30) - 0xc000_0000, 0xc000_0000));
    }

    #[test]
    fn two_files_read_across_the_seam() {
        let t = tempfile::tempdir().unwrap();
        let layout = vec![(0, 0xa0000, 0), (0x100000, 0x300000 - 0x100000, 0x100000)];
        let ram = GuestRam::create(t.path(), "t", &[0x200000, 0x100000], layout).unwrap();
        ram.write_u64(0x1ffffc, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(ram.read_u64(0x1ffffc).unwrap(), 0x1122_3344_5566_7788);
        assert!(ram.read_u8(0xa0000).is_err(), "legacy hole is not RAM");
        assert!(ram.read_u8(0x300000).is_err());
        let paths = ram.paths();
        drop(ram);
        assert!(paths.iter().all(|p| !p.exists()));
    }
}
