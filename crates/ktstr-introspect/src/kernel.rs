//! The kernel model: guest memory + kernel image + translator, with typed
//! reads at kernel virtual addresses, per-CPU variables, and KASLR
//! discovery.
//!
//! Discovery order (first that works wins, and the result records which):
//! 1. VMCOREINFO (`KERNELOFFSET`, `NUMBER(phys_base)`), as drgn does;
//! 2. CPU state: `MSR_LSTAR - entry_SYSCALL_64` gives the slide; then the
//!    runtime `_text` is walked through CR3's page tables for phys_base;
//! 3. CPU state without LSTAR: the IDT (IDTR base + CR3) gate 0 handler
//!    against `asm_exc_divide_error`, as crash does;
//! 4. nothing but memory: find `linux_banner` by scanning RAM (gives
//!    phys_base), then read the kernel-image page directory of
//!    `init_top_pgt` to find the virtual slide. RAM holds several copies
//!    of the banner text; each is tried until one yields a consistent
//!    translation.
//!
//! A vmlinux from another build than the dump's kernel is refused
//! (VMCOREINFO `OSRELEASE` / `BUILD-ID` against the image), rather than
//! blamed on a wrong slide. Addresses computed from guest values are
//! checked; per-CPU offsets are validated (non-zero, distinct, inside
//! RAM) and a CPU whose offset is impossible is reported, not used.
#![deny(clippy::arithmetic_side_effects)]

use crate::image::KernelImage;
use crate::mem::{MemError, PhysMem, PhysMemExt};
use crate::regs::CpuRegs;
use crate::translate::{
    DEFAULT_PAGE_OFFSET_L4, START_KERNEL_MAP, TranslateError, TranslationParams, Translator,
    walk_page_tables,
};
use crate::vmcore::VmcoreInfo;
use std::sync::{Arc, OnceLock};

/// The most CPUs we will believe a guest has (x86-64 NR_CPUS max).
pub const MAX_CPUS: u32 = 8192;
/// The most NUMA nodes we will believe a guest has.
pub const MAX_NODES: u32 = 1024;
/// Default direct-map base with 5-level paging.
pub const DEFAULT_PAGE_OFFSET_L5: u64 = 0xff11_0000_0000_0000;

/// A failure of a kernel-level read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelError {
    #[error("symbol `{0}` is not in the vmlinux symbol table")]
    NoSymbol(String),
    #[error(transparent)]
    Translate(#[from] TranslateError),
    #[error(transparent)]
    Mem(#[from] MemError),
    #[error("KASLR discovery failed: {0}")]
    Discovery(String),
    #[error(
        "the vmlinux is from another build than this kernel: {what} (dump: {dump}, vmlinux: {image}); give the vmlinux of the kernel that wrote the dump"
    )]
    WrongImage {
        what: &'static str,
        dump: String,
        image: String,
    },
    #[error("address overflow: {0}")]
    Overflow(String),
    #[error("{0}")]
    Invalid(String),
}

/// `base + off` for a guest pointer, or an overflow error naming both.
pub fn field_addr(base: u64, off: u64) -> Result<u64> {
    base.checked_add(off)
        .ok_or_else(|| KernelError::Overflow(format!("{base:#x} + {off:#x}")))
}

/// The per-CPU areas: `__per_cpu_offset[cpu]` for each possible CPU (added
/// to a per-CPU symbol modulo 2^64, as the kernel does), and
/// the CPUs whose offset is impossible (zero, shared with another CPU, or
/// pointing outside RAM), which are never read through.
#[derive(Debug, Clone, Default)]
pub struct PerCpu {
    /// One entry per possible CPU (`nr_cpu_ids`, bounded by the array).
    pub offsets: Vec<u64>,
    /// (cpu, why its offset cannot be right).
    pub bad: Vec<(u32, String)>,
    /// Why the CPU count itself is suspect, if it is.
    pub count_suspect: Option<String>,
}

