//! `ktstr kernel build`: a test kernel from Debian's `linux-source-*`
//! package (or an existing tree), configured with ktstr's fragment,
//! verified, built, stripped of DWARF and installed into the cache.

use super::apt::{self, PrivateApt};
use super::toolchain::{self, SidRoot};
use super::{ProvisionError, run_logged, tools};
use crate::cache::{Cache, KernelManifest, validate_name};
use crate::kconfig as config;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type Result<T> = std::result::Result<T, ProvisionError>;

/// The kernel `ktstr kernel build` builds by default.
pub const DEFAULT_VERSION: &str = "7.2";

/// Options of one kernel build.
#[derive(Debug, Clone)]
pub struct KernelBuildOptions {
    /// Short version (`7.2`, `6.12`); names the cache entry.
    pub version: String,
    /// Build this tree instead of downloading `linux-source-<version>`.
    pub source: Option<PathBuf>,
    /// `make -j` (default: the number of CPUs).
    pub jobs: usize,
    /// Also keep the unstripped vmlinux (`vmlinux.debug`, with DWARF) for
    /// tools such as drgn that need it for vmcores.
    pub keep_debug: bool,
}

impl KernelBuildOptions {
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_string(),
            source: None,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_debug: false,
        }
    }
}

/// Major number of a short version (`7.2` -> 7).
fn major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// `VERSION.PATCHLEVEL` of a kernel tree, from its top Makefile.
pub fn tree_version(tree: &Path) -> Result<String> {
    let mk = tree.join("Makefile");
    let text = fs::read_to_string(&mk).map_err(|e| ProvisionError::io(&mk, e))?;
    let get = |key: &str| {
        text.lines().take(20).find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    match (get("VERSION"), get("PATCHLEVEL")) {
        (Some(v), Some(p)) => Ok(format!("{v}.{p}")),
        _ => Err(ProvisionError::Failed(format!(
            "{} is not a kernel tree (no VERSION/PATCHLEVEL in its Makefile)",
            tree.display()
        ))),
    }
}

/// Where a downloaded source tree of `version` lives in the cache.
pub fn source_dir(cache: &Cache, version: &str) -> PathBuf {
    cache.work_dir().join("src").join(version)
}

/// Download and unpack `linux-source-<version>`; returns the tree and the
/// package's `name version` for the manifest. The machine's own suite is
/// tried first, then sid, each through a private apt state.
pub fn fetch_source(cache: &Cache, version: &str, log: &Path) -> Result<(PathBuf, String)> {
    let base = source_dir(cache, version);
    let tree = base.join(format!("linux-source-{version}"));
    let stamp = base.join(".ktstr-source");
    if tree.join("Makefile").is_file()
        && let Ok(s) = fs::read_to_string(&stamp)
    {
        return Ok((tree, s.trim().to_string()));
    }
    let mirror = apt::system_mirror().ok_or_else(|| {
        ProvisionError::Failed("no Debian mirror in the apt sources: pass --source DIR".into())
    })?;
    let codename = apt::codename();
    let pkg = format!("linux-source-{version}");
    let mut tried = Vec::new();
    // First the machine's own apt sources as they are (e.g. 6.12 lives in
    // bookworm-security); `apt-get download` only fetches the .deb.
    let mut deb =
        match apt::download_with_system_sources(&pkg, &cache.work_dir().join("apt/system"), log) {
            Ok(d) => Some(d),
            Err(e) => {
                tried.push(format!("system sources: {}", first_line(&e.to_string())));
                None
            }
        };
    for suite in [codename.as_str(), "sid"] {
        if deb.is_some() {
            break;
        }
        let apt = PrivateApt::new(&cache.work_dir().join("apt").join(suite), &mirror, suite)?;
        let got = apt
            .update(log)
            .and_then(|_| apt.download(&[pkg.as_str()], log));
        match got {
            Ok(mut d) => {
                deb = d.pop();
                break;
            }
            Err(e) => tried.push(format!("{suite}: {}", first_line(&e.to_string()))),
        }
    }
    let deb = deb.ok_or_else(|| {
        ProvisionError::Failed(format!(
            "could not download {pkg} ({}); pass --source DIR to build an existing tree",
            tried.join("; ")
        ))
    })?;
    let pkg_version = apt::deb_version(&deb).unwrap_or_default();
    if base.exists() {
        fs::remove_dir_all(&base).map_err(|e| ProvisionError::io(&base, e))?;
    }
    let unpacked = base.join("pkg");
    apt::unpack(&deb, &unpacked, log)?;
    let tarball = unpacked.join(format!("usr/src/linux-source-{version}.tar.xz"));
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&tarball).arg("-C").arg(&base);
    run_logged(&mut tar, log, &format!("unpack {pkg}"))?;
    let _ = fs::remove_dir_all(&unpacked);
    if !tree.join("Makefile").is_file() {
        return Err(ProvisionError::Failed(format!(
            "{} did not unpack to {}",
            tarball.display(),
            tree.display()
        )));
    }
    let desc = format!("{pkg} {pkg_version}");
    fs::write(&stamp, &desc).map_err(|e| ProvisionError::io(&stamp, e))?;
    Ok((tree, desc))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The pahole to build with: the system's when new enough for this kernel,
/// else sid's through [`SidRoot`].
fn pahole_for(cache: &Cache, version: &str, log: &Path) -> Result<Option<PathBuf>> {
    if major(version) < 7 {
        return Ok(None);
    }
    match toolchain::system_pahole() {
        Some(v) if v >= toolchain::MIN_PAHOLE_7X => Ok(None),
        _ => SidRoot::new(cache).pahole(log).map(Some),
    }
}

/// The build log path for one run.
pub fn log_path(cache: &Cache, what: &str) -> PathBuf {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    cache
        .work_dir()
        .join("logs")
        .join(format!("{what}-{ts}.log"))
}

/// Build and install a kernel; returns its manifest.
pub fn build(cache: &Cache, opts: &KernelBuildOptions) -> Result<KernelManifest> {
    let start = Instant::now();
    let log = log_path(cache, &format!("kernel-{}", opts.version));
    eprintln!(
        "ktstr: building kernel {} (log: {})",
        opts.version,
        log.display()
    );
    tools::ensure(tools::KERNEL_TOOLS, &log)?;
    let (tree, source_desc) = match &opts.source {
        Some(dir) => {
            let v = tree_version(dir)?;
            if v != opts.version {
                eprintln!(
                    "ktstr: {} is a {v} tree; naming the kernel {v}",
                    dir.display()
                );
            }
            (dir.clone(), format!("tree {}", dir.display()))
        }
        None => fetch_source(cache, &opts.version, &log)?,
    };
    let name = tree_version(&tree)?;
    validate_name(&name)?;
    let _lock = cache.lock(&format!("kernel-{name}"))?;
    let pahole = pahole_for(cache, &name, &log)?;

    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.arg("-C").arg(&tree);
        if let Some(p) = &pahole {
            c.arg(format!("PAHOLE={}", p.display()));
        }
        c.args(args);
        c
    };
    run_logged(&mut make(&["defconfig"]), &log, "make defconfig")?;
    run_logged(
        &mut make(&["kvm_guest.config"]),
        &log,
        "make kvm_guest.config",
    )?;
    let frag = cache.work_dir().join("ktstr.config");
    fs::write(&frag, config::FRAGMENT).map_err(|e| ProvisionError::io(&frag, e))?;
    let mut merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    merge.current_dir(&tree).arg("-m").arg(".config").arg(&frag);
    run_logged(&mut merge, &log, "merge ktstr.config")?;
    run_logged(&mut make(&["olddefconfig"]), &log, "make olddefconfig")?;
    let dot_config_path = tree.join(".config");
    let dot_config = fs::read_to_string(&dot_config_path)
        .map_err(|e| ProvisionError::io(&dot_config_path, e))?;
    let bad = config::verify(config::FRAGMENT, &dot_config);
    if !bad.is_empty() {
        return Err(ProvisionError::Config(
            bad.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join("\n  "),
        ));
    }
    let jobs = format!("-j{}", opts.jobs.max(1));
    run_logged(&mut make(&[jobs.as_str(), "bzImage"]), &log, "make bzImage")?;

    let vmlinux = tree.join("vmlinux");
    check_kfunc_btf(&vmlinux)?;
    let build_seconds = start.elapsed().as_secs();
    let manifest = cache.install_kernel(&name, &source_desc, Some(build_seconds), |tmp| {
        let cp = |from: &Path, to: &str| {
            fs::copy(from, tmp.join(to))
                .map(|_| ())
                .map_err(|e| crate::cache::CacheError::Io {
                    path: from.to_path_buf(),
                    source: e,
                })
        };
        cp(&tree.join("arch/x86/boot/bzImage"), "bzImage")?;
        cp(&dot_config_path, "config")?;
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&vmlinux)
            .arg(tmp.join("vmlinux"))
            .status()
            .map_err(|e| crate::cache::CacheError::Io {
                path: vmlinux.clone(),
                source: e,
            })?;
        if !status.success() {
            return Err(crate::cache::CacheError::Install {
                dir: tmp.to_path_buf(),
                problem: format!("objcopy --strip-debug failed: {status}"),
            });
        }
        if opts.keep_debug {
            cp(&vmlinux, "vmlinux.debug")?;
        }
        Ok(())
    })?;
    eprintln!(
        "ktstr: kernel {} ({}) installed in {} after {}s",
        manifest.name,
        manifest.version,
        cache.kernel_dir(&manifest.name).display(),
        start.elapsed().as_secs()
    );
    Ok(manifest)
}

