//! `ktstr kernel …`: build, import, list and locate test kernels.

use super::{Cli, cache};
use clap::Subcommand;
use ktstr_kernels::provision::kernel::{self, KernelBuildOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum KernelCmd {
    /// Build a test kernel from Debian's linux-source package (or --source)
    /// with ktstr's config fragment, verify the config, and install
    /// bzImage, a DWARF-stripped vmlinux (.symtab, .strtab, .BTF kept),
    /// config and manifest.json into the cache. Missing build tools are
    /// installed with apt-get when running as root.
    Build {
        /// Kernel version to build: 7.2 or 6.12.
        #[arg(long, default_value = kernel::DEFAULT_VERSION)]
        version: String,
        /// Build this existing kernel tree instead of downloading one.
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Parallel make jobs [default: number of CPUs].
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Also keep the unstripped vmlinux as vmlinux.debug (DWARF; needed
        /// by drgn to open vmcores).
        #[arg(long)]
        keep_debug: bool,
    },
    /// Adopt prebuilt artifacts (bzImage, vmlinux, config) from a directory
    /// such as ../shared/kernels/7.2 after validating them.
    Import {
        /// Directory holding bzImage, vmlinux and config.
        dir: PathBuf,
        /// Name in the cache [default: the directory's name, or the
        /// major.minor version from the config].
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch a Debian kernel package (through a private apt state; the
    /// system's apt setup is untouched) and install it into the cache:
    /// SPEC is `debian[:VERSION][:FLAVOR]`, e.g. `debian` (the newest),
    /// `debian:7.2`, `debian:7.2:rt-amd64` [flavor default: cloud-amd64].
    /// Suites are tried in order: this machine's, its backports, sid. Its
    /// types come from the image's own .BTF (the payload is decompressed
    /// into vmlinux); its symbols are captured by booting it once
    /// (/proc/kallsyms, stored as System.map), so introspection and vmcore
    /// analysis work as on a kernel built here. Cached as e.g.
    /// `debian-7.2-cloud`; `--kernel debian:7.2` finds it (and fetches it
    /// when it is missing).
    Fetch {
        /// `debian[:VERSION][:FLAVOR]`.
        spec: String,
    },
    /// List cached kernels, newest (the default) first.
    List {
        /// Print JSON manifests.
        #[arg(long)]
        json: bool,
    },
    /// Print the directory of a cached kernel (default: the one tests use,
    /// honouring KTSTR_KERNEL).
    Path {
        /// Cached kernel name, e.g. 7.2.
        name: Option<String>,
    },
}

pub fn run(cli: &Cli, cmd: &KernelCmd) -> anyhow::Result<ExitCode> {
    let cache = cache(&cli.cache_dir)?;
    match cmd {
        KernelCmd::Build {
            version,
            source,
            jobs,
            keep_debug,
        } => {
            let mut opts = KernelBuildOptions::new(version);
            opts.source = source.clone();
            if let Some(j) = jobs {
                opts.jobs = *j;
            }
            opts.keep_debug = *keep_debug;
            let m = kernel::build(&cache, &opts)?;
            println!("{}", cache.kernel_dir(&m.name).display());
        }
        KernelCmd::Fetch { spec } => {
            let m = fetch(&cache, spec)?;
            println!("{}", cache.kernel_dir(&m.name).display());
        }
        KernelCmd::Import { dir, name } => {
            let m = cache.import_kernel(dir, name.as_deref())?;
            println!(
                "imported {} ({}) into {}",
                m.name,
                m.version,
                cache.kernel_dir(&m.name).display()
            );
        }
        KernelCmd::List { json } => {
            let all = cache.list_kernels()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!(
                    "no kernels in {}; run `ktstr kernel build` or `ktstr kernel import DIR`",
                    cache.root().display()
                );
            } else {
                for (i, m) in all.iter().enumerate() {
                    println!(
                        "{:<8} {:<12} {:>6.1} MiB bzImage  {}{}",
                        m.name,
                        m.version,
                        m.sizes.bzimage as f64 / 1048576.0,
                        m.source,
                        if i == 0 { "  (default)" } else { "" }
                    );
                }
            }
        }
        KernelCmd::Path { name } => {
            let env = std::env::var("KTSTR_KERNEL").ok();
            let arts = match name {
                Some(n) => cache.kernel(n)?,
                None => ktstr_kernels::resolve_kernel(env.as_deref(), None, &cache)?,
            };
            match arts.bzimage.parent() {
                Some(p) => println!("{}", p.display()),
                None => println!("{}", arts.bzimage.display()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fetch a Debian kernel (`debian[:VERSION][:FLAVOR]`), capture its
/// symbols by booting it once, and install it into the cache.
pub fn fetch(
    cache: &ktstr_kernels::Cache,
    spec: &str,
) -> anyhow::Result<ktstr_kernels::KernelManifest> {
    use anyhow::Context;
    let parsed = ktstr_kernels::distro::DebianSpec::parse(spec)
        .ok_or_else(|| {
            anyhow::anyhow!("{spec}: ktstr fetches Debian kernels: `debian[:VERSION][:FLAVOR]`")
        })?
        .map_err(anyhow::Error::msg)?;
    let log = kernel::log_path(cache, &format!("fetch-{}", spec.replace(':', "-")));
    let t0 = std::time::Instant::now();
    eprintln!("ktstr: fetching {spec} (log: {})", log.display());
    let staged = ktstr_kernels::provision::debian::fetch(cache, &parsed, &log)?;
    let t_fetch = t0.elapsed();
    eprintln!(
        "ktstr: {} staged in {:.1} s; booting it once to capture its symbols",
        staged.source,
        t_fetch.as_secs_f64()
    );
    let engine = ktstr_vmm::engine::select()?;
    ktstr_test::host::env::check_engine(&engine)?;
    let env = ktstr_test::host::env::VmEnv {
        cache: cache.clone(),
        kernel: ktstr_kernels::KernelArtifacts {
            name: staged.name.clone(),
            bzimage: staged.dir.join("bzImage"),
            vmlinux: staged.dir.join("vmlinux"),
            config: Some(staged.dir.join("config")),
        },
    };
    let (map, n) = ktstr_test::host::kallsyms::capture(&env, &env.kernel.vmlinux)
        .with_context(|| format!("capturing the symbols of {}", staged.source))?;
    let sm = staged.dir.join("System.map");
    std::fs::write(&sm, map).with_context(|| sm.display().to_string())?;
    let m = cache.import_kernel(&staged.dir, Some(&staged.name))?;
    let _ = std::fs::remove_dir_all(&staged.dir);
    eprintln!(
        "ktstr: installed {} ({}, {n} symbols) in {:.1} s",
        m.name,
        m.version,
        t0.elapsed().as_secs_f64()
    );
    Ok(m)
}
