//! One guest session, host side: boot is done by the caller; this speaks
//! the ktstr-wire protocol with guest-init over channel 0 — wait for
//! Hello, check the protocol version, send the RunSpec, collect output,
//! lifecycle events, the scheduler log and the exit code, answer
//! kernel-op requests and tick the caller's hooks, and wait for the guest
//! to power off.
//!
//! The guest is hostile: frames are bounded and checksummed by the wire
//! decoder, collected output is capped, a protocol error ends the session
//! with the error recorded, and nothing a guest sends can make the loop
//! run forever (the VM's own deadline bounds it). Messages that arrive
//! after `Exit` (a result that raced the payload's exit) are still taken,
//! until the guest closes the channel or a short grace passes.
//!
//! The loop only needs what [`SessionVm`] offers, so it is tested against
//! a fake guest feeding it arbitrary bytes.

use ktstr_vmm::{RunningVm, VmError, VmExit};
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
pub const MAX_OUTPUT: usize = 4 << 20;
/// Cap on guest-init diagnostics and lifecycle events kept.
pub const MAX_EVENTS: usize = 4096;
/// How often the session ticks its hooks.
pub const TICK: Duration = Duration::from_millis(10);
/// How long messages are still taken after `Exit`.
pub const AFTER_EXIT_GRACE: Duration = Duration::from_secs(3);

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
    /// Messages taken after `Exit`.
    pub after_exit: u32,
    /// From `SchedulerStarting` to `SchedulerAttached`, as the host saw
    /// them arrive.
    pub attach_time: Option<Duration>,
    /// A protocol or channel problem, if any.
    pub error: Option<String>,
}

