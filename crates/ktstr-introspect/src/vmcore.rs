//! ELF vmcores: reading them as a [`PhysMem`] (QEMU `dump-guest-memory`,
//! kdump/makedumpfile ELF, ktstr's own dumps) with their VMCOREINFO and
//! per-CPU register notes, and writing ktstr's own so that `crash` and
//! `drgn` can open them.
//!
//! The file is hostile: only regular files are opened (a FIFO would block),
//! segments and notes are bounded in number, every offset sum is checked,
//! a trimmed dump (`p_filesz < p_memsz`, as makedumpfile writes when it
//! drops trailing zero pages) reads zeros past `p_filesz`, and bytes a
//! header promises beyond the end of the file are an error, not a panic.
#![deny(clippy::arithmetic_side_effects)]

use crate::mem::{MemError, PhysMem, PhysMemExt, locate};
use crate::regs::CpuRegs;
use std::collections::BTreeMap;
use std::path::Path;

/// A vmcore that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VmcoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not an x86-64 ELF core file: {0}")]
    Format(String),
    #[error(transparent)]
    Mem(#[from] MemError),
    #[error("{0} is not a regular file (refusing: a FIFO or device would block or never end)")]
    NotRegular(String),
}

/// Most PT_LOAD segments accepted.
pub const MAX_SEGMENTS: usize = 65_536;
/// Most PT_NOTE segments accepted.
pub const MAX_NOTE_SEGMENTS: usize = 1024;
/// Most notes parsed in all.
pub const MAX_NOTES: usize = 65_536;
/// Most bytes of one PT_NOTE segment read (notes of 8192 CPUs fit in a
/// few MiB; a larger segment is garbage or an amplification attempt).
pub const MAX_NOTE_SEGMENT_BYTES: usize = 4 << 20;

/// Refuse anything but a regular file before opening it.
pub fn check_regular(path: &Path) -> Result<(), VmcoreError> {
    let md = std::fs::metadata(path).map_err(|source| VmcoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if md.is_file() {
        Ok(())
    } else {
        Err(VmcoreError::NotRegular(path.display().to_string()))
    }
}

pub(crate) const NT_PRSTATUS: u32 = 1;
/// Offset of `pr_reg` in x86-64 `struct elf_prstatus`, and its size.
pub(crate) const PRSTATUS_REG_OFF: usize = 112;
pub(crate) const PRSTATUS_SIZE: usize = 336;
pub(crate) const PRSTATUS_PID_OFF: usize = 32;
/// `user_regs_struct` order in `pr_reg`.
pub(crate) const USER_REGS: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];
/// QEMU's `QEMUCPUState` note: version, size, 18 GPRs + rip + rflags at 8,
/// ten 24-byte segments from 152 (cs, ds, es, fs, gs, ss, ldt, tr, gdt,
/// idt), then cr[0..5] at 392 and kernel_gs_base at 432.
pub(crate) const QEMU_RIP: usize = 8 + 16 * 8;
pub(crate) const QEMU_SEGS: usize = QEMU_RIP + 16;
pub(crate) const QEMU_IDT_BASE: usize = QEMU_SEGS + 9 * 24 + 16;
pub(crate) const QEMU_CR: usize = QEMU_SEGS + 10 * 24;
pub(crate) const QEMU_KGS: usize = QEMU_CR + 5 * 8;
pub(crate) const QEMU_NOTE_SIZE: usize = QEMU_KGS + 8;

/// Parsed `VMCOREINFO` text: `KEY=value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmcoreInfo {
    pub entries: BTreeMap<String, String>,
}

impl VmcoreInfo {
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Self { entries }
    }

    /// `KERNELOFFSET=` (hex): the virtual KASLR slide.
    pub fn kernel_offset(&self) -> Option<u64> {
        u64::from_str_radix(self.entries.get("KERNELOFFSET")?, 16).ok()
    }

    /// `SYMBOL(name)=` (hex): a runtime symbol address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        u64::from_str_radix(self.entries.get(&format!("SYMBOL({name})"))?, 16).ok()
    }

    /// `NUMBER(name)=` (decimal, may be negative).
    pub fn number(&self, name: &str) -> Option<i64> {
        self.entries.get(&format!("NUMBER({name})"))?.parse().ok()
    }

    /// `OSRELEASE=`.
    pub fn osrelease(&self) -> Option<&str> {
        self.entries.get("OSRELEASE").map(String::as_str)
    }
}

