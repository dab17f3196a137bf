//! The qemu engine: `qemu-system-x86_64` as a child process.
//!
//! Guest RAM is a shared memory-backend file the host maps too; QMP does
//! stop/cont (the freeze rendezvous: the guest's virtual clock stops with
//! the VM), register capture and exit events; the console is QEMU's
//! stdio serial; byte channels are virtio-serial ports on Unix sockets.
//! QEMU never outlives us: it gets a parent-death signal, and is killed
//! on drop.

pub mod cmdline;
pub mod gdb;
pub mod qmp;
pub mod regs;
pub(crate) mod watch;

use crate::VmError;
use crate::console::{Console, DEFAULT_RING_BYTES};
use crate::ram::{GuestRam, pc_layout};
use crate::spec::{VmExit, VmSpec};
use cmdline::{Accel, Sockets};
use ktstr_introspect::regs::CpuRegs;
use qmp::Qmp;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a panicking guest may take to print its panic and reboot
/// (under TCG a flush of a long backtrace at 115200 baud takes seconds).
const PANIC_DRAIN: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// One pause at a time: a QMP freeze or a watchpoint hit holds it.
#[derive(Default)]
pub(crate) struct PauseGate {
    held: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl PauseGate {
    pub(crate) fn acquire(&self, timeout: Duration) -> Result<(), VmError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *g {
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::Timeout(
                    "the VM stayed paused by someone else past the timeout".into(),
                ));
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *g = true;
        Ok(())
    }

    /// Take the gate if it is free.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut g = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if *g {
            false
        } else {
            *g = true;
            true
        }
    }

    pub(crate) fn release(&self) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.cv.notify_all();
    }
}

/// QMP `stop`, wait until the vCPUs are stopped, read their registers.
pub(crate) fn stop_and_capture(
    qmp: &Qmp,
    timeout: Duration,
    nr_cpus: u32,
) -> Result<Vec<CpuRegs>, VmError> {
    let from = qmp.event_count();
    qmp.execute("stop", None, timeout)?;
    if qmp.wait_event(&["STOP"], from, timeout).is_none() {
        // Already paused (e.g. a debug stop) emits no event: check status.
        let st = qmp.execute("query-status", None, timeout)?;
        if st.get("running").and_then(|v| v.as_bool()) != Some(false) {
            return Err(VmError::Timeout("vCPUs did not stop in time".into()));
        }
    }
    capture_regs(qmp, timeout, nr_cpus)
}

/// Registers of every vCPU of a stopped VM.
pub(crate) fn capture_regs(
    qmp: &Qmp,
    timeout: Duration,
    nr_cpus: u32,
) -> Result<Vec<CpuRegs>, VmError> {
    let text = qmp.hmp("info registers -a", timeout)?;
    let regs = regs::parse_info_registers(&text);
    if regs.len() as u32 != nr_cpus {
        tracing::warn!(got = regs.len(), want = nr_cpus, "register dump incomplete");
    }
    Ok(regs)
}

