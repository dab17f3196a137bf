//! ELF vmcores: reading them as a [`PhysMem`] (QEMU `dump-guest-memory`,
//! kdump/makedumpfile ELF, ktstr's own dumps) with their VMCOREINFO and
//! per-CPU register notes, and writing ktstr's own so that `crash` and
//! `drgn` can open them.

use crate::mem::{MemError, PhysMem, PhysMemExt, locate};
use crate::regs::CpuRegs;
use std::collections::BTreeMap;
use std::io::Write;
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
}

const NT_PRSTATUS: u32 = 1;
/// Offset of `pr_reg` in x86-64 `struct elf_prstatus`, and its size.
const PRSTATUS_REG_OFF: usize = 112;
const PRSTATUS_SIZE: usize = 336;
const PRSTATUS_PID_OFF: usize = 32;
/// `user_regs_struct` order in `pr_reg`.
const USER_REGS: [&str; 27] = [
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
    "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs",
    "gs",
];
/// QEMU's `QEMUCPUState` note: version, size, 18 GPRs + rip + rflags at 8,
/// ten 24-byte segments from 152 (cs, ds, es, fs, gs, ss, ldt, tr, gdt,
/// idt), then cr[0..5] at 392 and kernel_gs_base at 432.
const QEMU_RIP: usize = 8 + 16 * 8;
const QEMU_SEGS: usize = QEMU_RIP + 16;
const QEMU_IDT_BASE: usize = QEMU_SEGS + 9 * 24 + 16;
const QEMU_CR: usize = QEMU_SEGS + 10 * 24;
const QEMU_KGS: usize = QEMU_CR + 5 * 8;
const QEMU_NOTE_SIZE: usize = QEMU_KGS + 8;

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
    filesz: u64,
    memsz: u64,
}

