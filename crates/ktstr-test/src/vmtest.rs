//! Support for tests that boot VMs: find a kernel and an engine, or say
//! exactly why not. With `KTSTR_REQUIRE_VM=1` (CI sets it) a missing
//! kernel or engine fails the test instead of skipping it.

use crate::cache::{Cache, KernelArtifacts, resolve_kernel, resolve_scheduler};
use crate::initramfs::Initramfs;
use crate::session::{self, OpHandler, QEMU_CHANNEL_CMDLINE, SessionResult};
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

fn try_env(kernel: Option<&str>) -> Result<VmEnv, String> {
    let cache = Cache::from_env().map_err(|e| e.to_string())?;
    let env = std::env::var("KTSTR_KERNEL").ok();
    let kernel = resolve_kernel(env.as_deref(), kernel, &cache).map_err(|e| e.to_string())?;
    ktstr_vmm::engine::select().map_err(|e| e.to_string())?;
    let (maj, _) = ktstr_vmm::qemu::qemu_version().map_err(|e| e.to_string())?;
    if maj < 10 {
        tracing::warn!(
            "QEMU {maj}.x: MTTCG crashes guests when schedulers load/unload; use QEMU >= 10"
        );
    }
    Ok(VmEnv { cache, kernel })
}

impl VmEnv {
    /// A scheduler binary for this kernel (cache or KTSTR_SCHED_DIR).
    pub fn scheduler(&self, name: &str) -> Result<PathBuf, String> {
        let d = std::env::var("KTSTR_SCHED_DIR").ok();
        resolve_scheduler(name, &self.kernel.name, d.as_deref(), &self.cache)
            .map_err(|e| e.to_string())
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
        on_ops: &mut OpHandler<'_>,
    ) -> Result<(SessionResult, RunningVm), String> {
        self.run_with_hooks(
            initramfs,
            topology,
            memory_mb,
            timeout,
            run,
            on_ops,
            &mut |_, _, _, _| {},
        )
    }

    /// Like [`VmEnv::run`], with a lifecycle hook.
    #[allow(clippy::too_many_arguments)]
    pub fn run_with_hooks(
        &self,
        initramfs: &Initramfs,
        topology: Topology,
        memory_mb: u32,
        timeout: Duration,
        run: &RunSpec,
        on_ops: &mut OpHandler<'_>,
        on_lifecycle: &mut session::LifecycleHook<'_>,
    ) -> Result<(SessionResult, RunningVm), String> {
        let path = initramfs
            .write_cached(&self.initramfs_dir())
            .map_err(|e| e.to_string())?;
        let spec = self.spec(path, topology, memory_mb, timeout);
        let _slot = VcpuSlot::acquire(topology.nr_cpus());
        let vm = RunningVm::boot(&spec).map_err(|e| e.to_string())?;
        let r = session::run_with_hooks(&vm, run, on_ops, on_lifecycle);
        Ok((r, vm))
    }
}

/// The parsed symbols + BTF of a vmlinux, shared by every test in this
/// process (parsing takes ~0.5 s).
pub fn kernel_image(
    vmlinux: &std::path::Path,
) -> Result<std::sync::Arc<ktstr_introspect::image::KernelImage>, String> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Images = Mutex<HashMap<PathBuf, Arc<ktstr_introspect::image::KernelImage>>>;
    static IMAGES: OnceLock<Images> = OnceLock::new();
    let m = IMAGES.get_or_init(Default::default);
    if let Some(i) = m.lock().unwrap_or_else(|e| e.into_inner()).get(vmlinux) {
        return Ok(i.clone());
    }
    let img = Arc::new(
        ktstr_introspect::image::KernelImage::open(vmlinux)
            .map_err(|e| format!("{}: {e}", vmlinux.display()))?,
    );
    m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(vmlinux.to_path_buf(), img.clone());
    Ok(img)
}

/// A RunSpec whose payload is a guest-init helper (`/init <args>`).
pub fn helper_run(args: &[&str], timeout: Duration) -> RunSpec {
    RunSpec {
        payload_argv: std::iter::once("/init")
            .chain(args.iter().copied())
            .map(String::from)
            .collect(),
        payload_timeout_ms: timeout.as_millis() as u64,
        ..Default::default()
    }
}

/// Run a test definition that must fail; returns its failure message
/// (None when no VM can boot here and the test was skipped). In the guest
/// it runs the body like any test.
pub fn expect_test_failure(def: &crate::test_support::TestDef) -> Option<String> {
    if std::env::var(crate::test_support::GUEST_TEST_ENV).is_ok() {
        crate::test_support::run_test(def);
        return None;
    }
    vm_env(def.kernel)?;
    let err = std::panic::catch_unwind(|| crate::test_support::run_test(def))
        .expect_err("the test was expected to fail");
    Some(
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

/// Boot the base initramfs on `cpus` vCPUs with a payload spinning on
/// every CPU, wait until it runs, call `f` with the running VM, then kill
/// the VM. For tests and benchmarks of freezing, introspection and
/// watchpoints on a busy guest.
pub fn with_spinning_guest(env: &VmEnv, cpus: u32, f: impl FnOnce(&RunningVm)) {
    let path = Initramfs::base()
        .write_cached(&env.initramfs_dir())
        .expect("initramfs");
    let spec = env.spec(path, Topology::flat(cpus), 256, Duration::from_secs(600));
    let _slot = VcpuSlot::acquire(cpus);
    let vm = RunningVm::boot(&spec).expect("boot");
    let run = helper_run(&["spin", "590"], Duration::from_secs(600));
    std::thread::scope(|s| {
        let session = s.spawn(|| session::run(&vm, &run, &mut no_ops()));
        assert!(
            vm.console()
                .wait_for("Run /init as init process", Duration::from_secs(60)),
            "guest did not reach init:\n{}",
            vm.console().tail(30)
        );
        // guest-init says Hello, gets its RunSpec and starts spinning.
        std::thread::sleep(Duration::from_secs(2));
        f(&vm);
        vm.kill();
        let _ = session.join();
    });
}

/// An op handler for sessions that send no kernel ops.
pub fn no_ops() -> impl FnMut(
    &RunningVm,
    Option<&ktstr_wire::Hello>,
    &[ktstr_wire::KernelOp],
) -> Vec<ktstr_wire::KernelOpReplyPayload> {
    |_, _, ops| {
        ops.iter()
            .map(|_| {
                ktstr_wire::KernelOpReplyPayload::refused("no kernel-op handler in this session")
            })
            .collect()
    }
}
