//! The initramfs every test VM boots: `/init` = ktstr's static guest-init,
//! the scheduler, the payload and its shared-library closure, the
//! directories and device nodes PID 1 needs. Deterministic (sorted
//! entries, fixed inodes and times) and cached by content hash, so
//! repeated boots reuse the same archive.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The static guest-init built for this crate (see build.rs).
pub static GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ktstr-guest-init"));

/// An initramfs failure.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, InitramfsError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError + '_ {
    move |source| InitramfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    Char { major: u32, minor: u32 },
}

/// An archive being assembled; paths are absolute guest paths.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    /// The base: guest-init as /init, standard directories, /dev/console.
    pub fn base() -> Self {
        let mut i = Self::default();
        for d in [
            "/proc", "/sys", "/dev", "/tmp", "/run", "/bin", "/lib", "/lib64", "/usr", "/etc",
        ] {
            i.dir(d);
        }
        i.nodes
            .insert("/dev/console".into(), Node::Char { major: 5, minor: 1 });
        i.nodes
            .insert("/dev/null".into(), Node::Char { major: 1, minor: 3 });
        i.add_bytes("/init", GUEST_INIT.to_vec(), 0o755);
        i
    }

    fn dir(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            self.nodes.entry(cur.clone()).or_insert(Node::Dir);
        }
    }

    fn parent_dirs(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/')
            && !parent.is_empty()
        {
            self.dir(parent);
        }
    }

    /// Add a file from memory.
    pub fn add_bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parent_dirs(path);
        self.nodes
            .insert(path.to_string(), Node::File { data, mode });
    }

    /// Add a host file at a guest path (mode from the host file).
    pub fn add_file(&mut self, guest: &str, host: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(host).map_err(io(host))?;
        let mode = std::fs::metadata(host)
            .map_err(io(host))?
            .permissions()
            .mode()
            & 0o7777;
        self.add_bytes(guest, data, mode);
        Ok(())
    }

    /// Add a symlink.
    pub fn add_symlink(&mut self, path: &str, target: &str) {
        self.parent_dirs(path);
        self.nodes
            .insert(path.to_string(), Node::Symlink(target.to_string()));
    }

    /// Add a dynamic executable and every shared library it needs, at
    /// their host paths (plus the ELF interpreter). Static binaries add
    /// just themselves.
    pub fn add_executable_with_libs(&mut self, guest: &str, host: &Path) -> Result<Vec<PathBuf>> {
        self.add_file(guest, host)?;
        let libs = crate::host::libs::closure(host).map_err(InitramfsError::Invalid)?;
        for l in &libs {
            let g = l.to_string_lossy().into_owned();
            self.add_file(&g, l)?;
        }
        Ok(libs)
    }

    /// Paths in the archive, sorted.
    pub fn paths(&self) -> Vec<&str> {
        self.nodes.keys().map(String::as_str).collect()
    }

    /// Serialise as an uncompressed newc cpio.
    pub fn to_cpio(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let b = cpio::newc::Builder::new(name)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (b, data): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040755).nlink(2), &[]),
                Node::File { data, mode } => (b.mode(0o100000 | mode).nlink(1), data),
                Node::Symlink(t) => (b.mode(0o120777).nlink(1), t.as_bytes()),
                Node::Char { major, minor } => (
                    b.mode(0o020600)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let len = u32::try_from(data.len())
                .map_err(|_| InitramfsError::Invalid(format!("{path} is larger than 4 GiB")))?;
            let mut w = b.write(&mut out, len);
            w.write_all(data).map_err(io(Path::new(path)))?;
            w.finish().map_err(io(Path::new(path)))?;
        }
        cpio::newc::trailer(&mut out).map_err(io(Path::new("TRAILER")))?;
        Ok(out)
    }

    /// Write the archive into `dir` named by its content hash, unless it is
    /// already there; returns its path.
    pub fn write_cached(&self, dir: &Path) -> Result<PathBuf> {
        let bytes = self.to_cpio()?;
        let hash: String = Sha256::digest(&bytes)
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("initramfs-{hash}.cpio"));
        if path.is_file()
            && std::fs::metadata(&path).map(|m| m.len()).ok() == Some(bytes.len() as u64)
        {
            super::cache_gc::touch(&path);
            return Ok(path);
        }
        let tmp = dir.join(format!(".initramfs-{hash}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        let pruned = super::cache_gc::prune(
            dir,
            super::cache_gc::budget_bytes(),
            super::cache_gc::MIN_AGE,
        );
        if pruned.files > 0 {
            tracing::debug!(?pruned, "initramfs cache pruned");
        }
        Ok(path)
    }
}

/// List a newc archive: (path, mode, size).
pub fn list_cpio(data: &[u8]) -> Result<Vec<(String, u32, u32)>> {
    let mut out = Vec::new();
    let mut r = data;
    loop {
        let rd = cpio::newc::Reader::new(r)
            .map_err(|e| InitramfsError::Invalid(format!("bad cpio: {e}")))?;
        if rd.entry().is_trailer() {
            break;
        }
        let e = rd.entry();
        out.push((e.name().to_string(), e.mode(), e.file_size()));
        r = rd
            .finish()
            .map_err(|e| InitramfsError::Invalid(format!("bad cpio: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_init_is_static() {
        assert!(
            ktstr_kernels::artifact::is_static_elf(GUEST_INIT).unwrap(),
            "guest-init must be static"
        );
    }

    #[test]
    fn archive_lists_back_and_is_deterministic() {
        let mut i = Initramfs::base();
        i.add_bytes("/bin/hello", b"#!/bin/true\n".to_vec(), 0o755);
        i.add_symlink("/bin/alias", "hello");
        let a = i.to_cpio().unwrap();
        assert_eq!(a, i.clone().to_cpio().unwrap());
        let l = list_cpio(&a).unwrap();
        let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
        for want in [
            "init",
            "bin/hello",
            "bin/alias",
            "dev/console",
            "proc",
            "sys",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let init = l.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.1 & 0o777, 0o755);
        assert_eq!(init.2 as usize, GUEST_INIT.len());
        let console = l.iter().find(|e| e.0 == "dev/console").unwrap();
        assert_eq!(console.1 & 0o170000, 0o020000);
        let t = tempfile::tempdir().unwrap();
        let p1 = i.write_cached(t.path()).unwrap();
        let p2 = i.write_cached(t.path()).unwrap();
        assert_eq!(p1, p2);
    }

    #[test]
    fn dynamic_binary_brings_its_libraries() {
        let mut i = Initramfs::base();
        let libs = i
            .add_executable_with_libs("/bin/sh", Path::new("/bin/sh"))
            .unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        for l in &libs {
            assert!(i.paths().contains(&l.to_str().unwrap()));
        }
    }
}
