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
        /// Build this existing kernel tree instead of downloading one. A
        /// clean git checkout is built once per HEAD and fragment (a second
        /// build returns the cached kernel); a dirty tree is always rebuilt.
        #[arg(long, value_name = "DIR")]
        source: Option<PathBuf>,
        /// Parallel make jobs [default: number of CPUs].
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Also keep the unstripped vmlinux as vmlinux.debug (DWARF; needed
        /// by drgn to open vmcores).
        #[arg(long)]
        keep_debug: bool,
        /// `debug` adds PROVE_LOCKING, DEBUG_LOCKDEP and DEBUG_ATOMIC_SLEEP
        /// (as the scx CI kernels run) and names the kernel `<version>-debug`.
        #[arg(long, value_enum, default_value = "default")]
        flavor: FlavorArg,
        /// Merge this config fragment after ktstr's (and verify it survived
        /// olddefconfig like ktstr's own options).
        #[arg(long, value_name = "FILE")]
        extra_kconfig: Option<PathBuf>,
    },
    /// Adopt a kernel: prebuilt artifacts (bzImage, vmlinux, config) from a
    /// directory such as ../shared/kernels/7.2, validated; or a
    /// distribution's kernel — a .deb, an .rpm (Fedora, openSUSE), or a
    /// directory with vmlinuz + config — whose vmlinux is decompressed from
    /// the image and whose symbols are captured by booting it once (as
    /// `kernel fetch` does).
    Import {
        /// Kernel directory, .deb or .rpm.
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
    /// Remove cached kernels: the one named, or all but the `--keep N`
    /// most recently installed. Schedulers and other caches are kept.
    Clean {
        /// Remove this kernel.
        name: Option<String>,
        /// Keep the N most recently built, fetched or imported kernels and
        /// remove the rest.
        #[arg(long, value_name = "N", conflicts_with = "name")]
        keep: Option<usize>,
    },
    /// Print the directory of a cached kernel (default: the one tests use,
    /// honouring KTSTR_KERNEL).
    Path {
        /// Cached kernel name, e.g. 7.2.
        name: Option<String>,
    },
}

/// `--flavor`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FlavorArg {
    Default,
    Debug,
}

pub fn run(cli: &Cli, cmd: &KernelCmd) -> anyhow::Result<ExitCode> {
    let cache = cache(&cli.cache_dir)?;
    match cmd {
        KernelCmd::Build {
            version,
            source,
            jobs,
            keep_debug,
            flavor,
            extra_kconfig,
        } => {
            let mut opts = KernelBuildOptions::new(version);
            opts.flavor = match flavor {
                FlavorArg::Default => kernel::Flavor::Default,
                FlavorArg::Debug => kernel::Flavor::Debug,
            };
            opts.extra_kconfig = extra_kconfig.clone();
            opts.source = source.clone();
            if let Some(j) = jobs {
                opts.jobs = *j;
            }
            opts.keep_debug = *keep_debug;
            let m = kernel::build(&cache, &opts)?;
            println!("{}", cache.kernel_dir(&m.name).display());
        }
        KernelCmd::Fetch { spec } => {
            let m = super::provision::fetch(&cache, spec)?;
            println!("{}", cache.kernel_dir(&m.name).display());
        }
        KernelCmd::Import { dir, name } => {
            let m = if dir.is_dir() && dir.join("vmlinux").is_file() {
                cache.import_kernel(dir, name.as_deref())?
            } else {
                let log = kernel::log_path(&cache, "import");
                let staged = ktstr_kernels::provision::debian::stage_package(
                    &cache,
                    dir,
                    name.as_deref(),
                    &log,
                )?;
                super::provision::install_staged(&cache, staged, std::time::Instant::now())?
            };
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
                let w = all.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4);
                let has: Vec<String> = all
                    .iter()
                    .map(|m| {
                        let cfg = std::fs::read_to_string(cache.kernel_dir(&m.name).join("config"))
                            .unwrap_or_default();
                        let (caps, nr) = ktstr_kernels::kconfig::capabilities(&cfg);
                        let mut h: Vec<String> = caps
                            .iter()
                            .map(|(l, on)| if *on { l.to_string() } else { format!("-{l}") })
                            .collect();
                        if let Some(n) = nr {
                            h.push(format!("nr_cpus={n}"));
                        }
                        h.join(" ")
                    })
                    .collect();
                let hw = has.iter().map(String::len).max().unwrap_or(3).max(13);
                println!(
                    "{:<w$} {:<10} {:<8} {:>8}  {:<hw$}  SOURCE",
                    "NAME", "VERSION", "ORIGIN", "BZIMAGE", "HAS (-: lacks)"
                );
                for (i, (m, h)) in all.iter().zip(&has).enumerate() {
                    println!(
                        "{:<w$} {:<10} {:<8} {:>4.1} MiB  {:<hw$}  {}{}",
                        m.name,
                        m.version,
                        ktstr_kernels::Cache::origin(m),
                        m.sizes.bzimage as f64 / 1048576.0,
                        h,
                        m.source,
                        if i == 0 { "  (default)" } else { "" }
                    );
                }
            }
        }
        KernelCmd::Clean { name, keep } => {
            let doomed: Vec<String> = match (name, keep) {
                (Some(n), _) => vec![n.clone()],
                (None, Some(k)) => {
                    let mut all = cache.list_kernels()?;
                    all.sort_by_key(|m| std::cmp::Reverse(m.built_at_unix));
                    all.into_iter().skip(*k).map(|m| m.name).collect()
                }
                (None, None) => anyhow::bail!(
                    "name a kernel to remove, or pass --keep N to keep the N newest (`ktstr kernel list`)"
                ),
            };
            for n in &doomed {
                cache.remove_kernel(n)?;
                println!("removed {n}");
            }
            if doomed.is_empty() {
                println!("nothing to remove");
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
