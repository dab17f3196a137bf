//! Which kernel and which scheduler binaries a run boots: `KTSTR_KERNEL`
//! or an explicit request (a path or a cached name) > the cache's newest >
//! an error naming the command to run; schedulers from `KTSTR_SCHED_DIR`,
//! then the cache. A path that does not exist is always an error naming
//! the path; only a bare name that is not cached may be provisioned.

use crate::cache::{Cache, CacheError, KernelArtifacts, validate_name};
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, CacheError>;

/// How a kernel was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRequest {
    /// A directory (bzImage + vmlinux) or a bzImage with vmlinux beside it.
    Path(PathBuf),
    /// A cached kernel's name (`7.2`).
    Name(String),
}

impl KernelRequest {
    /// A value with a `/`, or starting with `.` or `~`, is a path; anything
    /// else is a name.
    pub fn parse(value: &str) -> Self {
        if value.contains('/') || value.starts_with('.') || value.starts_with('~') {
            KernelRequest::Path(PathBuf::from(value))
        } else {
            KernelRequest::Name(value.to_string())
        }
    }
}

fn dir_name(p: &Path, fallback: &str) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.to_string())
}

/// Artifacts from a kernel directory or a bzImage path.
pub fn kernel_from_path(value: &str, p: &Path) -> Result<KernelArtifacts> {
    let bad = |problem: String| CacheError::BadKernelPath {
        value: value.to_string(),
        problem,
    };
    let (dir, bz) = if p.is_dir() {
        (p.to_path_buf(), p.join("bzImage"))
    } else if p.is_file() {
        let dir = p.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, p.to_path_buf())
    } else {
        return Err(bad("no such file or directory".into()));
    };
    let vm = dir.join("vmlinux");
    if !bz.is_file() {
        return Err(bad(format!("no bzImage in {}", dir.display())));
    }
    if !vm.is_file() {
        return Err(bad(format!("no vmlinux in {}", dir.display())));
    }
    let cfg = dir.join("config");
    Ok(KernelArtifacts {
        name: dir_name(&dir, value),
        bzimage: bz,
        vmlinux: vm,
        config: cfg.is_file().then_some(cfg),
    })
}

/// A kernel named by `KTSTR_KERNEL`, `--kernel` or a test's `kernel`
/// attribute: a path, or the name of a cached kernel.
pub fn kernel_from_request(value: &str, cache: &Cache) -> Result<KernelArtifacts> {
    if let Some(spec) = crate::distro::DebianSpec::parse(value) {
        let spec = spec.map_err(CacheError::BadRequest)?;
        return match spec.cached_name(cache)? {
            Some(name) => cache.kernel(&name),
            None => Err(CacheError::NotFetched {
                request: value.to_string(),
                cache: cache.root().to_path_buf(),
            }),
        };
    }
    match KernelRequest::parse(value) {
        KernelRequest::Path(p) => kernel_from_path(value, &p),
        KernelRequest::Name(n) => {
            validate_name(&n)?;
            cache.kernel(&n)
        }
    }
}

/// Resolve the kernel to boot: `KTSTR_KERNEL` > an explicit request (a
/// test's `kernel` attribute, `--kernel`) > the cache's default > an error
/// naming the command to run.
pub fn resolve_kernel(
    env_value: Option<&str>,
    requested: Option<&str>,
    cache: &Cache,
) -> Result<KernelArtifacts> {
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        return kernel_from_request(v, cache);
    }
    if let Some(name) = requested {
        return kernel_from_request(name, cache);
    }
    cache.default_kernel()?.ok_or(CacheError::NoKernel {
        cache: cache.root().to_path_buf(),
    })
}

