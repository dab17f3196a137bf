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
    /// `debug` adds lockdep and atomic-sleep checking (as the scx CI runs)
    /// and names the kernel `<version>-debug`.
    pub flavor: Flavor,
    /// A config fragment of the user's, merged after ktstr's and verified
    /// the same way.
    pub extra_kconfig: Option<PathBuf>,
}

/// Which kernel configuration on top of ktstr's fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Default,
    /// + [`DEBUG_FRAGMENT`].
    Debug,
}

/// What the `debug` flavor adds: the lock and sleep checkers the scx
/// project's CI kernels run with.
pub const DEBUG_FRAGMENT: &str = "\
# ktstr debug flavor: lock correctness and sleeping-in-atomic checks
CONFIG_PROVE_LOCKING=y
CONFIG_DEBUG_LOCKDEP=y
CONFIG_DEBUG_ATOMIC_SLEEP=y
";

impl KernelBuildOptions {
    /// The fragment this build merges: ktstr's, the flavor's, the user's.
    pub fn fragment(&self) -> Result<String> {
        let mut f = config::FRAGMENT.to_string();
        if self.flavor == Flavor::Debug {
            f.push('\n');
            f.push_str(DEBUG_FRAGMENT);
        }
        if let Some(p) = &self.extra_kconfig {
            let extra = fs::read_to_string(p).map_err(|e| ProvisionError::io(p, e))?;
            f.push_str(&format!("\n# from {}\n", p.display()));
            f.push_str(&extra);
        }
        Ok(f)
    }

    /// The cache name of a build of a `version` tree.
    pub fn cache_name(&self, version: &str) -> String {
        match self.flavor {
            Flavor::Default => version.to_string(),
            Flavor::Debug => format!("{version}-debug"),
        }
    }
}

/// A source tree's identity for caching: `git HEAD` when the tree is a
/// clean git checkout; None when it is dirty or not a git tree (then it is
/// always rebuilt).
pub fn tree_identity(tree: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(tree)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
    dirty.is_empty().then_some(head)
}

impl KernelBuildOptions {
    pub fn new(version: &str) -> Self {
        Self {
            version: version.to_string(),
            source: None,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_debug: false,
            flavor: Flavor::Default,
            extra_kconfig: None,
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
    let fragment = opts.fragment()?;
    let frag_sha = crate::cache::hex(&<sha2::Sha256 as sha2::Digest>::digest(fragment.as_bytes()));
    let name = opts.cache_name(&tree_version(&tree)?);
    validate_name(&name)?;
    let _lock = cache.lock(&format!("kernel-{name}"))?;
    // A clean git tree is built once per HEAD and fragment.
    let source_desc = match (&opts.source, opts.source.as_deref().and_then(tree_identity)) {
        (Some(dir), Some(head)) => {
            let desc = format!(
                "tree {} at git {head}, fragment {}",
                dir.display(),
                &frag_sha[..12]
            );
            if cache.manifest(&name).is_ok_and(|m| m.source == desc) {
                eprintln!("ktstr: kernel {name} is already built from {desc}");
                return Ok(cache.manifest(&name)?);
            }
            desc
        }
        (Some(dir), None) => format!(
            "tree {} (not a clean git checkout: rebuilt every time), fragment {}",
            dir.display(),
            &frag_sha[..12]
        ),
        (None, _) if opts.flavor != Flavor::Default || opts.extra_kconfig.is_some() => {
            format!("{source_desc}, fragment {}", &frag_sha[..12])
        }
        (None, _) => source_desc,
    };
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
    fs::write(&frag, &fragment).map_err(|e| ProvisionError::io(&frag, e))?;
    let mut merge = Command::new(tree.join("scripts/kconfig/merge_config.sh"));
    merge.current_dir(&tree).arg("-m").arg(".config").arg(&frag);
    run_logged(&mut merge, &log, "merge ktstr.config")?;
    run_logged(&mut make(&["olddefconfig"]), &log, "make olddefconfig")?;
    let dot_config_path = tree.join(".config");
    let dot_config = fs::read_to_string(&dot_config_path)
        .map_err(|e| ProvisionError::io(&dot_config_path, e))?;
    let bad = config::verify(&fragment, &dot_config);
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

    #[test]
    fn debug_flavor_and_extra_fragment() {
        let mut o = KernelBuildOptions::new("7.2");
        assert_eq!(o.cache_name("7.2"), "7.2");
        assert!(!o.fragment().unwrap().contains("CONFIG_PROVE_LOCKING=y"));
        o.flavor = Flavor::Debug;
        assert_eq!(o.cache_name("7.2"), "7.2-debug");
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.config");
        fs::write(&extra, "CONFIG_KASAN=y\n").unwrap();
        o.extra_kconfig = Some(extra);
        let f = o.fragment().unwrap();
        assert!(f.contains("CONFIG_PROVE_LOCKING=y") && f.contains("CONFIG_KASAN=y"));
        assert!(f.starts_with(config::FRAGMENT));
        // The debug fragment's `=y` wins over the base's "is not set",
        // so the post-build verification asks for lockdep.
        let prove = config::values(&f).remove("CONFIG_PROVE_LOCKING");
        assert_eq!(prove.as_deref(), Some("y"));
        o.extra_kconfig = Some(dir.path().join("missing"));
        assert!(o.fragment().is_err());
    }

    #[test]
    fn tree_identity_is_head_only_when_clean() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(tree_identity(d), None, "not a git tree");
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(d)
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
        };
        if !git(&["init", "-q"]).status.success() {
            eprintln!("skipped: git unavailable");
            return;
        }
        fs::write(d.join("Makefile"), "x\n").unwrap();
        git(&["add", "Makefile"]);
        git(&["commit", "-qm", "one"]);
        let head = tree_identity(d).expect("clean tree has an identity");
        assert_eq!(head.len(), 40);
        fs::write(d.join("Makefile"), "y\n").unwrap();
        assert_eq!(tree_identity(d), None, "dirty tree is rebuilt");
    }
}
