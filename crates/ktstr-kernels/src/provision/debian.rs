//! `ktstr kernel fetch debian[:VERSION][:FLAVOR]`: a Debian kernel package,
//! unpacked into a staging directory ready for the cache.
//!
//! The package comes through the private apt state ([`super::apt`]), from
//! the machine's own suite, its backports, then sid — newest matching
//! version wins. Sid splits a kernel into `linux-binary-ABI-FLAVOR`
//! (`vmlinuz`) and `linux-base-ABI-FLAVOR` (`config`); older suites ship
//! both in `linux-image-ABI-FLAVOR`. The stage holds `bzImage` (the
//! package's vmlinuz), `vmlinux` (its payload decompressed: an ELF without
//! `.symtab` but with `.BTF`), `config` and `BUILD.txt`; the symbols
//! (`System.map`) are captured by booting it, which needs the VM layer,
//! so the CLI does that before importing the stage.

use super::ProvisionError;
use super::apt::{self, PrivateApt};
use crate::cache::{Cache, version_cmp};
use crate::distro::{DebianSpec, series};
use std::fs;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, ProvisionError>;

/// Options a kernel must have for ktstr to boot it and run sched_ext
/// schedulers on it, with what each is for.
pub const REQUIRED: &[(&str, &str)] = &[
    ("CONFIG_SCHED_CLASS_EXT", "sched_ext schedulers"),
    ("CONFIG_DEBUG_INFO_BTF", "BPF CO-RE and introspection types"),
    (
        "CONFIG_VIRTIO_CONSOLE",
        "the guest-init channel (virtio-serial)",
    ),
    (
        "CONFIG_VIRTIO_PCI",
        "the guest-init channel (virtio-serial)",
    ),
    ("CONFIG_SERIAL_8250_CONSOLE", "the boot console"),
    (
        "CONFIG_BLK_DEV_INITRD",
        "booting guest-init from an initramfs",
    ),
    (
        "CONFIG_KALLSYMS_ALL",
        "symbols for introspection (kallsyms)",
    ),
];

/// A fetched kernel, staged for import.
#[derive(Debug)]
pub struct Staged {
    /// The staging directory (bzImage, vmlinux, config, BUILD.txt).
    pub dir: PathBuf,
    /// Its cache name (`debian-7.2-cloud`).
    pub name: String,
    /// `linux-binary-7.2.13+deb14-cloud-amd64 7.2.13-1 (sid)`.
    pub source: String,
    /// The kernel's version (`7.2.13`).
    pub version: String,
}

/// The kernel version in a package name (`linux-binary-7.2.13+deb14-cloud-amd64`
/// -> `7.2.13`), for a package of `flavor`; None for debug, unsigned,
/// meta or other-flavor packages.
pub fn package_version(pkg: &str, flavor: &str) -> Option<String> {
    let rest = pkg
        .strip_prefix("linux-binary-")
        .or_else(|| pkg.strip_prefix("linux-image-"))?;
    let abi = rest.strip_suffix(flavor)?.strip_suffix('-')?;
    // `7.2.13+deb14` or `6.1.0-40`: digits and dots up to the first `+`/`-`.
    let v: String = abi
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    // What follows is `+debN` or `-N`; anything else (`-rt` when asking
    // for plain `amd64`) is another flavor.
    let tail = &abi[v.len()..];
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let tail_ok = tail.is_empty()
        || tail.strip_prefix("+deb").is_some_and(digits)
        || tail.strip_prefix('-').is_some_and(digits);
    (v.split('.').count() >= 2 && !v.starts_with('.') && tail_ok).then_some(v)
}

fn matches(version: &str, want: Option<&str>) -> bool {
    match want {
        None => true,
        Some(w) => version == w || version.starts_with(&format!("{w}.")),
    }
}

