//! The kernel and scheduler cache: where it lives, its layout, manifests,
//! atomic installs under a lock, and how a test resolves which kernel and
//! which scheduler binaries to boot.
//!
//! Layout under the cache root (`$KTSTR_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`):
//!
//! ```text
//! kernels/<name>/{bzImage, vmlinux, config, manifest.json}
//! schedulers/<name>/{scx_simple, scx_qmap, ...}
//! ```
//!
//! `<name>` is the kernel's short version (`7.2`, `6.12`). Installs are
//! built in a sibling temporary directory and renamed into place, under a
//! per-name file lock so concurrent builds wait for each other.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the cache and of kernel/scheduler resolution. Each message
/// says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "cannot find a cache directory: set KTSTR_CACHE_DIR (neither XDG_CACHE_HOME nor HOME is set)"
    )]
    NoCacheDir,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no kernel: KTSTR_KERNEL is unset and the cache at {cache} holds none. \
         Run `ktstr kernel build` (or `ktstr kernel import DIR` to adopt prebuilt artifacts)"
    )]
    NoKernel { cache: PathBuf },
    #[error(
        "kernel `{value}`: {problem}. A kernel path must be a directory holding bzImage and \
         vmlinux, or a bzImage with vmlinux beside it; a name must be a cached kernel (`ktstr kernel list`)"
    )]
    BadKernelPath { value: String, problem: String },
    #[error(
        "kernel `{name}` is not in the cache at {cache} (cached: {available}). Run `ktstr kernel build --version {name}` or `ktstr kernel import DIR`"
    )]
    UnknownKernel {
        name: String,
        cache: PathBuf,
        available: String,
    },
    #[error(
        "scheduler `{name}` not found (looked in: {looked}). Build it: `ktstr sched build --kernel {kernel}` (scx_simple, scx_qmap) or `ktstr sched build --crate NAME[@VERSION]` (a published scheduler such as scx_bpfland); or set KTSTR_SCHED_DIR to a directory that has it, or pass a path"
    )]
    NoScheduler {
        name: String,
        kernel: String,
        looked: String,
    },
    #[error(
        "kernel `{request}` is not in the cache at {cache}. Fetch it: `ktstr kernel fetch {request}` (`ktstr run --kernel {request}` fetches it by itself)"
    )]
    NotFetched { request: String, cache: PathBuf },
    #[error("kernel `{0}`")]
    BadRequest(String),
    #[error("invalid kernel artifacts in {}: {source}", dir.display())]
    Invalid {
        dir: PathBuf,
        #[source]
        source: crate::artifact::ArtifactError,
    },
    #[error("installing into {}: {problem}", dir.display())]
    Install { dir: PathBuf, problem: String },
    #[error(
        "invalid kernel name `{0}`: use a short version such as 7.2 or 6.12 (letters, digits, `.`, `-`, `_`)"
    )]
    BadName(String),
    #[error("manifest {path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, CacheError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the cache lives: `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`,
/// else `$HOME/.cache/ktstr`. Empty variables count as unset.
pub fn cache_root_from(
    ktstr_cache_dir: Option<&str>,
    xdg_cache_home: Option<&str>,
    home: Option<&str>,
) -> Result<PathBuf> {
    let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(p) = nonempty(ktstr_cache_dir) {
        return Ok(p);
    }
    if let Some(p) = nonempty(xdg_cache_home) {
        return Ok(p.join("ktstr"));
    }
    if let Some(p) = nonempty(home) {
        return Ok(p.join(".cache").join("ktstr"));
    }
    Err(CacheError::NoCacheDir)
}

/// Kernel artifacts a VM boots: the compressed image, the ELF with symbols
/// and BTF, and (when known) the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// Short name (`7.2`), or the directory name for ad-hoc kernels.
    pub name: String,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub config: Option<PathBuf>,
}

/// Sizes recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSizes {
    pub bzimage: u64,
    pub vmlinux: u64,
}

