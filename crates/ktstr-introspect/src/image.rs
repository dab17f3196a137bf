//! A kernel image: symbols from the vmlinux `.symtab` and types from its
//! `.BTF` section (or a raw BTF file such as `/sys/kernel/btf/vmlinux`).
//! A vmlinux stripped of `.symtab` (what a distribution's bzImage
//! decompresses to) takes its symbols from a `System.map` beside it.

use crate::btf::{Btf, BtfError};
use crate::symbols::Symbols;
use std::path::Path;

/// Why a kernel image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a usable vmlinux ELF: {0}")]
    Elf(String),
    #[error(
        "vmlinux has no {0} section: build with CONFIG_DEBUG_INFO_BTF=y and strip only debug info"
    )]
    MissingSection(&'static str),
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// Symbols and BTF of one kernel build.
#[derive(Debug)]
pub struct KernelImage {
    symbols: Symbols,
    btf: Btf,
    banner: Option<Vec<u8>>,
    build_id: Option<Vec<u8>>,
}

impl KernelImage {
    /// Open a vmlinux ELF (memory-mapped; only `.symtab`/`.strtab`/`.BTF`
    /// are read). Without `.symtab`, the symbols come from `System.map` in
    /// the same directory (a link-time listing, e.g. captured from
    /// `/proc/kallsyms`).
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let io = |source| ImageError::Io {
            path: path.display().to_string(),
            source,
        };
        crate::vmcore::check_regular(path).map_err(|e| ImageError::Elf(e.to_string()))?;
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is private and read-only; a concurrent truncation of
        // the file by another process could fault, which is the accepted
        // risk of mapping any file.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        match Self::from_elf_bytes(&map) {
            Err(ImageError::MissingSection(".symtab")) => {
                let sm = path.with_file_name("System.map");
                let text = match std::fs::read_to_string(&sm) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(ImageError::MissingSection(".symtab"));
                    }
                    Err(source) => {
                        return Err(ImageError::Io {
                            path: sm.display().to_string(),
                            source,
                        });
                    }
                };
                Self::from_elf_bytes_with(&map, Some(Symbols::from_system_map(&text)))
            }
            r => r,
        }
    }

    /// Parse a vmlinux ELF held in memory.
    pub fn from_elf_bytes(data: &[u8]) -> Result<Self, ImageError> {
        Self::from_elf_bytes_with(data, None)
    }

    /// Parse a vmlinux ELF, with its symbols from elsewhere when `symbols`
    /// is given (then `.symtab` is not required).
    pub fn from_elf_bytes_with(data: &[u8], symbols: Option<Symbols>) -> Result<Self, ImageError> {
        let elf = goblin::elf::Elf::parse(data).map_err(|e| ImageError::Elf(e.to_string()))?;
        let mut btf_bytes = None;
        let mut has_symtab = false;
        for sh in &elf.section_headers {
            match elf.shdr_strtab.get_at(sh.sh_name) {
                Some(".BTF") => {
                    let start = sh.sh_offset as usize;
                    let end = start
                        .checked_add(sh.sh_size as usize)
                        .filter(|&e| e <= data.len())
                        .ok_or_else(|| ImageError::Elf(".BTF section past end of file".into()))?;
                    btf_bytes = Some(&data[start..end]);
                }
                Some(".symtab") => has_symtab = true,
                _ => {}
            }
        }
        if !has_symtab && symbols.is_none() {
            return Err(ImageError::MissingSection(".symtab"));
        }
        let btf = Btf::from_bytes(btf_bytes.ok_or(ImageError::MissingSection(".BTF"))?)?;
        let symbols = symbols.unwrap_or_else(|| Symbols::from_elf(&elf));
        let banner = symbols.get("linux_banner").and_then(|s| {
            let off = elf.program_headers.iter().find_map(|ph| {
                let rel = s.addr.checked_sub(ph.p_vaddr)?;
                (ph.p_type == goblin::elf::program_header::PT_LOAD && rel < ph.p_filesz)
                    .then_some(ph.p_offset + rel)
            })? as usize;
            // A System.map symbol has no size: read to the NUL, at most 512.
            let len = if s.size == 0 {
                512
            } else {
                (s.size as usize).clamp(1, 512)
            };
            let b = data.get(off..off.checked_add(len)?)?;
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            Some(b[..end].to_vec())
        });
        let build_id = elf
            .iter_note_sections(data, Some(".note.gnu.build-id"))
            .into_iter()
            .flatten()
            .flatten()
            .find(|n| n.n_type == goblin::elf::note::NT_GNU_BUILD_ID)
            .map(|n| n.desc.to_vec());
        Ok(Self {
            symbols,
            btf,
            banner,
            build_id,
        })
    }

    /// A vmlinux ELF, or raw BTF (e.g. a copy of `/sys/kernel/btf/vmlinux`)
    /// plus a `System.map` for the symbols.
    pub fn open_btf_and_system_map(btf: &Path, system_map: &Path) -> Result<Self, ImageError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| ImageError::Io { path, source }
        };
        let raw = std::fs::read(btf).map_err(io(btf))?;
        let btf = Btf::from_bytes(&raw)?;
        let map = std::fs::read_to_string(system_map).map_err(io(system_map))?;
        Ok(Self {
            symbols: Symbols::from_system_map(&map),
            btf,
            banner: None,
            build_id: None,
        })
    }

    /// The same image with this `linux_banner` text (raw BTF and a
    /// System.map carry none; the banner scan needs it).
    pub fn with_banner(mut self, banner: Vec<u8>) -> Self {
        self.banner = Some(banner);
        self
    }

    /// Assemble from parts (tests, raw BTF + a symbol list).
    pub fn from_parts(symbols: Symbols, btf: Btf, banner: Option<Vec<u8>>) -> Self {
        Self {
            symbols,
            btf,
            banner,
            build_id: None,
        }
    }

    /// The `linux_banner` text of this build (`Linux version ...`).
    pub fn banner(&self) -> Option<&[u8]> {
        self.banner.as_deref()
    }

    /// The release of this build (`7.2.13`), the third word of its banner.
    pub fn release(&self) -> Option<String> {
        let b = String::from_utf8_lossy(self.banner.as_deref()?).into_owned();
        let mut w = b.split_whitespace();
        (w.next()? == "Linux" && w.next()? == "version").then(|| w.next().map(String::from))?
    }

    /// The GNU build id (`.note.gnu.build-id`), when the ELF has one.
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    pub fn btf(&self) -> &Btf {
        &self.btf
    }
}
