//! KVM memory slots of the kvm engine, and write watching through them.
//!
//! A write watch maps the guest page that holds the watched bytes
//! read-only (`KVM_MEM_READONLY`, the rest of its RAM region split into
//! ordinary slots around it). Every guest store to that page then exits
//! to the VMM as an MMIO write carrying the address and the bytes: the
//! vCPU thread applies the store to guest RAM itself and, when it touches
//! the watched range, parks at that instruction and stops the other
//! vCPUs. This needs no debug registers, which nested KVM (this project's
//! build machines) does not deliver as exits, and catches every writer
//! with the value it wrote.

use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use std::sync::{Arc, Mutex, RwLock};

const PAGE: u64 = 0x1000;
/// First slot id used for the pieces of a split region.
const SPLIT_SLOT: u32 = 16;

/// One RAM region's slot: (slot id, guest-physical start, length, host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    slot: u32,
    gpa: u64,
    len: u64,
    host: u64,
}

#[derive(Debug)]
struct Armed {
    region: Region,
    pieces: Vec<u32>,
}

/// The VM's memory slots and the watched range.
#[derive(Debug)]
pub struct Slots {
    vm: Arc<VmFd>,
    regions: Vec<Region>,
    armed: Mutex<Option<Armed>>,
    /// (page, watched start, watched length) read by vCPU threads on
    /// every MMIO write.
    watched: RwLock<Option<(u64, u64, u64)>>,
}

fn set(vm: &VmFd, slot: u32, gpa: u64, len: u64, host: u64, flags: u32) -> Result<(), String> {
    let r = kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: len,
        userspace_addr: host,
    };
    // SAFETY: `host..host+len` lies inside guest RAM owned by the VM's
    // KvmRam, alive as long as the VM; len 0 deletes the slot.
    unsafe { vm.set_user_memory_region(r) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION slot {slot}: {e}"))
}

/// What a guest MMIO write at a watched page means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchedWrite {
    /// Not on the watched page: an ordinary device access.
    Elsewhere,
    /// On the watched page but outside the range: apply and go on.
    SamePage,
    /// Touches the watched range: apply, then stop here.
    Hit,
}

impl Slots {
    /// Register `(gpa, len, host)` regions as slots 0, 1, ...
    pub fn new(vm: Arc<VmFd>, host_regions: &[(u64, u64, u64)]) -> Result<Self, String> {
        let regions: Vec<Region> = host_regions
            .iter()
            .enumerate()
            .map(|(i, &(gpa, len, host))| Region {
                slot: i as u32,
                gpa,
                len,
                host,
            })
            .collect();
        for r in &regions {
            set(&vm, r.slot, r.gpa, r.len, r.host, 0)?;
        }
        Ok(Self {
            vm,
            regions,
            armed: Mutex::new(None),
            watched: RwLock::new(None),
        })
    }

    /// Classify a guest MMIO write.
    pub fn classify(&self, gpa: u64, len: u64) -> WatchedWrite {
        let w = *self.watched.read().unwrap_or_else(|e| e.into_inner());
        match w {
            Some((page, start, wlen)) if gpa >= page && gpa < page + PAGE => {
                if gpa < start + wlen && start < gpa + len {
                    WatchedWrite::Hit
                } else {
                    WatchedWrite::SamePage
                }
            }
            _ => WatchedWrite::Elsewhere,
        }
    }

    /// Watch `len` bytes at guest-physical `gpa` (within one page). Call
    /// with every vCPU parked.
    pub fn arm(&self, gpa: u64, len: u64) -> Result<(), String> {
        let page = gpa & !(PAGE - 1);
        if len == 0 || gpa + len > page + PAGE {
            return Err(format!(
                "a watch covers 1 byte up to the end of one page, not {len} bytes at {gpa:#x}"
            ));
        }
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        if armed.is_some() {
            return Err("this VM already has a write watch; stop it first".into());
        }
        let r = *self
            .regions
            .iter()
            .find(|r| page >= r.gpa && page + PAGE <= r.gpa + r.len)
            .ok_or_else(|| format!("watch at {gpa:#x}: not guest RAM"))?;
        set(&self.vm, r.slot, r.gpa, 0, r.host, 0)?;
        let off = page - r.gpa;
        let pieces = [
            (r.gpa, off, r.host, 0),
            (page, PAGE, r.host + off, KVM_MEM_READONLY),
            (page + PAGE, r.len - off - PAGE, r.host + off + PAGE, 0),
        ];
        let mut ids = Vec::new();
        for (i, &(g, l, h, f)) in pieces.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let slot = SPLIT_SLOT + i as u32;
            if let Err(e) = set(&self.vm, slot, g, l, h, f) {
                for s in ids {
                    let _ = set(&self.vm, s, 0, 0, 0, 0);
                }
                let _ = set(&self.vm, r.slot, r.gpa, r.len, r.host, 0);
                return Err(e);
            }
            ids.push(slot);
        }
        *self.watched.write().unwrap_or_else(|e| e.into_inner()) = Some((page, gpa, len));
        *armed = Some(Armed {
            region: r,
            pieces: ids,
        });
        Ok(())
    }

    /// Stop watching and restore the region's slot. Call with every vCPU
    /// parked.
    pub fn disarm(&self) -> Result<(), String> {
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        *self.watched.write().unwrap_or_else(|e| e.into_inner()) = None;
        let Some(a) = armed.take() else {
            return Ok(());
        };
        for s in a.pieces {
            set(&self.vm, s, 0, 0, 0, 0)?;
        }
        let r = a.region;
        set(&self.vm, r.slot, r.gpa, r.len, r.host, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_without_kvm_state() {
        let s = Slots {
            vm: Arc::new(match kvm_ioctls::Kvm::new().and_then(|k| k.create_vm()) {
                Ok(v) => v,
                Err(_) => {
                    eprintln!("SKIPPED: no usable /dev/kvm");
                    return;
                }
            }),
            regions: Vec::new(),
            armed: Mutex::new(None),
            watched: RwLock::new(Some((0x20000, 0x20008, 8))),
        };
        assert_eq!(s.classify(0x20008, 8), WatchedWrite::Hit);
        assert_eq!(s.classify(0x2000c, 1), WatchedWrite::Hit);
        assert_eq!(s.classify(0x20004, 4), WatchedWrite::SamePage);
        assert_eq!(s.classify(0x20010, 8), WatchedWrite::SamePage);
        assert_eq!(s.classify(0x21000, 8), WatchedWrite::Elsewhere);
        assert_eq!(s.classify(0xfee0_0000, 4), WatchedWrite::Elsewhere);
        assert!(s.arm(0x20ffc, 8).is_err(), "crosses a page");
    }
}
