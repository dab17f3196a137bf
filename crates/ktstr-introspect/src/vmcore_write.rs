//! Writing ktstr's own ELF vmcores of a guest (every RAM region, per-CPU
//! registers as NT_PRSTATUS and QEMU-style notes, VMCOREINFO) so `crash`,
//! `drgn` and `ktstr analyze` can open them. The reader is
//! [`crate::vmcore`].

use crate::mem::PhysMem;
use crate::regs::CpuRegs;
use crate::vmcore::{
    NT_PRSTATUS, PRSTATUS_PID_OFF, PRSTATUS_REG_OFF, PRSTATUS_SIZE, QEMU_CR, QEMU_IDT_BASE,
    QEMU_KGS, QEMU_NOTE_SIZE, QEMU_SEGS, USER_REGS, VmcoreError,
};
use std::io::Write;
use std::path::Path;

/// What goes into the notes of a vmcore ktstr writes.
#[derive(Debug, Clone, Default)]
pub struct VmcoreNotes {
    /// VMCOREINFO text (`KEY=value` lines).
    pub vmcoreinfo: Option<String>,
    /// Per-CPU registers: written as NT_PRSTATUS and as QEMU-style notes
    /// (which carry CR3 and the other control registers).
    pub cpus: Vec<CpuRegs>,
}

pub(crate) fn push_note(out: &mut Vec<u8>, name: &str, ntype: u32, desc: &[u8]) {
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