/// Find, download and stage the kernel `spec` names. `log` collects the
/// apt output.
pub fn fetch(cache: &Cache, spec: &DebianSpec, log: &Path) -> Result<Staged> {
    let mirror = apt::system_mirror().ok_or_else(|| {
        ProvisionError::Failed(
            "no Debian mirror in the apt sources (/etc/apt/sources.list[.d]); \
             download the package yourself and use `ktstr kernel import FILE.deb`"
                .into(),
        )
    })?;
    let code = apt::codename();
    let suites = [code.clone(), format!("{code}-backports"), "sid".to_string()];
    // (version, package, suite index)
    let mut best: Option<(String, String, usize)> = None;
    let mut tried = Vec::new();
    let mut states = Vec::new();
    for (i, suite) in suites.iter().enumerate() {
        let st = PrivateApt::new(&cache.work_dir().join("apt").join(suite), &mirror, suite)?;
        let found = st.update(log).and_then(|_| {
            let mut names = st.pkgnames("linux-binary-")?;
            names.extend(st.pkgnames("linux-image-")?);
            Ok(names)
        });
        match found {
            Ok(names) => {
                for n in names {
                    if let Some(v) = package_version(&n, &spec.flavor)
                        && matches(&v, spec.version.as_deref())
                        && best
                            .as_ref()
                            .is_none_or(|(bv, bn, _)| {
                                version_cmp(&v, bv).is_gt()
                                    // Same version: the split package wins.
                                    || (v == *bv && n.starts_with("linux-binary-") && !bn.starts_with("linux-binary-"))
                            })
                    {
                        best = Some((v, n, i));
                    }
                }
            }
            Err(e) => tried.push(format!(
                "{suite}: {}",
                e.to_string().lines().next().unwrap_or("")
            )),
        }
        states.push(st);
    }
    let Some((version, pkg, si)) = best else {
        return Err(ProvisionError::Failed(format!(
            "no Debian kernel package for {} {} in {}{}",
            spec.version.as_deref().unwrap_or("(any version)"),
            spec.flavor,
            suites.join(", "),
            if tried.is_empty() {
                String::new()
            } else {
                format!(" (errors: {})", tried.join("; "))
            }
        )));
    };
    let st = &states[si];
    let mut want = vec![pkg.clone()];
    if let Some(rest) = pkg.strip_prefix("linux-binary-") {
        want.push(format!("linux-base-{rest}"));
    }
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    let debs = st.download(&refs, log)?;
    let pkg_version = apt::deb_version(&debs[0]).unwrap_or_default();
    let name = spec.cache_name(&series(&version));
    let stage = fresh_stage(cache, &name)?;
    let root = stage.join("root");
    for d in &debs {
        apt::unpack(d, &root, log)?;
    }
    let source = format!("{pkg} {pkg_version} ({})", st.suite());
    let cleanup = stage.clone();
    stage_root(
        stage,
        name,
        &format!("Debian package {source}"),
        |missing| {
            if missing.starts_with("CONFIG_SCHED_CLASS_EXT") {
                "Debian enables sched_ext from 7.x (sid): use `debian:7.2`, or build this \
             version with `ktstr kernel build`"
            } else {
                "ktstr cannot boot it"
            }
        },
    )
    .inspect_err(|_| {
        let _ = fs::remove_dir_all(&cleanup);
    })
}

fn fresh_stage(cache: &Cache, name: &str) -> Result<PathBuf> {
    let stage = cache.work_dir().join("stage").join(name);
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(|e| ProvisionError::io(&stage, e))?;
    }
    fs::create_dir_all(&stage).map_err(|e| ProvisionError::io(&stage, e))?;
    Ok(stage)
}

/// Turn an unpacked package tree at `stage/root` into a stage: find the
/// image and config, check the config, decompress the vmlinux.
fn stage_root(
    stage: PathBuf,
    name: String,
    source: &str,
    advice: impl Fn(&str) -> &'static str,
) -> Result<Staged> {
    let root = stage.join("root");
    let dirs = ["usr/lib/modules", "lib/modules", "boot", "."];
    let image = find_one(&root, &dirs, "vmlinuz").or_else(|_| find_one(&root, &dirs, "bzImage"))?;
    let config = find_one(&root, &dirs, "config")?;
    let config_text = fs::read_to_string(&config).map_err(|e| ProvisionError::io(&config, e))?;
    let missing: Vec<String> = REQUIRED
        .iter()
        .filter(|(opt, _)| !config_text.lines().any(|l| l == format!("{opt}=y")))
        .map(|(opt, why)| format!("{opt} ({why})"))
        .collect();
    if !missing.is_empty() {
        return Err(ProvisionError::Failed(format!(
            "{source} lacks {}; {}",
            missing.join(", "),
            advice(&missing[0])
        )));
    }
    let version = crate::kconfig::kernel_version(&config_text).unwrap_or_default();
    let bytes = fs::read(&image).map_err(|e| ProvisionError::io(&image, e))?;
    let vmlinux = crate::bzimage::extract_vmlinux(&bytes)
        .map_err(|e| ProvisionError::Failed(format!("{}: {e}", image.display())))?;
    let put = |n: &str, data: &[u8]| {
        let p = stage.join(n);
        fs::write(&p, data).map_err(|e| ProvisionError::io(&p, e))
    };
    put("bzImage", &bytes)?;
    put("vmlinux", &vmlinux)?;
    put("config", config_text.as_bytes())?;
    put(
        "BUILD.txt",
        format!(
            "{source}\nvmlinux: the bzImage payload, decompressed by ktstr (no .symtab; .BTF kept)\nSystem.map: /proc/kallsyms of a boot, at link-time addresses\n"
        )
        .as_bytes(),
    )?;
    fs::remove_dir_all(&root).map_err(|e| ProvisionError::io(&root, e))?;
    tracing::info!(%name, %source, "staged");
    Ok(Staged {
        dir: stage,
        name,
        source: source.to_string(),
        version,
    })
}

/// Stage a kernel a user brings: a `.deb` (`dpkg -x`), an `.rpm`
/// (`rpm2cpio | cpio`), or a directory holding `vmlinuz` (or a bzImage)
/// and `config`, e.g. an unpacked package or `/boot` copied aside. The
/// cache name is `name`, else `imported-<major.minor>`.
pub fn stage_package(cache: &Cache, path: &Path, name: Option<&str>, log: &Path) -> Result<Staged> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !path.exists() {
        return Err(ProvisionError::Failed(format!(
            "{}: no such file or directory",
            path.display()
        )));
    }
    let tmp_name = format!("import-{}", std::process::id());
    let stage = fresh_stage(cache, &tmp_name)?;
    let r = stage_into(cache, path, &file_name, &tmp_name, stage.clone(), name, log);
    if r.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    r
}

