//! A synthetic guest for tests and benchmarks: guest RAM in host memory
//! with x86-64 page tables (4- or 5-level, 2 MiB and 4 KiB pages), the
//! kernel image mapped with a KASLR slide, and kernel structs laid out at
//! the offsets the real BTF of a vmlinux gives. Walkers are tested against
//! real layouts without booting anything.

use crate::image::KernelImage;
use crate::kernel::{KaslrSource, Kernel};
use crate::mem::{PhysMem, PhysMemExt, SliceMem};
use crate::offsets::Offsets;
use crate::translate::{START_KERNEL_MAP, TranslationParams};
use std::sync::Arc;

/// Guest RAM size.
pub const RAM: u64 = 192 << 20;
/// Page-table pages come from here up.
const PT_POOL: u64 = 104 << 20;
/// Allocations (tasks, DSQs, per-CPU areas) come from here up.
const HEAP: u64 = 112 << 20;
/// Where per-CPU areas are mapped (vmalloc-like, 4 KiB pages).
pub const PCPU_VA: u64 = 0xffff_c900_0000_0000;
/// Direct-map base used by the synthetic guest (randomised-looking).
pub const PAGE_OFFSET: u64 = 0xffff_9a00_0000_0000;

/// A synthetic guest.
pub struct SynthGuest {
    pub mem: SliceMem,
    pub image: Arc<KernelImage>,
    pub o: Offsets,
    pub p: TranslationParams,
    pt_next: u64,
    heap: u64,
    pcpu_next: u64,
}

impl SynthGuest {
    /// A guest of `image` with a virtual `slide` (2 MiB multiple).
    pub fn new(image: Arc<KernelImage>, slide: u64, la57: bool) -> Self {
        let mut mem = SliceMem::new();
        mem.add_range(0, RAM);
        let o = Offsets::from_btf(image.btf());
        let pgt_link = image.symbols().addr("init_top_pgt").expect("init_top_pgt");
        let mut g = Self {
            mem,
            image,
            o,
            p: TranslationParams {
                kaslr_offset: slide,
                phys_base: 0,
                page_offset_base: PAGE_OFFSET,
                cr3: 0,
                la57,
                direct_map_size: RAM,
            },
            pt_next: PT_POOL,
            heap: HEAP,
            pcpu_next: PCPU_VA,
        };
        g.p.cr3 = g.text_pa(pgt_link);
        // Kernel image: 2 MiB pages over the first 1 GiB of the image map
        // that has RAM behind it; the direct map: 2 MiB pages over RAM.
        let img_pa0 = g.text_pa(START_KERNEL_MAP) & !0x1f_ffff;
        let mut pa = img_pa0;
        while pa < PT_POOL {
            let va = START_KERNEL_MAP + slide + (pa - g.text_pa(START_KERNEL_MAP));
            g.map(va, pa, 2);
            pa += 0x20_0000;
        }
        let mut pa = 0;
        while pa < RAM {
            g.map(PAGE_OFFSET + pa, pa, 2);
            pa += 0x20_0000;
        }
        // page_offset_base is a kernel variable the discovery reads.
        g.set_sym_u64("page_offset_base", PAGE_OFFSET);
        g.set_sym_u64("vmalloc_base", PCPU_VA);
        g
    }

    /// Physical address of a link-time kernel image address.
    pub fn text_pa(&self, link: u64) -> u64 {
        link.wrapping_add(self.p.kaslr_offset)
            .wrapping_sub(START_KERNEL_MAP)
            .wrapping_add(self.p.phys_base)
    }

    fn pt_page(&mut self) -> u64 {
        let p = self.pt_next;
        self.pt_next += 0x1000;
        assert!(self.pt_next <= HEAP, "synthetic page-table pool exhausted");
        p
    }

