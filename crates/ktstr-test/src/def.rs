//! What a test is, as plain values: [`TestDef`] (what `#[ktstr_test]`
//! expands to) and the [`Scheduler`] under test. No behaviour lives here,
//! so every other module can depend on it.

use crate::assert::AssertResult;
use crate::guest::ctx::Ctx;
use crate::result::VmResult;
use ktstr_vmm::Topology;

/// Where a scheduler binary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerSpec {
    /// By name through `KTSTR_SCHED_DIR` and the cache.
    Discover(&'static str),
    /// An explicit host path.
    Path(&'static str),
}

/// A scheduler under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduler {
    pub name: &'static str,
    pub binary: SchedulerSpec,
    pub args: &'static [&'static str],
    /// How long it may take to attach, s (0: the engine's default, 120 s
    /// under TCG, 10 s with native KVM). A large BPF program (scx_lavd)
    /// takes tens of seconds to verify under TCG.
    pub attach_timeout_s: u64,
}

impl Scheduler {
    pub const fn named(name: &'static str) -> Self {
        Self {
            name,
            binary: SchedulerSpec::Discover(name),
            args: &[],
            attach_timeout_s: 0,
        }
    }
    /// Declare how long this scheduler may take to attach (s).
    pub const fn attach_timeout_s(mut self, s: u64) -> Self {
        self.attach_timeout_s = s;
        self
    }
    pub const fn binary(mut self, b: SchedulerSpec) -> Self {
        self.binary = b;
        self
    }
    pub const fn args(mut self, a: &'static [&'static str]) -> Self {
        self.args = a;
        self
    }
}

/// A test body.
pub type Body = fn(&Ctx) -> anyhow::Result<AssertResult>;
/// A host-side check after the VM ended.
pub type PostVm = fn(&VmResult) -> anyhow::Result<()>;

/// One `#[ktstr_test]`.
#[derive(Debug, Clone, Copy)]
pub struct TestDef {
    pub name: &'static str,
    /// `module_path!()` where the test was defined.
    pub module: &'static str,
    pub body: Body,
    pub scheduler: Option<Scheduler>,
    pub extra_sched_args: &'static [&'static str],
    pub topology: Topology,
    pub memory_mb: u32,
    pub duration_s: u64,
    pub watchdog_timeout_s: u64,
    /// How long the scheduler may take to attach, s (0: the scheduler's
    /// declaration, else the engine's default).
    pub attach_timeout_s: u64,
    pub post_vm: Option<PostVm>,
    pub expect_err: bool,
    /// With `expect_err`: the scheduler's exit reason must contain this.
    pub expect_scx_bpf_error_contains: Option<&'static str>,
    /// Also write a vmcore at the instant of failure (or `KTSTR_VMCORE=1`).
    pub vmcore: bool,
    pub kernel: Option<&'static str>,
    /// How a scheduler failure is caught (`KTSTR_CAPTURE=sample` forces
    /// sampling for every test).
    pub capture: crate::host::failure::CaptureMode,
}

impl TestDef {
    pub const DEFAULT: TestDef = TestDef {
        name: "",
        module: "",
        body: |_| Ok(AssertResult::pass()),
        scheduler: None,
        extra_sched_args: &[],
        topology: Topology::flat(2),
        memory_mb: 512,
        duration_s: 3,
        watchdog_timeout_s: 30,
        attach_timeout_s: 0,
        post_vm: None,
        expect_err: false,
        expect_scx_bpf_error_contains: None,
        vmcore: false,
        kernel: None,
        capture: crate::host::failure::CaptureMode::Watchpoint,
    };
}
