//! The kvm engine: ktstr's own microVM on kvm-ioctls. Guest RAM from
//! vm-memory, vCPUs on their own threads, COM1 into the console ring, the
//! freeze rendezvous ([`rendezvous`]), write watches through a read-only
//! memory slot ([`slots`]), and a wall-clock limit that tears everything
//! down.
//!
//! It boots Linux ([`boot`]: vmlinux ELF or bzImage, 64-bit entry, our
//! page tables, GDT, zero page, e820, MP table, topology CPUID) or a small
//! ring-3 program ([`raw`]) for tests on hosts whose KVM emulates kernel
//! mode. The host<->guest byte channels are virtio-vsock ([`vsock`] over
//! [`mmio`]): the guest connects to host CID 2, port N for channel N.

pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod mmio;
pub mod mptable;
pub mod ram;
pub mod raw;
pub mod rendezvous;
pub mod slots;
pub mod vcpu;
pub mod vsock;
pub(crate) mod watch;

use crate::VmError;
use crate::console::Console;
use crate::spec::{VmExit, VmSpec};
use devices::PioBus;
use ktstr_introspect::regs::CpuRegs;
use kvm_bindings::{KVM_MP_STATE_RUNNABLE, KVM_PIT_SPEAKER_DUMMY, kvm_mp_state, kvm_pit_config};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use ram::KvmRam;
use rendezvous::Rendezvous;
use slots::Slots;
use std::os::unix::thread::JoinHandleExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vcpu::{EndSlot, Vcpu};
use vmm_sys_util::eventfd::EventFd;

/// Where KVM puts its TSS pages (3 pages just below the 4 GiB boundary's
/// BIOS area, inside the MMIO hole).
const TSS_ADDR: usize = 0xfffb_d000;

fn kvm_err(what: &str) -> impl Fn(kvm_ioctls::Error) -> VmError + '_ {
    move |source| VmError::Kvm {
        what: what.to_string(),
        source,
    }
}

/// A VM booted by the kvm engine.
pub struct KvmVm {
    _vm: Arc<VmFd>,
    slots: Arc<Slots>,
    ram: Arc<KvmRam>,
    console: Console,
    rv: Arc<Rendezvous>,
    end: Arc<EndSlot>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    nr_cpus: u32,
    deadline: Instant,
    vsock: Option<Arc<mmio::VsockMmio>>,
    channels: Mutex<std::collections::HashMap<u32, std::os::unix::net::UnixStream>>,
    worker_stop: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for KvmVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmVm")
            .field("nr_cpus", &self.nr_cpus)
            .finish()
    }
}

/// The parts every boot path builds before configuring vCPUs.
struct Machine {
    kvm: Kvm,
    vm: Arc<VmFd>,
    slots: Arc<Slots>,
    ram: Arc<KvmRam>,
    pio: Arc<PioBus>,
    console: Console,
}

fn machine(ram_bytes: u64, console: Console) -> Result<Machine, VmError> {
    rendezvous::install_kick_handler().map_err(VmError::Engine)?;
    let kvm = Kvm::new().map_err(|e| {
        VmError::Unavailable(format!(
            "/dev/kvm: {e} (the kvm engine needs KVM; KTSTR_ENGINE=qemu uses QEMU with TCG)"
        ))
    })?;
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_tss_address(TSS_ADDR)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("KVM_CREATE_PIT2"))?;
    let ram = Arc::new(KvmRam::new(ram_bytes).map_err(VmError::Engine)?);
    let vm = Arc::new(vm);
    let slots = Arc::new(Slots::new(vm.clone(), &ram.host_regions()).map_err(VmError::Engine)?);
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::io("COM1 eventfd"))?;
    vm.register_irqfd(&irq, devices::COM1_IRQ)
        .map_err(kvm_err("KVM_IRQFD"))?;
    let pio = Arc::new(PioBus::new(console.clone(), irq));
    Ok(Machine {
        kvm,
        vm,
        slots,
        ram,
        pio,
        console,
    })
}

