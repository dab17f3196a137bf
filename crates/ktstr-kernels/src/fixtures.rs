//! Fake kernel artifacts for this crate's unit tests.

use std::fs;
use std::path::Path;

pub fn fake_kernel(dir: &Path, version: &str) {
    fs::create_dir_all(dir).unwrap();
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    fs::write(dir.join("bzImage"), bz).unwrap();
    fs::write(
        dir.join("vmlinux"),
        tiny_elf(&[".symtab", ".strtab", ".BTF"]),
    )
    .unwrap();
    fs::write(
        dir.join("config"),
        format!("#\n# Linux/x86 {version} Kernel Configuration\n#\nCONFIG_A=y\n"),
    )
    .unwrap();
}

/// A minimal x86-64 ELF with the given (empty) sections.
pub fn tiny_elf(sections: &[&str]) -> Vec<u8> {
    let mut shstr = vec![0u8];
    let mut offs = Vec::new();
    for s in sections.iter().chain([&".shstrtab"]) {
        offs.push(shstr.len() as u32);
        shstr.extend_from_slice(s.as_bytes());
        shstr.push(0);
    }
    let nsec = sections.len() + 2; // null + sections + shstrtab
    let shstr_off = 64u64;
    let shoff = (shstr_off + shstr.len() as u64).next_multiple_of(8);
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // 64-bit
    out[5] = 1; // little-endian
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&(nsec as u16).to_le_bytes());
    out[62..64].copy_from_slice(&((nsec - 1) as u16).to_le_bytes());
    out.extend_from_slice(&shstr);
    out.resize(shoff as usize, 0);
    out.extend_from_slice(&[0u8; 64]); // null section
    for (i, name_off) in offs.iter().enumerate() {
        let mut sh = [0u8; 64];
        sh[0..4].copy_from_slice(&name_off.to_le_bytes());
        let is_shstr = i == sections.len();
        sh[4..8].copy_from_slice(&(if is_shstr { 3u32 } else { 1u32 }).to_le_bytes());
        if is_shstr {
            sh[24..32].copy_from_slice(&shstr_off.to_le_bytes());
            sh[32..40].copy_from_slice(&(shstr.len() as u64).to_le_bytes());
        }
        out.extend_from_slice(&sh);
    }
    out
}
