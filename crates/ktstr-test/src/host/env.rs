//! Support for tests that boot VMs: find a kernel and an engine, or say
//! exactly why not. With `KTSTR_REQUIRE_VM=1` (CI sets it) a missing
//! kernel or engine fails the test instead of skipping it.

use super::error::HostError;
use crate::host::initramfs::Initramfs;
use crate::host::session::{self, QEMU_CHANNEL_CMDLINE, SessionHooks, SessionResult};
use ktstr_kernels::{Cache, KernelArtifacts, resolve_kernel, resolve_scheduler};
use ktstr_vmm::{RunningVm, Topology, VmSpec};
use ktstr_wire::RunSpec;
use std::path::PathBuf;
use std::time::Duration;

/// Bounds how many vCPUs this process runs at once to the host's CPU
/// count (a VM bigger than the host still runs, alone), so concurrent
/// tests do not starve each other's guests of host time.
struct VcpuBudget {
    used: std::sync::Mutex<u32>,
    cv: std::sync::Condvar,
}

static BUDGET: VcpuBudget = VcpuBudget {
    used: std::sync::Mutex::new(0),
    cv: std::sync::Condvar::new(),
};

/// A reservation of host CPUs for one VM; released on drop.
pub struct VcpuSlot(u32);

impl VcpuSlot {
    pub fn acquire(vcpus: u32) -> Self {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let need = vcpus.clamp(1, host.max(1));
        let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used + need > host && *used > 0 {
            used = BUDGET.cv.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += need;
        Self(need)
    }
}

impl Drop for VcpuSlot {
    fn drop(&mut self) {
        let mut used = BUDGET.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.0);
        BUDGET.cv.notify_all();
    }
}

/// What a VM test needs.
#[derive(Debug, Clone)]
pub struct VmEnv {
    pub cache: Cache,
    pub kernel: KernelArtifacts,
}

fn required() -> bool {
    std::env::var("KTSTR_REQUIRE_VM").is_ok_and(|v| v == "1")
}

/// Resolve the environment, or skip (returning None, with the reason on
/// stderr), or panic when `KTSTR_REQUIRE_VM=1`.
pub fn vm_env(kernel: Option<&str>) -> Option<VmEnv> {
    let why = match try_env(kernel) {
        Ok(e) => return Some(e),
        Err(why) => why,
    };
    if required() {
        panic!("KTSTR_REQUIRE_VM=1 but this test cannot boot a VM: {why}");
    }
    eprintln!(
        "SKIPPED (cannot boot a VM here; set KTSTR_REQUIRE_VM=1 to make this a failure): {why}"
    );
    None
}

/// The kernel and an engine that can boot it here. QEMU is checked only
/// when the selected engine is QEMU.
pub fn try_env(kernel: Option<&str>) -> Result<VmEnv, HostError> {
    let cache = Cache::from_env()?;
    let env = std::env::var("KTSTR_KERNEL").ok();
    let kernel = resolve_kernel(env.as_deref(), kernel, &cache)?;
    let engine = ktstr_vmm::engine::select()?;
    check_engine(&engine)?;
    Ok(VmEnv { cache, kernel })
}

/// Can the selected engine run here? QEMU: its binary runs (>= 10
/// advised); kvm: /dev/kvm opens.
pub fn check_engine(sel: &ktstr_vmm::engine::Selection) -> Result<(), HostError> {
    match sel.kind {
        ktstr_vmm::EngineKind::Qemu(_) => {
            let (maj, _) = ktstr_vmm::qemu::qemu_version()?;
            if maj < 10 {
                tracing::warn!(
                    "QEMU {maj}.x: MTTCG crashes guests when schedulers load/unload; use QEMU >= 10"
                );
            }
            Ok(())
        }
        ktstr_vmm::EngineKind::Kvm => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map(|_| ())
            .map_err(|e| {
                HostError::Vm(ktstr_vmm::VmError::Unavailable(format!(
                    "KTSTR_ENGINE=kvm but /dev/kvm does not open: {e}"
                )))
            }),
    }
}

impl VmEnv {
    /// A scheduler binary for this kernel (cache or KTSTR_SCHED_DIR).
    pub fn scheduler(&self, name: &str) -> Result<PathBuf, ktstr_kernels::CacheError> {
        let d = std::env::var("KTSTR_SCHED_DIR").ok();
        resolve_scheduler(name, &self.kernel.name, d.as_deref(), &self.cache)
    }

    /// Where built initramfs archives are cached.
    pub fn initramfs_dir(&self) -> PathBuf {
        self.cache.root().join("initramfs")
    }

    /// A VmSpec for this kernel with channel 0 wired to guest-init.
    pub fn spec(
        &self,
        initramfs: PathBuf,
        topology: Topology,
        memory_mb: u32,
        timeout: Duration,
    ) -> VmSpec {
        let mut s = VmSpec::new(&self.kernel.bzimage);
        s.initramfs = Some(initramfs);
        s.cmdline = QEMU_CHANNEL_CMDLINE.to_string();
        s.topology = topology;
        s.memory_mb = memory_mb;
        s.timeout = timeout;
        s.channels = vec![0];
        if std::env::var("KTSTR_CONSOLE").is_ok_and(|v| v == "1") {
            s.console_sink = Some(std::sync::Arc::new(|l: &str| eprintln!("[guest] {l}")));
        }
        s
    }

    /// Build (or reuse) an initramfs and boot a session with it.
    pub fn run(
        &self,
        initramfs: &Initramfs,
        topology: Topology,
        memory_mb: u32,
        timeout: Duration,
        run: &RunSpec,
        hooks: &mut dyn SessionHooks<RunningVm>,
    ) -> Result<(SessionResult, RunningVm), HostError> {
        let path = initramfs.write_cached(&self.initramfs_dir())?;
        let spec = self.spec(path, topology, memory_mb, timeout);
        let _slot = VcpuSlot::acquire(topology.nr_cpus());
        let vm = RunningVm::boot(&spec)?;
        let r = session::run(&vm, run, hooks);
        Ok((r, vm))
    }
}

/// The parsed symbols + BTF of a vmlinux, shared by every test in this
/// process (parsing takes ~0.5 s).
pub fn kernel_image(
    vmlinux: &std::path::Path,
) -> Result<std::sync::Arc<ktstr_introspect::image::KernelImage>, HostError> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Images = Mutex<HashMap<PathBuf, Arc<ktstr_introspect::image::KernelImage>>>;
    static IMAGES: OnceLock<Images> = OnceLock::new();
    let m = IMAGES.get_or_init(Default::default);
    if let Some(i) = m.lock().unwrap_or_else(|e| e.into_inner()).get(vmlinux) {
        return Ok(i.clone());
    }
    let img = Arc::new(
        ktstr_introspect::image::KernelImage::open(vmlinux).map_err(|source| HostError::Image {
            path: vmlinux.to_path_buf(),
            source,
        })?,
    );
    m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(vmlinux.to_path_buf(), img.clone());
    Ok(img)
}