/// One PT_LOAD segment: guest-physical start, file offset, sizes.
#[derive(Debug, Clone, Copy)]
struct Segment {
    paddr: u64,
    offset: u64,
    /// `p_filesz`: bytes past it (within `memsz`) read as zeros.
    filesz: u64,
    /// The part of `filesz` the file really holds (less when truncated).
    in_file: u64,
    memsz: u64,
}

/// The bytes of a vmcore: a private mapping of the file, memory, or any
/// other source of one contiguous byte slice.
pub type Backing = Box<dyn AsRef<[u8]> + Send + Sync>;

/// An ELF vmcore (memory-mapped from a file, or held in memory).
pub struct Vmcore {
    map: Backing,
    segs: Vec<Segment>,
    ranges: Vec<(u64, u64)>,
    pub vmcoreinfo: Option<VmcoreInfo>,
    pub cpus: Vec<CpuRegs>,
}

impl std::fmt::Debug for Vmcore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmcore")
            .field("ranges", &self.ranges)
            .field("cpus", &self.cpus.len())
            .finish()
    }
}

impl Vmcore {
    /// Open and parse a vmcore file.
    pub fn open(path: &Path) -> Result<Self, VmcoreError> {
        let io = |source| VmcoreError::Io {
            path: path.display().to_string(),
            source,
        };
        check_regular(path)?;
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: private read-only mapping of a regular file; truncation by
        // another process while mapped is the accepted risk of mmap.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(Box::new(map))
    }

