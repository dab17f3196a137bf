//! The virtio-mmio transport (virtio 1.x, register layout version 2) of
//! the kvm engine's vsock device, announced to Linux with
//! `virtio_mmio.device=4K@0xd0000000:5`. vCPU threads access registers on
//! MMIO exits; a worker thread moves host socket data into the guest's RX
//! queue. Interrupts go through an irqfd on GSI 5.
//!
//! The guest is not trusted: register accesses of the wrong size are
//! ignored, a queue configured outside guest RAM puts the device in
//! NEEDS_RESET instead of being used.

use super::ram::KvmRam;
use super::vsock::{GUEST_CID, Vsock};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// Guest-physical base of the device's register window.
pub const MMIO_BASE: u64 = 0xd000_0000;
pub const MMIO_LEN: u64 = 0x1000;
/// Its interrupt line.
pub const IRQ: u32 = 5;
const QUEUE_MAX: u16 = 256;
const NUM_QUEUES: usize = 3;
const DEVICE_ID_VSOCK: u32 = 19;
const VENDOR_ID: u32 = 0x5453_544b; // "KTST"
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_NEEDS_RESET: u32 = 0x40;
const INT_VRING: u32 = 1;
const INT_CONFIG: u32 = 2;

/// The kernel command-line option announcing the device.
pub fn cmdline() -> String {
    format!("virtio_mmio.device=4K@{MMIO_BASE:#x}:{IRQ}")
}

struct Inner {
    queues: [Queue; NUM_QUEUES],
    queue_sel: u32,
    dev_features_sel: u32,
    drv_features_sel: u32,
    drv_features: u64,
    status: u32,
    interrupt_status: u32,
    activated: bool,
    vsock: Vsock,
}

/// The vsock device behind its MMIO transport.
pub struct VsockMmio {
    inner: Mutex<Inner>,
    ram: Arc<KvmRam>,
    irq: EventFd,
    kick: EventFd,
}

