//! The shared-library closure of a dynamic ELF executable: PT_INTERP plus
//! every DT_NEEDED, resolved the way the loader does (DT_RUNPATH/RPATH,
//! `/etc/ld.so.cache`, then the default directories), recursively.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Library name -> path from `/etc/ld.so.cache` (new format,
/// `glibc-ld.so.cache1.1`); empty if absent or unreadable.
pub fn ld_so_cache(data: &[u8]) -> Vec<(String, PathBuf)> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    let Some(start) = data.windows(MAGIC.len()).position(|w| w == MAGIC) else {
        return Vec::new();
    };
    let h = &data[start..];
    let u32_at = |b: &[u8], o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let Some(nlibs) = u32_at(h, 20) else {
        return Vec::new();
    };
    // Header: magic(20) nlibs(4) len_strings(4) flags(1) pad(3)
    // extension_offset(4) unused(12) = 48 bytes; entries are 24 bytes.
    let mut out = Vec::new();
    let cstr = |off: u32| -> Option<String> {
        let s = h.get(off as usize..)?;
        let end = s.iter().position(|&c| c == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    for i in 0..nlibs.min(100_000) as usize {
        let e = 48 + i * 24;
        let (Some(k), Some(v)) = (u32_at(h, e + 4), u32_at(h, e + 8)) else {
            break;
        };
        if let (Some(k), Some(v)) = (cstr(k), cstr(v)) {
            out.push((k, PathBuf::from(v)));
        }
    }
    out
}

fn resolve(name: &str, runpath: &[String], cache: &[(String, PathBuf)]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    for d in runpath {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    if let Some((_, p)) = cache.iter().find(|(k, p)| k == name && p.is_file()) {
        return Some(p.clone());
    }
    DEFAULT_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Every library `exe` needs (recursively), including the interpreter.
pub fn closure(exe: &Path) -> Result<Vec<PathBuf>, String> {
    let cache = std::fs::read("/etc/ld.so.cache")
        .map(|d| ld_so_cache(&d))
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut queue = VecDeque::from([exe.to_path_buf()]);
    let mut first = true;
    while let Some(f) = queue.pop_front() {
        let data = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let elf = goblin::elf::Elf::parse(&data)
            .map_err(|e| format!("{}: not an ELF: {e}", f.display()))?;
        if first {
            if let Some(interp) = elf.interpreter {
                let p = PathBuf::from(interp);
                if out.insert(p.clone()) {
                    queue.push_back(p);
                }
            }
            first = false;
        }
        let origin = f
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let runpath: Vec<String> = elf
            .runpaths
            .iter()
            .chain(elf.rpaths.iter())
            .flat_map(|r| r.split(':'))
            .map(|r| r.replace("$ORIGIN", &origin))
            .collect();
        for lib in &elf.libraries {
            let p = resolve(lib, &runpath, &cache).ok_or_else(|| {
                format!(
                    "{}: cannot find {lib} (needed by {})",
                    exe.display(),
                    f.display()
                )
            })?;
            if out.insert(p.clone()) {
                queue.push_back(p);
            }
        }
        if out.len() > 512 {
            return Err(format!(
                "{}: more than 512 libraries; refusing",
                exe.display()
            ));
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_cache_resolves_libc() {
        let Ok(d) = std::fs::read("/etc/ld.so.cache") else {
            eprintln!("skipped: no /etc/ld.so.cache");
            return;
        };
        let c = ld_so_cache(&d);
        assert!(
            c.iter().any(|(k, _)| k == "libc.so.6"),
            "{} entries",
            c.len()
        );
        assert!(ld_so_cache(b"garbage").is_empty());
        let mut trunc = d.clone();
        trunc.truncate(60);
        let _ = ld_so_cache(&trunc);
    }
}