    /// Map `va` to `pa` with a page at `level` (1 = 4 KiB, 2 = 2 MiB).
    pub fn map(&mut self, va: u64, pa: u64, level: u8) {
        let top: u8 = if self.p.la57 { 5 } else { 4 };
        let mut table = self.p.cr3;
        for l in (level + 1..=top).rev() {
            let shift = 12 + 9 * (l as u32 - 1);
            let idx = (va >> shift) & 0x1ff;
            let entry_pa = table + idx * 8;
            let e = self.mem.read_u64(entry_pa).expect("pt read");
            table = if e & 1 == 0 {
                let n = self.pt_page();
                self.mem.write_u64(entry_pa, n | 0x63).expect("pt write");
                n
            } else {
                e & 0x000f_ffff_ffff_f000
            };
        }
        let shift = 12 + 9 * (level as u32 - 1);
        let idx = (va >> shift) & 0x1ff;
        let flags = if level == 1 { 0x63 } else { 0xe3 };
        self.mem
            .write_u64(table + idx * 8, pa | flags)
            .expect("pte write");
    }

    /// A kernel model over this guest's memory.
    pub fn kernel(&self) -> Kernel<&SliceMem> {
        Kernel::new(&self.mem, self.image.clone(), self.p, KaslrSource::Given)
    }

    /// Allocate zeroed memory; returns its direct-map address.
    pub fn alloc(&mut self, size: u64) -> u64 {
        let pa = self.heap.next_multiple_of(64);
        self.heap = pa + size;
        assert!(self.heap <= RAM, "synthetic heap exhausted");
        PAGE_OFFSET + pa
    }

    /// Physical address of any address this guest maps.
    pub fn pa(&self, kva: u64) -> u64 {
        self.kernel()
            .kva_to_pa(kva)
            .expect("synthetic address maps")
    }

    pub fn w64(&self, kva: u64, v: u64) {
        self.mem.write_u64(self.pa(kva), v).expect("write");
    }
    pub fn w32(&self, kva: u64, v: u32) {
        self.mem.write_u32(self.pa(kva), v).expect("write");
    }
    pub fn wbytes(&self, kva: u64, b: &[u8]) {
        self.mem.write_phys(self.pa(kva), b).expect("write");
    }

    /// Runtime address of a symbol (per-CPU offsets unslid, as the kernel).
    pub fn sym(&self, name: &str) -> u64 {
        let a = self
            .image
            .symbols()
            .addr(name)
            .unwrap_or_else(|| panic!("no symbol {name}"));
        if a >= START_KERNEL_MAP {
            a + self.p.kaslr_offset
        } else {
            a
        }
    }

    pub fn set_sym_u64(&mut self, name: &str, v: u64) {
        let pa = self.text_pa(self.image.symbols().addr(name).expect("symbol"));
        self.mem.write_u64(pa, v).expect("write");
    }
    pub fn set_sym_u32(&mut self, name: &str, v: u32) {
        let pa = self.text_pa(self.image.symbols().addr(name).expect("symbol"));
        self.mem.write_u32(pa, v).expect("write");
    }

    /// `nr_cpu_ids = possible`, with per-CPU areas (4 KiB-mapped) for the
    /// first `real` CPUs and a zero `__per_cpu_offset` tail after them.
    /// Returns each real CPU's `rq` address.
    pub fn set_cpus(&mut self, possible: u32, real: u32) -> Vec<u64> {
        self.set_sym_u32("nr_cpu_ids", possible);
        self.set_sym_u32("nr_node_ids", 1);
        let rq_size = self.o.rq.expect("rq layout").size;
        let rq_sym = self.sym("runqueues");
        let base = self
            .image
            .symbols()
            .addr("__per_cpu_offset")
            .expect("__per_cpu_offset");
        let mut rqs = Vec::new();
        for cpu in 0..real {
            let pages = rq_size.div_ceil(0x1000) + 1;
            let va = self.pcpu_next;
            self.pcpu_next += pages * 0x1000 + 0x10_0000;
            for i in 0..pages {
                let pa = self.alloc(0x1000) - PAGE_OFFSET;
                self.map(va + i * 0x1000, pa & !0xfff, 1);
            }
            let off = va.wrapping_sub(rq_sym);
            self.mem
                .write_u64(self.text_pa(base) + cpu as u64 * 8, off)
                .expect("write");
            rqs.push(va);
        }
        rqs
    }

