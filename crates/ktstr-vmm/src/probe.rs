//! Does this host's KVM run guest kernel code natively? A tiny guest in
//! 64-bit ring 0 counts down a fixed loop; on hardware virtualization that
//! takes about a millisecond, where KVM emulates supervisor mode (nested
//! setups like this project's build machines) about a second. The result
//! is cached per host boot (`/proc/sys/kernel/random/boot_id`).

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use std::time::{Duration, Instant};

/// Loop iterations the probe guest runs.
pub const ITERATIONS: u32 = 1_000_000;
/// Below this many iterations per second, KVM is emulating ring 0.
pub const NATIVE_THRESHOLD: f64 = 100e6;

/// What the probe found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Ring-0 loop iterations per second (0 when KVM is unusable).
    pub iterations_per_sec: f64,
    pub native: bool,
    pub detail: String,
}

const MEM: u64 = 0x20_0000;
const CODE: u64 = 0x1000;
const PML4: u64 = 0x2000;
const GDT: u64 = 0x5000;

/// Run the probe now (no cache).
pub fn run_probe() -> ProbeResult {
    match probe_inner() {
        Ok(ips) => ProbeResult {
            iterations_per_sec: ips,
            native: ips >= NATIVE_THRESHOLD,
            detail: format!(
                "KVM ran {:.1} M ring-0 loop iterations/s ({})",
                ips / 1e6,
                if ips >= NATIVE_THRESHOLD {
                    "native: guest kernel code runs at hardware speed"
                } else {
                    "emulated: this host's KVM emulates guest kernel code, a Linux guest would take minutes to boot"
                }
            ),
        },
        Err(e) => ProbeResult {
            iterations_per_sec: 0.0,
            native: false,
            detail: format!("KVM unusable: {e}"),
        },
    }
}

fn probe_inner() -> Result<f64, String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    // SAFETY: anonymous private mapping of MEM bytes, checked below.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MEM as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err("mmap failed".into());
    }
    struct Unmap(*mut libc::c_void);
    impl Drop for Unmap {
        fn drop(&mut self) {
            // SAFETY: unmapping the mapping created above, exactly once.
            unsafe { libc::munmap(self.0, MEM as usize) };
        }
    }
    let _unmap = Unmap(host);
    let mem = host as *mut u8;
    let put = |off: u64, bytes: &[u8]| {
        // SAFETY: every offset used below is < MEM - len.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.add(off as usize), bytes.len()) }
    };
    // mov ecx, ITERATIONS; l: dec ecx; jnz l; hlt
    let mut code = vec![0xb9];
    code.extend_from_slice(&ITERATIONS.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xfc, 0xf4]);
    put(CODE, &code);
    // Identity-map (only the first 2 MiB page is backed), then the GDT:
    // null, 64-bit code (0x08), data (0x10).
    for (a, v) in crate::x86::identity_map(PML4, false) {
        put(a, &v.to_le_bytes());
    }
    let gdt = [0u64, crate::x86::GDT_CODE64_DPL0, crate::x86::GDT_DATA_DPL0];
    put(GDT, &gdt.map(u64::to_le_bytes).concat());
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the region is backed by our live mapping for the VM's life.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    use crate::x86::{SEG_TYPE_CODE, SEG_TYPE_DATA, segment};
    let sregs = crate::x86::long_mode(
        sregs,
        segment(0x08, SEG_TYPE_CODE, 0, true, true),
        segment(0x10, SEG_TYPE_DATA, 0, false, true),
        GDT,
        gdt.len(),
        PML4,
    );
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = CODE;
    regs.rflags = 2;
    regs.rsp = 0x8000;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    let mut vcpu = vcpu;
    let start = Instant::now();
    let limit = Duration::from_secs(20);
    loop {
        match vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::Hlt => break,
            other => {
                if start.elapsed() > limit {
                    return Err(format!(
                        "probe guest did not finish in {limit:?} (last exit {other:?})"
                    ));
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let rcx = vcpu.get_regs().map(|r| r.rcx).unwrap_or(u64::MAX);
    if rcx != 0 {
        return Err(format!(
            "probe guest stopped with rcx = {rcx}, loop did not complete"
        ));
    }
    Ok(ITERATIONS as f64 / secs)
}

/// The probe result for this host boot, cached in `dir`.
pub fn cached_probe(dir: &std::path::Path) -> ProbeResult {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let path = dir.join(format!("kvm-probe-{}.json", boot.trim()));
    if let Some(r) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        return r;
    }
    let r = run_probe();
    if std::fs::create_dir_all(dir).is_ok()
        && let Ok(j) = serde_json::to_vec(&r)
    {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, j).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probe runs wherever /dev/kvm exists and always gives a verdict.
    #[test]
    fn probe_gives_a_verdict() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("SKIPPED: no /dev/kvm on this host");
            return;
        }
        let r = run_probe();
        eprintln!("{}", r.detail);
        assert!(r.iterations_per_sec > 0.0, "{}", r.detail);
        assert_eq!(r.native, r.iterations_per_sec >= NATIVE_THRESHOLD);
    }
}
