//! `ktstr-introspect analyze --vmlinux V --vmcore C [--json]`: print the
//! sched_ext and EEVDF state of a crash dump, using only this crate.

use ktstr_introspect::collect::{CollectOptions, snapshot};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::Kernel;
use ktstr_introspect::render::render_text;
use ktstr_introspect::vmcore::Vmcore;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str =
    "usage: ktstr-introspect analyze --vmlinux VMLINUX --vmcore VMCORE [--json] [--hz HZ]

Reads a vmcore (QEMU dump-guest-memory, kdump ELF, or a ktstr dump) with the
symbols and BTF of the vmlinux it came from, and prints the scheduler state:
sched_ext (per-CPU rq->scx, every DSQ with its queued tasks, scx_tasks, the
scheduler's exit state) and EEVDF (per-CPU cfs_rq, per-task vruntime).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ktstr-introspect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("analyze") => {}
        Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(format!("unknown command `{other}`\n{USAGE}")),
    }
    let (mut vmlinux, mut vmcore, mut json, mut hz) = (None, None, false, 1000u32);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--vmlinux" => vmlinux = it.next().map(PathBuf::from),
            "--vmcore" => vmcore = it.next().map(PathBuf::from),
            "--json" => json = true,
            "--hz" => {
                hz = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&h| h > 0)
                    .ok_or("--hz takes a positive number")?
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let vmlinux = vmlinux.ok_or("--vmlinux is required")?;
    let vmcore = vmcore.ok_or("--vmcore is required")?;
    let image =
        Arc::new(KernelImage::open(&vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?);
    let core = Vmcore::open(&vmcore).map_err(|e| format!("{}: {e}", vmcore.display()))?;
    let k = Kernel::from_vmcore(core, image).map_err(|e| e.to_string())?;
    let snap = snapshot(&k, &CollectOptions { hz, tasks: true });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&snap).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render_text(&snap));
    }
    Ok(())
}
