//! One vCPU thread of the kvm engine: run `KVM_RUN`, dispatch exits to the
//! devices, park at freezes, apply and report stores to a watched page
//! ([`super::slots`]), and turn the exits
//! that end a run (power-off, reset, triple fault, emulation failure) into
//! a [`VmExit`].

use super::devices::PioBus;
use super::ram::KvmRam;
use super::rendezvous::{Hit, Rendezvous, set_immediate_exit_ptr};
use super::slots::{Slots, WatchedWrite};
use crate::spec::VmExit;
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::regs::CpuRegs;
use kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, Msrs, kvm_msr_entry,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// The first end of a run wins; waiters are woken.
#[derive(Debug, Default)]
pub struct EndSlot {
    m: Mutex<Option<VmExit>>,
    cv: Condvar,
}

impl EndSlot {
    /// Record how the run ended (keeps the first).
    pub fn set(&self, e: VmExit) {
        let mut g = self.m.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
        self.cv.notify_all();
    }

    pub fn get(&self) -> Option<VmExit> {
        self.m.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait until the run ends or `deadline` passes.
    pub fn wait_until(&self, deadline: Instant) -> Option<VmExit> {
        let mut g = self.m.lock().unwrap_or_else(|p| p.into_inner());
        while g.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = self
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        g.clone()
    }
}

/// What a vCPU thread needs.
pub struct Vcpu {
    pub cpu: u32,
    pub fd: VcpuFd,
    pub rv: Arc<Rendezvous>,
    pub pio: Arc<PioBus>,
    pub end: Arc<EndSlot>,
    pub ram: Arc<KvmRam>,
    pub slots: Arc<Slots>,
    pub vsock: Option<Arc<super::mmio::VsockMmio>>,
}

/// Registers in introspection's form.
pub fn capture(fd: &VcpuFd, cpu: u32) -> CpuRegs {
    let r = fd.get_regs().unwrap_or_default();
    let s = fd.get_sregs().unwrap_or_default();
    let mut msrs = Msrs::from_entries(&[
        kvm_msr_entry {
            index: MSR_LSTAR,
            ..Default::default()
        },
        kvm_msr_entry {
            index: MSR_KERNEL_GS_BASE,
            ..Default::default()
        },
    ])
    .ok();
    let (mut lstar, mut kgs) = (None, 0);
    if let Some(m) = msrs.as_mut()
        && fd.get_msrs(m).is_ok_and(|n| n == 2)
    {
        lstar = Some(m.as_slice()[0].data);
        kgs = m.as_slice()[1].data;
    }
    CpuRegs {
        cpu,
        rip: r.rip,
        rsp: r.rsp,
        rbp: r.rbp,
        rax: r.rax,
        rbx: r.rbx,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        r8: r.r8,
        r9: r.r9,
        r10: r.r10,
        r11: r.r11,
        r12: r.r12,
        r13: r.r13,
        r14: r.r14,
        r15: r.r15,
        rflags: r.rflags,
        cs: s.cs.selector.into(),
        ss: s.ss.selector.into(),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        fs_base: s.fs.base,
        gs_base: s.gs.base,
        kernel_gs_base: kgs,
        idtr_base: Some(s.idt.base),
        lstar,
    }
}

/// Explain an emulation failure: where, which bytes, and what to do.
fn internal_error(v: &mut Vcpu) -> String {
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal`
    // is the active member of the exit union.
    let (sub, ndata, data) = unsafe {
        let i = v.fd.get_kvm_run().__bindgen_anon_1.internal;
        (i.suberror, i.ndata, i.data)
    };
    let regs = v.fd.get_regs().unwrap_or_default();
    let bytes =
        v.fd.translate_gva(regs.rip)
            .ok()
            .filter(|t| t.valid != 0)
            .and_then(|t| {
                let mut b = [0u8; 15];
                v.ram.read_phys(t.physical_address, &mut b).ok().map(|_| b)
            })
            .map(|b| {
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "unreadable".into());
    let what = match sub {
        1 => "emulation failure",
        2 => "simultaneous exceptions",
        3 => "delivery event",
        _ => "internal error",
    };
    let n = (ndata as usize).min(data.len());
    format!(
        "KVM {what} (suberror {sub}, data {:x?}) on vCPU {} at RIP {:#x}, instruction bytes [{bytes}]. \
         KVM could not run this guest code; on hosts whose KVM emulates guest kernel mode (nested \
         setups; `auto` probes for it) use the qemu engine: KTSTR_ENGINE=qemu",
        &data[..n],
        v.cpu,
        regs.rip
    )
}

impl Vcpu {
    /// Finish an I/O or MMIO exit inside KVM (`KVM_RUN` with
    /// `immediate_exit`), so registers read next are consistent.
    fn complete_pending_io(&mut self) {
        self.fd.set_kvm_immediate_exit(1);
        let _ = self.fd.run();
        self.fd.set_kvm_immediate_exit(0);
    }

    /// A store KVM could not complete: device MMIO, or the watched page.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        match self.slots.classify(gpa, data.len() as u64) {
            WatchedWrite::Elsewhere => {}
            w => {
                if let Err(e) = self.ram.write_phys(gpa, data) {
                    tracing::warn!(gpa, error = %e, "applying a store to the watched page");
                }
                if w == WatchedWrite::Hit {
                    self.rv.report_hit(Hit { cpu: self.cpu, gpa });
                }
            }
        }
    }

    /// The thread body; returns when the run ends or the VM is torn down.
    pub fn run(mut self) {
        let ie = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        set_immediate_exit_ptr(ie);
        let mut io_pending = false;
        let vsock = self.vsock.clone();
        let vsock_at = |gpa: u64| {
            use super::mmio::{MMIO_BASE, MMIO_LEN};
            let d = vsock.as_ref()?;
            (MMIO_BASE..MMIO_BASE + MMIO_LEN)
                .contains(&gpa)
                .then(|| (d, gpa - MMIO_BASE))
        };
        let end = loop {
            self.fd.set_kvm_immediate_exit(0);
            if self.rv.stopping() {
                break None;
            }
            if self.rv.should_stop_running() {
                if std::mem::take(&mut io_pending) {
                    self.complete_pending_io();
                }
                let regs = capture(&self.fd, self.cpu);
                self.rv.park(self.cpu, regs);
                continue;
            }
            io_pending = true;
            match self.fd.run() {
                Ok(VcpuExit::IoOut(port, data)) => {
                    if let Some(e) = self.pio.write(port, data) {
                        break Some(e);
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => self.pio.read(port, data),
                Ok(VcpuExit::MmioRead(gpa, data)) => match vsock_at(gpa) {
                    Some((d, off)) => d.read(off, data),
                    None => data.fill(0xff),
                },
                Ok(VcpuExit::MmioWrite(gpa, data)) => {
                    let mut buf = [0u8; 8];
                    let n = data.len().min(8);
                    buf[..n].copy_from_slice(&data[..n]);
                    match vsock_at(gpa) {
                        Some((d, off)) => d.write(off, &buf[..n]),
                        None => self.mmio_write(gpa, &buf[..n]),
                    }
                }
                Ok(VcpuExit::Hlt) => std::thread::yield_now(),
                Ok(VcpuExit::Shutdown) => break Some(VmExit::Reset),
                Ok(VcpuExit::SystemEvent(t, _)) => match t {
                    KVM_SYSTEM_EVENT_SHUTDOWN => break Some(VmExit::PowerOff),
                    KVM_SYSTEM_EVENT_RESET => break Some(VmExit::Reset),
                    KVM_SYSTEM_EVENT_CRASH => {
                        break Some(VmExit::Panic {
                            console_tail: String::new(),
                        });
                    }
                    other => tracing::debug!(other, "system event ignored"),
                },
                Ok(VcpuExit::InternalError) => {
                    break Some(VmExit::EngineError(internal_error(&mut self)));
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    break Some(VmExit::EngineError(format!(
                        "KVM could not enter vCPU {} (hardware reason {reason:#x}, cpu {cpu})",
                        self.cpu
                    )));
                }
                Ok(other) => {
                    break Some(VmExit::EngineError(format!(
                        "unexpected KVM exit on vCPU {}: {other:?}",
                        self.cpu
                    )));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    io_pending = false;
                }
                Err(e) => {
                    break Some(VmExit::EngineError(format!(
                        "KVM_RUN on vCPU {}: {e}",
                        self.cpu
                    )));
                }
            }
        };
        set_immediate_exit_ptr(std::ptr::null_mut());
        if let Some(e) = end {
            tracing::debug!(cpu = self.cpu, ?e, "run ended");
            self.end.set(e);
            self.rv.stop_all();
        }
    }
}
