//! Helpers for ktstr's own tests and benchmarks (feature `test-utils`):
//! guest-init helper payloads, a busy guest to freeze, a session without
//! kernel ops, and running a test that must fail.

use crate::host::env::{VcpuSlot, VmEnv, vm_env};
use crate::host::initramfs::Initramfs;
use crate::host::session;
use crate::host::session::SessionVm;
use ktstr_vmm::{RunningVm, Topology, VmError, VmExit};
use ktstr_wire::RunSpec;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
pub fn expect_test_failure(def: &crate::def::TestDef) -> Option<String> {
    if std::env::var(crate::harness::GUEST_TEST_ENV).is_ok() {
        crate::harness::run_test(def);
        return None;
    }
    vm_env(def.kernel)?;
    let err = std::panic::catch_unwind(|| crate::harness::run_test(def))
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

/// A guest that is only a socket: the test writes whatever bytes it
/// likes into the other end.
pub struct FakeVm {
    host: Mutex<Option<UnixStream>>,
    booted: Instant,
    deadline: Duration,
}

impl FakeVm {
    /// A fake VM whose deadline is `deadline` from now, and the guest end
    /// of its channel.
    pub fn new(deadline: Duration) -> (Self, UnixStream) {
        let (host, guest) = UnixStream::pair().unwrap();
        let vm = Self {
            host: Mutex::new(Some(host)),
            booted: Instant::now(),
            deadline,
        };
        (vm, guest)
    }
}

impl SessionVm for FakeVm {
    fn channel(&self, _: u32) -> Result<UnixStream, VmError> {
        self.host
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| VmError::Spec("channel already taken".into()))
    }
    fn console_total(&self) -> u64 {
        0
    }
    fn console_text(&self) -> String {
        String::new()
    }
    fn finished(&self) -> bool {
        self.booted.elapsed() > self.deadline
    }
    fn kill(&self) {}
    fn wait_or_kill(&self, _: Duration) -> VmExit {
        VmExit::PowerOff
    }
    fn booted_at(&self) -> Instant {
        self.booted
    }
}