/// Catch the pahole < 1.26 failure at build time: on kernels whose
/// sched_ext kfuncs take implicit arguments, a correct BTF shows the
/// BPF-visible prototype of `scx_bpf_create_dsq` without the trailing
/// `struct bpf_prog_aux *`; an old pahole leaves it in, and then every
/// scheduler fails to load ("func_proto ... incompatible with vmlinux").
pub fn check_kfunc_btf(vmlinux: &Path) -> Result<()> {
    let img = ktstr_introspect::image::KernelImage::open(vmlinux)
        .map_err(|e| ProvisionError::Failed(format!("{}: {e}", vmlinux.display())))?;
    let params = match img.btf().func_params("scx_bpf_create_dsq") {
        Ok(p) => p,
        Err(_) => {
            return Err(ProvisionError::Failed(format!(
                "{}: BTF has no scx_bpf_create_dsq: CONFIG_SCHED_CLASS_EXT or BTF generation failed",
                vmlinux.display()
            )));
        }
    };
    if params.iter().any(|t| t.contains("bpf_prog_aux")) {
        return Err(ProvisionError::Failed(format!(
            "{}: the BTF prototype of scx_bpf_create_dsq still has its implicit `{}` argument; \
             schedulers will not load (libbpf: func_proto incompatible with vmlinux). \
             Rebuild with pahole >= 1.26",
            vmlinux.display(),
            params.last().map(String::as_str).unwrap_or("?")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major("7.2"), 7);
        assert_eq!(major("6.12"), 6);
        let t = tempfile::tempdir().unwrap();
        fs::write(
            t.path().join("Makefile"),
            "# SPDX\nVERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\n",
        )
        .unwrap();
        assert_eq!(tree_version(t.path()).unwrap(), "7.2");
        let e = tree_version(Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent"), "{e}");
    }

    /// The prebuilt 7.2 kernel was built with a new pahole and loads
    /// schedulers: the check must accept it.
    #[test]
    fn kfunc_check_accepts_the_shared_kernels() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kernels");
        let mut seen = 0;
        for k in ["7.2", "6.12"] {
            let v = root.join(k).join("vmlinux");
            if v.is_file() {
                seen += 1;
                check_kfunc_btf(&v).unwrap();
            }
        }
        if seen == 0 {
            eprintln!("skipped: ../shared/kernels not beside the checkout");
        }
    }
}
