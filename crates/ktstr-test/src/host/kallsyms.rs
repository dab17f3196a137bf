//! Symbols for a kernel that ships without them.
//!
//! A distribution kernel's package carries a stub `System.map`, and its
//! image decompresses to an ELF stripped of `.symtab` (types survive in
//! `.BTF`). The running kernel knows every symbol: this module boots the
//! kernel once, has the guest compress `/proc/kallsyms` to stdout (guest-init
//! sets `kptr_restrict=0` before anything runs), and turns the runtime
//! addresses back into link-time ones with the KASLR slide the guest
//! reports (`Hello::kallsyms_text` against the ELF's first kernel-text
//! segment). The result is a `System.map` that introspection reads beside
//! the stripped vmlinux, live and on vmcores alike.
#![deny(clippy::arithmetic_side_effects)]

use super::env::VmEnv;
use super::error::HostError;
use super::initramfs::Initramfs;
use ktstr_vmm::{RunningVm, Topology};
use ktstr_wire::{KernelOp, KernelOpReplyPayload, RunSpec};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Start of the kernel-text mapping (`__START_KERNEL_map`): addresses at or
/// above it move with KASLR; below it are absolute values (zero-based
/// per-CPU offsets on older kernels) that do not.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Bound on the decompressed listing (a distribution kernel's is ~8 MB).
const MAX_KALLSYMS: u64 = 64 << 20;

/// The link-time address of `_text`: the lowest kernel-text `PT_LOAD`.
pub fn link_text(vmlinux: &[u8]) -> Option<u64> {
    let elf = goblin::elf::Elf::parse(vmlinux).ok()?;
    elf.program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
        .map(|p| p.p_vaddr)
        .filter(|&v| v >= START_KERNEL_MAP)
        .min()
}

/// Rewrite a `/proc/kallsyms` listing as a link-time `System.map`:
/// addresses in the kernel-text mapping lose `slide`, module symbols and
/// malformed lines are dropped. Returns the text and how many symbols it
/// holds.
pub fn to_system_map(kallsyms: &str, slide: u64) -> (String, usize) {
    let mut out = String::with_capacity(kallsyms.len());
    let mut n = 0usize;
    for line in kallsyms.lines() {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(ty), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if it.next().is_some() || ty.len() != 1 {
            // `[module]` suffix, or not a symbol line.
            continue;
        }
        let Ok(a) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let link = if a >= START_KERNEL_MAP {
            a.wrapping_sub(slide)
        } else {
            a
        };
        out.push_str(&format!("{link:016x} {ty} {name}\n"));
        n = n.saturating_add(1);
    }
    (out, n)
}

fn failed(msg: String) -> HostError {
    HostError::Vm(ktstr_vmm::VmError::Unavailable(msg))
}

/// Boot `env.kernel` once and return its symbols as a link-time
/// `System.map` (text, symbol count). `vmlinux` is the kernel's ELF (for
/// the link address of `_text`).
pub fn capture(env: &VmEnv, vmlinux: &Path) -> Result<(String, usize), HostError> {
    let elf = std::fs::read(vmlinux)
        .map_err(|e| failed(format!("reading {}: {e}", vmlinux.display())))?;
    let link = link_text(&elf).ok_or_else(|| {
        failed(format!(
            "{} has no kernel-text PT_LOAD segment",
            vmlinux.display()
        ))
    })?;
    drop(elf);
    let gzip = ktstr_kernels::resolve::find_on_path("gzip").ok_or_else(|| {
        failed("gzip is not on PATH (it compresses kallsyms in the guest)".into())
    })?;
    let mut init = Initramfs::base();
    init.add_executable_with_libs("/bin/ktstr-payload", &gzip)?;
    let run = RunSpec {
        payload_argv: ["/bin/ktstr-payload", "-c", "-1", "/proc/kallsyms"]
            .map(String::from)
            .to_vec(),
        payload_timeout_ms: 120_000,
        ..Default::default()
    };
    let mut hooks = |_: &RunningVm, _: Option<&ktstr_wire::Hello>, ops: &[KernelOp]| {
        ops.iter()
            .map(|_| KernelOpReplyPayload::refused("no kernel ops during symbol capture"))
            .collect::<Vec<_>>()
    };
    let (r, _vm) = env.run(
        &init,
        Topology::flat(1),
        512,
        Duration::from_secs(240),
        &run,
        &mut hooks,
    )?;
    let hello = r.hello.as_ref().ok_or_else(|| {
        failed(format!(
            "the kernel did not reach guest-init; console tail:\n{}",
            tail(&r.console, 30)
        ))
    })?;
    if hello.kallsyms_text == 0 {
        return Err(failed(
            "the guest reported no _text in /proc/kallsyms (CONFIG_KALLSYMS off?)".into(),
        ));
    }
    if r.exit_code != Some(0) {
        return Err(failed(format!(
            "gzip /proc/kallsyms in the guest exited {:?}: {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr)
        )));
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.stdout[..])
        .take(MAX_KALLSYMS)
        .read_to_string(&mut text)
        .map_err(|e| {
            failed(format!(
                "decompressing the guest's kallsyms ({} bytes): {e}",
                r.stdout.len()
            ))
        })?;
    let slide = hello.kallsyms_text.wrapping_sub(link);
    let (map, n) = to_system_map(&text, slide);
    if n < 1000 {
        return Err(failed(format!(
            "only {n} symbols in the guest's /proc/kallsyms: kptr_restrict or CONFIG_KALLSYMS_ALL?"
        )));
    }
    tracing::info!(
        symbols = n,
        slide = format_args!("{slide:#x}"),
        "kallsyms captured"
    );
    Ok((map, n))
}

fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    #[test]
    fn runtime_addresses_become_link_time() {
        let k = "ffffffff9a000000 T _text\n\
                 ffffffff9a001000 t helper\n\
                 0000000000001234 A fixed_percpu_data\n\
                 ffffffffc0000000 t mod_fn\t[virtio_net]\n\
                 garbage\n\
                 zzzz T bad\n";
        let (m, n) = to_system_map(k, 0x1900_0000);
        assert_eq!(n, 3);
        assert_eq!(
            m,
            "ffffffff81000000 T _text\nffffffff81001000 t helper\n0000000000001234 A fixed_percpu_data\n"
        );
        let syms = ktstr_introspect::symbols::Symbols::from_system_map(&m);
        assert_eq!(syms.addr("helper"), Some(0xffff_ffff_8100_1000));
    }
}