/// A memory-mapped ELF vmcore.
pub struct Vmcore {
    map: memmap2::Mmap,
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
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: private read-only mapping of a regular file; truncation by
        // another process while mapped is the accepted risk of mmap.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_map(map)
    }

    fn from_map(map: memmap2::Mmap) -> Result<Self, VmcoreError> {
        let data: &[u8] = &map;
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
        for ph in &phdrs {
            let end = ph.p_offset.checked_add(ph.p_filesz);
            if end.is_none_or(|e| e > data.len() as u64) {
                return Err(VmcoreError::Format(format!(
                    "segment at file offset {:#x}+{:#x} runs past the end of the file ({} bytes): truncated dump?",
                    ph.p_offset,
                    ph.p_filesz,
                    data.len()
                )));
            }
            match ph.p_type {
                goblin::elf::program_header::PT_LOAD if ph.p_memsz > 0 => {
                    segs.push(Segment {
                        paddr: ph.p_paddr,
                        offset: ph.p_offset,
                        filesz: ph.p_filesz,
                        memsz: ph.p_memsz.max(ph.p_filesz),
                    });
                }
                goblin::elf::program_header::PT_NOTE => {
                    let notes = &data[ph.p_offset as usize..(ph.p_offset + ph.p_filesz) as usize];
                    for (name, ntype, desc) in iter_notes(notes) {
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
        segs.sort_by_key(|s| s.paddr);
        for w in segs.windows(2) {
            if w[0].paddr + w[0].memsz > w[1].paddr {
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
        // Bytes past p_filesz (within p_memsz) were filtered out of the dump
        // as zero pages by the dumper; ELF says they read as zero.
        let in_file = s.filesz.saturating_sub(off).min(buf.len() as u64) as usize;
        let start = (s.offset + off) as usize;
        buf[..in_file].copy_from_slice(&self.map[start..start + in_file]);
        buf[in_file..].fill(0);
        Ok(())
    }

    fn regions(&self) -> Vec<(u64, u64)> {
        self.ranges.clone()
    }
}

/// Iterate ELF notes: (name, type, desc). Stops at the first malformed one.
pub fn iter_notes(mut data: &[u8]) -> impl Iterator<Item = (&str, u32, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 12 {
            return None;
        }
        let rd = |o: usize| u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
        let (namesz, descsz, ntype) = (rd(0) as usize, rd(4) as usize, rd(8));
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = 12 + namesz.next_multiple_of(4);
        let desc_end = desc_start.checked_add(descsz)?;
        if name_end > data.len() || desc_end > data.len() {
            return None;
        }
        let name = std::str::from_utf8(&data[12..name_end])
            .ok()?
            .trim_end_matches('\0');
        let desc = &data[desc_start..desc_end];
        let next = desc_start + descsz.next_multiple_of(4);
        let (name, desc) = (name, desc);
        let rest = &data[next.min(data.len())..];
        let out = (name, ntype, desc);
        data = rest;
        Some(out)
    })
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn parse_prstatus(desc: &[u8], cpu: u32) -> Option<CpuRegs> {
    if desc.len() < PRSTATUS_REG_OFF + USER_REGS.len() * 8 {
        return None;
    }
    let r = |name: &str| {
        let i = USER_REGS.iter().position(|n| *n == name).unwrap_or(0);
        u64_at(desc, PRSTATUS_REG_OFF + i * 8).unwrap_or(0)
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
    if desc.len() < QEMU_CR + 5 * 8 {
        return None;
    }
    let g = |i: usize| u64_at(desc, 8 + i * 8).unwrap_or(0);
    let cr = |i: usize| u64_at(desc, QEMU_CR + i * 8).unwrap_or(0);
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

/// What goes into the notes of a vmcore ktstr writes.
#[derive(Debug, Clone, Default)]
pub struct VmcoreNotes {
    /// VMCOREINFO text (`KEY=value` lines).
    pub vmcoreinfo: Option<String>,
    /// Per-CPU registers: written as NT_PRSTATUS and as QEMU-style notes
    /// (which carry CR3 and the other control registers).
    pub cpus: Vec<CpuRegs>,
}

fn push_note(out: &mut Vec<u8>, name: &str, ntype: u32, desc: &[u8]) {
    let name_b = [name.as_bytes(), b"\0"].concat();
    out.extend_from_slice(&(name_b.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&ntype.to_le_bytes());
    out.extend_from_slice(&name_b);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn prstatus_desc(r: &CpuRegs) -> Vec<u8> {
    let mut d = vec![0u8; PRSTATUS_SIZE];
    d[PRSTATUS_PID_OFF..PRSTATUS_PID_OFF + 4].copy_from_slice(&(r.cpu + 1).to_le_bytes());
    let val = |name: &str| match name {
        "r15" => r.r15,
        "r14" => r.r14,
        "r13" => r.r13,
        "r12" => r.r12,
        "rbp" => r.rbp,
        "rbx" => r.rbx,
        "r11" => r.r11,
        "r10" => r.r10,
        "r9" => r.r9,
        "r8" => r.r8,
        "rax" => r.rax,
        "rcx" => r.rcx,
        "rdx" => r.rdx,
        "rsi" => r.rsi,
        "rdi" => r.rdi,
        "rip" => r.rip,
        "cs" => r.cs,
        "eflags" => r.rflags,
        "rsp" => r.rsp,
        "ss" => r.ss,
        "fs_base" => r.fs_base,
        "gs_base" => r.gs_base,
        _ => 0,
    };
    for (i, n) in USER_REGS.iter().enumerate() {
        let o = PRSTATUS_REG_OFF + i * 8;
        d[o..o + 8].copy_from_slice(&val(n).to_le_bytes());
    }
    d
}

fn qemu_desc(r: &CpuRegs) -> Vec<u8> {
    let mut d = vec![0u8; QEMU_NOTE_SIZE];
    d[0..4].copy_from_slice(&1u32.to_le_bytes());
    d[4..8].copy_from_slice(&(QEMU_NOTE_SIZE as u32).to_le_bytes());
    let gprs = [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ];
    for (i, v) in gprs.iter().enumerate() {
        d[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    d[QEMU_SEGS..QEMU_SEGS + 4].copy_from_slice(&(r.cs as u32).to_le_bytes());
    if let Some(idt) = r.idtr_base {
        d[QEMU_IDT_BASE..QEMU_IDT_BASE + 8].copy_from_slice(&idt.to_le_bytes());
    }
    for (i, v) in [r.cr0, 0, r.cr2, r.cr3, r.cr4].iter().enumerate() {
        d[QEMU_CR + i * 8..QEMU_CR + 8 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    d[QEMU_KGS..QEMU_KGS + 8].copy_from_slice(&r.kernel_gs_base.to_le_bytes());
    d
}

/// Write an ELF64 vmcore of every RAM region of `mem` to `path`
/// atomically (a temporary file renamed into place). `page_offset_base`
/// sets each PT_LOAD's `p_vaddr` to its direct-map address, as kdump does.
pub fn write_vmcore(
    path: &Path,
    mem: &dyn PhysMem,
    notes: &VmcoreNotes,
    page_offset_base: u64,
) -> Result<u64, VmcoreError> {
    let io = |source| VmcoreError::Io {
        path: path.display().to_string(),
        source,
    };
    let regions = mem.regions();
    let mut note = Vec::new();
    for r in &notes.cpus {
        push_note(&mut note, "CORE", NT_PRSTATUS, &prstatus_desc(r));
    }
    if let Some(info) = &notes.vmcoreinfo {
        push_note(&mut note, "VMCOREINFO", 0, info.as_bytes());
    }
    for r in &notes.cpus {
        push_note(&mut note, "QEMU", 0, &qemu_desc(r));
    }
    let phnum = 1 + regions.len();
    let phoff = 64u64;
    let note_off = phoff + 56 * phnum as u64;
    let mut data_off = (note_off + note.len() as u64).next_multiple_of(4096);
    let mut hdr = Vec::with_capacity(data_off as usize);
    // ELF header.
    hdr.extend_from_slice(b"\x7fELF\x02\x01\x01");
    hdr.resize(16, 0);
    hdr.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    hdr.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    hdr.extend_from_slice(&1u32.to_le_bytes());
    hdr.extend_from_slice(&0u64.to_le_bytes()); // entry
    hdr.extend_from_slice(&phoff.to_le_bytes());
    hdr.extend_from_slice(&0u64.to_le_bytes()); // shoff
    hdr.extend_from_slice(&0u32.to_le_bytes()); // flags
    hdr.extend_from_slice(&64u16.to_le_bytes());
    hdr.extend_from_slice(&56u16.to_le_bytes());
    hdr.extend_from_slice(&(phnum as u16).to_le_bytes());
    hdr.extend_from_slice(&[0u8; 6]); // shentsize, shnum, shstrndx
    let mut phdr =
        |ptype: u32, flags: u32, off: u64, vaddr: u64, paddr: u64, size: u64, align: u64| {
            hdr.extend_from_slice(&ptype.to_le_bytes());
            hdr.extend_from_slice(&flags.to_le_bytes());
            for v in [off, vaddr, paddr, size, size, align] {
                hdr.extend_from_slice(&v.to_le_bytes());
            }
        };
    phdr(4, 0, note_off, 0, 0, note.len() as u64, 4);
    for &(start, len) in &regions {
        let vaddr = if page_offset_base != 0 {
            page_offset_base.wrapping_add(start)
        } else {
            0
        };
        phdr(1, 7, data_off, vaddr, start, len, 4096);
        data_off += len;
    }
    hdr.extend_from_slice(&note);
    hdr.resize(hdr.len().next_multiple_of(4096), 0);
    let tmp = path.with_extension("tmp-vmcore");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&hdr).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    for &(start, len) in &regions {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            mem.read_phys(start + done, &mut buf[..n])?;
            w.write_all(&buf[..n]).map_err(io)?;
            done += n as u64;
        }
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(data_off)
}

/// Read the u64 at a guest-physical address of a vmcore (convenience).
pub fn read_u64(core: &Vmcore, pa: u64) -> Result<u64, MemError> {
    core.read_u64(pa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SliceMem;

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
        let mut bad = n.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(iter_notes(&bad).count(), 0);
    }
}