impl PerCpu {
    /// The offset of `cpu`, if it is a possible CPU with a sane offset.
    pub fn get(&self, cpu: u32) -> Option<u64> {
        if self.bad.iter().any(|(c, _)| *c == cpu) {
            return None;
        }
        self.offsets.get(cpu as usize).copied()
    }

    /// Possible CPUs with a sane offset, with it.
    pub fn good(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.offsets
            .iter()
            .enumerate()
            .map(|(i, o)| (i as u32, *o))
            .filter(|(c, _)| !self.bad.iter().any(|(b, _)| b == c))
    }
}

type Result<T> = std::result::Result<T, KernelError>;

/// How the translation parameters were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KaslrSource {
    Vmcoreinfo,
    Lstar,
    Idt,
    BannerScan,
    Given,
}

/// A guest kernel: memory, image and translation for one snapshot.
pub struct Kernel<M: PhysMem> {
    mem: M,
    image: Arc<KernelImage>,
    tr: Translator,
    source: KaslrSource,
    pcpu: OnceLock<PerCpu>,
}

impl<M: PhysMem> std::fmt::Debug for Kernel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("params", self.tr.params())
            .field("source", &self.source)
            .finish()
    }
}

fn text_pa(link_kva: u64, p: &TranslationParams) -> u64 {
    link_kva
        .wrapping_add(p.kaslr_offset)
        .wrapping_sub(START_KERNEL_MAP)
        .wrapping_add(p.phys_base)
}

impl<M: PhysMem> Kernel<M> {
    /// Build with known translation parameters.
    pub fn new(
        mem: M,
        image: Arc<KernelImage>,
        params: TranslationParams,
        source: KaslrSource,
    ) -> Self {
        Self {
            mem,
            image,
            tr: Translator::new(params),
            source,
            pcpu: OnceLock::new(),
        }
    }

    /// Discover translation parameters from whatever the source offers.
    pub fn discover(
        mem: M,
        image: Arc<KernelImage>,
        cpus: &[CpuRegs],
        vmcoreinfo: Option<&VmcoreInfo>,
    ) -> Result<Self> {
        if let Some(info) = vmcoreinfo {
            check_same_build(&image, info)?;
        }
        let (p, source) = discover_params(&mem, &image, cpus, vmcoreinfo)?;
        Ok(Self::new(mem, image, p, source))
    }

    pub fn mem(&self) -> &M {
        &self.mem
    }
    pub fn image(&self) -> &KernelImage {
        &self.image
    }
    pub fn image_arc(&self) -> Arc<KernelImage> {
        self.image.clone()
    }
    pub fn params(&self) -> &TranslationParams {
        self.tr.params()
    }
    pub fn kaslr_source(&self) -> KaslrSource {
        self.source
    }

    /// Runtime address of a symbol. Kernel-image symbols are slid;
    /// per-CPU section offsets (small values, as 6.12's `runqueues`) are
    /// returned unslid: add `__per_cpu_offset[cpu]` to either.
    pub fn sym(&self, name: &str) -> Result<u64> {
        let a = self
            .image
            .symbols()
            .addr(name)
            .ok_or_else(|| KernelError::NoSymbol(name.to_string()))?;
        Ok(self.slide_link(a))
    }

    /// Slide a link-time address (unless it is a per-CPU offset).
    pub fn slide_link(&self, link: u64) -> u64 {
        if link >= START_KERNEL_MAP {
            self.tr.slide(link)
        } else {
            link
        }
    }

    /// `symbol+offset` for a runtime address.
    pub fn symbolize(&self, kva: u64) -> Option<String> {
        let link = kva.wrapping_sub(self.params().kaslr_offset);
        self.image
            .symbols()
            .symbolize(link)
            .map(|(n, off)| format!("{n}+{off:#x}"))
    }

    pub fn kva_to_pa(&self, kva: u64) -> Result<u64> {
        Ok(self.tr.kva_to_pa(&self.mem, kva)?)
    }