    /// Make `head` an empty list.
    pub fn list_init(&self, head: u64) {
        self.w64(head + self.o.list.next, head);
        self.w64(head + self.o.list.prev, head);
    }

    /// Append `node` to the list at `head`.
    pub fn list_add_tail(&self, head: u64, node: u64) {
        let k = self.kernel();
        let prev = k.read_u64(head + self.o.list.prev).expect("read");
        self.w64(node + self.o.list.next, head);
        self.w64(node + self.o.list.prev, prev);
        self.w64(prev + self.o.list.next, node);
        self.w64(head + self.o.list.prev, node);
    }

    /// A task_struct with pid, comm, the ext class and empty scx lists.
    pub fn new_task(&mut self, pid: i32, comm: &str) -> u64 {
        let size = self
            .image
            .btf()
            .struct_size("task_struct")
            .expect("task_struct size");
        let t = self.alloc(size);
        let to = self.o.task.expect("task layout");
        let see = self.o.see.expect("see layout");
        let scx = to.scx.expect("scx");
        self.w32(t + to.pid.off, pid as u32);
        self.w32(t + to.tgid.off, pid as u32);
        let mut c = [0u8; 16];
        let n = comm.len().min(15);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        self.wbytes(t + to.comm.off, &c);
        let ext = self.sym("ext_sched_class");
        if let Some(f) = to.sched_class {
            self.w64(t + f.off, ext);
        }
        if let Some(f) = to.policy {
            self.w32(t + f.off, 7);
        }
        if let Some(f) = to.start_boottime {
            self.w64(t + f.off, 1_000_000_000 + pid as u64);
        }
        if let Some(f) = to.start_time {
            self.w64(t + f.off, 1_000_000_000 + pid as u64);
        }
        self.list_init(t + scx + see.runnable_node);
        self.list_init(t + scx + see.tasks_node);
        self.list_init(t + scx + see.dsq_list);
        if let Some(f) = see.weight {
            self.w32(t + scx + f.off, 100);
        }
        t
    }

    /// A DSQ with `id`, empty list.
    pub fn new_dsq(&mut self, id: u64) -> u64 {
        let d = self.o.dsq.expect("dsq layout");
        let q = self.alloc(d.size);
        self.init_dsq(q, id);
        q
    }

    /// Initialise a DSQ in place.
    pub fn init_dsq(&self, q: u64, id: u64) {
        let d = self.o.dsq.expect("dsq layout");
        self.w64(q + d.id.off, id);
        self.list_init(q + d.list);
    }

    /// Queue task `t` on DSQ `q` (list order = dispatch order).
    pub fn dsq_push(&self, q: u64, t: u64) {
        let d = self.o.dsq.expect("dsq layout");
        let see = self.o.see.expect("see");
        let scx = self.o.task.expect("task").scx.expect("scx");
        let ln = self.o.dsq_lnode.expect("lnode");
        self.list_add_tail(q + d.list, t + scx + see.dsq_list + ln.node);
        self.w64(t + scx + see.dsq.off, q);
        let k = self.kernel();
        let nr = k.read_u32(q + d.nr.off).expect("read");
        self.w32(q + d.nr.off, nr + 1);
    }

    /// An iterator cursor on DSQ `q` (a bare list node flagged as cursor).
    pub fn dsq_cursor(&mut self, q: u64) {
        let d = self.o.dsq.expect("dsq layout");
        let ln = self.o.dsq_lnode.expect("lnode");
        let c = self.alloc(64);
        self.w32(c + ln.flags.off, crate::collect::SCX_DSQ_LNODE_ITER_CURSOR);
        self.list_add_tail(q + d.list, c + ln.node);
    }

    /// Physical-memory access for assertions.
    pub fn phys(&self) -> &dyn PhysMem {
        &self.mem
    }
}
