//! One guest session, host side: boot is done by the caller; this speaks
//! the ktstr-wire protocol with guest-init over channel 0 — wait for
//! Hello, check the protocol version, send the RunSpec, collect output,
//! lifecycle events, the scheduler log and the exit code, answer
//! kernel-op requests through a caller-supplied handler, and wait for the
//! guest to power off.

use ktstr_vmm::{RunningVm, VmExit};
use ktstr_wire::{
    GuestMsg, Hello, HostMsg, KernelOp, KernelOpReplyPayload, Phase, RunSpec, Stream,
    check_version, read_msg, write_msg,
};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kernel command line fragment that points guest-init at channel 0
/// on the qemu engine.
pub const QEMU_CHANNEL_CMDLINE: &str = "ktstr.chan=virtio:/dev/virtio-ports/ktstr.0";

/// Cap on collected output per stream.
const MAX_OUTPUT: usize = 4 << 20;

/// Everything a session produced.
#[derive(Debug, Clone)]
pub struct SessionResult {
    pub vm_exit: VmExit,
    pub hello: Option<Hello>,
    pub lifecycle: Vec<(Phase, String)>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub sched_log: Vec<u8>,
    pub test_result: Option<(bool, String)>,
    pub exit_code: Option<i32>,
    /// guest-init's own diagnostics.
    pub logs: Vec<String>,
    pub console: String,
    /// From boot to the Hello message.
    pub boot_to_hello: Option<Duration>,
    /// A protocol or channel problem, if any.
    pub error: Option<String>,
}

impl SessionResult {
    /// The detail of the first lifecycle event of `phase`.
    pub fn phase(&self, phase: &Phase) -> Option<&str> {
        self.lifecycle
            .iter()
            .find(|(p, _)| p == phase)
            .map(|(_, d)| d.as_str())
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// What the session calls when the guest sends kernel ops: given the
/// running VM and the ops, produce one reply per op.
pub type OpHandler<'a> =
    dyn FnMut(&RunningVm, Option<&Hello>, &[KernelOp]) -> Vec<KernelOpReplyPayload> + 'a;

fn connect(vm: &RunningVm, deadline: Instant) -> Result<UnixStream, String> {
    loop {
        match vm.channel(0) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// What the session calls on each lifecycle event (phase, detail).
pub type LifecycleHook<'a> = dyn FnMut(&RunningVm, Option<&Hello>, &Phase, &str) + 'a;

/// Run one session to the end.
pub fn run(vm: &RunningVm, spec: &RunSpec, on_ops: &mut OpHandler<'_>) -> SessionResult {
    run_with_hooks(vm, spec, on_ops, &mut |_, _, _, _| {})
}

/// Run one session, calling `on_lifecycle` as lifecycle events arrive.
pub fn run_with_hooks(
    vm: &RunningVm,
    spec: &RunSpec,
    on_ops: &mut OpHandler<'_>,
    on_lifecycle: &mut LifecycleHook<'_>,
) -> SessionResult {
    let mut r = SessionResult {
        vm_exit: VmExit::EngineError("not finished".into()),
        hello: None,
        lifecycle: Vec::new(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        sched_log: Vec::new(),
        test_result: None,
        exit_code: None,
        logs: Vec::new(),
        console: String::new(),
        boot_to_hello: None,
        error: None,
    };
    let sock = match connect(vm, Instant::now() + Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("cannot connect to the guest channel: {e}"));
            vm.kill();
            r.vm_exit = vm.wait();
            r.console = vm.console().contents();
            return r;
        }
    };
    let (tx, rx) = mpsc::channel();
    let mut rsock = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let reader = std::thread::spawn(move || {
        loop {
            match read_msg::<GuestMsg, _>(&mut rsock) {
                Ok(m) => {
                    if tx.send(Ok(m)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let mut wsock = sock;
    let mut sent_run = false;
    let mut done = false;
    while !done {
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                if r.exit_code.is_none() {
                    r.error
                        .get_or_insert(format!("guest channel closed early: {e}"));
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if ktstr_vmm::kernel_log::panicked(&vm.console().contents()) {
                    break;
                }
                // The VM may have died or timed out; wait() decides below.
                if vm_finished(vm) {
                    break;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            GuestMsg::Hello(h) => {
                r.boot_to_hello = Some(vm.booted_at().elapsed());
                tracing::debug!(elapsed = ?r.boot_to_hello, "hello");
                if let Err(e) = check_version(h.proto) {
                    r.error = Some(e.clone());
                    let _ = write_msg(&mut wsock, &HostMsg::Shutdown { reason: e });
                    r.hello = Some(h);
                    break;
                }
                r.hello = Some(h);
                if !sent_run {
                    if let Err(e) = write_msg(&mut wsock, &HostMsg::Run(spec.clone())) {
                        r.error = Some(format!("sending the RunSpec: {e}"));
                        break;
                    }
                    sent_run = true;
                }
            }
            GuestMsg::Lifecycle { phase, detail } => {
                tracing::debug!(elapsed = ?vm.booted_at().elapsed(), ?phase, "lifecycle");
                on_lifecycle(vm, r.hello.as_ref(), &phase, &detail);
                r.lifecycle.push((phase, detail))
            }
            GuestMsg::SchedLog(d) => {
                if r.sched_log.len() < MAX_OUTPUT {
                    r.sched_log.extend_from_slice(&d);
                }
            }
            GuestMsg::Output { stream, data } => {
                let buf = match stream {
                    Stream::Stdout => &mut r.stdout,
                    Stream::Stderr => &mut r.stderr,
                };
                if buf.len() < MAX_OUTPUT {
                    buf.extend_from_slice(&data);
                }
            }
            GuestMsg::TestResult { passed, json } => r.test_result = Some((passed, json)),
            GuestMsg::KernelOpRequest { id, ops } => {
                let replies = on_ops(vm, r.hello.as_ref(), &ops);
                if let Err(e) = write_msg(&mut wsock, &HostMsg::KernelOpReply { id, replies }) {
                    r.error = Some(format!("sending kernel-op reply: {e}"));
                    break;
                }
            }
            GuestMsg::Exit { code } => {
                tracing::debug!(elapsed = ?vm.booted_at().elapsed(), "guest exit message");
                r.exit_code = Some(code);
                done = true;
            }
            GuestMsg::Log(l) => r.logs.push(l),
        }
    }
    // The guest powers off after Exit; give it a bounded time to do so.
    r.vm_exit = wait_bounded(vm, Duration::from_secs(20));
    tracing::debug!(elapsed = ?vm.booted_at().elapsed(), exit = ?r.vm_exit, "VM ended");
    let _ = wsock.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    // Late messages (e.g. a scheduler-death report) that raced the exit.
    r.console = vm.console().contents();
    r
}

fn vm_finished(vm: &RunningVm) -> bool {
    vm.exited() || vm.deadline_passed()
}

/// Wait for the VM to end, killing it if it outlives `grace` after the
/// session is over (its own wall-clock limit still applies).
fn wait_bounded(vm: &RunningVm, grace: Duration) -> VmExit {
    vm.wait_or_kill(grace)
}
