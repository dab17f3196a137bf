//! Small guest programs for the kvm engine: every vCPU starts directly in
//! 64-bit ring 3 (no firmware, no kernel) at the program's first byte.
//! On hosts whose KVM emulates guest kernel mode, user-mode code still runs
//! natively, so the engine's freeze, register capture, watchpoints, serial
//! and teardown are exercised at full speed with these.
//!
//! The ABI a program sees on vCPU `i` of `n`: `rdi = i`, `rsi = n`,
//! `rbx = DATA + i * 64` (a private 64-byte slot), `rax = '0' + i`,
//! `rsp` = the top of a private 4 KiB stack, RFLAGS.IOPL = 3 so `in`/`out`
//! reach the VMM (COM1 at 0x3f8, the exit port 0x501). Memory below 1 GiB
//! is identity-mapped, user-accessible, writable, executable.

use super::ram::KvmRam;
use crate::x86;
use ktstr_introspect::mem::PhysMem;
use kvm_bindings::{kvm_regs, kvm_sregs};

/// Page tables: PML4, then PDPT and PD (2 MiB pages over the first 1 GiB).
pub const PML4: u64 = 0x1000;
/// The GDT.
pub const GDT: u64 = 0x4000;
/// Where the program is loaded and every vCPU starts.
pub const CODE: u64 = 0x10000;
/// Largest program.
pub const CODE_MAX: usize = 0x10000;
/// Per-vCPU data slots (64 bytes each).
pub const DATA: u64 = 0x20000;
/// Per-vCPU stacks (4 KiB each), below `STACKS + 64 * 4 KiB`.
pub const STACKS: u64 = 0x40000;
/// Guest RAM a program gets.
pub const RAM_BYTES: u64 = 4 << 20;

/// Selectors: kernel code 0x08, kernel data 0x10, user data 0x1b,
/// user code 0x23 (RPL 3).
const GDT_ENTRIES: [u64; 5] = [
    0,
    x86::GDT_CODE64_DPL0,
    x86::GDT_DATA_DPL0,
    x86::GDT_DATA_DPL3,
    x86::GDT_CODE64_DPL3,
];

/// A program for every vCPU.
#[derive(Debug, Clone)]
pub struct RawGuest {
    pub code: Vec<u8>,
    pub nr_cpus: u32,
    /// Start in ring 0 instead of ring 3 (same ABI). Ring-0 code is what
    /// a nested KVM emulates; tests use it to provoke emulation failures.
    pub ring0: bool,
}

/// Write the identity map of [`x86::identity_map`] at `pml4` and `gdt`
/// at `gdt_at`. The kvm engine's Linux boot uses this too.
pub fn write_identity_tables(
    ram: &KvmRam,
    pml4: u64,
    user: bool,
    gdt_at: u64,
    gdt: &[u64],
) -> Result<(), String> {
    let gdt_writes = gdt
        .iter()
        .enumerate()
        .map(|(i, e)| (gdt_at + i as u64 * 8, *e));
    for (a, v) in x86::identity_map(pml4, user).into_iter().chain(gdt_writes) {
        ram.write_phys(a, &v.to_le_bytes())
            .map_err(|e| format!("writing guest page tables and GDT: {e}"))?;
    }
    Ok(())
}

/// Long mode with paging on our tables; CPL 3 when `user`, else CPL 0.
pub fn long_mode_sregs(s: kvm_sregs, user: bool) -> kvm_sregs {
    use x86::{SEG_TYPE_CODE, SEG_TYPE_DATA, segment};
    let (cs, ds) = if user {
        (
            segment(0x23, SEG_TYPE_CODE, 3, true, true),
            segment(0x1b, SEG_TYPE_DATA, 3, false, true),
        )
    } else {
        (
            segment(0x08, SEG_TYPE_CODE, 0, true, true),
            segment(0x10, SEG_TYPE_DATA, 0, false, true),
        )
    };
    x86::long_mode(s, cs, ds, GDT, GDT_ENTRIES.len(), PML4)
}

/// Initial registers of vCPU `cpu` (see the module docs for the ABI).
pub fn user_regs(cpu: u32, nr_cpus: u32) -> kvm_regs {
    kvm_regs {
        rip: CODE,
        rdi: cpu.into(),
        rsi: nr_cpus.into(),
        rbx: DATA + u64::from(cpu) * 64,
        rax: u64::from(b'0') + u64::from(cpu),
        rsp: STACKS + (u64::from(cpu) + 1) * 0x1000 - 16,
        rflags: x86::RFLAGS_RESERVED | x86::RFLAGS_IOPL3, // interrupts off
        ..Default::default()
    }
}

