//! `ktstr sched build --crate` / `--workspace`: sched_ext schedulers
//! built with cargo — a published crate (`cargo install NAME@VERSION`) or
//! one package of the author's own workspace (`cargo build --release -p`)
//! — as cargo builds them (dynamically linked; the VM gets the library
//! closure). BPF is compiled with bookworm's clang-19 through
//! `BPF_CLANG`; one shared target directory keeps rebuilds incremental.
//! The result is cached once for every kernel (CO-RE):
//! `<cache>/crate-schedulers/NAME/VERSION/NAME`.

use super::{ProvisionError, run_logged, tools};
use crate::cache::Cache;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, ProvisionError>;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CargoScheduler {
    /// A crate from crates.io: `NAME` or `NAME@VERSION`.
    Crate {
        name: String,
        version: Option<String>,
    },
    /// Package `package` of the cargo workspace at `dir`.
    Workspace { dir: PathBuf, package: String },
}

impl CargoScheduler {
    /// Parse `NAME[@VERSION]`.
    pub fn from_crate_spec(spec: &str) -> Result<Self> {
        let (name, version) = match spec.split_once('@') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (spec, None),
        };
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(ProvisionError::Failed(format!(
                "`{spec}` is not a crate name (NAME or NAME@VERSION, e.g. scx_bpfland@1.1.4)"
            )));
        }
        if let Some(v) = &version
            && (v.is_empty() || crate::cache::validate_name(v).is_err())
        {
            return Err(ProvisionError::Failed(format!(
                "`{spec}`: bad version `{v}` (e.g. scx_bpfland@1.1.4)"
            )));
        }
        Ok(Self::Crate {
            name: name.to_string(),
            version,
        })
    }

    /// The binary's (and package's) name.
    pub fn name(&self) -> &str {
        match self {
            Self::Crate { name, .. } => name,
            Self::Workspace { package, .. } => package,
        }
    }
}

/// The clang BPF is compiled with (scx's build needs >= 16).
const BPF_CLANG: tools::Tool = tools::Tool {
    probe: "clang-19",
    package: "clang-19",
};

/// Build `what` and install it into the cache; returns the cached path.
pub fn build(cache: &Cache, what: &CargoScheduler, jobs: usize) -> Result<PathBuf> {
    let name = what.name().to_string();
    let log = super::kernel::log_path(cache, &format!("sched-cargo-{name}"));
    eprintln!(
        "ktstr: building scheduler {name} with cargo (log: {})",
        log.display()
    );
    tools::ensure(tools::SCHED_TOOLS, &log)?;
    tools::ensure(&[BPF_CLANG], &log)?;
    let work = cache.work_dir().join("cargo-sched");
    // `clang` on PATH for build scripts that do not read BPF_CLANG.
    let bin = work.join("bin");
    fs::create_dir_all(&bin).map_err(|e| ProvisionError::io(&bin, e))?;
    let link = bin.join("clang");
    if fs::symlink_metadata(&link).is_err() {
        let target = tools::find_on_path(BPF_CLANG.probe).ok_or_else(|| {
            ProvisionError::Failed(format!(
                "{} is not on PATH after installing it",
                BPF_CLANG.probe
            ))
        })?;
        std::os::unix::fs::symlink(&target, &link).map_err(|e| ProvisionError::io(&link, e))?;
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let target_dir = work.join("target");
    let (binary, version) = match what {
        CargoScheduler::Crate { name, version } => {
            let root = work.join("root").join(name);
            let spec = match version {
                Some(v) => format!("{name}@{v}"),
                None => name.clone(),
            };
            let mut c = Command::new("cargo");
            c.arg("install")
                .arg("--locked")
                .arg("--force")
                .arg("--root")
                .arg(&root)
                .arg("-j")
                .arg(jobs.max(1).to_string())
                .arg(&spec);
            cargo_env(&mut c, &path, &target_dir);
            run_logged(&mut c, &log, &format!("cargo install {spec}"))?;
            let v = installed_version(&root, name)?;
            (root.join("bin").join(name), v)
        }
        CargoScheduler::Workspace { dir, package } => {
            let manifest = dir.join("Cargo.toml");
            if !manifest.is_file() {
                return Err(ProvisionError::Failed(format!(
                    "{} has no Cargo.toml (--workspace takes the directory of a cargo workspace)",
                    dir.display()
                )));
            }
            let mut c = Command::new("cargo");
            c.arg("build")
                .arg("--release")
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("-p")
                .arg(package)
                .arg("-j")
                .arg(jobs.max(1).to_string());
            cargo_env(&mut c, &path, &target_dir);
            run_logged(&mut c, &log, &format!("cargo build -p {package}"))?;
            (
                target_dir.join("release").join(package),
                "workspace".to_string(),
            )
        }
    };
    if !binary.is_file() {
        return Err(ProvisionError::Failed(format!(
            "cargo finished but {} does not exist (is `{name}` the binary's name?)",
            binary.display()
        )));
    }
    let dest = cache.install_crate_scheduler(&name, &version, &binary)?;
    eprintln!("ktstr: installed {}", dest.display());
    Ok(dest)
}

fn cargo_env(c: &mut Command, path: &str, target_dir: &Path) {
    c.env("PATH", path)
        .env("BPF_CLANG", BPF_CLANG.probe)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never");
}

/// The version `cargo install` recorded for `name` under `root`
/// (`.crates2.json`: `"NAME VERSION (source)"` keys).
fn installed_version(root: &Path, name: &str) -> Result<String> {
    let f = root.join(".crates2.json");
    let text = fs::read_to_string(&f).map_err(|e| ProvisionError::io(&f, e))?;
    parse_crates2(&text, name)
        .ok_or_else(|| ProvisionError::Failed(format!("{}: no entry for {name}", f.display())))
}

fn parse_crates2(text: &str, name: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("installs")?.as_object()?.keys().find_map(|k| {
        let mut it = k.split(' ');
        (it.next() == Some(name))
            .then(|| it.next().map(str::to_string))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_specs_are_checked() {
        assert_eq!(
            CargoScheduler::from_crate_spec("scx_bpfland@1.1.4").unwrap(),
            CargoScheduler::Crate {
                name: "scx_bpfland".into(),
                version: Some("1.1.4".into())
            }
        );
        assert_eq!(
            CargoScheduler::from_crate_spec("scx_lavd").unwrap().name(),
            "scx_lavd"
        );
        for bad in ["", "a/b", "x@", "x@../y", "../x", "a b"] {
            assert!(CargoScheduler::from_crate_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_from_cargo_install_records() {
        let t = r#"{"installs":{"scx_bpfland 1.1.4 (registry+https://github.com/rust-lang/crates.io-index)":{"bins":["scx_bpfland"]}}}"#;
        assert_eq!(parse_crates2(t, "scx_bpfland").as_deref(), Some("1.1.4"));
        assert_eq!(parse_crates2(t, "scx_lavd"), None);
        assert_eq!(parse_crates2("not json", "x"), None);
    }
}
