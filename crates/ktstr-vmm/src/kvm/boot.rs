//! Booting Linux on the kvm engine with the 64-bit boot protocol, as
//! Firecracker does: load the kernel (uncompressed vmlinux ELF, which
//! skips decompression, or a bzImage) with linux-loader, write the command
//! line, the initramfs, the zero page with an e820 map, an MP table, an
//! identity-mapped page table and a GDT with the boot protocol's
//! selectors, and start the boot vCPU at the kernel's 64-bit entry in long
//! mode. The other vCPUs wait for the kernel's INIT/SIPI in the in-kernel
//! LAPIC.

use super::cpuid;
use super::mptable;
use super::ram::{HIGH_RAM_START, KvmRam, MMIO_HOLE_START};
use crate::VmError;
use crate::spec::VmSpec;
use ktstr_introspect::mem::PhysMem;
use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, Cmdline, Elf, KernelLoader, load_cmdline};
use vm_memory::{Bytes, GuestAddress};

/// The zero page (struct boot_params).
pub const ZERO_PAGE: u64 = 0x7000;
/// The boot stack top.
const BOOT_STACK: u64 = 0x8ff0;
/// Page tables: PML4, then PDPT and PD (1 GiB identity map, 2 MiB pages).
const PML4: u64 = 0x9000;
/// GDT and (empty) IDT.
const GDT: u64 = 0x500;
const IDT: u64 = 0x520;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
const CMDLINE_MAX: usize = 4096;
/// Where the kernel is loaded (1 MiB).
const HIMEM_START: u64 = 0x10_0000;
/// Start of the EBDA / MP table area; RAM below is usable.
const EBDA_START: u64 = mptable::MPTABLE_START;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

/// Options the engine always passes: the serial console (early too, so a
/// boot that stalls still shows how far it got), reboot through the
/// keyboard controller, no PCI, no i8042 probing, a trusted TSC.
pub const BASE_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=-1 \
     pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd tsc=reliable no_timer_check";

/// GDT: null, null, code 0x10 (__BOOT_CS), data 0x18 (__BOOT_DS), TSS 0x20.
const GDT_ENTRIES: [u64; 5] = [
    0,
    0,
    crate::x86::GDT_CODE64_DPL0,
    crate::x86::GDT_DATA_DPL0,
    crate::x86::GDT_TSS64,
];

fn e(what: &str) -> impl Fn(String) -> VmError + '_ {
    move |m| VmError::Engine(format!("{what}: {m}"))
}

/// The e820 map for `ram`.
pub fn e820(ram: &KvmRam) -> Vec<boot_e820_entry> {
    let low_end = ram.low_end();
    let mut v = vec![
        boot_e820_entry {
            addr: 0,
            size: EBDA_START,
            r#type: E820_RAM,
        },
        boot_e820_entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            r#type: E820_RESERVED,
        },
        boot_e820_entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            r#type: E820_RAM,
        },
    ];
    for (start, len) in ktstr_introspect::mem::PhysMem::regions(ram) {
        if start >= HIGH_RAM_START {
            v.push(boot_e820_entry {
                addr: start,
                size: len,
                r#type: E820_RAM,
            });
        }
    }
    v
}