    /// Read bytes at a runtime kernel virtual address (may span pages).
    pub fn read(&self, kva: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            let va = field_addr(kva, done as u64)?;
            // 1..=0x1000 bytes to the end of va's page.
            let in_page = 0x1000usize.saturating_sub((va & 0xfff) as usize);
            let n = in_page.min(rest.len());
            let pa = self.kva_to_pa(va)?;
            self.mem.read_phys(pa, &mut rest[..n])?;
            done = done.saturating_add(n);
        }
        Ok(())
    }

    /// Write bytes at a runtime kernel virtual address (live VMs).
    pub fn write(&self, kva: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
            let va = field_addr(kva, done as u64)?;
            let in_page = 0x1000usize.saturating_sub((va & 0xfff) as usize);
            let n = in_page.min(rest.len());
            let pa = self.kva_to_pa(va)?;
            self.mem.write_phys(pa, &rest[..n])?;
            done = done.saturating_add(n);
        }
        Ok(())
    }

    pub fn read_u8(&self, kva: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(kva, &mut b)?;
        Ok(b[0])
    }
    pub fn read_u16(&self, kva: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(kva, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    pub fn read_u32(&self, kva: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(kva, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    pub fn read_u64(&self, kva: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(kva, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Read an unsigned value of 1, 2, 4 or 8 bytes.
    pub fn read_uint(&self, kva: u64, size: u64) -> Result<u64> {
        Ok(match size {
            1 => self.read_u8(kva)? as u64,
            2 => self.read_u16(kva)? as u64,
            4 => self.read_u32(kva)? as u64,
            8 => self.read_u64(kva)?,
            other => {
                return Err(KernelError::Invalid(format!(
                    "cannot read a {other}-byte integer"
                )));
            }
        })
    }
    /// A NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&self, kva: u64, max: usize) -> Result<String> {
        let mut b = vec![0u8; max.min(crate::mem::MAX_READ)];
        self.read(kva, &mut b)?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// Value of a `u32`/`int` global.
    pub fn sym_u32(&self, name: &str) -> Result<u32> {
        self.read_u32(self.sym(name)?)
    }
    pub fn sym_u64(&self, name: &str) -> Result<u64> {
        self.read_u64(self.sym(name)?)
    }

    /// The guest's own VMCOREINFO text (`vmcoreinfo_data`, as kdump would
    /// put in a dump's note), read from memory; None if absent.
    pub fn vmcoreinfo_text(&self) -> Option<String> {
        let p = self.sym_u64("vmcoreinfo_data").ok().filter(|&p| p != 0)?;
        let n = self.sym_u64("vmcoreinfo_size").ok()?.min(1 << 16) as usize;
        let mut b = vec![0u8; n];
        self.read(p, &mut b).ok()?;
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        Some(String::from_utf8_lossy(&b[..end]).into_owned())
    }

    /// Number of possible CPUs (`nr_cpu_ids`), bounded.
    pub fn nr_cpu_ids(&self) -> Result<u32> {
        let n = self.sym_u32("nr_cpu_ids")?;
        if n == 0 || n > MAX_CPUS {
            return Err(KernelError::Invalid(format!(
                "nr_cpu_ids = {n} is implausible"
            )));
        }
        Ok(n)
    }

    /// Number of possible NUMA nodes (`nr_node_ids`, 1 without NUMA).
    pub fn nr_node_ids(&self) -> u32 {
        match self.sym_u32("nr_node_ids") {
            Ok(n) if (1..=MAX_NODES).contains(&n) => n,
            _ => 1,
        }
    }

    /// `__per_cpu_offset[0..nr_cpu_ids]`, validated (see [`PerCpu`]).
    /// Read once per snapshot.
    pub fn per_cpu(&self) -> Result<&PerCpu> {
        if let Some(v) = self.pcpu.get() {
            return Ok(v);
        }
        let n = self.nr_cpu_ids()?;
        let base = self.sym("__per_cpu_offset")?;
        let mut pc = PerCpu::default();
        // The array has NR_CPUS entries (its symbol's size / 8): more
        // possible CPUs than that is impossible.
        let cap = self
            .image
            .symbols()
            .get("__per_cpu_offset")
            .map(|s| s.size / 8)
            .filter(|&c| c > 0)
            .unwrap_or(u64::from(MAX_CPUS));
        let n = if u64::from(n) > cap {
            pc.count_suspect = Some(format!(
                "nr_cpu_ids = {n} exceeds the {cap}-entry __per_cpu_offset array; reading {cap}"
            ));
            cap as u32
        } else {
            n
        };
        let probe = self.sym("runqueues").ok();
        for cpu in 0..n {
            let off = self.read_u64(field_addr(base, u64::from(cpu).saturating_mul(8))?)?;
            let why = if off == 0 {
                Some("per-CPU offset 0 (every possible CPU has an area)".to_string())
            } else if let Some(prev) = pc.offsets.iter().position(|&o| o == off) {
                Some(format!("per-CPU offset {off:#x} is also CPU {prev}'s"))
            } else if let Some(rq) = probe
                && self.kva_to_pa(rq.wrapping_add(off)).is_err()
            {
                Some(format!(
                    "per-CPU offset {off:#x} puts runqueues outside RAM"
                ))
            } else {
                None
            };
            if let Some(w) = why {
                pc.bad.push((cpu, w));
            }
            pc.offsets.push(off);
        }
        Ok(self.pcpu.get_or_init(|| pc))
    }

    /// The sane per-CPU offsets, by CPU (see [`Kernel::per_cpu`]).
    pub fn per_cpu_offsets(&self) -> Result<Vec<u64>> {
        Ok(self.per_cpu()?.good().map(|(_, o)| o).collect())
    }

    /// Address of a per-CPU variable (by symbol) on `cpu`.
    pub fn per_cpu_sym(&self, name: &str, cpu: u32) -> Result<u64> {
        let base = self.sym(name)?;
        self.per_cpu_ptr(base, cpu)
    }

    /// Address of per-CPU pointer `base` on `cpu`.
    pub fn per_cpu_ptr(&self, base: u64, cpu: u32) -> Result<u64> {
        let pc = self.per_cpu()?;
        let off = pc
            .get(cpu)
            .ok_or_else(|| match pc.bad.iter().find(|(c, _)| *c == cpu) {
                Some((_, why)) => KernelError::Invalid(format!("cpu {cpu}: {why}")),
                None => KernelError::Invalid(format!(
                    "cpu {cpu} out of range (guest has {} CPUs)",
                    pc.offsets.len()
                )),
            })?;
        // Per-CPU addresses are modular: on kernels whose per-CPU symbols
        // are full kernel addresses the offset is "negative" (area -
        // __per_cpu_start), exactly as `per_cpu_ptr()` computes it.
        Ok(base.wrapping_add(off))
    }
}

/// Refuse a vmlinux from another build: VMCOREINFO's `OSRELEASE` must be
/// the image's release (from its `linux_banner`), and `BUILD-ID`, when
/// both have one, must match.
pub fn check_same_build(image: &KernelImage, info: &VmcoreInfo) -> Result<()> {
    if let (Some(dump), Some(img)) = (info.osrelease(), image.release())
        && dump != img
    {
        return Err(KernelError::WrongImage {
            what: "OSRELEASE differs",
            dump: dump.to_string(),
            image: img,
        });
    }
    if let (Some(dump), Some(img)) = (info.entries.get("BUILD-ID"), image.build_id()) {
        let img_hex: String = img.iter().map(|b| format!("{b:02x}")).collect();
        // VMCOREINFO may carry the first 20 bytes only.
        if !img_hex.starts_with(dump.as_str()) && !dump.starts_with(&img_hex) {
            return Err(KernelError::WrongImage {
                what: "BUILD-ID differs",
                dump: dump.clone(),
                image: img_hex,
            });
        }
    }
    Ok(())
}

impl Kernel<crate::vmcore::Vmcore> {
    /// The kernel of a vmcore: translation discovered from its VMCOREINFO
    /// and CPU notes (refusing a vmlinux from another build).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use ktstr_introspect::{CollectOptions, Kernel, KernelImage, Vmcore, render_text, snapshot};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let image = Arc::new(KernelImage::open("vmlinux".as_ref())?);
    /// let k = Kernel::from_vmcore(Vmcore::open("vmcore".as_ref())?, image)?;
    /// print!("{}", render_text(&snapshot(&k, &CollectOptions::default())));
    /// # Ok(()) }
    /// ```
    pub fn from_vmcore(core: crate::vmcore::Vmcore, image: Arc<KernelImage>) -> Result<Self> {
        let info = core.vmcoreinfo.clone();
        let cpus = core.cpus.clone();
        Self::discover(core, image, &cpus, info.as_ref())
    }
}

/// Parameters from a known virtual slide (e.g. the guest reported
/// `_text` from /proc/kallsyms) and a CPU's CR3: phys_base comes from a
/// page-table walk of the runtime `_text`.
pub fn params_from_slide(
    mem: &dyn PhysMem,
    image: &KernelImage,
    cpu: &CpuRegs,
    slide: u64,
) -> Result<TranslationParams> {
    let text = image
        .symbols()
        .addr("_text")
        .ok_or_else(|| KernelError::NoSymbol("_text".into()))?;
    let runtime = text.wrapping_add(slide);
    let (cr3, la57) = (cpu.pgd_pa(), cpu.la57());
    let pa = walk_page_tables(mem, cr3, la57, runtime)?;
    let mut p = TranslationParams {
        kaslr_offset: slide,
        phys_base: pa.wrapping_sub(runtime.wrapping_sub(START_KERNEL_MAP)),
        cr3,
        la57,
        ..Default::default()
    };
    finish_params(mem, image, &mut p)?;
    Ok(p)
}

/// Find translation parameters: see the module docs for the order.
pub fn discover_params(
    mem: &dyn PhysMem,
    image: &KernelImage,
    cpus: &[CpuRegs],
    vmcoreinfo: Option<&VmcoreInfo>,
) -> Result<(TranslationParams, KaslrSource)> {
    let syms = image.symbols();
    let link = |n: &str| {
        syms.addr(n)
            .ok_or_else(|| KernelError::NoSymbol(n.to_string()))
    };
    let cpu = cpus.iter().find(|c| c.cr3 != 0);
    let la57_cpu = cpu.map(|c| c.la57());
    let mut errors = Vec::new();

    // 1. VMCOREINFO.
    if let Some(info) = vmcoreinfo {
        if let (Some(phys_base), Some(slide)) = (info.number("phys_base"), info.kernel_offset()) {
            let mut p = TranslationParams {
                kaslr_offset: slide,
                phys_base: phys_base as u64,
                la57: info
                    .number("pgtable_l5_enabled")
                    .map(|v| v != 0)
                    .or(la57_cpu)
                    .unwrap_or(false),
                ..Default::default()
            };
            p.cr3 = match cpu {
                Some(c) => c.pgd_pa(),
                None => match link("init_top_pgt") {
                    Ok(a) => text_pa(a, &p),
                    Err(_) => 0,
                },
            };
            finish_params(mem, image, &mut p)?;
            return Ok((p, KaslrSource::Vmcoreinfo));
        }
        errors.push("VMCOREINFO lacks KERNELOFFSET or NUMBER(phys_base)".to_string());
    }

    // 2/3. CPU state.
    if let Some(c) = cpu {
        let cr3 = c.pgd_pa();
        let la57 = c.la57();
        let mut slide = None;
        let mut source = KaslrSource::Lstar;
        if let (Some(lstar), Ok(entry)) = (c.lstar.filter(|&l| l != 0), link("entry_SYSCALL_64")) {
            slide = Some(lstar.wrapping_sub(entry));
        } else if let Some(idt) = c.idtr_base.filter(|&b| b != 0) {
            match idt_slide(mem, cr3, la57, idt, image) {
                Ok(s) => {
                    slide = Some(s);
                    source = KaslrSource::Idt;
                }
                Err(e) => errors.push(format!("IDT: {e}")),
            }
        } else {
            errors.push("CPU state has neither MSR_LSTAR nor IDTR".into());
        }
        if let Some(slide) = slide {
            return Ok((params_from_slide(mem, image, c, slide)?, source));
        }
    }

    // 4. Banner scan.
    match banner_scan(
        mem,
        image,
        la57_cpu.unwrap_or(false),
        cpu.map(|c| c.pgd_pa()),
    ) {
        Ok(p) => Ok((p, KaslrSource::BannerScan)),
        Err(e) => {
            errors.push(format!("banner scan: {e}"));
            Err(KernelError::Discovery(errors.join("; ")))
        }
    }
}

/// Fill `page_offset_base` (from the kernel variable) and a CR3 fallback.
fn finish_params(mem: &dyn PhysMem, image: &KernelImage, p: &mut TranslationParams) -> Result<()> {
    let syms = image.symbols();
    p.page_offset_base = match syms.addr("page_offset_base") {
        Some(a) => mem.read_u64(text_pa(a, p))?,
        None if p.la57 => DEFAULT_PAGE_OFFSET_L5,
        None => DEFAULT_PAGE_OFFSET_L4,
    };
    // Bound the direct map: by the end of RAM, and by vmalloc_base.
    let ram_end = mem
        .regions()
        .iter()
        .map(|&(s, l)| s.saturating_add(l))
        .max()
        .unwrap_or(0);
    let mut dm = ram_end;
    if let Some(a) = syms.addr("vmalloc_base")
        && let Ok(vb) = mem.read_u64(text_pa(a, p))
    {
        let gap = vb.wrapping_sub(p.page_offset_base);
        if vb > p.page_offset_base && (dm == 0 || gap < dm) {
            dm = gap;
        }
    }
    p.direct_map_size = dm;
    if p.cr3 == 0
        && let Some(a) = syms.addr("init_top_pgt")
    {
        p.cr3 = text_pa(a, p);
    }
    if !crate::translate::is_canonical(p.page_offset_base, p.la57) || p.page_offset_base < (1 << 63)
    {
        return Err(KernelError::Discovery(format!(
            "page_offset_base read as {:#x}: wrong slide or phys_base",
            p.page_offset_base
        )));
    }
    Ok(())
}

/// crash's method: the divide-error gate of the IDT gives the slide.
fn idt_slide(
    mem: &dyn PhysMem,
    cr3: u64,
    la57: bool,
    idt: u64,
    image: &KernelImage,
) -> Result<u64> {
    let pa = walk_page_tables(mem, cr3, la57, idt)?;
    let mut g = [0u8; 16];
    mem.read_phys(pa, &mut g)?;
    let handler = u16::from_le_bytes([g[0], g[1]]) as u64
        | (u16::from_le_bytes([g[6], g[7]]) as u64) << 16
        | (u32::from_le_bytes([g[8], g[9], g[10], g[11]]) as u64) << 32;
    let link = ["asm_exc_divide_error", "divide_error"]
        .iter()
        .find_map(|n| image.symbols().addr(n))
        .ok_or_else(|| KernelError::NoSymbol("asm_exc_divide_error".into()))?;
    let slide = handler.wrapping_sub(link);
    if slide & 0x1f_ffff != 0 || slide >= (1 << 30) {
        return Err(KernelError::Discovery(format!(
            "IDT gate 0 handler {handler:#x} gives an implausible slide {slide:#x}"
        )));
    }
    Ok(slide)
}

/// Most banner copies tried.
const MAX_BANNER_CANDIDATES: usize = 16;

/// Find `linux_banner` in RAM for phys_base, then the image's page
/// directory for the virtual slide. RAM holds several copies of the text
/// (the image's, the log buffer's, /proc's); each copy is tried until one
/// yields a translation whose page tables map it back.
fn banner_scan(
    mem: &dyn PhysMem,
    image: &KernelImage,
    la57: bool,
    cr3: Option<u64>,
) -> Result<TranslationParams> {
    let banner = image
        .banner()
        .ok_or_else(|| KernelError::Discovery("vmlinux has no linux_banner text".into()))?;
    let needle = &banner[..banner.len().min(64)];
    if needle.is_empty() {
        return Err(KernelError::Discovery("empty linux_banner".into()));
    }
    let mut found = Vec::new();
    const CHUNK: usize = 4 << 20;
    // Chunks overlap by the needle's length so a copy across a boundary
    // is seen once.
    let mut buf = vec![0u8; CHUNK.saturating_add(needle.len())];
    'outer: for (start, len) in mem.regions() {
        let mut off = 0u64;
        while off < len {
            let n = (len.saturating_sub(off) as usize).min(buf.len());
            let Some(at) = start.checked_add(off) else {
                break;
            };
            mem.read_phys(at, &mut buf[..n])?;
            let mut from = 0;
            while let Some(i) = buf[from..n].windows(needle.len()).position(|w| w == needle) {
                let hit = from.saturating_add(i);
                // A copy starting in the overlap is found again next chunk.
                if hit < CHUNK || off.saturating_add(CHUNK as u64) >= len {
                    found.push(at.saturating_add(hit as u64));
                }
                if found.len() >= MAX_BANNER_CANDIDATES {
                    break 'outer;
                }
                from = hit.saturating_add(1);
            }
            off = off.saturating_add(CHUNK as u64);
        }
    }
    if found.is_empty() {
        return Err(KernelError::Discovery(
            "linux_banner not found in RAM".into(),
        ));
    }
    let mut why = Vec::new();
    for pa in &found {
        let finished = banner_params(mem, image, la57, *pa).and_then(|mut p| {
            if let Some(c) = cr3 {
                p.cr3 = c;
            }
            finish_params(mem, image, &mut p)?;
            Ok(p)
        });
        match finished {
            Ok(p) => return Ok(p),
            Err(e) => why.push(format!("copy at {pa:#x}: {e}")),
        }
    }
    Err(KernelError::Discovery(format!(
        "{} copies of linux_banner in RAM, none is the kernel image's: {}",
        found.len(),
        why.join("; ")
    )))
}

/// Translation parameters if the banner copy at `pa` is the image's own.
fn banner_params(
    mem: &dyn PhysMem,
    image: &KernelImage,
    la57: bool,
    pa: u64,
) -> Result<TranslationParams> {
    let link_banner = image
        .symbols()
        .addr("linux_banner")
        .ok_or_else(|| KernelError::NoSymbol("linux_banner".into()))?;
    // Physical: pa = link - START_KERNEL_MAP + slide + phys_base; the
    // virtual slide is still unknown, so first learn (slide + phys_base).
    let sum = pa.wrapping_sub(link_banner.wrapping_sub(START_KERNEL_MAP));
    // init_top_pgt sits in the image: its pa = link - START + sum.
    let pgt_link = image
        .symbols()
        .addr("init_top_pgt")
        .ok_or_else(|| KernelError::NoSymbol("init_top_pgt".into()))?;
    let pgt = pgt_link.wrapping_sub(START_KERNEL_MAP).wrapping_add(sum);
    // Which 2 MiB page of the image mapping holds the banner's page?
    let want = pa & !0x1f_ffff;
    for idx in 0..512u64 {
        let va = START_KERNEL_MAP.wrapping_add(idx.wrapping_mul(0x20_0000));
        if let Ok(got) = walk_page_tables(mem, pgt, la57, va)
            && got & !0x1f_ffff == want
        {
            let runtime = va.wrapping_add(pa & 0x1f_ffff);
            let slide = runtime.wrapping_sub(link_banner);
            return Ok(TranslationParams {
                kaslr_offset: slide,
                phys_base: sum.wrapping_sub(slide),
                cr3: pgt,
                la57,
                page_offset_base: 0,
                direct_map_size: 0,
            });
        }
    }
    Err(KernelError::Discovery(
        "no kernel-image mapping points at it".into(),
    ))
}