/// `kernels/<name>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelManifest {
    /// Short name, the directory name.
    pub name: String,
    /// Full kernel version from the config header (`7.2.13`).
    pub version: String,
    /// Where it came from: `linux-source-7.2 7.2.13-1`, a source tree
    /// path, or `imported from DIR`.
    pub source: String,
    /// SHA-256 of the config, hex.
    pub config_sha256: String,
    /// Seconds since the epoch when it was built or imported.
    pub built_at_unix: u64,
    /// Build duration, when built here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_seconds: Option<u64>,
    pub sizes: ArtifactSizes,
}

/// A handle on one cache root.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Kernel names become directory names: keep them to a safe alphabet.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::BadName(name.to_string()))
    }
}

/// Compare two dotted versions numerically (`7.2` > `6.12`), falling back
/// to string order for non-numeric parts.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '_'])
            .map(|p| (p.parse::<u64>().unwrap_or(0), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// A name that is only a version (`7.2`, `6.12.117`): a plain build of
/// the project's config, neither a flavor nor a distro kernel.
pub fn is_plain_version(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Cache {
    /// The cache named by the environment.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok();
        let root = cache_root_from(
            var("KTSTR_CACHE_DIR").as_deref(),
            var("XDG_CACHE_HOME").as_deref(),
            var("HOME").as_deref(),
        )?;
        Ok(Self { root })
    }

    /// A cache at an explicit root (tests, `--cache-dir`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kernels_dir(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn kernel_dir(&self, name: &str) -> PathBuf {
        self.kernels_dir().join(name)
    }

    pub fn schedulers_dir(&self, kernel: &str) -> PathBuf {
        self.root.join("schedulers").join(kernel)
    }

    /// Scratch space for downloads and builds (`<root>/work`).
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Cached kernels, newest version first.
    pub fn list_kernels(&self) -> Result<Vec<KernelManifest>> {
        let dir = self.kernels_dir();
        let Some(entries) = read_dir_if_present(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_err() || !entry.path().join("manifest.json").is_file() {
                continue; // temporaries, locks, strays
            }
            out.push(self.manifest(&name)?);
        }
        out.sort_by(|a, b| version_cmp(&b.name, &a.name));
        Ok(out)
    }

    /// The manifest of one cached kernel.
    pub fn manifest(&self, name: &str) -> Result<KernelManifest> {
        let path = self.kernel_dir(name).join("manifest.json");
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|source| CacheError::Manifest { path, source })
    }

    /// The artifacts of a cached kernel by name.
    pub fn kernel(&self, name: &str) -> Result<KernelArtifacts> {
        validate_name(name)?;
        let dir = self.kernel_dir(name);
        if !dir.join("manifest.json").is_file() {
            let available = self
                .list_kernels()?
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>();
            return Err(CacheError::UnknownKernel {
                name: name.to_string(),
                cache: self.root.clone(),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            });
        }
        Ok(KernelArtifacts {
            name: name.to_string(),
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            config: Some(dir.join("config")),
        })
    }

    /// The default kernel: the newest cached plain build (a name that is a
    /// bare version such as `7.2`). Flavored builds (`7.2-debug`: lockdep
    /// makes it several times slower) and distro kernels (`debian-7.2-cloud`)
    /// are booted only when asked for by name, unless nothing else is cached.
    pub fn default_kernel(&self) -> Result<Option<KernelArtifacts>> {
        let kernels = self.list_kernels()?;
        let pick = kernels
            .iter()
            .find(|m| is_plain_version(&m.name))
            .or_else(|| kernels.first());
        match pick {
            Some(m) => self.kernel(&m.name).map(Some),
            None => Ok(None),
        }
    }

    /// Remove a cached kernel (under its install lock). Its schedulers stay:
    /// kernels of the same series share them.
    pub fn remove_kernel(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let _lock = self.lock(&format!("kernel-{name}"))?;
        let dir = self.kernel_dir(name);
        if !dir.join("manifest.json").is_file() {
            return Err(CacheError::UnknownKernel {
                name: name.to_string(),
                cache: self.root.clone(),
                available: self
                    .list_kernels()?
                    .into_iter()
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        fs::remove_dir_all(&dir).map_err(io(&dir))
    }

    /// Where a kernel came from, from its manifest's source: `built`
    /// (from a linux-source package or tree), `debian` (a fetched
    /// package) or `imported`.
    pub fn origin(m: &KernelManifest) -> &'static str {
        if m.source.starts_with("Debian package") {
            "debian"
        } else if m.source.starts_with("imported") {
            "imported"
        } else {
            "built"
        }
    }

    /// Take the per-name install lock (blocks while another process holds
    /// it). Released when the returned file is dropped.
    pub fn lock(&self, what: &str) -> Result<File> {
        validate_name(what)?;
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{what}.lock"));
        let file = File::create(&path).map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }

    /// Install a kernel atomically: `fill` populates a fresh temporary
    /// directory beside the destination; the result is validated, its
    /// manifest written, and it replaces any existing kernel of that name
    /// in one rename. The caller should hold [`Cache::lock`] for `name`.
    pub fn install_kernel(
        &self,
        name: &str,
        source: &str,
        build_seconds: Option<u64>,
        fill: impl FnOnce(&Path) -> std::result::Result<(), CacheError>,
    ) -> Result<KernelManifest> {
        validate_name(name)?;
        let kernels = self.kernels_dir();
        fs::create_dir_all(&kernels).map_err(io(&kernels))?;
        let tmp = kernels.join(format!(".tmp-{name}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let result = (|| {
            fill(&tmp)?;
            let arts = validate_kernel_dir(&tmp)?;
            let config = fs::read(tmp.join("config")).map_err(io(&tmp))?;
            let version = crate::kconfig::kernel_version(&String::from_utf8_lossy(&config))
                .unwrap_or_else(|| name.to_string());
            let manifest = KernelManifest {
                name: name.to_string(),
                version,
                source: source.to_string(),
                config_sha256: hex(&Sha256::digest(&config)),
                built_at_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                build_seconds,
                sizes: ArtifactSizes {
                    bzimage: file_len(&arts.bzimage)?,
                    vmlinux: file_len(&arts.vmlinux)?,
                },
            };
            let mpath = tmp.join("manifest.json");
            let text =
                serde_json::to_string_pretty(&manifest).map_err(|source| CacheError::Manifest {
                    path: mpath.clone(),
                    source,
                })?;
            fs::write(&mpath, text).map_err(io(&mpath))?;
            Ok(manifest)
        })();
        let manifest = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let dest = self.kernel_dir(name);
        let old = kernels.join(format!(".old-{name}-{}", std::process::id()));
        if dest.exists() {
            fs::rename(&dest, &old).map_err(io(&dest))?;
        }
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(manifest)
    }

    /// Adopt prebuilt artifacts (`bzImage`, `vmlinux`, `config`) from a
    /// directory such as `../shared/kernels/7.2/`.
    pub fn import_kernel(&self, dir: &Path, name: Option<&str>) -> Result<KernelManifest> {
        let arts = validate_kernel_dir(dir)?;
        let config_path = dir.join("config");
        let config = fs::read_to_string(&config_path).map_err(io(&config_path))?;
        let name = match name {
            Some(n) => n.to_string(),
            None => derive_name(dir, &config),
        };
        validate_name(&name)?;
        let source = match fs::read_to_string(dir.join("BUILD.txt")) {
            Ok(b) => b.lines().next().unwrap_or("").trim().to_string(),
            Err(_) => format!("imported from {}", dir.display()),
        };
        let _lock = self.lock(&format!("kernel-{name}"))?;
        self.install_kernel(&name, &source, None, |tmp| {
            for (from, to) in [
                (&arts.bzimage, "bzImage"),
                (&arts.vmlinux, "vmlinux"),
                (&config_path, "config"),
            ] {
                let dst = tmp.join(to);
                fs::copy(from, &dst).map_err(io(from))?;
                make_writable(&dst)?;
            }
            // Symbols of a stripped (distribution) vmlinux.
            let map = dir.join("System.map");
            if crate::artifact::has_system_map(&map) {
                let dst = tmp.join("System.map");
                fs::copy(&map, &dst).map_err(io(&map))?;
                make_writable(&dst)?;
            }
            Ok(())
        })
    }

    /// Install scheduler binaries for a kernel (atomic per file).
    pub fn install_scheduler(&self, kernel: &str, name: &str, binary: &Path) -> Result<PathBuf> {
        validate_name(kernel)?;
        validate_name(name)?;
        install_binary(&self.schedulers_dir(kernel), name, binary)
    }

    /// Scheduler binaries cached for a kernel, sorted by name.
    pub fn list_schedulers(&self, kernel: &str) -> Result<Vec<PathBuf>> {
        let dir = self.schedulers_dir(kernel);
        let Some(entries) = read_dir_if_present(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Where schedulers built with cargo live: they are CO-RE binaries,
    /// one build for every kernel (`<root>/crate-schedulers/NAME/VERSION/NAME`).
    pub fn crate_schedulers_dir(&self) -> PathBuf {
        self.root.join("crate-schedulers")
    }

    /// Install a cargo-built scheduler as `name` `version` (atomic).
    pub fn install_crate_scheduler(
        &self,
        name: &str,
        version: &str,
        binary: &Path,
    ) -> Result<PathBuf> {
        validate_name(name)?;
        validate_name(version)?;
        install_binary(
            &self.crate_schedulers_dir().join(name).join(version),
            name,
            binary,
        )
    }

    /// A cargo-built scheduler: `version`, or the newest cached.
    pub fn crate_scheduler(&self, name: &str, version: Option<&str>) -> Option<PathBuf> {
        validate_name(name).ok()?;
        let dir = self.crate_schedulers_dir().join(name);
        if let Some(v) = version {
            validate_name(v).ok()?;
            let p = dir.join(v).join(name);
            return p.is_file().then_some(p);
        }
        let mut versions: Vec<String> = fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|v| validate_name(v).is_ok() && dir.join(v).join(name).is_file())
            .collect();
        versions.sort_by(|a, b| version_cmp(b, a));
        versions.first().map(|v| dir.join(v).join(name))
    }

    /// Every cargo-built scheduler: (name, version, path), sorted.
    pub fn list_crate_schedulers(&self) -> Result<Vec<(String, String, PathBuf)>> {
        let root = self.crate_schedulers_dir();
        let Some(names) = read_dir_if_present(&root)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for n in names.filter_map(|e| e.ok()) {
            let name = n.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_err() {
                continue;
            }
            let Ok(vs) = fs::read_dir(n.path()) else {
                continue;
            };
            for v in vs.filter_map(|e| e.ok()) {
                let version = v.file_name().to_string_lossy().into_owned();
                let bin = v.path().join(&name);
                if validate_name(&version).is_ok() && bin.is_file() {
                    out.push((name.clone(), version, bin));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| version_cmp(&a.1, &b.1)));
        Ok(out)
    }

    /// Kernel names that have a schedulers directory.
    pub fn scheduler_kernels(&self) -> Result<Vec<String>> {
        let dir = self.root.join("schedulers");
        let Some(entries) = read_dir_if_present(&dir)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        out.sort_by(|a, b| version_cmp(b, a));
        Ok(out)
    }
}

/// Copy `binary` to `dir/name` atomically (a hidden temporary, then a
/// rename), writable so a later install can replace it.
fn install_binary(dir: &Path, name: &str, binary: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::copy(binary, &tmp).map_err(io(binary))?;
    make_writable(&tmp)?;
    let dest = dir.join(name);
    fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// A directory's entries, or `None` when it does not exist (yet).
fn read_dir_if_present(dir: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(dir)(e)),
    }
}

fn make_writable(p: &Path) -> Result<()> {
    let mut perm = fs::metadata(p).map_err(io(p))?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(p, perm).map_err(io(p))
}

fn file_len(p: &Path) -> Result<u64> {
    Ok(fs::metadata(p).map_err(io(p))?.len())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short name for imported artifacts: the directory's name when it looks
/// like a version, else `major.minor` from the config header.
fn derive_name(dir: &Path, config: &str) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if validate_name(&base).is_ok() && base.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return base;
    }
    match crate::kconfig::kernel_version(config) {
        Some(v) => v.split('.').take(2).collect::<Vec<_>>().join("."),
        None => base,
    }
}

/// Check a directory holds a bootable bzImage and a vmlinux with `.symtab`,
/// `.strtab` and `.BTF`.
pub fn validate_kernel_dir(dir: &Path) -> Result<KernelArtifacts> {
    let invalid = |source| CacheError::Invalid {
        dir: dir.to_path_buf(),
        source,
    };
    let bzimage = dir.join("bzImage");
    let vmlinux = dir.join("vmlinux");
    crate::artifact::check_bzimage(&bzimage).map_err(invalid)?;
    crate::artifact::check_vmlinux(&vmlinux).map_err(invalid)?;
    let config = dir.join("config");
    Ok(KernelArtifacts {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bzimage,
        vmlinux,
        config: config.is_file().then_some(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{fake_kernel, tiny_elf};

    #[test]
    fn cache_root_order() {
        let r = |a, b, c| cache_root_from(a, b, c).unwrap();
        assert_eq!(r(Some("/k"), Some("/x"), Some("/h")), PathBuf::from("/k"));
        assert_eq!(
            r(Some(""), Some("/x"), Some("/h")),
            PathBuf::from("/x/ktstr")
        );
        assert_eq!(r(None, None, Some("/h")), PathBuf::from("/h/.cache/ktstr"));
        assert!(matches!(
            cache_root_from(None, Some(""), None),
            Err(CacheError::NoCacheDir)
        ));
    }

    #[test]
    fn import_lays_out_manifest_and_lists_newest_first() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path().join("cache"));
        fake_kernel(&t.path().join("src/6.12"), "6.12.117");
        fake_kernel(&t.path().join("src/7.2"), "7.2.13");
        let m = cache
            .import_kernel(&t.path().join("src/6.12"), None)
            .unwrap();
        assert_eq!(m.name, "6.12");
        assert_eq!(m.version, "6.12.117");
        assert_eq!(m.sizes.bzimage, 0x400);
        assert_eq!(m.config_sha256.len(), 64);
        cache
            .import_kernel(&t.path().join("src/7.2"), None)
            .unwrap();
        let names: Vec<_> = cache
            .list_kernels()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["7.2", "6.12"]);
        let dir = cache.kernel_dir("7.2");
        for f in ["bzImage", "vmlinux", "config", "manifest.json"] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        // Re-import replaces in place and leaves no temporaries.
        cache
            .import_kernel(&t.path().join("src/7.2"), None)
            .unwrap();
        let strays: Vec<_> = fs::read_dir(cache.kernels_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
        assert_eq!(cache.default_kernel().unwrap().unwrap().name, "7.2");
        // A debug flavor and a distro kernel sort newer but never become
        // the default while a plain build is cached.
        for n in ["7.2-debug", "debian-7.3-cloud"] {
            cache
                .import_kernel(&t.path().join("src/7.2"), Some(n))
                .unwrap();
        }
        assert_eq!(cache.default_kernel().unwrap().unwrap().name, "7.2");
        cache.remove_kernel("7.2").unwrap();
        cache.remove_kernel("6.12").unwrap();
        // With only those cached, the newest of them is still a default.
        assert!(cache.default_kernel().unwrap().is_some());
    }

    #[test]
    fn plain_versions_are_bare_numbers() {
        for n in ["7.2", "6.12.117", "7"] {
            assert!(is_plain_version(n), "{n}");
        }
        for n in ["", "7.2-debug", "debian-7.2-cloud", "7..2", "7.2."] {
            assert!(!is_plain_version(n), "{n}");
        }
    }

    #[test]
    fn import_rejects_a_vmlinux_without_btf() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("7.2");
        fake_kernel(&src, "7.2.13");
        fs::write(src.join("vmlinux"), tiny_elf(&[".symtab", ".strtab"])).unwrap();
        let err = Cache::at(t.path().join("c"))
            .import_kernel(&src, None)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(".BTF") && msg.contains("CONFIG_DEBUG_INFO_BTF"),
            "{msg}"
        );
        fs::write(src.join("bzImage"), b"not a kernel").unwrap();
        let msg = Cache::at(t.path().join("c"))
            .import_kernel(&src, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bzImage"), "{msg}");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "../x", ".hidden", "a/b", "x y"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("7.2").unwrap();
        assert_eq!(version_cmp("7.2", "6.12"), std::cmp::Ordering::Greater);
        assert_eq!(version_cmp("6.12", "6.9"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn lock_serialises_installs() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path());
        let held = cache.lock("kernel-7.2").unwrap();
        let c2 = cache.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let _l = c2.lock("kernel-7.2").unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        h.join().unwrap();
    }
}