fn stage_into(
    cache: &Cache,
    path: &Path,
    file_name: &str,
    tmp_name: &str,
    stage: PathBuf,
    name: Option<&str>,
    log: &Path,
) -> Result<Staged> {
    let root = stage.join("root");
    if path.is_dir() {
        copy_dir_files(path, &root)?;
    } else if file_name.ends_with(".deb") {
        apt::unpack(path, &root, log)?;
    } else if file_name.ends_with(".rpm") {
        super::tools::ensure(super::tools::RPM_TOOLS, log)?;
        fs::create_dir_all(&root).map_err(|e| ProvisionError::io(&root, e))?;
        let mut c = std::process::Command::new("sh");
        c.arg("-c")
            .arg("rpm2cpio \"$1\" | cpio -idm --quiet")
            .arg("sh")
            .arg(path)
            .current_dir(&root);
        super::run_logged(&mut c, log, &format!("unpack {file_name}"))?;
    } else {
        return Err(ProvisionError::Failed(format!(
            "{}: import takes a kernel directory (bzImage + vmlinux + config, or vmlinuz + config), a .deb or an .rpm",
            path.display()
        )));
    }
    let deb = file_name.ends_with(".deb");
    let staged = stage_root(
        stage,
        tmp_name.to_string(),
        &format!("imported from {}", path.display()),
        |_| "ktstr cannot boot it",
    )
    .map_err(|e| match e {
        ProvisionError::Failed(m) if deb && m.contains("holds no config") => {
            ProvisionError::Failed(format!(
                "{m}. Debian 7.x splits a kernel into linux-binary-* (vmlinuz) and linux-base-* \
                 (config): `dpkg -x` both into one directory and import that, or use \
                 `ktstr kernel fetch debian:VERSION`"
            ))
        }
        e => e,
    })?;
    let name = match name {
        Some(n) => n.to_string(),
        None => format!("imported-{}", series(&staged.version)),
    };
    crate::cache::validate_name(&name)?;
    let dir = cache.work_dir().join("stage").join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| ProvisionError::io(&dir, e))?;
    }
    fs::rename(&staged.dir, &dir).map_err(|e| ProvisionError::io(&dir, e))?;
    Ok(Staged {
        dir,
        name,
        ..staged
    })
}

/// Copy the regular files of `from` (not recursive) into `to`.
fn copy_dir_files(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| ProvisionError::io(to, e))?;
    for e in fs::read_dir(from)
        .map_err(|e| ProvisionError::io(from, e))?
        .flatten()
    {
        let p = e.path();
        if p.is_file() {
            let dst = to.join(e.file_name());
            fs::copy(&p, &dst).map_err(|e| ProvisionError::io(&p, e))?;
        }
    }
    Ok(())
}

/// The one file named `base` (or `base-*`) under any of `dirs` (searched
/// two levels deep).
fn find_one(root: &Path, dirs: &[&str], base: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for d in dirs {
        let top = root.join(d);
        let Ok(rd) = fs::read_dir(&top) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let candidates: Vec<PathBuf> = if p.is_dir() {
                fs::read_dir(&p)
                    .map(|r| r.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default()
            } else {
                vec![p]
            };
            for c in candidates {
                let n = c.file_name().map(|n| n.to_string_lossy().into_owned());
                if c.is_file() && n.is_some_and(|n| n == base || n.starts_with(&format!("{base}-")))
                {
                    found.push(c);
                }
            }
        }
    }
    found.sort();
    found.dedup();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ProvisionError::Failed(format!(
            "the package holds no {base} (looked under {} in {})",
            dirs.join(", "),
            root.display()
        ))),
        _ => Err(ProvisionError::Failed(format!(
            "the package holds several {base} files: {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions() {
        let f = "cloud-amd64";
        assert_eq!(
            package_version("linux-binary-7.2.13+deb14-cloud-amd64", f).as_deref(),
            Some("7.2.13")
        );
        assert_eq!(
            package_version("linux-image-6.1.0-40-cloud-amd64", f).as_deref(),
            Some("6.1.0")
        );
        assert_eq!(
            package_version("linux-image-7.2.13+deb14-cloud-amd64-dbg", f),
            None
        );
        assert_eq!(package_version("linux-image-cloud-amd64", f), None);
        assert_eq!(
            package_version("linux-image-7.2.13+deb14-rt-amd64", f),
            None
        );
        assert_eq!(
            package_version("linux-image-7.2.13+deb14-rt-amd64", "amd64"),
            None
        );
        assert_eq!(
            package_version("linux-image-7.2.13+deb14-amd64", "amd64").as_deref(),
            Some("7.2.13")
        );
        assert!(matches("7.2.13", Some("7.2")));
        assert!(!matches("7.20.1", Some("7.2")));
        assert!(matches("7.2.13", None));
    }
}