impl VsockMmio {
    pub fn new(ram: Arc<KvmRam>, irq: EventFd) -> Result<Self, String> {
        let q = || Queue::new(QUEUE_MAX).map_err(|e| format!("virtio queue: {e}"));
        Ok(Self {
            inner: Mutex::new(Inner {
                queues: [q()?, q()?, q()?],
                queue_sel: 0,
                dev_features_sel: 0,
                drv_features_sel: 0,
                drv_features: 0,
                status: 0,
                interrupt_status: 0,
                activated: false,
                vsock: Vsock::new(),
            }),
            ram,
            irq,
            kick: EventFd::new(libc::EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accept one guest connection to host `port`; the host end.
    pub fn listen(&self, port: u32) -> Result<UnixStream, String> {
        self.lock().vsock.listen(port)
    }

    /// Connect to guest `port`, waiting up to `timeout` for its answer.
    pub fn connect(&self, port: u32, timeout: std::time::Duration) -> Result<UnixStream, String> {
        let rx = self.lock().vsock.connect(port);
        self.wake();
        rx.recv_timeout(timeout)
            .map_err(|_| format!("guest vsock port {port} did not answer within {timeout:?}"))?
    }

    fn wake(&self) {
        let _ = self.kick.write(1);
    }

    fn signal(&self, g: &mut Inner, bits: u32) {
        g.interrupt_status |= bits;
        if let Err(e) = self.irq.write(1) {
            tracing::warn!(error = %e, "vsock interrupt");
        }
    }

    /// Move data and control packets into the guest's RX queue.
    fn pump(&self, g: &mut Inner) {
        if !g.activated {
            return;
        }
        g.vsock.flush_all();
        let Inner { queues, vsock, .. } = g;
        if vsock.fill_rx(&self.ram.mem, &mut queues[0]) {
            self.signal(g, INT_VRING);
        }
    }

    fn activate(&self, g: &mut Inner) {
        let mem = &self.ram.mem;
        if g.queues.iter().all(|q| q.is_valid(mem)) {
            g.activated = true;
        } else {
            tracing::warn!("vsock: the guest configured a queue outside its RAM");
            g.status |= STATUS_NEEDS_RESET;
            self.signal(g, INT_CONFIG);
        }
    }

    fn reset(g: &mut Inner) {
        for q in &mut g.queues {
            q.reset();
        }
        g.queue_sel = 0;
        g.drv_features = 0;
        g.status = 0;
        g.interrupt_status = 0;
        g.activated = false;
    }

    /// A guest read of the register window at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let g = self.lock();
        if offset >= 0x100 {
            let cfg = GUEST_CID.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = cfg.get((offset - 0x100) as usize + i).copied().unwrap_or(0);
            }
            return;
        }
        if data.len() != 4 {
            return;
        }
        let q = g.queues.get(g.queue_sel as usize);
        let v: u32 = match offset {
            0x000 => 0x7472_6976, // "virt"
            0x004 => 2,
            0x008 => DEVICE_ID_VSOCK,
            0x00c => VENDOR_ID,
            0x010 => match g.dev_features_sel {
                0 => VIRTIO_F_VERSION_1 as u32,
                1 => (VIRTIO_F_VERSION_1 >> 32) as u32,
                _ => 0,
            },
            0x034 => q.map_or(0, |q| q.max_size().into()),
            0x044 => q.is_some_and(|q| q.ready()).into(),
            0x060 => g.interrupt_status,
            0x070 => g.status,
            0x0fc => 0,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A guest write of the register window at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) {
        let Ok(b) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(b);
        let mut g = self.lock();
        let sel = g.queue_sel as usize;
        let configurable = !g.activated;
        match offset {
            0x014 => g.dev_features_sel = v,
            0x020 => {
                let shift = match g.drv_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                g.drv_features |= (u64::from(v) << shift) & VIRTIO_F_VERSION_1;
            }
            0x024 => g.drv_features_sel = v,
            0x030 => g.queue_sel = v,
            0x038 | 0x044 | 0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if configurable => {
                let Some(q) = g.queues.get_mut(sel) else {
                    return;
                };
                match offset {
                    0x038 => q.set_size(v.min(QUEUE_MAX.into()) as u16),
                    0x044 => q.set_ready(v == 1),
                    0x080 => q.set_desc_table_address(Some(v), None),
                    0x084 => q.set_desc_table_address(None, Some(v)),
                    0x090 => q.set_avail_ring_address(Some(v), None),
                    0x094 => q.set_avail_ring_address(None, Some(v)),
                    0x0a0 => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            0x050 if g.activated => {
                if v == 1 {
                    let Inner { queues, vsock, .. } = &mut *g;
                    if vsock.process_tx(&self.ram.mem, &mut queues[1]) {
                        self.signal(&mut g, INT_VRING);
                    }
                }
                self.pump(&mut g);
                drop(g);
                self.wake();
            }
            0x064 => g.interrupt_status &= !v,
            0x070 => {
                if v == 0 {
                    Self::reset(&mut g);
                } else {
                    g.status = v;
                    if v & STATUS_DRIVER_OK != 0 && !g.activated {
                        self.activate(&mut g);
                    }
                }
            }
            _ => {}
        }
    }

    /// The worker: wait for host data (or a kick) and pump, until `stop`.
    pub fn run_worker(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            let mut fds = vec![libc::pollfd {
                fd: self.kick.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            for (fd, r, w) in self.lock().vsock.poll_set() {
                let mut events = 0;
                if r {
                    events |= libc::POLLIN;
                }
                if w {
                    events |= libc::POLLOUT;
                }
                if events != 0 {
                    fds.push(libc::pollfd {
                        fd,
                        events,
                        revents: 0,
                    });
                }
            }
            // SAFETY: `fds` is a valid array of pollfd for its length;
            // the fds stay open (owned by the device) during the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            if n <= 0 {
                continue;
            }
            let _ = self.kick.read();
            let mut g = self.lock();
            self.pump(&mut g);
            // Nothing the guest can take (no RX buffers or no credit)
            // while a socket stays readable: do not spin.
            if !g.vsock.has_ctrl() {
                drop(g);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn dev() -> (VsockMmio, Arc<KvmRam>) {
        let ram = Arc::new(KvmRam::new(16 << 20).unwrap());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (VsockMmio::new(ram.clone(), irq).unwrap(), ram)
    }

    fn r32(d: &VsockMmio, off: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w32(d: &VsockMmio, off: u64, v: u32) {
        d.write(off, &v.to_le_bytes());
    }

    fn set_queue(d: &VsockMmio, i: u32, q: &MockSplitQueue<'_, vm_memory::GuestMemoryMmap>) {
        w32(d, 0x030, i);
        assert_eq!(r32(d, 0x034), u32::from(QUEUE_MAX));
        w32(d, 0x038, 16);
        for (off, a) in [
            (0x080, q.desc_table_addr().0),
            (0x090, q.avail_addr().0),
            (0x0a0, q.used_addr().0),
        ] {
            w32(d, off, a as u32);
            w32(d, off + 4, (a >> 32) as u32);
        }
        w32(d, 0x044, 1);
    }

    #[test]
    fn identity_features_and_config() {
        let (d, _) = dev();
        assert_eq!(r32(&d, 0x000), 0x7472_6976);
        assert_eq!(r32(&d, 0x004), 2);
        assert_eq!(r32(&d, 0x008), 19);
        w32(&d, 0x014, 1);
        assert_eq!(r32(&d, 0x010), 1, "VIRTIO_F_VERSION_1");
        assert_eq!(r32(&d, 0x100), 3, "guest CID");
        assert_eq!(r32(&d, 0x104), 0);
        // Wrong-size accesses are ignored.
        let mut b = [0u8; 2];
        d.read(0x000, &mut b);
        assert_eq!(b, [0, 0]);
        d.write(0x070, &[1, 2]);
        assert_eq!(r32(&d, 0x070), 0);
        assert!(cmdline().contains("0xd0000000:5"));
    }

    #[test]
    fn a_queue_outside_ram_needs_reset() {
        let (d, _) = dev();
        w32(&d, 0x030, 0);
        w32(&d, 0x038, 16);
        w32(&d, 0x080, 0);
        w32(&d, 0x084, 0x100); // descriptor table far beyond RAM
        w32(&d, 0x044, 1);
        w32(&d, 0x070, 1 | 2 | 8 | STATUS_DRIVER_OK);
        assert_ne!(r32(&d, 0x070) & STATUS_NEEDS_RESET, 0);
        assert_ne!(r32(&d, 0x060) & INT_CONFIG, 0);
        // A notify on the broken device does nothing; a reset clears it.
        w32(&d, 0x050, 1);
        w32(&d, 0x070, 0);
        assert_eq!(r32(&d, 0x070), 0);
    }

    /// The guest driver's side, through the registers: connect to host
    /// port 1024, send bytes, receive bytes, with interrupts.
    #[test]
    fn a_guest_connection_through_the_transport() {
        let (d, ram) = dev();
        let mem = &ram.mem;
        let mut host = d.listen(1024).unwrap();
        let rxq = MockSplitQueue::create(mem, GuestAddress(0x10_0000), 16);
        let txq = MockSplitQueue::create(mem, GuestAddress(0x20_0000), 16);
        let evq = MockSplitQueue::create(mem, GuestAddress(0x30_0000), 16);
        // RX buffers: 4 chains of header + 4 KiB data.
        let mut descs = Vec::new();
        for i in 0..4u64 {
            descs.push(RawDescriptor::from(Descriptor::new(
                0x40_0000 + i * 0x2000,
                44,
                (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16,
                (i * 2 + 1) as u16,
            )));
            descs.push(RawDescriptor::from(Descriptor::new(
                0x40_0100 + i * 0x2000,
                4096,
                VRING_DESC_F_WRITE as u16,
                0,
            )));
        }
        for c in 0..4usize {
            rxq.add_desc_chains(&descs[c * 2..c * 2 + 2], (c * 2) as u16)
                .unwrap();
        }
        set_queue(&d, 0, &rxq);
        set_queue(&d, 1, &txq);
        set_queue(&d, 2, &evq);
        w32(&d, 0x024, 1);
        w32(&d, 0x020, 1);
        w32(&d, 0x070, 1 | 2 | 8 | STATUS_DRIVER_OK);
        assert_eq!(r32(&d, 0x070) & STATUS_NEEDS_RESET, 0);

        let hdr = |op: u16, len: u32| {
            let mut b = Vec::new();
            b.extend_from_slice(&3u64.to_le_bytes());
            b.extend_from_slice(&2u64.to_le_bytes());
            b.extend_from_slice(&7000u32.to_le_bytes());
            b.extend_from_slice(&1024u32.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&op.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&65536u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b
        };
        // REQUEST, then RW "ping", as two TX chains.
        mem.write_slice(&hdr(1, 0), GuestAddress(0x50_0000))
            .unwrap();
        mem.write_slice(&hdr(5, 4), GuestAddress(0x50_1000))
            .unwrap();
        mem.write_slice(b"ping", GuestAddress(0x50_2000)).unwrap();
        txq.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(0x50_0000, 44, 0, 0))],
            0,
        )
        .unwrap();
        txq.add_desc_chains(
            &[
                RawDescriptor::from(Descriptor::new(0x50_1000, 44, VRING_DESC_F_NEXT as u16, 2)),
                RawDescriptor::from(Descriptor::new(0x50_2000, 4, 0, 0)),
            ],
            1,
        )
        .unwrap();
        w32(&d, 0x050, 1);
        assert_ne!(r32(&d, 0x060) & INT_VRING, 0, "interrupt raised");
        assert_eq!(d.irq.read().unwrap(), 2, "TX used + RX filled");
        w32(&d, 0x064, INT_VRING);
        assert_eq!(r32(&d, 0x060), 0);
        let mut b = [0u8; 4];
        host.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        // RESPONSE arrived in RX buffer 0.
        let op = mem.read_obj::<u16>(GuestAddress(0x40_0000 + 30)).unwrap();
        assert_eq!(op, 2);
        // Host -> guest: the worker pumps it into the next RX buffer.
        host.write_all(b"pong").unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| d.run_worker(&stop));
            let t0 = std::time::Instant::now();
            loop {
                let used = mem
                    .read_obj::<u16>(GuestAddress(rxq.used_addr().0 + 2))
                    .unwrap();
                let found = (0..used as u64).any(|i| {
                    let mut p = [0u8; 4];
                    mem.read_slice(&mut p, GuestAddress(0x40_0100 + i * 0x2000))
                        .unwrap();
                    &p == b"pong"
                });
                if found {
                    break;
                }
                assert!(t0.elapsed().as_secs() < 5, "pong not delivered");
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
}