/// Resolve a scheduler binary by name: `$KTSTR_SCHED_DIR/<name>`, then the
/// cache's `schedulers/<kernel>/<name>`.
pub fn resolve_scheduler(
    name: &str,
    kernel: &str,
    sched_dir_env: Option<&str>,
    cache: &Cache,
) -> Result<PathBuf> {
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    if let Some(d) = sched_dir_env.filter(|d| !d.is_empty()) {
        candidates.push(Path::new(d).join(name));
    }
    let (base, version) = match name.split_once('@') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    if version.is_none() {
        candidates.push(cache.schedulers_dir(kernel).join(name));
        // A kernel of the same series (a Debian 7.2 beside our 7.2): the
        // schedulers are CO-RE, built against that series' headers.
        if let Ok(m) = cache.manifest(kernel) {
            let series = crate::distro::series(&m.version);
            if series != kernel && validate_name(&series).is_ok() {
                candidates.push(cache.schedulers_dir(&series).join(name));
            }
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    // Built with `ktstr sched build --crate` (one CO-RE build for every
    // kernel), `name` or `name@version`.
    if let Some(p) = cache.crate_scheduler(base, version) {
        return Ok(p);
    }
    looked.push(
        cache
            .crate_schedulers_dir()
            .join(base)
            .join(version.unwrap_or("*"))
            .join(base)
            .display()
            .to_string(),
    );
    Err(CacheError::NoScheduler {
        name: name.to_string(),
        kernel: kernel.to_string(),
        looked: looked.join(", "),
    })
}

/// Where a command is on PATH (the first match).
pub fn find_on_path(cmd: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::fake_kernel;
    use std::fs;

    #[test]
    fn resolution_order_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path().join("cache"));
        let err = resolve_kernel(None, None, &cache).unwrap_err().to_string();
        assert!(
            err.contains("ktstr kernel build") && err.contains("ktstr kernel import"),
            "{err}"
        );

        fake_kernel(&t.path().join("src/6.12"), "6.12.117");
        fake_kernel(&t.path().join("src/7.2"), "7.2.13");
        cache
            .import_kernel(&t.path().join("src/6.12"), None)
            .unwrap();
        cache
            .import_kernel(&t.path().join("src/7.2"), None)
            .unwrap();
        // Cache default: newest.
        assert_eq!(resolve_kernel(None, None, &cache).unwrap().name, "7.2");
        // Requested name beats the default.
        assert_eq!(
            resolve_kernel(None, Some("6.12"), &cache).unwrap().name,
            "6.12"
        );
        // KTSTR_KERNEL beats both: a directory, a bzImage path, a cached name.
        let own = t.path().join("own");
        fake_kernel(&own, "7.3.0");
        let d = own.to_string_lossy().into_owned();
        assert_eq!(
            resolve_kernel(Some(&d), Some("6.12"), &cache)
                .unwrap()
                .bzimage,
            own.join("bzImage")
        );
        let bz = own.join("bzImage").to_string_lossy().into_owned();
        assert_eq!(
            resolve_kernel(Some(&bz), None, &cache).unwrap().vmlinux,
            own.join("vmlinux")
        );
        assert_eq!(
            resolve_kernel(Some("6.12"), None, &cache).unwrap().name,
            "6.12"
        );
        let err = resolve_kernel(Some("/nonexistent/k"), None, &cache)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("kernel `/nonexistent/k`: no such file"),
            "{err}"
        );
        let err = resolve_kernel(None, Some("5.15"), &cache)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("7.2, 6.12") || err.contains("no such"),
            "{err}"
        );
    }

    #[test]
    fn scheduler_resolution() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path().join("cache"));
        let bin = t.path().join("scx_simple");
        fs::write(&bin, b"\x7fELF").unwrap();
        let err = resolve_scheduler("scx_simple", "7.2", None, &cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ktstr sched build --kernel 7.2"), "{err}");
        let installed = cache.install_scheduler("7.2", "scx_simple", &bin).unwrap();
        assert_eq!(
            resolve_scheduler("scx_simple", "7.2", None, &cache).unwrap(),
            installed
        );
        let own = t.path().to_string_lossy().into_owned();
        assert_eq!(
            resolve_scheduler("scx_simple", "7.2", Some(&own), &cache).unwrap(),
            bin
        );
        assert_eq!(cache.list_schedulers("7.2").unwrap(), vec![installed]);
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it_and_names_are_not_paths() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path().join("cache"));
        for typo in ["./kernels/7.2", "/no/such/dir", "~/k", "../x"] {
            let e = kernel_from_request(typo, &cache).unwrap_err();
            assert!(
                matches!(e, CacheError::BadKernelPath { .. }) && e.to_string().contains(typo),
                "{typo}: {e}"
            );
        }
        assert!(matches!(
            kernel_from_request("7.9", &cache).unwrap_err(),
            CacheError::UnknownKernel { .. }
        ));
        assert_eq!(
            KernelRequest::parse("7.2"),
            KernelRequest::Name("7.2".into())
        );
    }

    #[test]
    fn cargo_built_schedulers_resolve_by_name_and_version() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path().join("cache"));
        let bin = t.path().join("scx_bpfland");
        fs::write(&bin, b"\x7fELF").unwrap();
        let old = cache
            .install_crate_scheduler("scx_bpfland", "1.1.3", &bin)
            .unwrap();
        let new = cache
            .install_crate_scheduler("scx_bpfland", "1.1.10", &bin)
            .unwrap();
        // Newest by version, not by string order.
        assert_eq!(
            resolve_scheduler("scx_bpfland", "7.2", None, &cache).unwrap(),
            new
        );
        assert_eq!(
            resolve_scheduler("scx_bpfland@1.1.3", "6.12", None, &cache).unwrap(),
            old
        );
        let err = resolve_scheduler("scx_bpfland@9.9", "7.2", None, &cache)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--crate") && err.contains("9.9"), "{err}");
        assert!(resolve_scheduler("../x@1", "7.2", None, &cache).is_err());
        let listed = cache.list_crate_schedulers().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|(n, v, _)| format!("{n}@{v}"))
                .collect::<Vec<_>>(),
            ["scx_bpfland@1.1.3", "scx_bpfland@1.1.10"]
        );
    }
}
