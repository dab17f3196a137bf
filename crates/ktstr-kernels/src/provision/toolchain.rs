//! Newer pahole and clang for 7.x kernels, run from a private root.
//!
//! 7.x kernels need pahole >= 1.26 (or every sched_ext scheduler fails to
//! load: kfuncs with implicit arguments keep their full prototype in BTF),
//! and 7.2's `scx_qmap` needs a clang newer than bookworm's 19 (BPF
//! arenas). Sid has both, built against a newer glibc than bookworm's; we
//! unpack them with their own libraries into `<cache>/work/sid-root` and
//! run them through that root's dynamic loader from small wrapper scripts.
//! Nothing is installed on the system.

use super::apt::{self, PrivateApt};
use super::{ProvisionError, output_of};
use crate::cache::Cache;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, ProvisionError>;

/// Packages for sid's pahole and its libraries.
pub const PAHOLE_PACKAGES: &[&str] = &[
    "pahole",
    "libdwarves1",
    "libbpf1",
    "libdw1t64",
    "libelf1t64",
    "libbz2-1.0",
    "libc6",
    "liblzma5",
    "libzstd1",
    "zlib1g",
];

/// Packages for sid's clang-22 beyond [`PAHOLE_PACKAGES`].
pub const CLANG_PACKAGES: &[&str] = &[
    "clang-22",
    "libclang-common-22-dev",
    "libclang-cpp22",
    "libllvm22",
    "llvm-22",
    "libedit2",
    "libffi8",
    "libgcc-s1",
    "libstdc++6",
    "libtinfo6",
    "libxml2-16",
    "libz3-4",
    "libbsd0",
    "libmd0",
];

/// Minimum pahole for 7.x kernels.
pub const MIN_PAHOLE_7X: (u32, u32) = (1, 26);

/// Parse `pahole --version` output (`v1.24`).
pub fn parse_pahole_version(s: &str) -> Option<(u32, u32)> {
    let v = s.trim().trim_start_matches('v');
    let (maj, min) = v.split_once('.')?;
    let min: String = min.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// The system pahole's version, if any.
pub fn system_pahole() -> Option<(u32, u32)> {
    parse_pahole_version(&output_of(Command::new("pahole").arg("--version"))?)
}

/// The private sid root under the cache.
pub struct SidRoot {
    root: PathBuf,
    apt_dir: PathBuf,
    bin: PathBuf,
}

impl SidRoot {
    pub fn new(cache: &Cache) -> Self {
        let w = cache.work_dir();
        Self {
            root: w.join("sid-root"),
            apt_dir: w.join("apt/sid"),
            bin: w.join("sid-bin"),
        }
    }

    fn populate(&self, packages: &[&str], stamp: &str, log: &Path) -> Result<()> {
        let stamp = self.root.join(format!(".ktstr-{stamp}"));
        if stamp.exists() {
            return Ok(());
        }
        let mirror = apt::system_mirror().ok_or_else(|| {
            ProvisionError::Failed(
                "no Debian mirror in /etc/apt/sources.list{,.d}: cannot fetch sid packages".into(),
            )
        })?;
        let apt = PrivateApt::new(&self.apt_dir, &mirror, "sid")?;
        apt.update(log)?;
        for deb in apt.download(packages, log)? {
            apt::unpack(&deb, &self.root, log)?;
        }
        fs::write(&stamp, b"").map_err(|e| ProvisionError::io(&stamp, e))
    }

    fn loader_prefix(&self, extra_libs: &[PathBuf]) -> String {
        let r = self.root.display();
        let mut libs: Vec<String> = extra_libs.iter().map(|p| p.display().to_string()).collect();
        libs.push(format!("{r}/usr/lib/x86_64-linux-gnu"));
        libs.push(format!("{r}/lib/x86_64-linux-gnu"));
        format!(
            "exec {r}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path {}",
            libs.join(":")
        )
    }

    fn write_wrapper(&self, name: &str, body: &str) -> Result<PathBuf> {
        fs::create_dir_all(&self.bin).map_err(|e| ProvisionError::io(&self.bin, e))?;
        let path = self.bin.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n"))
            .map_err(|e| ProvisionError::io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| ProvisionError::io(&path, e))?;
        Ok(path)
    }

    /// A `pahole` wrapper for `make PAHOLE=…`, checked to report >= 1.26.
    pub fn pahole(&self, log: &Path) -> Result<PathBuf> {
        self.populate(PAHOLE_PACKAGES, "pahole", log)?;
        let w = self.write_wrapper(
            "pahole",
            &format!(
                "{} {}/usr/bin/pahole \"$@\"",
                self.loader_prefix(&[]),
                self.root.display()
            ),
        )?;
        let v = output_of(Command::new(&w).arg("--version")).and_then(|s| parse_pahole_version(&s));
        match v {
            Some(v) if v >= MIN_PAHOLE_7X => Ok(w),
            other => Err(ProvisionError::Failed(format!(
                "sid pahole at {} reports {other:?}, need >= 1.26",
                w.display()
            ))),
        }
    }

    /// A `clang` wrapper (clang-22) for `make CLANG=…`.
    pub fn clang(&self, log: &Path) -> Result<PathBuf> {
        self.populate(PAHOLE_PACKAGES, "pahole", log)?;
        self.populate(CLANG_PACKAGES, "clang", log)?;
        let llvm = self.root.join("usr/lib/llvm-22");
        let w = self.write_wrapper(
            "clang",
            &format!(
                "{} {}/bin/clang -resource-dir {}/lib/clang/22 \"$@\"",
                self.loader_prefix(&[llvm.join("lib")]),
                llvm.display(),
                llvm.display()
            ),
        )?;
        match output_of(Command::new(&w).arg("--version")) {
            Some(v) if v.contains("clang version 22") => Ok(w),
            other => Err(ProvisionError::Failed(format!(
                "sid clang at {} does not run: {other:?}",
                w.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pahole_versions() {
        assert_eq!(parse_pahole_version("v1.24\n"), Some((1, 24)));
        assert_eq!(parse_pahole_version("v1.32-rc1"), Some((1, 32)));
        assert_eq!(parse_pahole_version("garbage"), None);
        assert!(parse_pahole_version("v1.24").unwrap() < MIN_PAHOLE_7X);
    }
}