/// The QEMU binary: `$KTSTR_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("KTSTR_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// QEMU's version as (major, minor), or an error saying how to install it.
pub fn qemu_version() -> Result<(u32, u32), VmError> {
    let bin = qemu_binary();
    let out = Command::new(&bin).arg("--version").stdin(Stdio::null()).output().map_err(|e| {
        VmError::Unavailable(format!(
            "cannot run {}: {e}. Install QEMU >= 10 (Debian bookworm: apt-get install -t bookworm-backports qemu-system-x86)",
            bin.display()
        ))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ver = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("");
    let mut it = ver.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
}

/// A running QEMU guest.
pub struct QemuVm {
    child: Mutex<Option<Child>>,
    qmp: Arc<Qmp>,
    ram: Arc<GuestRam>,
    console: Console,
    stderr: Arc<Mutex<Vec<u8>>>,
    dir: tempdir::Dir,
    channels: Vec<(u32, PathBuf)>,
    deadline: Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
    gate: Arc<PauseGate>,
    /// While a watchpoint session owns the gdbstub, pauses go through it.
    debug: DebugLink,
    paused_via_debug: Mutex<bool>,
    nr_cpus: u32,
}

/// Requests from freezers to the watcher that owns the gdbstub.
pub(crate) enum DebugCmd {
    /// Stop the guest; answer when it is stopped.
    Pause(std::sync::mpsc::SyncSender<Result<(), String>>),
    /// Resume it.
    Resume,
}

/// The channel to the active watcher, if any.
pub(crate) type DebugLink = Arc<Mutex<Option<std::sync::mpsc::Sender<DebugCmd>>>>;

impl crate::frozen::Thaw for QemuVm {
    fn thaw(&self) -> Result<(), VmError> {
        self.cont()
    }
    fn engine_dump(&self, path: &Path) -> Result<(), VmError> {
        self.dump_guest_memory(path)
    }
}

/// A private temporary directory removed on drop.
mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .unwrap_or_else(std::env::temp_dir);
            let n = super::NEXT_ID.fetch_add(1, super::Ordering::Relaxed);
            let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(Self(p))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn shm_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl QemuVm {
    /// Boot `spec` under QEMU with `accel`.
    pub fn boot(spec: &VmSpec, accel: Accel) -> Result<Self, VmError> {
        spec.topology.validate().map_err(VmError::Spec)?;
        if !spec.kernel.is_file() {
            return Err(VmError::Spec(format!(
                "kernel {} does not exist",
                spec.kernel.display()
            )));
        }
        if let Some(i) = &spec.initramfs
            && !i.is_file()
        {
            return Err(VmError::Spec(format!(
                "initramfs {} does not exist",
                i.display()
            )));
        }
        crate::spec::validate_memory_mb(spec.memory_mb).map_err(VmError::Spec)?;
        let dir = tempdir::Dir::new("ktstr-vm").map_err(VmError::io("temp dir"))?;
        let qmp_path = dir.path().join("qmp.sock");
        let gdb_path = dir.path().join("gdb.sock");
        let channels: Vec<(u32, PathBuf)> = spec
            .channels
            .iter()
            .map(|p| (*p, dir.path().join(format!("ch{p}.sock"))))
            .collect();
        let sizes: Vec<u64> = cmdline::node_sizes_mb(spec.memory_mb as u64, spec.topology.nodes)
            .into_iter()
            .map(|m| m << 20)
            .collect();
        let total: u64 = sizes.iter().sum();
        let stem = format!(
            "ktstr-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let mut ram = GuestRam::create(&shm_dir(), &stem, &sizes, pc_layout(total))
            .map_err(|e| VmError::io(format!("guest RAM backing in {}", shm_dir().display()))(e))?;
        let ram_paths = ram.paths();
        let socks = Sockets {
            qmp: &qmp_path,
            gdb: &gdb_path,
            channels: channels.iter().map(|(p, s)| (*p, s.as_path())).collect(),
            ram_files: ram_paths.iter().map(PathBuf::as_path).collect(),
        };
        let args = cmdline::build_args(spec, &socks, accel);
        tracing::debug!(?args, "starting qemu");
        let mut cmd = Command::new(qemu_binary());
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the pre_exec closure only calls prctl, which is
        // async-signal-safe; it makes QEMU die with its parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            VmError::Unavailable(format!("cannot start {}: {e}", qemu_binary().display()))
        })?;
        let console = Console::new(DEFAULT_RING_BYTES, spec.console_sink.clone());
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let c = console.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ktstr-console".into())
                    .spawn(move || {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = out.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            c.push(&buf[..n]);
                        }
                        c.close();
                    })
                    .map_err(VmError::io("spawning a console/stderr reader"))?,
            );
        }
        if let Some(mut err) = child.stderr.take() {
            let e2 = stderr.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ktstr-qemu-stderr".into())
                    .spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = err.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            let mut g = e2.lock().unwrap_or_else(|e| e.into_inner());
                            if g.len() < 64 * 1024 {
                                g.extend_from_slice(&buf[..n]);
                            }
                        }
                    })
                    .map_err(VmError::io("spawning a console/stderr reader"))?,
            );
        }
        let qmp = match Qmp::connect(&qmp_path, Duration::from_secs(20)) {
            Ok(q) => q,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                for t in threads {
                    let _ = t.join();
                }
                let err =
                    String::from_utf8_lossy(&stderr.lock().unwrap_or_else(|e| e.into_inner()))
                        .into_owned();
                return Err(VmError::Engine(format!(
                    "QEMU did not start: {e}\nQEMU stderr:\n{}",
                    err.trim()
                )));
            }
        };
        // QEMU has opened the RAM files: drop their names.
        ram.unlink();
        Ok(Self {
            child: Mutex::new(Some(child)),
            qmp: Arc::new(qmp),
            ram: Arc::new(ram),
            console,
            stderr,
            dir,
            channels,
            deadline: Instant::now() + spec.timeout,
            threads,
            gate: Arc::new(PauseGate::default()),
            debug: Arc::default(),
            paused_via_debug: Mutex::new(false),
            nr_cpus: spec.topology.nr_cpus(),
        })
    }

    pub fn console(&self) -> &Console {
        &self.console
    }

    pub fn ram(&self) -> Arc<GuestRam> {
        self.ram.clone()
    }

    pub fn nr_cpus(&self) -> u32 {
        self.nr_cpus
    }

    /// QEMU's stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Connect to the guest side of channel `port` (host end of the
    /// virtio-serial port). The guest sees `/dev/virtio-ports/ktstr.<port>`.
    pub fn channel(&self, port: u32) -> Result<UnixStream, VmError> {
        let path = self
            .channels
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| VmError::Spec(format!("no channel {port} in the VmSpec")))?;
        UnixStream::connect(&path).map_err(VmError::io(format!("channel {port}")))
    }

    /// Stop every vCPU (QMP `stop`, then wait for the STOP event) and
    /// capture registers. Waits while another pause (a freeze or a
    /// watchpoint hit) is in progress.
    pub fn stop(&self, timeout: Duration) -> Result<Vec<CpuRegs>, VmError> {
        self.gate.acquire(timeout)?;
        // With a watch active, the watcher owns the gdbstub: ask it, so QMP
        // and the stub never disagree about whether the guest runs.
        let tx = self.debug.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(tx) = tx {
            let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
            if tx.send(DebugCmd::Pause(rtx)).is_ok() {
                match rrx.recv_timeout(timeout) {
                    Ok(Ok(())) => {
                        *self
                            .paused_via_debug
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = true;
                        return capture_regs(&self.qmp, timeout, self.nr_cpus).inspect_err(|_| {
                            let _ = self.cont();
                        });
                    }
                    Ok(Err(e)) => {
                        self.gate.release();
                        return Err(VmError::Engine(format!("pause through the gdbstub: {e}")));
                    }
                    Err(_) => {
                        self.gate.release();
                        return Err(VmError::Timeout(
                            "the watcher did not pause the guest in time".into(),
                        ));
                    }
                }
            }
        }
        match stop_and_capture(&self.qmp, timeout, self.nr_cpus) {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = self.qmp.execute("cont", None, Duration::from_secs(10));
                self.gate.release();
                Err(e)
            }
        }
    }

    /// Resume after [`QemuVm::stop`].
    pub fn cont(&self) -> Result<(), VmError> {
        let via_debug = std::mem::take(
            &mut *self
                .paused_via_debug
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let r = if via_debug {
            let tx = self.debug.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match tx.map(|t| t.send(DebugCmd::Resume)) {
                Some(Ok(())) => Ok(()),
                // The watcher is gone (it detached, which resumes the guest).
                _ => self
                    .qmp
                    .execute("cont", None, Duration::from_secs(10))
                    .map(|_| ())
                    .map_err(VmError::from),
            }
        } else {
            self.qmp
                .execute("cont", None, Duration::from_secs(10))
                .map(|_| ())
                .map_err(VmError::from)
        };
        self.gate.release();
        r
    }

    /// Parts a watchpoint thread needs.
    pub(crate) fn watch_parts(&self) -> (Arc<Qmp>, Arc<GuestRam>, Arc<PauseGate>, DebugLink, u32) {
        (
            self.qmp.clone(),
            self.ram.clone(),
            self.gate.clone(),
            self.debug.clone(),
            self.nr_cpus,
        )
    }

    /// QEMU's own ELF dump of guest memory (`dump-guest-memory`, with
    /// VMCOREINFO when the guest registered it); the VM should be stopped.
    pub fn dump_guest_memory(&self, path: &Path) -> Result<(), VmError> {
        self.qmp
            .execute(
                "dump-guest-memory",
                Some(serde_json::json!({"paging": false, "protocol": format!("file:{}", path.display())})),
                Duration::from_secs(120),
            )
            .map(|_| ())
            .map_err(VmError::from)
    }

    /// The gdbstub socket (for watchpoints).
    pub fn gdb_socket(&self) -> PathBuf {
        self.dir.path().join("gdb.sock")
    }

    /// Has QEMU exited?
    pub fn exited(&self) -> bool {
        let mut g = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// Wait for the run to end: power-off, reset, panic, QEMU's death, or
    /// the wall-clock limit (then QEMU is killed).
    pub fn wait(&self) -> VmExit {
        loop {
            let now = Instant::now();
            let left = self.deadline.saturating_duration_since(now);
            let step = left.min(Duration::from_millis(200));
            if let Some(ev) = self
                .qmp
                .wait_event(&["SHUTDOWN", "GUEST_PANICKED"], 0, step)
            {
                let exit = self.classify(&ev);
                self.reap(Duration::from_secs(5));
                return exit;
            }
            if self.exited() || self.qmp.closed() {
                self.reap(Duration::from_secs(1));
                if let Some(ev) =
                    self.qmp
                        .wait_event(&["SHUTDOWN", "GUEST_PANICKED"], 0, Duration::ZERO)
                {
                    return self.classify(&ev);
                }
                if self.panicked_on_console() {
                    return VmExit::Panic {
                        console_tail: self.console.tail(40),
                    };
                }
                return VmExit::EngineError(format!(
                    "QEMU exited unexpectedly; stderr:\n{}",
                    self.stderr_text().trim()
                ));
            }
            if Instant::now() >= self.deadline {
                self.kill();
                return VmExit::Timeout;
            }
        }
    }

    fn panicked_on_console(&self) -> bool {
        crate::kernel_log::panicked(&self.console.contents())
    }

    fn classify(&self, ev: &qmp::Event) -> VmExit {
        let panicked = ev.name == "GUEST_PANICKED"
            || self.qmp.events().iter().any(|e| e.name == "GUEST_PANICKED")
            || ev.data.get("reason").and_then(|r| r.as_str()) == Some("guest-panic");
        if panicked || self.panicked_on_console() {
            // QEMU's panic action is `none`: pvpanic fires from the panic
            // notifiers, before the kernel flushes its console, so the
            // text (the reason) comes after the event. The kernel then
            // reboots (`panic=-1`), which QEMU turns into its exit; wait
            // for that, bounded.
            let until = Instant::now() + PANIC_DRAIN;
            while Instant::now() < until && !self.exited() {
                if self
                    .qmp
                    .wait_event(&["SHUTDOWN"], 0, Duration::from_millis(50))
                    .is_some()
                {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            return VmExit::Panic {
                console_tail: self.console.tail(40),
            };
        }
        match ev.data.get("reason").and_then(|r| r.as_str()) {
            Some("guest-reset") | Some("guest-shutdown-reset") => VmExit::Reset,
            _ => VmExit::PowerOff,
        }
    }

    fn reap(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut g = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_mut() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        *g = None;
        self.console.close();
    }

    /// Has the wall-clock limit passed?
    pub fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Wait up to `grace` for the guest to end by itself; if it does not
    /// (and its own limit has not passed), kill it and say so.
    pub fn wait_or_kill(&self, grace: Duration) -> VmExit {
        let until = Instant::now() + grace;
        while !self.exited() && !self.deadline_passed() && Instant::now() < until {
            if self
                .qmp
                .wait_event(
                    &["SHUTDOWN", "GUEST_PANICKED"],
                    0,
                    Duration::from_millis(20),
                )
                .is_some()
            {
                break;
            }
        }
        let ended = self.exited()
            || self.deadline_passed()
            || self
                .qmp
                .wait_event(&["SHUTDOWN", "GUEST_PANICKED"], 0, Duration::ZERO)
                .is_some();
        if ended {
            return self.wait();
        }
        self.kill();
        VmExit::EngineError(format!(
            "the guest did not power off within {:.1}s after its run ended; killed",
            grace.as_secs_f64()
        ))
    }

    /// Kill QEMU now.
    pub fn kill(&self) {
        let mut g = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut c) = g.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.console.close();
    }

    /// QEMU's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id())
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