impl KvmVm {
    /// Boot a small ring-3 program on `guest.nr_cpus` vCPUs.
    pub fn boot_raw(
        guest: &raw::RawGuest,
        timeout: Duration,
        console: Console,
    ) -> Result<Self, VmError> {
        let m = machine(raw::RAM_BYTES, console)?;
        guest.load(&m.ram).map_err(VmError::Spec)?;
        let cpuid = m
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut fds = Vec::new();
        for i in 0..guest.nr_cpus {
            let fd =
                m.vm.create_vcpu(i.into())
                    .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
            let s = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
            fd.set_sregs(&raw::long_mode_sregs(s, !guest.ring0))
                .map_err(kvm_err("KVM_SET_SREGS"))?;
            fd.set_regs(&raw::user_regs(i, guest.nr_cpus))
                .map_err(kvm_err("KVM_SET_REGS"))?;
            // With the in-kernel LAPIC every vCPU but the first waits for
            // INIT/SIPI; these start running at once.
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
            fds.push(fd);
        }
        Self::start(m, fds, timeout, None, Default::default())
    }

    /// Boot Linux as `spec` says.
    pub fn boot(spec: &VmSpec) -> Result<Self, VmError> {
        spec.topology.validate().map_err(VmError::Spec)?;
        crate::spec::validate_memory_mb(spec.memory_mb).map_err(VmError::Spec)?;
        let console = Console::new(
            crate::console::DEFAULT_RING_BYTES,
            spec.console_sink.clone(),
        );
        let m = machine(u64::from(spec.memory_mb) << 20, console)?;
        let mut spec = spec.clone();
        let mut channels = std::collections::HashMap::new();
        let vsock = if spec.channels.is_empty() {
            None
        } else {
            let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::io("vsock eventfd"))?;
            m.vm.register_irqfd(&irq, mmio::IRQ)
                .map_err(kvm_err("KVM_IRQFD"))?;
            let dev = mmio::VsockMmio::new(m.ram.clone(), irq).map_err(VmError::Engine)?;
            for &port in &spec.channels {
                channels.insert(port, dev.listen(port).map_err(VmError::Spec)?);
            }
            spec.cmdline = format!(
                "{} {}",
                mmio::cmdline(),
                guest_channel_cmdline(&spec.cmdline)
            );
            Some(Arc::new(dev))
        };
        let fds = boot::setup(&m.kvm, &m.vm, &m.ram, &spec)?;
        Self::start(m, fds, spec.timeout, vsock, channels)
    }

    fn start(
        m: Machine,
        fds: Vec<VcpuFd>,
        timeout: Duration,
        vsock: Option<Arc<mmio::VsockMmio>>,
        channels: std::collections::HashMap<u32, std::os::unix::net::UnixStream>,
    ) -> Result<Self, VmError> {
        let n = fds.len() as u32;
        let rv = Arc::new(Rendezvous::new(n));
        rv.set_clock_vm(m.vm.clone());
        let end = Arc::new(EndSlot::default());
        let mut threads = Vec::new();
        for (i, fd) in fds.into_iter().enumerate() {
            let v = Vcpu {
                cpu: i as u32,
                fd,
                rv: rv.clone(),
                pio: m.pio.clone(),
                end: end.clone(),
                ram: m.ram.clone(),
                slots: m.slots.clone(),
                vsock: vsock.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("ktstr-vcpu{i}"))
                .spawn(move || v.run())
            {
                Ok(t) => threads.push(t),
                Err(e) => {
                    rv.stop_all();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(VmError::io("spawning a vCPU thread")(e));
                }
            }
        }
        rv.set_threads(threads.iter().map(|t| t.as_pthread_t()).collect());
        let worker_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut others = Vec::new();
        if let Some(dev) = vsock.clone() {
            let stop = worker_stop.clone();
            match std::thread::Builder::new()
                .name("ktstr-vsock".into())
                .spawn(move || dev.run_worker(&stop))
            {
                Ok(t) => others.push(t),
                Err(e) => {
                    rv.stop_all();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(VmError::io("spawning the vsock worker")(e));
                }
            }
        }
        threads.extend(others);
        Ok(Self {
            _vm: m.vm,
            slots: m.slots,
            ram: m.ram,
            console: m.console,
            rv,
            end,
            threads: Mutex::new(threads),
            nr_cpus: n,
            deadline: Instant::now() + timeout,
            vsock,
            channels: Mutex::new(channels),
            worker_stop,
        })
    }

    pub fn console(&self) -> &Console {
        &self.console
    }

    pub fn ram(&self) -> Arc<KvmRam> {
        self.ram.clone()
    }

    pub fn nr_cpus(&self) -> u32 {
        self.nr_cpus
    }

    /// Host end of byte channel `port` (the guest connects to host CID 2,
    /// port `port`); each channel is handed out once.
    pub fn channel(&self, port: u32) -> Result<std::os::unix::net::UnixStream, VmError> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port)
            .ok_or_else(|| {
                VmError::Spec(format!(
                    "channel {port}: not in the VM spec's channels, or already taken"
                ))
            })
    }

    /// Connect to a guest vsock port (the guest listens on it).
    pub fn connect_guest(
        &self,
        port: u32,
        timeout: Duration,
    ) -> Result<std::os::unix::net::UnixStream, VmError> {
        self.vsock
            .as_ref()
            .ok_or_else(|| {
                VmError::Spec("this VM has no vsock device (no channels in its spec)".into())
            })?
            .connect(port, timeout)
            .map_err(VmError::Engine)
    }

    /// Stop every vCPU and capture registers.
    pub fn stop(&self, timeout: Duration) -> Result<Vec<CpuRegs>, VmError> {
        self.rv.freeze(timeout).map_err(VmError::Engine)
    }

    /// Resume after [`stop`](Self::stop).
    pub fn cont(&self) {
        self.rv.thaw();
    }

    pub(crate) fn rendezvous(&self) -> Arc<Rendezvous> {
        self.rv.clone()
    }

    /// The guest's kvmclock, in nanoseconds (KVM_GET_CLOCK).
    pub fn guest_clock_ns(&self) -> Result<u64, VmError> {
        self._vm
            .get_clock()
            .map(|c| c.clock)
            .map_err(kvm_err("KVM_GET_CLOCK"))
    }

    pub(crate) fn slots(&self) -> Arc<Slots> {
        self.slots.clone()
    }

    /// Has the run ended?
    pub fn exited(&self) -> bool {
        self.end.get().is_some()
    }

    pub fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn teardown(&self) {
        self.worker_stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.rv.stop_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.console.close();
    }

    fn finish(&self, e: VmExit) -> VmExit {
        self.teardown();
        match e {
            VmExit::Reset if crate::kernel_log::panicked(&self.console.contents()) => {
                VmExit::Panic {
                    console_tail: self.console.tail(4096),
                }
            }
            VmExit::Panic { console_tail } if console_tail.is_empty() => VmExit::Panic {
                console_tail: self.console.tail(4096),
            },
            e => e,
        }
    }

    /// Wait for the run to end until `until`; past it, end the run as a
    /// timeout.
    fn wait_until(&self, until: Instant) -> VmExit {
        match self.end.wait_until(until) {
            Some(e) => self.finish(e),
            None => {
                self.end.set(VmExit::Timeout);
                self.finish(self.end.get().unwrap_or(VmExit::Timeout))
            }
        }
    }

    /// Wait for the run to end, or tear it down at the deadline.
    pub fn wait(&self) -> VmExit {
        self.wait_until(self.deadline)
    }

    /// Wait up to `grace` for the guest to end by itself, else end it.
    pub fn wait_or_kill(&self, grace: Duration) -> VmExit {
        self.wait_until((Instant::now() + grace).min(self.deadline))
    }

    /// End the VM now.
    pub fn kill(&self) {
        self.end
            .set(VmExit::EngineError("killed by the host".into()));
        self.teardown();
    }
}