impl RawGuest {
    pub fn new(code: impl Into<Vec<u8>>, nr_cpus: u32) -> Self {
        Self {
            code: code.into(),
            nr_cpus,
            ring0: false,
        }
    }

    /// Check and load into `ram`.
    pub fn load(&self, ram: &KvmRam) -> Result<(), String> {
        if self.nr_cpus == 0 || self.nr_cpus > 64 {
            return Err(format!(
                "a raw guest has 1 to 64 vCPUs, not {}",
                self.nr_cpus
            ));
        }
        if self.code.is_empty() || self.code.len() > CODE_MAX {
            return Err(format!(
                "a raw guest program is 1 to {CODE_MAX} bytes, not {}",
                self.code.len()
            ));
        }
        write_identity_tables(ram, PML4, true, GDT, &GDT_ENTRIES)?;
        ram.write_phys(CODE, &self.code)
            .map_err(|e| format!("loading the program: {e}"))
    }
}

/// Ready-made programs (hand-assembled; each byte's instruction beside it).
pub mod programs {
    /// Print "hello from ring 3\n" on COM1, then power off (exit port, 0).
    pub fn hello() -> Vec<u8> {
        let mut c = vec![
            0x48, 0x8d, 0x35, 0x13, 0x00, 0x00, 0x00, // lea rsi, [rip + 0x13] (msg)
            0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xac, // l: lodsb
            0x84, 0xc0, // test al, al
            0x74, 0x03, // jz done
            0xee, // out dx, al
            0xeb, 0xf8, // jmp l
            0x66, 0xba, 0x01, 0x05, // done: mov dx, 0x501
            0x31, 0xc0, // xor eax, eax
            0xee, // out dx, al
        ];
        c.extend_from_slice(b"hello from ring 3\n\0");
        c
    }

    /// Print the vCPU's digit (`rax = '0' + i`), then count forever in
    /// its data slot (`inc qword [rbx]`).
    pub const COUNT: [u8; 10] = [
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al
        0x48, 0xff, 0x03, // l: inc qword [rbx]
        0xeb, 0xfb, // jmp l
    ];
    /// The counting loop of [`COUNT`]: `CODE + COUNT_LOOP`.
    pub const COUNT_LOOP: std::ops::Range<u64> = 5..10;

    /// Store an incrementing `rax` to the data slot forever:
    /// `l: inc rax; mov [rbx], rax; jmp l`. RIP after the store is `CODE + 6`.
    pub const STORE: [u8; 8] = [0x48, 0xff, 0xc0, 0x48, 0x89, 0x03, 0xeb, 0xf8];
    /// Offset of the instruction after [`STORE`]'s store.
    pub const STORE_NEXT: u64 = 6;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_introspect::mem::PhysMemExt;

    #[test]
    fn tables_identity_map_user_pages() {
        let ram = KvmRam::new(RAM_BYTES).unwrap();
        RawGuest::new(vec![0xeb, 0xfe], 2).load(&ram).unwrap();
        assert_eq!(ram.read_u64(PML4).unwrap() & !0xfff, PML4 + 0x1000);
        let pde = ram.read_u64(PML4 + 0x2000 + 8).unwrap();
        assert_eq!(pde & !0xfff, 2 << 20);
        assert_eq!(pde & 0x87, 0x87, "present, writable, user, 2 MiB");
        assert_eq!(ram.read_u8(CODE).unwrap(), 0xeb);
        let r = user_regs(3, 4);
        assert_eq!((r.rdi, r.rbx, r.rax), (3, DATA + 192, u64::from(b'3')));
        assert!(r.rsp > STACKS + 3 * 0x1000 && r.rsp < STACKS + 4 * 0x1000);
    }

    #[test]
    fn bad_programs_are_refused() {
        let ram = KvmRam::new(RAM_BYTES).unwrap();
        assert!(RawGuest::new(vec![], 1).load(&ram).is_err());
        assert!(RawGuest::new(vec![0x90], 0).load(&ram).is_err());
        assert!(RawGuest::new(vec![0x90], 65).load(&ram).is_err());
        assert!(
            RawGuest::new(vec![0x90; CODE_MAX + 1], 1)
                .load(&ram)
                .is_err()
        );
    }
}
