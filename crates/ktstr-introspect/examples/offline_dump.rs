//! Offline dump analysis with ktstr-introspect alone (no VM, no network):
//! open a vmlinux and a vmcore, find KASLR, and list what each CPU was
//! doing and which tasks waited on which dispatch queue.
//!
//! `cargo run -p ktstr-introspect --example offline_dump -- VMLINUX VMCORE`

use ktstr_introspect::render::safe;
use ktstr_introspect::{CollectOptions, Kernel, KernelImage, Vmcore, snapshot};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [vmlinux, vmcore] = &args[..] else {
        eprintln!("usage: offline_dump VMLINUX VMCORE");
        std::process::exit(2);
    };
    let image = Arc::new(KernelImage::open(vmlinux.as_ref())?);
    let k = Kernel::from_vmcore(Vmcore::open(vmcore.as_ref())?, image)?;
    println!(
        "KASLR via {:?}: slide {:#x}",
        k.kaslr_source(),
        k.params().kaslr_offset
    );
    let s = snapshot(&k, &CollectOptions::default());
    if let Some(sch) = &s.sched {
        println!(
            "scheduler {:?}: {} ({})",
            sch.ops_name, sch.exit_kind_name, sch.exit_kind
        );
    }
    for c in &s.cpus {
        let curr = c
            .curr
            .as_ref()
            .map_or("-".to_string(), |t| format!("{}[{}]", t.pid, safe(&t.comm)));
        println!(
            "cpu {}: running {curr}, {} runnable on sched_ext",
            c.cpu,
            c.runnable.len()
        );
    }
    for d in s.dsqs.iter().filter(|d| !d.tasks.is_empty()) {
        let who: Vec<String> = d
            .tasks
            .iter()
            .map(|t| format!("{}[{}]", t.pid, safe(&t.comm)))
            .collect();
        println!("{} (id {:#x}): {}", d.origin, d.id, who.join(" "));
    }
    Ok(())
}