    /// Parse a vmcore held in memory (tests, mutation campaigns, dumps
    /// received over a channel).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, VmcoreError> {
        Self::from_backing(Box::new(bytes))
    }

    /// Parse a vmcore from any byte source.
    pub fn from_backing(map: Backing) -> Result<Self, VmcoreError> {
        let data: &[u8] = (*map).as_ref();
        let hdr =
            goblin::elf::Elf::parse_header(data).map_err(|e| VmcoreError::Format(e.to_string()))?;
        if hdr.e_type != goblin::elf::header::ET_CORE
            || hdr.e_machine != goblin::elf::header::EM_X86_64
        {
            return Err(VmcoreError::Format(format!(
                "e_type {} e_machine {}: want ET_CORE on x86-64",
                hdr.e_type, hdr.e_machine
            )));
        }
        let ctx = goblin::container::Ctx::new(
            goblin::container::Container::Big,
            goblin::container::Endian::Little,
        );
        let phdrs = goblin::elf::ProgramHeader::parse(
            data,
            hdr.e_phoff as usize,
            hdr.e_phnum as usize,
            ctx,
        )
        .map_err(|e| VmcoreError::Format(format!("program headers: {e}")))?;
        let mut segs = Vec::new();
        let mut vmcoreinfo = None;
        let mut prstatus: Vec<CpuRegs> = Vec::new();
        let mut qemu: Vec<CpuRegs> = Vec::new();
        let (mut note_segs, mut notes_seen) = (0usize, 0usize);
        let file_len = data.len() as u64;
        for ph in &phdrs {
            match ph.p_type {
                goblin::elf::program_header::PT_LOAD if ph.p_memsz > 0 || ph.p_filesz > 0 => {
                    if segs.len() >= MAX_SEGMENTS {
                        return Err(VmcoreError::Format(format!(
                            "more than {MAX_SEGMENTS} PT_LOAD segments"
                        )));
                    }
                    let memsz = ph.p_memsz.max(ph.p_filesz);
                    if ph.p_paddr.checked_add(memsz).is_none() {
                        return Err(VmcoreError::Format(format!(
                            "PT_LOAD at {:#x}+{memsz:#x} wraps the physical address space",
                            ph.p_paddr
                        )));
                    }
                    // What the file really holds of this segment.
                    let in_file = file_len.saturating_sub(ph.p_offset).min(ph.p_filesz);
                    segs.push(Segment {
                        paddr: ph.p_paddr,
                        offset: ph.p_offset,
                        filesz: ph.p_filesz,
                        in_file,
                        memsz,
                    });
                }
                goblin::elf::program_header::PT_NOTE => {
                    note_segs = note_segs.saturating_add(1);
                    if note_segs > MAX_NOTE_SEGMENTS {
                        continue;
                    }
                    let start = usize::try_from(ph.p_offset).unwrap_or(usize::MAX);
                    let len = usize::try_from(ph.p_filesz)
                        .unwrap_or(usize::MAX)
                        .min(MAX_NOTE_SEGMENT_BYTES);
                    let end = start.saturating_add(len).min(data.len());
                    let Some(notes) = data.get(start..end) else {
                        continue;
                    };
                    for (name, ntype, desc) in iter_notes(notes) {
                        notes_seen = notes_seen.saturating_add(1);
                        if notes_seen > MAX_NOTES {
                            break;
                        }
                        match (name, ntype) {
                            ("VMCOREINFO", _) => {
                                vmcoreinfo = Some(VmcoreInfo::parse(&String::from_utf8_lossy(desc)))
                            }
                            ("CORE", NT_PRSTATUS) => {
                                if let Some(r) = parse_prstatus(desc, prstatus.len() as u32) {
                                    prstatus.push(r);
                                }
                            }
                            ("QEMU", _) => {
                                if let Some(r) = parse_qemu_cpu(desc, qemu.len() as u32) {
                                    qemu.push(r);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if segs.is_empty() {
            return Err(VmcoreError::Format(
                "no PT_LOAD segment: no memory in this dump".into(),
            ));
        }
        segs.sort_by_key(|s| s.paddr);
        for w in segs.windows(2) {
            // paddr + memsz was checked above.
            if w[0].paddr.saturating_add(w[0].memsz) > w[1].paddr {
                return Err(VmcoreError::Format(format!(
                    "overlapping PT_LOAD segments at {:#x} and {:#x}",
                    w[0].paddr, w[1].paddr
                )));
            }
        }
        // QEMU notes carry the control registers; prstatus the GPRs. Merge.
        let cpus = if qemu.is_empty() {
            prstatus
        } else {
            qemu.into_iter()
                .enumerate()
                .map(|(i, mut q)| {
                    if let Some(p) = prstatus.get(i) {
                        q.fs_base = p.fs_base;
                        q.gs_base = p.gs_base;
                    }
                    q
                })
                .collect()
        };
        let ranges = segs.iter().map(|s| (s.paddr, s.memsz)).collect();
        Ok(Self {
            map,
            segs,
            ranges,
            vmcoreinfo,
            cpus,
        })
    }
}

impl PhysMem for Vmcore {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let (i, off) = locate(&self.ranges, addr, buf.len()).ok_or(MemError::Unmapped {
            addr,
            len: buf.len(),
        })?;
        let s = self.segs[i];
        let len = buf.len() as u64;
        // Bytes between what the file holds and p_filesz were promised but
        // are not there (a truncated file): an error, never zeros.
        let end = off.saturating_add(len);
        if end > s.in_file && off < s.filesz {
            return Err(MemError::Unmapped {
                addr,
                len: buf.len(),
            });
        }
        // Bytes past p_filesz (within p_memsz) were filtered out of the dump
        // as zero pages by the dumper; ELF says they read as zero.
        let from_file = s.in_file.saturating_sub(off).min(len) as usize;
        let start = s.offset.saturating_add(off) as usize;
        let src = (*self.map)
            .as_ref()
            .get(start..start.saturating_add(from_file))
            .ok_or(MemError::Unmapped {
                addr,
                len: buf.len(),
            })?;
        let (head, tail) = buf.split_at_mut(from_file);
        head.copy_from_slice(src);
        tail.fill(0);
        Ok(())
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }
}

/// Note names a vmcore carries; after a malformed note header the
/// iterator resynchronises on the next header naming one of these.
const KNOWN_NOTES: [&str; 3] = ["CORE", "VMCOREINFO", "QEMU"];

/// One well-formed note at the start of `data`: (name, type, desc, size).
fn note_at(data: &[u8]) -> Option<(&str, u32, &[u8], usize)> {
    let rd = |o: usize| -> Option<usize> {
        let b = data.get(o..o.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (namesz, descsz) = (rd(0)?, rd(4)?);
    let ntype = rd(8)? as u32;
    let name_end = 12usize.checked_add(namesz)?;
    let desc_start = 12usize.checked_add(namesz.checked_next_multiple_of(4)?)?;
    let desc_end = desc_start.checked_add(descsz)?;
    let next = desc_start.checked_add(descsz.checked_next_multiple_of(4)?)?;
    let name = std::str::from_utf8(data.get(12..name_end)?)
        .ok()?
        .trim_end_matches('\0');
    let desc = data.get(desc_start..desc_end)?;
    Some((name, ntype, desc, next.min(data.len()).max(12)))
}

/// Is there a header naming a known note at the start of `data`?
fn known_note_at(data: &[u8]) -> bool {
    note_at(data).is_some_and(|(n, _, _, _)| KNOWN_NOTES.contains(&n))
}

/// Iterate ELF notes: (name, type, desc). A malformed header does not end
/// the stream: the iterator skips ahead (4-byte steps) to the next header
/// naming a known note, so one bad note loses only itself.
pub fn iter_notes(mut data: &[u8]) -> impl Iterator<Item = (&str, u32, &[u8])> {
    std::iter::from_fn(move || {
        loop {
            if data.len() < 12 {
                return None;
            }
            if let Some((name, ntype, desc, size)) = note_at(data) {
                data = &data[size..];
                return Some((name, ntype, desc));
            }
            // Resynchronise: the next 4-aligned offset with a known note.
            let skip = (4..data.len())
                .step_by(4)
                .find(|&o| known_note_at(&data[o..]))?;
            data = &data[skip..];
        }
    })
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn parse_prstatus(desc: &[u8], cpu: u32) -> Option<CpuRegs> {
    // Constants: 112 + 27 * 8.
    if desc.len() < PRSTATUS_REG_OFF.saturating_add(USER_REGS.len().saturating_mul(8)) {
        return None;
    }
    let r = |name: &str| {
        let i = USER_REGS.iter().position(|n| *n == name).unwrap_or(0);
        u64_at(desc, PRSTATUS_REG_OFF.saturating_add(i.saturating_mul(8))).unwrap_or(0)
    };
    Some(CpuRegs {
        cpu,
        rip: r("rip"),
        rsp: r("rsp"),
        rbp: r("rbp"),
        rax: r("rax"),
        rbx: r("rbx"),
        rcx: r("rcx"),
        rdx: r("rdx"),
        rsi: r("rsi"),
        rdi: r("rdi"),
        r8: r("r8"),
        r9: r("r9"),
        r10: r("r10"),
        r11: r("r11"),
        r12: r("r12"),
        r13: r("r13"),
        r14: r("r14"),
        r15: r("r15"),
        rflags: r("eflags"),
        cs: r("cs"),
        ss: r("ss"),
        fs_base: r("fs_base"),
        gs_base: r("gs_base"),
        ..Default::default()
    })
}

fn parse_qemu_cpu(desc: &[u8], cpu: u32) -> Option<CpuRegs> {
    if desc.len() < QEMU_CR.saturating_add(5 * 8) {
        return None;
    }
    let g = |i: usize| u64_at(desc, i.saturating_mul(8).saturating_add(8)).unwrap_or(0);
    let cr = |i: usize| u64_at(desc, QEMU_CR.saturating_add(i.saturating_mul(8))).unwrap_or(0);
    Some(CpuRegs {
        cpu,
        rax: g(0),
        rbx: g(1),
        rcx: g(2),
        rdx: g(3),
        rsi: g(4),
        rdi: g(5),
        rsp: g(6),
        rbp: g(7),
        r8: g(8),
        r9: g(9),
        r10: g(10),
        r11: g(11),
        r12: g(12),
        r13: g(13),
        r14: g(14),
        r15: g(15),
        rip: u64_at(desc, QEMU_RIP)?,
        rflags: u64_at(desc, QEMU_RIP + 8)?,
        cs: u32::from_le_bytes(desc.get(QEMU_SEGS..QEMU_SEGS + 4)?.try_into().ok()?) as u64,
        idtr_base: u64_at(desc, QEMU_IDT_BASE),
        cr0: cr(0),
        cr2: cr(2),
        cr3: cr(3),
        cr4: cr(4),
        kernel_gs_base: u64_at(desc, QEMU_KGS).unwrap_or(0),
        ..Default::default()
    })
}

/// Read the u64 at a guest-physical address of a vmcore (convenience).
pub fn read_u64(core: &Vmcore, pa: u64) -> Result<u64, MemError> {
    core.read_u64(pa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SliceMem;
    use crate::vmcore_write::{VmcoreNotes, push_note, write_vmcore};

    #[test]
    fn write_then_read_back_identically() {
        let mut m = SliceMem::new();
        m.add_range(0, 0x9f000);
        m.add_range(0x10_0000, 0x30_0000);
        for (i, a) in [0x10u64, 0x9eff8, 0x10_0000, 0x3f_fff8].iter().enumerate() {
            m.write_u64(*a, 0x1111_0000 + i as u64).unwrap();
        }
        let regs = CpuRegs {
            cpu: 0,
            rip: 0xffff_ffff_8100_1234,
            rsp: 0xffff_c900_0000_3f00,
            cr3: 0x1234_5000,
            cr4: 0x3606f0,
            idtr_base: Some(0xffff_fe00_0000_0000),
            ..Default::default()
        };
        let notes = VmcoreNotes {
            vmcoreinfo: Some("OSRELEASE=7.2.13\nKERNELOFFSET=1c000000\nNUMBER(phys_base)=-16777216\nSYMBOL(swapper_pg_dir)=ffffffff9e00a000\n".into()),
            cpus: vec![regs.clone(), CpuRegs { cpu: 1, rip: 7, ..regs.clone() }],
        };
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("vmcore");
        write_vmcore(&p, &m, &notes, 0xffff_8880_0000_0000).unwrap();
        let core = Vmcore::open(&p).unwrap();
        assert_eq!(core.regions(), m.regions());
        for a in [0x10u64, 0x9eff8, 0x10_0000, 0x3f_fff8, 0x20_0000] {
            assert_eq!(
                core.read_u64(a).unwrap(),
                m.read_u64(a).unwrap(),
                "at {a:#x}"
            );
        }
        assert!(
            core.read_u64(0x9f000).is_err(),
            "hole must not read as zeros"
        );
        let info = core.vmcoreinfo.as_ref().unwrap();
        assert_eq!(info.kernel_offset(), Some(0x1c00_0000));
        assert_eq!(info.number("phys_base"), Some(-16_777_216));
        assert_eq!(info.symbol("swapper_pg_dir"), Some(0xffff_ffff_9e00_a000));
        assert_eq!(info.osrelease(), Some("7.2.13"));
        assert_eq!(core.cpus.len(), 2);
        assert_eq!(core.cpus[0].rip, regs.rip);
        assert_eq!(core.cpus[0].cr3, regs.cr3);
        assert_eq!(core.cpus[0].idtr_base, regs.idtr_base);
        assert_eq!(core.cpus[1].rip, 7);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        std::fs::write(&p, b"\x7fELF\x02\x01\x01garbage").unwrap();
        assert!(Vmcore::open(&p).is_err());
        std::fs::write(&p, b"").unwrap();
        assert!(Vmcore::open(&p).is_err());
    }

    #[test]
    fn notes_iterator_survives_truncation() {
        let mut n = Vec::new();
        push_note(&mut n, "VMCOREINFO", 0, b"A=1\n");
        push_note(&mut n, "CORE", 1, &[0u8; 8]);
        assert_eq!(iter_notes(&n).count(), 2);
        for cut in 0..n.len() {
            let _ = iter_notes(&n[..cut]).count();
        }
        // A bad header loses only its own note: the CORE note after it is
        // still found.
        let mut bad = n.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let found: Vec<_> = iter_notes(&bad).map(|(name, t, _)| (name, t)).collect();
        assert_eq!(found, [("CORE", 1)]);
        // A zero region is many empty notes, not a hang.
        assert_eq!(iter_notes(&[0u8; 1200]).count(), 100);
    }
}
