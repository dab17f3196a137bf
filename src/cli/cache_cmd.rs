//! `ktstr cache …`: where the cache is, what it holds, and emptying its
//! per-run artifacts (built initramfs archives, stripped test binaries,
//! build scratch). Kernels and schedulers have their own `clean`s.

use super::{Cli, cache};
use clap::Subcommand;
use ktstr_test::host::cache_gc;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum CacheCmd {
    /// Print the cache directory and the size of each part.
    Info,
    /// Remove built initramfs archives and cached test binaries (they are
    /// rebuilt on demand); with --work also the download/build scratch.
    Clean {
        /// Also remove `work/` (downloaded sources, private apt state).
        #[arg(long)]
        work: bool,
    },
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(cli: &Cli, cmd: &CacheCmd) -> anyhow::Result<ExitCode> {
    let cache = cache(&cli.cache_dir)?;
    let root = cache.root();
    match cmd {
        CacheCmd::Info => {
            println!("{}", root.display());
            for part in ["kernels", "schedulers", "initramfs", "payloads", "work"] {
                let p = root.join(part);
                println!(
                    "  {part:<11} {:>8.1} MiB",
                    dir_size(&p) as f64 / (1u64 << 20) as f64
                );
            }
        }
        CacheCmd::Clean { work } => {
            let mut files = 0;
            let mut bytes = 0;
            for part in ["initramfs", "payloads"] {
                let p = cache_gc::clear(&root.join(part));
                files += p.files;
                bytes += p.bytes;
            }
            if *work {
                let w = root.join("work");
                bytes += dir_size(&w);
                if w.exists() {
                    std::fs::remove_dir_all(&w)?;
                }
            }
            println!(
                "removed {files} cached artifacts ({:.1} MiB){}",
                bytes as f64 / (1u64 << 20) as f64,
                if *work { " and the build scratch" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
