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