impl SessionResult {
    fn new() -> Self {
        Self {
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
            after_exit: 0,
            attach_time: None,
            error: None,
        }
    }

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

/// What the session loop needs of a VM.
pub trait SessionVm {
    /// The host end of byte channel `port`.
    fn channel(&self, port: u32) -> Result<UnixStream, VmError>;
    /// Bytes the console has seen so far (cheap).
    fn console_total(&self) -> u64;
    /// The console ring's text.
    fn console_text(&self) -> String;
    /// Has the VM ended (or passed its deadline)?
    fn finished(&self) -> bool;
    /// Kill it now.
    fn kill(&self);
    /// Wait up to `grace` for it to end, else kill it.
    fn wait_or_kill(&self, grace: Duration) -> VmExit;
    /// When it booted.
    fn booted_at(&self) -> Instant;
}

impl SessionVm for RunningVm {
    fn channel(&self, port: u32) -> Result<UnixStream, VmError> {
        RunningVm::channel(self, port)
    }
    fn console_total(&self) -> u64 {
        self.console().total_bytes()
    }
    fn console_text(&self) -> String {
        self.console().contents()
    }
    fn finished(&self) -> bool {
        self.exited() || self.deadline_passed()
    }
    fn kill(&self) {
        RunningVm::kill(self)
    }
    fn wait_or_kill(&self, grace: Duration) -> VmExit {
        RunningVm::wait_or_kill(self, grace)
    }
    fn booted_at(&self) -> Instant {
        RunningVm::booted_at(self)
    }
}

/// What the caller does during a session.
pub trait SessionHooks<V: ?Sized> {
    /// The guest sent kernel ops: one reply per op.
    fn kernel_ops(
        &mut self,
        vm: &V,
        hello: Option<&Hello>,
        ops: &[KernelOp],
    ) -> Vec<KernelOpReplyPayload>;
    /// A lifecycle event arrived.
    fn lifecycle(&mut self, _vm: &V, _hello: Option<&Hello>, _phase: &Phase, _detail: &str) {}
    /// Called every [`TICK`] or so while the session runs.
    fn tick(&mut self, _vm: &V, _hello: Option<&Hello>) {}
}

/// A plain kernel-op handler is a session's hooks.
impl<V: ?Sized, F> SessionHooks<V> for F
where
    F: FnMut(&V, Option<&Hello>, &[KernelOp]) -> Vec<KernelOpReplyPayload>,
{
    fn kernel_ops(
        &mut self,
        vm: &V,
        hello: Option<&Hello>,
        ops: &[KernelOp],
    ) -> Vec<KernelOpReplyPayload> {
        self(vm, hello, ops)
    }
}

fn connect<V: SessionVm + ?Sized>(vm: &V, deadline: Instant) -> Result<UnixStream, VmError> {
    loop {
        match vm.channel(0) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Run one session to the end.
pub fn run<V: SessionVm + ?Sized>(
    vm: &V,
    spec: &RunSpec,
    hooks: &mut dyn SessionHooks<V>,
) -> SessionResult {
    let mut r = SessionResult::new();
    let sock = match connect(vm, Instant::now() + Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("cannot connect to the guest channel: {e}"));
            vm.kill();
            r.vm_exit = vm.wait_or_kill(Duration::ZERO);
            r.console = vm.console_text();
            return r;
        }
    };
    let (tx, rx) = mpsc::channel();
    let mut rsock = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("cloning the guest channel: {e}"));
            vm.kill();
            r.vm_exit = vm.wait_or_kill(Duration::ZERO);
            return r;
        }
    };
    let reader = std::thread::spawn(move || {
        loop {
            let m = read_msg::<GuestMsg, _>(&mut rsock).map_err(|e| e.to_string());
            let end = m.is_err();
            if tx.send(m).is_err() || end {
                return;
            }
        }
    });
    let mut wsock = sock;
    let mut sent_run = false;
    let mut exit_at: Option<Instant> = None;
    let mut last_tick = Instant::now();
    let mut console_seen = 0u64;
    let mut sched_starting: Option<Instant> = None;
    loop {
        if last_tick.elapsed() >= TICK {
            hooks.tick(vm, r.hello.as_ref());
            last_tick = Instant::now();
        }
        if exit_at.is_some_and(|t| t.elapsed() >= AFTER_EXIT_GRACE) {
            break;
        }
        let msg = match rx.recv_timeout(TICK) {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                // After Exit, EOF is the guest powering off: the end.
                if r.exit_code.is_none() {
                    r.error
                        .get_or_insert(format!("guest channel closed early: {e}"));
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let total = vm.console_total();
                if total != console_seen {
                    console_seen = total;
                    if ktstr_vmm::kernel_log::panicked(&vm.console_text()) {
                        break;
                    }
                }
                // The VM may have died or timed out; the wait below decides.
                if vm.finished() {
                    break;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if exit_at.is_some() {
            r.after_exit = r.after_exit.saturating_add(1);
        }
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
                match phase {
                    Phase::SchedulerStarting => sched_starting = Some(Instant::now()),
                    Phase::SchedulerAttached => {
                        r.attach_time = sched_starting.map(|t| t.elapsed());
                    }
                    _ => {}
                }
                hooks.lifecycle(vm, r.hello.as_ref(), &phase, &detail);
                if r.lifecycle.len() < MAX_EVENTS {
                    r.lifecycle.push((phase, detail));
                }
            }
            GuestMsg::SchedLog(d) => push_capped(&mut r.sched_log, &d),
            GuestMsg::Output { stream, data } => match stream {
                Stream::Stdout => push_capped(&mut r.stdout, &data),
                Stream::Stderr => push_capped(&mut r.stderr, &data),
            },
            GuestMsg::TestResult { passed, json } => r.test_result = Some((passed, json)),
            GuestMsg::KernelOpRequest { id, ops } => {
                let replies = hooks.kernel_ops(vm, r.hello.as_ref(), &ops);
                if let Err(e) = write_msg(&mut wsock, &HostMsg::KernelOpReply { id, replies }) {
                    r.error = Some(format!("sending kernel-op reply: {e}"));
                    break;
                }
            }
            GuestMsg::Exit { code } => {
                tracing::debug!(elapsed = ?vm.booted_at().elapsed(), "guest exit message");
                if r.exit_code.is_none() {
                    r.exit_code = Some(code);
                    exit_at = Some(Instant::now());
                }
            }
            GuestMsg::Log(l) => {
                if r.logs.len() < MAX_EVENTS {
                    r.logs.push(l)
                }
            }
        }
    }
    // The guest powers off after Exit; give it a bounded time to do so.
    r.vm_exit = vm.wait_or_kill(Duration::from_secs(20));
    tracing::debug!(elapsed = ?vm.booted_at().elapsed(), exit = ?r.vm_exit, after_exit = r.after_exit, "VM ended");
    let _ = wsock.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    r.console = vm.console_text();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::FakeVm;
    use ktstr_wire::{PROTO_VERSION, frame::encode};
    use std::io::Write;

    fn frame(m: &GuestMsg) -> Vec<u8> {
        encode(m).unwrap()
    }

    fn hello() -> GuestMsg {
        GuestMsg::Hello(Hello {
            proto: PROTO_VERSION,
            ..Default::default()
        })
    }

    fn no_ops(_: &FakeVm, _: Option<&Hello>, ops: &[KernelOp]) -> Vec<KernelOpReplyPayload> {
        ops.iter()
            .map(|_| KernelOpReplyPayload::refused("none"))
            .collect()
    }

    #[test]
    fn a_result_sent_after_exit_is_not_lost() {
        let (vm, mut g) = FakeVm::new(Duration::from_secs(10));
        let t = std::thread::spawn(move || {
            g.write_all(&frame(&hello())).unwrap();
            g.write_all(&frame(&GuestMsg::Exit { code: 0 })).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let res = GuestMsg::TestResult {
                passed: true,
                json: "{}".into(),
            };
            g.write_all(&frame(&res)).unwrap();
            // The guest powers off: EOF.
        });
        let r = run(&vm, &RunSpec::default(), &mut no_ops);
        t.join().unwrap();
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.test_result, Some((true, "{}".into())), "{r:?}");
        assert_eq!(r.after_exit, 1);
        assert!(r.error.is_none(), "{r:?}");
    }

    #[test]
    fn hostile_bytes_end_the_session_with_an_error_not_a_panic_or_hang() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0xff; 64],                           // a huge length
            vec![8, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9], // bad crc
            {
                let mut f = frame(&hello());
                let n = f.len();
                f[n - 1] ^= 0x55; // corrupt payload
                f
            },
            {
                let mut f = frame(&hello());
                f.truncate(f.len() / 2); // truncated, then EOF
                f
            },
        ];
        for (i, bytes) in cases.into_iter().enumerate() {
            let (vm, mut g) = FakeVm::new(Duration::from_secs(10));
            let t = std::thread::spawn(move || {
                let _ = g.write_all(&bytes);
            });
            let t0 = Instant::now();
            let r = run(&vm, &RunSpec::default(), &mut no_ops);
            t.join().unwrap();
            assert!(r.error.is_some(), "case {i}: {r:?}");
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "case {i} took {:?}",
                t0.elapsed()
            );
        }
    }

    #[test]
    fn a_flood_of_output_is_capped_and_a_silent_guest_ends_at_its_deadline() {
        let (vm, mut g) = FakeVm::new(Duration::from_secs(30));
        let t = std::thread::spawn(move || {
            g.write_all(&frame(&hello())).unwrap();
            let chunk = GuestMsg::Output {
                stream: Stream::Stdout,
                data: vec![b'x'; ktstr_wire::MAX_CHUNK],
            };
            let f = frame(&chunk);
            for _ in 0..(MAX_OUTPUT / ktstr_wire::MAX_CHUNK + 20) {
                g.write_all(&f).unwrap();
            }
            g.write_all(&frame(&GuestMsg::Exit { code: 3 })).unwrap();
        });
        let r = run(&vm, &RunSpec::default(), &mut no_ops);
        t.join().unwrap();
        assert_eq!(r.stdout.len(), MAX_OUTPUT);
        assert_eq!(r.exit_code, Some(3));
        // Says nothing at all, keeps the channel open: the deadline ends it.
        let (vm, g) = FakeVm::new(Duration::from_millis(300));
        let t0 = Instant::now();
        let r = run(&vm, &RunSpec::default(), &mut no_ops);
        drop(g);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(r.exit_code.is_none());
    }
}