/// Load the kernel; returns the 64-bit entry point and the bzImage setup
/// header if there is one.
fn load_kernel(
    ram: &KvmRam,
    spec: &VmSpec,
) -> Result<(u64, Option<linux_loader::loader::bootparam::setup_header>), VmError> {
    let mut f = std::fs::File::open(&spec.kernel)
        .map_err(|x| VmError::Spec(format!("kernel {}: {x}", spec.kernel.display())))?;
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut f, &mut magic)
        .map_err(|x| VmError::Spec(format!("kernel {}: {x}", spec.kernel.display())))?;
    if magic == *b"\x7fELF" {
        let r =
            Elf::load(&ram.mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(|x| {
                VmError::Spec(format!("loading vmlinux {}: {x}", spec.kernel.display()))
            })?;
        Ok((r.kernel_load.0, None))
    } else {
        let r = BzImage::load(&ram.mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(
            |x| VmError::Spec(format!("loading bzImage {}: {x}", spec.kernel.display())),
        )?;
        // The 64-bit entry is 0x200 past the protected-mode kernel's start.
        Ok((r.kernel_load.0 + 0x200, r.setup_header))
    }
}

/// Write everything the kernel needs into guest memory and create the
/// vCPUs, the boot vCPU ready at the kernel entry.
pub fn setup(kvm: &Kvm, vm: &VmFd, ram: &KvmRam, spec: &VmSpec) -> Result<Vec<VcpuFd>, VmError> {
    let t = spec.topology;
    let (entry, setup_header) = load_kernel(ram, spec)?;

    let mut cmdline = Cmdline::new(CMDLINE_MAX).map_err(|x| e("command line")(x.to_string()))?;
    cmdline
        .insert_str(BASE_CMDLINE)
        .and_then(|_| {
            if spec.cmdline.trim().is_empty() {
                Ok(())
            } else {
                cmdline.insert_str(spec.cmdline.trim())
            }
        })
        .map_err(|x| VmError::Spec(format!("kernel command line: {x}")))?;
    load_cmdline(&ram.mem, GuestAddress(CMDLINE), &cmdline)
        .map_err(|x| e("writing the command line")(x.to_string()))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);

    let mut params = boot_params::default();
    if let Some(h) = setup_header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = 0xaa55;
        params.hdr.header = 0x5372_6448; // "HdrS"
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;

    if let Some(path) = &spec.initramfs {
        let data = std::fs::read(path)
            .map_err(|x| VmError::Spec(format!("initramfs {}: {x}", path.display())))?;
        let top = ram.low_end().min(MMIO_HOLE_START).min(0x7fff_ffff);
        let at = top
            .checked_sub(data.len() as u64)
            .map(|a| a & !0xfff)
            .filter(|&a| a >= HIMEM_START + (64 << 20))
            .ok_or_else(|| {
                VmError::Spec(format!(
                    "initramfs of {} MiB does not fit in {} MiB of guest memory",
                    data.len() >> 20,
                    spec.memory_mb
                ))
            })?;
        ram.mem
            .write_slice(&data, GuestAddress(at))
            .map_err(|x| e("writing the initramfs")(x.to_string()))?;
        params.hdr.ramdisk_image = at as u32;
        params.hdr.ramdisk_size = data.len() as u32;
    }

    let map = e820(ram);
    for (i, ent) in map.iter().enumerate() {
        params.e820_table[i] = *ent;
    }
    params.e820_entries = map.len() as u8;
    ram.mem
        .write_obj(params, GuestAddress(ZERO_PAGE))
        .map_err(|x| e("writing the zero page")(x.to_string()))?;
    ram.mem
        .write_slice(&mptable::build(&t), GuestAddress(mptable::MPTABLE_START))
        .map_err(|x| e("writing the MP table")(x.to_string()))?;
    super::raw::write_identity_tables(ram, PML4, false, GDT, &GDT_ENTRIES)
        .and_then(|_| {
            ram.write_phys(IDT, &0u64.to_le_bytes())
                .map_err(|x| x.to_string())
        })
        .map_err(e("writing page tables"))?;

    let base = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|x| e("KVM_GET_SUPPORTED_CPUID")(x.to_string()))?;
    let mut fds = Vec::new();
    for i in 0..t.nr_cpus() {
        let p = cpuid::place(&t, i);
        let fd = vm
            .create_vcpu(p.apic_id.into())
            .map_err(|x| e("KVM_CREATE_VCPU")(x.to_string()))?;
        let c = cpuid::for_vcpu(&base, &t, i).map_err(e("CPUID"))?;
        fd.set_cpuid2(&c)
            .map_err(|x| e("KVM_SET_CPUID2")(x.to_string()))?;
        set_lint(&fd)?;
        set_msrs(&fd)?;
        fd.set_fpu(&kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        })
        .map_err(|x| e("KVM_SET_FPU")(x.to_string()))?;
        if i == 0 {
            set_boot_regs(&fd, entry)?;
        }
        fds.push(fd);
    }
    Ok(fds)
}

/// LINT0 as ExtINT (the PIC), LINT1 as NMI, as firmware leaves them.
fn set_lint(fd: &VcpuFd) -> Result<(), VmError> {
    let mut l = fd
        .get_lapic()
        .map_err(|x| e("KVM_GET_LAPIC")(x.to_string()))?;
    let mut set = |off: usize, mode: u32| {
        let mut b = [0u8; 4];
        for (k, x) in b.iter_mut().enumerate() {
            *x = l.regs[off + k] as u8;
        }
        let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (k, x) in v.to_le_bytes().iter().enumerate() {
            l.regs[off + k] = *x as _;
        }
    };
    set(0x350, 7);
    set(0x360, 4);
    fd.set_lapic(&l)
        .map_err(|x| e("KVM_SET_LAPIC")(x.to_string()))
}

fn set_msrs(fd: &VcpuFd) -> Result<(), VmError> {
    // IA32_MISC_ENABLE: fast strings.
    let m = Msrs::from_entries(&[kvm_msr_entry {
        index: 0x1a0,
        data: 1,
        ..Default::default()
    }])
    .map_err(|x| e("MSRs")(format!("{x:?}")))?;
    fd.set_msrs(&m)
        .map_err(|x| e("KVM_SET_MSRS")(x.to_string()))?;
    Ok(())
}

fn set_boot_regs(fd: &VcpuFd, entry: u64) -> Result<(), VmError> {
    let s = fd
        .get_sregs()
        .map_err(|x| e("KVM_GET_SREGS")(x.to_string()))?;
    use crate::x86::{SEG_TYPE_CODE, SEG_TYPE_DATA, SEG_TYPE_TSS_BUSY, segment};
    let mut s = crate::x86::long_mode(
        s,
        segment(0x10, SEG_TYPE_CODE, 0, true, true),
        segment(0x18, SEG_TYPE_DATA, 0, false, true),
        GDT,
        GDT_ENTRIES.len(),
        PML4,
    );
    s.tr = segment(0x20, SEG_TYPE_TSS_BUSY, 0, false, false);
    s.idt.base = IDT;
    s.idt.limit = 7;
    fd.set_sregs(&s)
        .map_err(|x| e("KVM_SET_SREGS")(x.to_string()))?;
    fd.set_regs(&kvm_regs {
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE,
        rflags: 2,
        ..Default::default()
    })
    .map_err(|x| e("KVM_SET_REGS")(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_around_the_holes() {
        let r = KvmRam::new(256 << 20).unwrap();
        let m: Vec<(u64, u64, u32)> = e820(&r)
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        assert_eq!(m[0], (0, EBDA_START, E820_RAM));
        assert_eq!(m[1].2, E820_RESERVED);
        assert_eq!(m[2], (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM));
        assert_eq!(m.len(), 3);
    }
}