impl Drop for KvmVm {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The guest side of channel N on this engine: the qemu engine's
/// `ktstr.chan=virtio:/dev/virtio-ports/ktstr.N` on the command line
/// becomes `ktstr.chan=vsock:2:N`.
pub fn guest_channel_cmdline(cmdline: &str) -> String {
    cmdline
        .split_whitespace()
        .map(|a| {
            a.strip_prefix("ktstr.chan=virtio:/dev/virtio-ports/ktstr.")
                .and_then(|n| n.parse::<u32>().ok())
                .map_or_else(
                    || a.to_string(),
                    |n| format!("ktstr.chan=vsock:{}:{n}", vsock::HOST_CID),
                )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl crate::frozen::Thaw for KvmVm {
    fn thaw(&self) -> Result<(), VmError> {
        self.cont();
        Ok(())
    }
    fn engine_dump(&self, _: &std::path::Path) -> Result<(), VmError> {
        Err(VmError::Unavailable(
            "the kvm engine has no dump format of its own; write ktstr's vmcore from this guard instead".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn channel_cmdline_is_rewritten_for_vsock() {
        assert_eq!(
            super::guest_channel_cmdline("quiet ktstr.chan=virtio:/dev/virtio-ports/ktstr.0 x=1"),
            "quiet ktstr.chan=vsock:2:0 x=1"
        );
        assert_eq!(super::guest_channel_cmdline("a b"), "a b");
    }
}
