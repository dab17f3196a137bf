//! `ktstr sched …`: build, import and list sched_ext schedulers.

use super::{Cli, cache};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum SchedCmd {
    /// Build schedulers into the cache. Without --crate/--workspace:
    /// static scx_simple and scx_qmap from the kernel's tools/sched_ext
    /// (BPF with a clang that kernel's verifier accepts: sid's clang-22
    /// for 7.x, clang-19 for 6.12). With --crate: a published scheduler
    /// (`cargo install`, e.g. scx_bpfland, scx_lavd, scx_cosmos); with
    /// --workspace DIR -p NAME: one from your own cargo workspace. Cargo
    /// builds are dynamically linked, CO-RE, cached once for every kernel,
    /// and used by name: `ktstr run --scheduler scx_bpfland`.
    Build {
        /// A crates.io scheduler, NAME or NAME@VERSION (e.g. scx_bpfland@1.1.4).
        #[arg(long = "crate", value_name = "NAME[@VERSION]", conflicts_with_all = ["workspace", "kernel", "source"])]
        krate: Option<String>,
        /// A cargo workspace directory to build one package (-p) from.
        #[arg(long, value_name = "DIR", requires = "package", conflicts_with_all = ["kernel", "source"])]
        workspace: Option<PathBuf>,
        /// The package (and binary) to build from --workspace.
        #[arg(long, short = 'p', value_name = "NAME", requires = "workspace")]
        package: Option<String>,
        /// Cached kernel to build for [default: the default kernel].
        #[arg(long)]
        kernel: Option<String>,
        /// Kernel source tree [default: the one `ktstr kernel build` left
        /// in the cache, else a fresh download].
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Parallel make jobs [default: number of CPUs].
        #[arg(long, short)]
        jobs: Option<usize>,
    },
    /// Adopt prebuilt static scheduler binaries from a directory such as
    /// ../shared/schedulers/7.2.
    Import {
        /// Directory of scheduler binaries.
        dir: PathBuf,
        /// Cached kernel they belong to [default: the directory's name].
        #[arg(long)]
        kernel: Option<String>,
    },
    /// List cached schedulers per kernel.
    List,
}

pub fn run(cli: &Cli, cmd: &SchedCmd) -> anyhow::Result<ExitCode> {
    let cache = cache(&cli.cache_dir)?;
    match cmd {
        SchedCmd::Build {
            krate,
            workspace,
            package,
            kernel,
            source,
            jobs,
        } => {
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            use ktstr_kernels::provision::cargo_sched::{self, CargoScheduler};
            let what = match (krate, workspace, package) {
                (Some(c), _, _) => Some(CargoScheduler::from_crate_spec(c)?),
                (None, Some(dir), Some(p)) => Some(CargoScheduler::Workspace {
                    dir: dir.clone(),
                    package: p.clone(),
                }),
                _ => None,
            };
            if let Some(what) = what {
                let p = cargo_sched::build(&cache, &what, jobs)?;
                let size = std::fs::metadata(&p).map_or(0, |m| m.len());
                println!("{} ({:.1} MB)", p.display(), size as f64 / 1e6);
                return Ok(ExitCode::SUCCESS);
            }
            let k = match kernel {
                Some(k) => k.clone(),
                None => {
                    cache
                        .default_kernel()?
                        .ok_or_else(|| {
                            anyhow::anyhow!("no cached kernel: run `ktstr kernel build` first")
                        })?
                        .name
                }
            };
            ktstr_kernels::provision::sched::build(&cache, &k, source.as_deref(), jobs)?;
        }
        SchedCmd::Import { dir, kernel } => {
            let k = match kernel {
                Some(k) => k.clone(),
                None => dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| anyhow::anyhow!("{}: pass --kernel NAME", dir.display()))?,
            };
            let mut n = 0;
            for entry in std::fs::read_dir(dir)? {
                let p = entry?.path();
                let Some(name) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                if !p.is_file() || name.starts_with('.') {
                    continue;
                }
                let data = std::fs::read(&p)?;
                match ktstr_kernels::artifact::is_static_elf(&data) {
                    Ok(true) => {}
                    Ok(false) => anyhow::bail!(
                        "{} is not statically linked; test VMs need static schedulers",
                        p.display()
                    ),
                    Err(e) => anyhow::bail!("{}: {e}", p.display()),
                }
                let dest = cache.install_scheduler(&k, &name, &p)?;
                println!("imported {}", dest.display());
                n += 1;
            }
            anyhow::ensure!(n > 0, "{} holds no scheduler binaries", dir.display());
        }
        SchedCmd::List => {
            let kernels = cache.scheduler_kernels()?;
            if kernels.is_empty() && cache.list_crate_schedulers()?.is_empty() {
                println!(
                    "no schedulers in {}; run `ktstr sched build`",
                    cache.root().display()
                );
            }
            for k in kernels {
                for p in cache.list_schedulers(&k)? {
                    println!("{k:<8} {}", p.display());
                }
            }
            for (name, version, p) in cache.list_crate_schedulers()? {
                println!("{:<8} {name}@{version} {}", "any", p.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
