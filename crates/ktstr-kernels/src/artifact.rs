//! What a kernel artifact file must be before ktstr boots or analyses it:
//! a bzImage with the boot-protocol header, a vmlinux with symbols and
//! BTF, and whether an executable is static. Every check names the file
//! and what is wrong with it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// An artifact that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a bzImage (no HdrS boot-protocol magic at 0x202)", path.display())]
    NotBzImage { path: PathBuf },
    #[error("{}: not an x86-64 ELF file: {detail}", path.display())]
    NotElf { path: PathBuf, detail: String },
    #[error(
        "{} lacks {}: build with CONFIG_DEBUG_INFO_BTF=y and strip only debug info (objcopy --strip-debug)",
        path.display(),
        missing.join(", ")
    )]
    MissingSections {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A bzImage carries the `HdrS` setup-header magic at 0x202.
pub fn check_bzimage(path: &Path) -> Result<(), ArtifactError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io(path))?;
    let mut head = [0u8; 0x210];
    f.read_exact(&mut head).map_err(io(path))?;
    if &head[0x202..0x206] != b"HdrS" {
        return Err(ArtifactError::NotBzImage {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Sections a usable vmlinux must have.
pub const VMLINUX_SECTIONS: [&str; 3] = [".symtab", ".strtab", ".BTF"];

/// A vmlinux must be an x86-64 ELF with `.BTF`, and with `.symtab` and
/// `.strtab` unless a real `System.map` sits beside it.
pub fn check_vmlinux(path: &Path) -> Result<(), ArtifactError> {
    let data = fs::read(path).map_err(io(path))?;
    let mut missing = missing_sections(&data).map_err(|detail| ArtifactError::NotElf {
        path: path.to_path_buf(),
        detail,
    })?;
    // A stripped image (a distribution kernel's) may take its symbols from
    // a System.map beside it, but not from a stub such as Debian ships.
    if missing.iter().all(|s| *s != ".BTF") && has_system_map(&path.with_file_name("System.map")) {
        missing.clear();
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::MissingSections {
            path: path.to_path_buf(),
            missing,
        })
    }
}

/// Fewer symbols than this and a `System.map` is a stub (Debian's says
/// "The real System.map is in the ...-dbg package").
pub const MIN_SYSTEM_MAP_SYMBOLS: usize = 1000;

/// Does `path` hold a real `System.map` (at least
/// [`MIN_SYSTEM_MAP_SYMBOLS`] `ADDR TYPE NAME` lines)?
pub fn has_system_map(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(f) = File::open(path) else {
        return false;
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| {
            let mut it = l.split_whitespace();
            matches!(
                (it.next(), it.next(), it.next()),
                (Some(a), Some(t), Some(_)) if t.len() == 1 && u64::from_str_radix(a, 16).is_ok()
            )
        })
        .take(MIN_SYSTEM_MAP_SYMBOLS)
        .count()
        >= MIN_SYSTEM_MAP_SYMBOLS
}

/// Which of [`VMLINUX_SECTIONS`] an ELF image lacks (Err: not an x86-64 ELF).
pub fn missing_sections(data: &[u8]) -> Result<Vec<&'static str>, String> {
    let elf = goblin::elf::Elf::parse_header(data).map_err(|e| format!("not an ELF file: {e}"))?;
    if elf.e_machine != goblin::elf::header::EM_X86_64 {
        return Err(format!("ELF machine {} is not x86-64", elf.e_machine));
    }
    let elf = goblin::elf::Elf::parse(data).map_err(|e| format!("malformed ELF: {e}"))?;
    let names: Vec<&str> = elf
        .section_headers
        .iter()
        .filter_map(|sh| elf.shdr_strtab.get_at(sh.sh_name))
        .collect();
    Ok(VMLINUX_SECTIONS
        .into_iter()
        .filter(|s| !names.contains(s))
        .collect())
}

/// Is an ELF binary static (no PT_INTERP, no DT_NEEDED)? Err: not an ELF.
pub fn is_static_elf(data: &[u8]) -> Result<bool, String> {
    let elf = goblin::elf::Elf::parse(data).map_err(|e| format!("not an ELF: {e}"))?;
    Ok(elf.interpreter.is_none() && elf.libraries.is_empty())
}
