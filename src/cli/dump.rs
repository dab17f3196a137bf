//! `ktstr dump show` and `ktstr analyze`: re-render a saved failure dump;
//! run the introspection on any vmcore.

use clap::Subcommand;
use ktstr_introspect::collect::{CollectOptions, snapshot};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::Kernel;
use ktstr_introspect::vmcore::Vmcore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum DumpCmd {
    /// Print a saved failure dump (a dump directory or its dump.json).
    Show {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn dump_cmd(cmd: &DumpCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DumpCmd::Show { file, json } => {
            let d = ktstr_test::host::dump::FailureDump::load(file).map_err(anyhow::Error::msg)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", d.render_text());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ktstr analyze --vmlinux V --vmcore C [--json] [--hz HZ]`.
pub fn analyze(
    vmlinux: &std::path::Path,
    vmcore: &std::path::Path,
    json: bool,
    hz: u32,
) -> anyhow::Result<ExitCode> {
    let image = Arc::new(
        KernelImage::open(vmlinux).map_err(|e| anyhow::anyhow!("{}: {e}", vmlinux.display()))?,
    );
    let core = Vmcore::open(vmcore).map_err(|e| anyhow::anyhow!("{}: {e}", vmcore.display()))?;
    let k = Kernel::from_vmcore(core, image)?;
    let s = snapshot(&k, &CollectOptions { hz, tasks: true });
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", ktstr_introspect::render::render_text(&s));
    }
    Ok(ExitCode::SUCCESS)
}
