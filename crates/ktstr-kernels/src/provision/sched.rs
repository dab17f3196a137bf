//! `ktstr sched build`: `scx_simple` and `scx_qmap` from a kernel source's
//! `tools/sched_ext`, BPF compiled with a clang that kernel accepts, the
//! userspace part with gcc, relinked statically, installed into the cache.

use super::kernel::{fetch_source, log_path, tree_version};
use super::toolchain::SidRoot;
use super::{ProvisionError, run_logged, tools};
use crate::artifact::is_static_elf;
use crate::cache::Cache;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, ProvisionError>;

/// The schedulers ktstr builds.
pub const SCHEDULERS: &[&str] = &["scx_simple", "scx_qmap"];

/// The clang to compile BPF with for a kernel: sid's clang-22 for 7.x
/// (7.2's `scx_qmap` uses BPF arenas, which clang-19 miscompiles for the
/// verifier), bookworm's clang-19 otherwise.
fn clang_for(cache: &Cache, version: &str, log: &Path) -> Result<PathBuf> {
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 7 {
        return SidRoot::new(cache).clang(log);
    }
    tools::ensure(
        &[tools::Tool {
            probe: "clang-19",
            package: "clang-19",
        }],
        log,
    )?;
    Ok(PathBuf::from("clang-19"))
}

/// Build the schedulers for cached kernel `kernel` (source: `source`, or
/// the tree `ktstr kernel build` left in the cache, or a fresh download).
pub fn build(
    cache: &Cache,
    kernel: &str,
    source: Option<&Path>,
    jobs: usize,
) -> Result<Vec<PathBuf>> {
    let arts = cache.kernel(kernel)?;
    let log = log_path(cache, &format!("sched-{kernel}"));
    eprintln!(
        "ktstr: building schedulers for kernel {kernel} (log: {})",
        log.display()
    );
    tools::ensure(tools::SCHED_TOOLS, &log)?;
    // A distribution kernel (`debian-7.2-cloud`) takes the schedulers of
    // its series' source (`linux-source-7.2`), built against its own BTF.
    let series = match cache.manifest(kernel) {
        Ok(m) if crate::cache::Cache::origin(&m) != "built" => crate::distro::series(&m.version),
        _ => kernel.to_string(),
    };
    let tree = match source {
        Some(s) => s.to_path_buf(),
        None => fetch_source(cache, &series, &log)?.0,
    };
    let tv = tree_version(&tree)?;
    if tv != series {
        return Err(ProvisionError::Failed(format!(
            "{} is a {tv} tree, but the schedulers are for kernel {kernel}",
            tree.display()
        )));
    }
    let clang = clang_for(cache, &series, &log)?;
    let sched_dir = tree.join("tools/sched_ext");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&sched_dir)
        .arg(format!("-j{}", jobs.max(1)))
        .arg(format!("CLANG={}", clang.display()))
        .arg("CC=gcc")
        .arg(format!("VMLINUX_BTF={}", arts.vmlinux.display()))
        .args(SCHEDULERS);
    run_logged(&mut make, &log, "make -C tools/sched_ext")?;
    let obj = sched_dir.join("build/obj");
    let libbpf = obj.join("libbpf/libbpf.a");
    let out_dir = cache.work_dir().join("sched-out").join(kernel);
    fs::create_dir_all(&out_dir).map_err(|e| ProvisionError::io(&out_dir, e))?;
    let mut installed = Vec::new();
    for s in SCHEDULERS {
        let o = obj.join(format!("sched_ext/{s}.o"));
        let out = out_dir.join(s);
        let mut link = Command::new("gcc");
        link.arg("-static")
            .arg("-o")
            .arg(&out)
            .arg(&o)
            .arg(&libbpf)
            .args(["-lelf", "-lz", "-lzstd", "-lpthread"]);
        run_logged(&mut link, &log, &format!("link {s} statically"))?;
        let mut strip = Command::new("strip");
        strip.arg(&out);
        run_logged(&mut strip, &log, &format!("strip {s}"))?;
        let data = fs::read(&out).map_err(|e| ProvisionError::io(&out, e))?;
        match is_static_elf(&data) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ProvisionError::Failed(format!(
                    "{} is not static after relinking",
                    out.display()
                )));
            }
            Err(e) => return Err(ProvisionError::Failed(format!("{}: {e}", out.display()))),
        }
        installed.push(cache.install_scheduler(kernel, s, &out)?);
    }
    for p in &installed {
        eprintln!("ktstr: installed {}", p.display());
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_on_real_binaries() {
        let sh = fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh).unwrap(), "/bin/sh is dynamic");
        let shared =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/schedulers/7.2/scx_simple");
        match fs::read(&shared) {
            Ok(d) => assert!(is_static_elf(&d).unwrap()),
            Err(_) => eprintln!("skipped static half: {} not present", shared.display()),
        }
        assert!(is_static_elf(b"nope").is_err());
    }
}
