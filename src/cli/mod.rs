//! Argument parsing and dispatch for the `ktstr` binary.

mod cache_cmd;
mod dump;
mod kernel;
mod provision;
mod run;
mod sched;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// ktstr: test Linux schedulers (sched_ext) in throw-away VMs with real
/// kernels, and read the kernel's scheduler state when they break.
#[derive(Debug, Parser)]
#[command(name = "ktstr", version, about, long_about = None)]
pub struct Cli {
    /// Cache directory for kernels and schedulers [default:
    /// $KTSTR_CACHE_DIR, else $XDG_CACHE_HOME/ktstr, else ~/.cache/ktstr].
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, import, list and locate test kernels.
    #[command(subcommand)]
    Kernel(kernel::KernelCmd),
    /// Build, import and list sched_ext schedulers for a cached kernel.
    #[command(subcommand)]
    Sched(sched::SchedCmd),
    /// Boot a VM with a kernel and a scheduler, run a built-in scenario,
    /// report, and exit non-zero on failure (writing a dump when the
    /// scheduler fails). Provisions the kernel and schedulers on first use.
    Run(run::RunArgs),
    /// Re-render saved failure dumps.
    #[command(subcommand)]
    Dump(dump::DumpCmd),
    /// Inspect and clean the cache (initramfs archives, test binaries).
    #[command(subcommand)]
    Cache(cache_cmd::CacheCmd),
    /// Print the sched_ext and EEVDF state of any vmcore.
    Analyze {
        /// The vmlinux of the kernel that produced the dump (symbols + BTF).
        #[arg(long)]
        vmlinux: std::path::PathBuf,
        /// The ELF vmcore (QEMU dump-guest-memory, kdump, ktstr's own).
        #[arg(long)]
        vmcore: std::path::PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The guest kernel's CONFIG_HZ (for runnable ages in ms).
        #[arg(long, default_value_t = 1000)]
        hz: u32,
    },
    /// (internal) The guest side of `ktstr run`.
    #[command(name = "__guest-scenario", hide = true)]
    GuestScenario { name: String },
}

pub fn cache(cli_dir: &Option<std::path::PathBuf>) -> anyhow::Result<ktstr_kernels::cache::Cache> {
    Ok(match cli_dir {
        Some(d) => ktstr_kernels::cache::Cache::at(d),
        None => ktstr_kernels::cache::Cache::from_env()?,
    })
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Kernel(k) => kernel::run(&cli, k),
        Command::Sched(s) => sched::run(&cli, s),
        Command::Run(a) => run::run_cmd(&cli, a),
        Command::Dump(d) => dump::dump_cmd(d),
        Command::Cache(c) => cache_cmd::run(&cli, c),
        Command::Analyze {
            vmlinux,
            vmcore,
            json,
            hz,
        } => dump::analyze(vmlinux, vmcore, *json, *hz),
        Command::GuestScenario { name } => run::guest_scenario(name),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ktstr: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
