//! The hostile-input mutation suite: vmcores that ktstr itself writes from
//! the real test kernels (7.2 and 6.12, scx_qmap attached, every CPU busy),
//! mutated case by case — truncated and trimmed files, corrupt ELF headers
//! and notes, VMCOREINFO edits, poisoned pointers and counts in guest
//! memory, crafted amplification — each taken through the offline analysis
//! (`Kernel::from_vmcore` + `snapshot` + both renderers) in this debug
//! build; then hostile frames through the wire decoder and the session
//! loop.
//!
//! Every case must end without a panic, within its time bound, within a
//! memory bound (a counting allocator measures each case), and without an
//! impossible value shown as fact (an independent oracle below checks
//! what the kernel guarantees against the suspect marks). The suite prints
//! how many cases it ran per class and fails on any violation.

use ktstr::introspect::kernel::Kernel;
use ktstr::introspect::mem::{MemError, PhysMem};
use ktstr::introspect::offsets::Offsets;
use ktstr::introspect::snapshot::{SchedSnapshot, TaskRef};
use ktstr::introspect::vmcore::Vmcore;
use ktstr::introspect::{CollectOptions, KernelImage, snapshot};
use ktstr_test::host::env::vm_env;
use ktstr_test::host::initramfs::Initramfs;
use ktstr_test::test_utils::{helper_run, no_ops};
use ktstr_vmm::{RunningVm, Topology};
use ktstr_wire::SchedSpec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- memory

/// Counts live heap bytes and the peak since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most heap one case may add (the analysis of a crafted 8192-DSQ table
/// included).
const MAX_CASE_HEAP: usize = 1 << 30;
/// Most time one case may take in this debug build.
const MAX_CASE_TIME: Duration = Duration::from_secs(60);
/// Largest JSON a snapshot may serialize to.
const MAX_JSON: usize = 64 << 20;

// ---------------------------------------------------------------- inputs

/// The vmcore bytes (a prefix of `len`), shared with the case; mutated in
/// place only between cases, when the rig holds the only reference.
struct Bytes {
    data: Arc<Vec<u8>>,
    len: usize,
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len.min(self.data.len())]
    }
}

/// A memory source that patches bytes over a base vmcore.
struct Overlay {
    base: Arc<Vmcore>,
    patches: Arc<Vec<(u64, Vec<u8>)>>,
}

impl PhysMem for Overlay {
    fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.base.read_phys(addr, buf)?;
        let end = addr.saturating_add(buf.len() as u64);
        for (pa, bytes) in self.patches.iter() {
            let pend = pa.saturating_add(bytes.len() as u64);
            if *pa < end && pend > addr {
                let from = pa.max(&addr) - addr;
                let to = pend.min(end) - addr;
                let src = pa.max(&addr) - pa;
                buf[from as usize..to as usize]
                    .copy_from_slice(&bytes[src as usize..(src + (to - from)) as usize]);
            }
        }
        Ok(())
    }
    fn regions(&self) -> Vec<(u64, u64)> {
        self.base.regions()
    }
}

// ---------------------------------------------------------------- oracle

/// What the kernel guarantees, checked independently of the collector:
/// every impossible value must sit in an object carrying a suspect mark.
fn unmarked_impossible(s: &SchedSnapshot) -> Vec<String> {
    const PID_MAX: i64 = 4 * 1024 * 1024;
    let mut bad = Vec::new();
    let task_bad = |t: &TaskRef| {
        let printable = t.comm.chars().all(|c| (' '..='~').contains(&c));
        (i64::from(t.pid) < 0 || i64::from(t.pid) > PID_MAX || !printable) && t.suspect.is_empty()
    };
    if let Some(j) = s.jiffies
        && !((1u64 << 32) - 300_000..=(1u64 << 40)).contains(&j)
        && !s.suspect.iter().any(|m| m.contains("jiffies"))
    {
        bad.push(format!("jiffies {j}"));
    }
    if s.nr_cpus > 8192 {
        bad.push(format!("nr_cpus {}", s.nr_cpus));
    }
    for c in &s.cpus {
        if (i64::from(c.nr_running) > PID_MAX || i64::from(c.rq_nr_running) > PID_MAX)
            && c.suspect.is_empty()
        {
            bad.push(format!(
                "cpu {} nr_running {}/{}",
                c.cpu, c.nr_running, c.rq_nr_running
            ));
        }
        for t in c.curr.iter().chain(&c.runnable) {
            if task_bad(t) {
                bad.push(format!("cpu {} task {} {:?}", c.cpu, t.pid, t.comm));
            }
        }
    }
    const BUILTIN: u64 = 1 << 63;
    for d in &s.dsqs {
        let id_ok = if d.origin.starts_with("local") {
            d.id == BUILTIN | 2
        } else if d.origin.starts_with("global") {
            d.id == BUILTIN | 1
        } else if d.origin.starts_with("bypass") {
            d.id == BUILTIN | 3
        } else {
            d.id & BUILTIN == 0
        };
        if (!id_ok || i64::from(d.nr) > PID_MAX) && d.suspect.is_empty() {
            bad.push(format!("dsq {} id {:#x} nr {}", d.origin, d.id, d.nr));
        }
        for t in &d.tasks {
            if task_bad(t) {
                bad.push(format!("dsq {} task {} {:?}", d.origin, t.pid, t.comm));
            }
        }
    }
    for t in &s.scx_tasks {
        if task_bad(t) {
            bad.push(format!("scx_tasks task {} {:?}", t.pid, t.comm));
        }
    }
    for t in &s.tasks {
        let printable = t.comm.chars().all(|c| (' '..='~').contains(&c));
        let impossible = i64::from(t.pid) < 0
            || i64::from(t.pid) > PID_MAX
            || !printable
            || t.runnable_age_ms.is_some_and(|a| a > 86_400_000);
        if impossible && t.suspect.is_empty() {
            bad.push(format!(
                "task {} {:?} age {:?}",
                t.pid, t.comm, t.runnable_age_ms
            ));
        }
    }
    bad
}

// ---------------------------------------------------------------- running

#[derive(Default)]
struct Tally {
    /// class -> (cases, ok, clean error)
    classes: BTreeMap<&'static str, (usize, usize, usize)>,
    violations: Vec<String>,
    slowest: Duration,
    slow: Vec<(Duration, String)>,
    peak_heap: usize,
}

impl Tally {
    fn record(&mut self, class: &'static str, name: &str, r: Outcome) {
        let e = self.classes.entry(class).or_default();
        e.0 += 1;
        self.slowest = self.slowest.max(r.took);
        if r.took > Duration::from_secs(1) {
            self.slow.push((r.took, format!("{class}/{name}")));
        }
        self.peak_heap = self.peak_heap.max(r.heap);
        match r.result {
            CaseResult::Ok(problems) if problems.is_empty() => e.1 += 1,
            CaseResult::Ok(problems) => self.violations.push(format!(
                "{class}/{name}: impossible values shown as fact: {problems:?}"
            )),
            CaseResult::Error => e.2 += 1,
            CaseResult::Panic(m) => self.violations.push(format!("{class}/{name}: PANIC {m}")),
            CaseResult::Hang => self.violations.push(format!(
                "{class}/{name}: no result within {MAX_CASE_TIME:?}"
            )),
        }
        if r.heap > MAX_CASE_HEAP {
            self.violations
                .push(format!("{class}/{name}: {} MiB of heap", r.heap >> 20));
        }
    }
}

enum CaseResult {
    Ok(Vec<String>),
    Error,
    Panic(String),
    Hang,
}

struct Outcome {
    result: CaseResult,
    took: Duration,
    heap: usize,
}

/// Analyse in a thread under the time bound; catch panics.
fn bounded(f: impl FnOnce() -> Result<SchedSnapshot, String> + Send + 'static) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f().map(|s| {
                // Both renderers, as `analyze` does; bounded output.
                let json = serde_json::to_string(&s).unwrap_or_default();
                let text = ktstr::introspect::render_text(&s);
                (s, json.len(), text.len())
            })
        }));
        let _ = tx.send(r);
    });
    let result = match rx.recv_timeout(MAX_CASE_TIME) {
        Ok(Ok(Ok((s, json, _text)))) => {
            let mut p = unmarked_impossible(&s);
            if json > MAX_JSON {
                p.push(format!("JSON of {} MiB", json >> 20));
            }
            CaseResult::Ok(p)
        }
        Ok(Ok(Err(_))) => CaseResult::Error,
        Ok(Err(panic)) => CaseResult::Panic(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        ),
        Err(_) => CaseResult::Hang,
    };
    let heap = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    Outcome {
        result,
        took: t0.elapsed(),
        heap,
    }
}

fn analyse_file(bytes: Bytes, image: Arc<KernelImage>) -> Result<SchedSnapshot, String> {
    let core = Vmcore::from_backing(Box::new(bytes)).map_err(|e| e.to_string())?;
    let k = Kernel::from_vmcore(core, image).map_err(|e| e.to_string())?;
    Ok(snapshot(&k, &CollectOptions::default()))
}

fn analyse_overlay(o: Overlay, image: Arc<KernelImage>) -> Result<SchedSnapshot, String> {
    let info = o.base.vmcoreinfo.clone();
    let cpus = o.base.cpus.clone();
    let k = Kernel::discover(o, image, &cpus, info.as_ref()).map_err(|e| e.to_string())?;
    Ok(snapshot(&k, &CollectOptions::default()))
}

/// The file being mutated, and how to run one file case.
struct FileRig {
    data: std::cell::RefCell<Arc<Vec<u8>>>,
    full_len: usize,
    image: Arc<KernelImage>,
}

impl FileRig {
    /// Apply `edits` (offset, bytes), truncate to `len`, run, restore.
    fn case(
        &self,
        t: &mut Tally,
        class: &'static str,
        name: &str,
        edits: &[(usize, Vec<u8>)],
        len: usize,
    ) {
        let mut cell = self.data.borrow_mut();
        // A hung case still holds the bytes: no further file case can run.
        let Some(d) = Arc::get_mut(&mut cell) else {
            t.violations.push(format!(
                "{class}/{name}: skipped, an earlier case never returned"
            ));
            return;
        };
        let mut saved = Vec::new();
        for (off, b) in edits {
            let end = (off + b.len()).min(d.len());
            if *off >= end {
                continue;
            }
            saved.push((*off, d[*off..end].to_vec()));
            d[*off..end].copy_from_slice(&b[..end - off]);
        }
        let bytes = Bytes {
            data: cell.clone(),
            len,
        };
        let image = self.image.clone();
        let r = bounded(move || analyse_file(bytes, image));
        t.record(class, name, r);
        if let Some(d) = Arc::get_mut(&mut cell) {
            for (off, b) in saved.into_iter().rev() {
                d[off..off + b.len()].copy_from_slice(&b);
            }
        }
    }

    fn header(&self, n: usize) -> Vec<u8> {
        let d = self.data.borrow();
        d[..n.min(d.len())].to_vec()
    }
}

fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// (offset of the header, p_type, p_offset, p_filesz).
type Phdr = (usize, u32, u64, u64);

/// ELF layout facts of the vmcore ktstr wrote: (phoff, phnum, phdrs as
/// (offset of the header, p_type, p_offset, p_filesz)).
fn phdrs(d: &[u8]) -> (usize, usize, Vec<Phdr>) {
    let rd64 = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap());
    let phoff = rd64(32) as usize;
    let phnum = u16::from_le_bytes([d[56], d[57]]) as usize;
    let v = (0..phnum)
        .map(|i| {
            let h = phoff + i * 56;
            let ty = u32::from_le_bytes(d[h..h + 4].try_into().unwrap());
            (h, ty, rd64(h + 8), rd64(h + 32))
        })
        .collect();
    (phoff, phnum, v)
}

/// Every file-structure case.
fn file_cases(rig: &FileRig, t: &mut Tally) {
    let d = rig.header(1 << 20);
    let full = rig.full_len;
    let (phoff, phnum, ph) = phdrs(&d);
    let notes: Vec<_> = ph.iter().filter(|p| p.1 == 4).collect();
    let loads: Vec<_> = ph.iter().filter(|p| p.1 == 1).collect();
    // Truncation at every structural boundary and through the data.
    let mut cuts = vec![0, 1, 4, 16, 52, 63, 64, phoff + 1, phoff + 56 * phnum - 1];
    for p in &ph {
        cuts.push(p.0 + 8);
        cuts.push(p.2 as usize);
        cuts.push(p.2 as usize + 1);
        cuts.push((p.2 + p.3 / 2) as usize);
        cuts.push((p.2 + p.3) as usize - 1);
    }
    for k in 1..40 {
        cuts.push(full / 40 * k);
    }
    for c in cuts {
        rig.case(t, "truncated", &format!("at {c}"), &[], c.min(full));
    }
    // Trimmed dumps: p_filesz < p_memsz, file part ending early or not.
    for (i, p) in loads.iter().enumerate() {
        for frac in [0u64, 1, 2, 3] {
            let filesz = p.3 / 4 * frac;
            rig.case(
                t,
                "trimmed",
                &format!("load {i} filesz {frac}/4"),
                &[(p.0 + 32, u64le(filesz))],
                full,
            );
            if i + 1 == loads.len() {
                rig.case(
                    t,
                    "trimmed",
                    &format!("load {i} filesz {frac}/4 and cut"),
                    &[(p.0 + 32, u64le(filesz))],
                    (p.2 + filesz) as usize,
                );
            }
            // The file promises more than it holds.
            rig.case(
                t,
                "trimmed",
                &format!("load {i} cut inside {frac}/4"),
                &[],
                (p.2 + filesz).min(full as u64) as usize,
            );
        }
    }
    // ELF header bytes.
    for off in 0..64 {
        for v in [0u8, 0xff, 0x7f] {
            rig.case(
                t,
                "elf header",
                &format!("byte {off} = {v:#x}"),
                &[(off, vec![v])],
                full,
            );
        }
    }
    // Program header fields.
    let file = full as u64;
    let poison64 = [
        0,
        1,
        u64::MAX,
        u64::MAX - 7,
        1 << 63,
        file,
        file + 1,
        file - 1,
        0x1000,
    ];
    for (i, p) in ph.iter().enumerate() {
        for (field, at) in [
            ("p_offset", 8),
            ("p_vaddr", 16),
            ("p_paddr", 24),
            ("p_filesz", 32),
            ("p_memsz", 40),
        ] {
            for v in poison64 {
                rig.case(
                    t,
                    "program headers",
                    &format!("phdr {i} {field} = {v:#x}"),
                    &[(p.0 + at, u64le(v))],
                    full,
                );
            }
        }
        for ty in [0u32, 1, 4, 0x6474e550, u32::MAX] {
            rig.case(
                t,
                "program headers",
                &format!("phdr {i} p_type = {ty:#x}"),
                &[(p.0, u32le(ty))],
                full,
            );
        }
    }
    // Overlapping and wrapping segments.
    if loads.len() >= 2 {
        let second_paddr =
            u64::from_le_bytes(d[loads[1].0 + 24..loads[1].0 + 32].try_into().unwrap());
        rig.case(
            t,
            "program headers",
            "overlap",
            &[(loads[0].0 + 40, u64le(second_paddr + 0x10_0000))],
            full,
        );
    }
    // Notes: each header field of each note.
    for (ni, n) in notes.iter().enumerate() {
        let (start, len) = (n.2 as usize, n.3 as usize);
        let mut off = start;
        let mut k = 0;
        while off + 12 <= start + len && k < 64 {
            let namesz = u32::from_le_bytes(d[off..off + 4].try_into().unwrap()) as usize;
            let descsz = u32::from_le_bytes(d[off + 4..off + 8].try_into().unwrap()) as usize;
            for (field, at) in [("namesz", 0), ("descsz", 4), ("type", 8)] {
                for v in [0u32, 1, 3, u32::MAX, u32::MAX - 3, 0x8000_0000, len as u32] {
                    rig.case(
                        t,
                        "notes",
                        &format!("seg {ni} note {k} {field} = {v:#x}"),
                        &[(off + at, u32le(v))],
                        full,
                    );
                }
            }
            // Corrupt the name itself.
            rig.case(
                t,
                "notes",
                &format!("seg {ni} note {k} name"),
                &[(off + 12, b"XXXX".to_vec())],
                full,
            );
            off += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
            k += 1;
        }
    }
    vmcoreinfo_cases(rig, t, &d, &notes);
    amplification_file_cases(rig, t, &d, phoff, phnum);
}

/// VMCOREINFO edits, same length (the note's size stays).
fn vmcoreinfo_cases(rig: &FileRig, t: &mut Tally, d: &[u8], notes: &[&Phdr]) {
    let Some((at, text)) = notes.iter().find_map(|n| {
        let seg = &d[n.2 as usize..(n.2 + n.3) as usize];
        let i = seg.windows(10).position(|w| w == b"VMCOREINFO")?;
        let body = n.2 as usize + i + 12; // name "VMCOREINFO\0" padded to 12
        let text_end = d[body..].iter().position(|&c| c == 0)? + body;
        Some((
            body,
            String::from_utf8_lossy(&d[body..text_end]).into_owned(),
        ))
    }) else {
        panic!("no VMCOREINFO note in ktstr's own vmcore");
    };
    let full = rig.full_len;
    for key in [
        "OSRELEASE=",
        "KERNELOFFSET=",
        "NUMBER(phys_base)=",
        "BUILD-ID=",
        "NUMBER(pgtable_l5_enabled)=",
        "SYMBOL(swapper_pg_dir)=",
        "PAGESIZE=",
    ] {
        let Some(i) = text.find(key) else { continue };
        let vstart = at + i + key.len();
        let vlen = text[i + key.len()..].find('\n').unwrap_or(0);
        for (what, fill) in [
            ("zeros", b'0'),
            ("nines", b'9'),
            ("letters", b'z'),
            ("dash", b'-'),
        ] {
            rig.case(
                t,
                "vmcoreinfo",
                &format!("{key} all {what}"),
                &[(vstart, vec![fill; vlen])],
                full,
            );
        }
        // One digit off (another build / a wrong slide).
        if vlen > 0 {
            let c = d[vstart + vlen - 1];
            let other = if c == b'0' { b'1' } else { b'0' };
            rig.case(
                t,
                "vmcoreinfo",
                &format!("{key} last digit changed"),
                &[(vstart + vlen - 1, vec![other])],
                full,
            );
        }
        // The key itself renamed: the entry is gone.
        rig.case(
            t,
            "vmcoreinfo",
            &format!("{key} removed"),
            &[(at + i, vec![b'#'; key.len()])],
            full,
        );
    }
    rig.case(
        t,
        "vmcoreinfo",
        "no VMCOREINFO at all",
        &[(at, vec![0; text.len()])],
        full,
    );
}

/// Amplification in the file: thousands of PT_NOTE headers over a zero
/// region (the original hang).
fn amplification_file_cases(rig: &FileRig, t: &mut Tally, d: &[u8], phoff: usize, phnum: usize) {
    let full = rig.full_len;
    // Rewrite every header as a PT_NOTE over a big zero span, and claim
    // the maximum header count (they run into the note/data region).
    let mut edits = Vec::new();
    for i in 0..phnum {
        let h = phoff + i * 56;
        edits.push((h, u32le(4)));
        edits.push((h + 8, u64le(4096)));
        edits.push((h + 32, u64le((full as u64).saturating_sub(4096))));
    }
    rig.case(
        t,
        "amplification",
        "every header a giant zero note",
        &edits,
        full,
    );
    edits.push((56, 0xffffu16.to_le_bytes().to_vec()));
    rig.case(t, "amplification", "65535 headers", &edits, full);
    let _ = d;
}

/// Poisoned guest memory through an overlay: pointers, counts, comm.
fn memory_cases(core: &Arc<Vmcore>, image: &Arc<KernelImage>, base: &SchedSnapshot, t: &mut Tally) {
    let info = core.vmcoreinfo.clone();
    let cpus = core.cpus.clone();
    let k = Kernel::discover(core.clone(), image.clone(), &cpus, info.as_ref()).unwrap();
    let o = Offsets::from_btf(image.btf());
    let pa = |kva: u64| k.kva_to_pa(kva).ok();
    let rd = |kva: u64| {
        pa(kva)
            .and_then(|p| core.read_phys(p, &mut [0u8; 8]).ok().map(|_| p))
            .and_then(|p| {
                let mut b = [0u8; 8];
                core.read_phys(p, &mut b).ok()?;
                Some(u64::from_le_bytes(b))
            })
    };
    let some_kernel_ptr = k.sym("jiffies_64").unwrap_or(0);
    // (label, kva, width)
    let mut targets: Vec<(String, u64, usize)> = Vec::new();
    let sym = |name: &str, w: usize, targets: &mut Vec<(String, u64, usize)>| {
        if let Ok(a) = k.sym(name) {
            targets.push((name.to_string(), a, w));
        }
    };
    sym("jiffies_64", 8, &mut targets);
    sym("nr_cpu_ids", 4, &mut targets);
    sym("nr_node_ids", 4, &mut targets);
    sym("scx_root", 8, &mut targets);
    sym("scx_exit_kind", 4, &mut targets);
    sym("global_dsqs", 8, &mut targets);
    sym("page_offset_base", 8, &mut targets);
    if let Ok(h) = k.sym("scx_tasks") {
        targets.push(("scx_tasks.next".into(), h, 8));
        targets.push(("scx_tasks.prev".into(), h + 8, 8));
    }
    if let Ok(pco) = k.sym("__per_cpu_offset") {
        for c in 0..base.nr_cpus.min(4) as u64 {
            targets.push((format!("__per_cpu_offset[{c}]"), pco + c * 8, 8));
        }
    }
    if let (Ok(rqb), Some(ro), Some(so), Some(dq)) = (k.sym("runqueues"), o.rq, o.scx_rq, o.dsq) {
        for c in 0..base.nr_cpus.min(4) {
            let Ok(rq) = k.per_cpu_ptr(rqb, c) else {
                continue;
            };
            targets.push((format!("cpu {c} rq.curr"), rq + ro.curr.off, 8));
            targets.push((format!("cpu {c} rq.nr_running"), rq + ro.nr_running.off, 4));
            if let Some(scx) = ro.scx {
                let b = rq + scx;
                targets.push((
                    format!("cpu {c} rq.scx.nr_running"),
                    b + so.nr_running.off,
                    4,
                ));
                targets.push((
                    format!("cpu {c} runnable_list.next"),
                    b + so.runnable_list,
                    8,
                ));
                targets.push((
                    format!("cpu {c} runnable_list.prev"),
                    b + so.runnable_list + 8,
                    8,
                ));
                let l = b + so.local_dsq;
                targets.push((format!("cpu {c} local_dsq.list.next"), l + dq.list, 8));
                targets.push((format!("cpu {c} local_dsq.list.prev"), l + dq.list + 8, 8));
                targets.push((format!("cpu {c} local_dsq.nr"), l + dq.nr.off, 4));
                targets.push((format!("cpu {c} local_dsq.id"), l + dq.id.off, 8));
            }
        }
    }
    if let (Some(sch), Some(so)) = (base.sched.as_ref().and_then(|s| s.sched_kva), o.sched) {
        for (n, f) in [
            ("exit_info", so.exit_info.map(|f| f.off)),
            ("pnode", so.pnode.map(|f| f.off)),
            ("pcpu", so.pcpu.map(|f| f.off)),
            ("exit_kind", Some(so.exit_kind.off)),
        ] {
            if let Some(off) = f {
                let w = if n == "exit_kind" { 4 } else { 8 };
                targets.push((format!("sch->{n}"), sch + off, w));
            }
        }
        if let Some(rht) = o.rht {
            let ht = sch + so.dsq_hash;
            targets.push(("sch->dsq_hash.tbl".into(), ht + rht.tbl, 8));
            if let Some(tbl) = rd(ht + rht.tbl).filter(|&p| p != 0) {
                targets.push(("dsq_hash tbl->size".into(), tbl + rht.size.off, 4));
                for b in 0..4 {
                    targets.push((format!("dsq_hash bucket {b}"), tbl + rht.buckets + b * 8, 8));
                }
            }
        }
    }
    if let (Some(to), Some(see)) = (o.task, o.see) {
        let scx = to.scx.unwrap_or(0);
        for (i, tr) in base.scx_tasks.iter().take(12).enumerate() {
            let t0 = tr.kva;
            targets.push((
                format!("task {i} tasks_node.next"),
                t0 + scx + see.tasks_node,
                8,
            ));
            targets.push((
                format!("task {i} tasks_node.prev"),
                t0 + scx + see.tasks_node + 8,
                8,
            ));
            targets.push((format!("task {i} pid"), t0 + to.pid.off, 4));
            targets.push((format!("task {i} comm"), t0 + to.comm.off, 16));
            targets.push((format!("task {i} scx.dsq"), t0 + scx + see.dsq.off, 8));
            if let Some(ra) = see.runnable_at {
                targets.push((format!("task {i} scx.runnable_at"), t0 + scx + ra.off, 8));
            }
            targets.push((format!("task {i} scx.flags"), t0 + scx + see.flags.off, 4));
            if let Some(sc) = to.sched_class {
                targets.push((format!("task {i} sched_class"), t0 + sc.off, 8));
            }
        }
    }
    for (label, kva, w) in targets {
        let Some(p) = pa(kva) else { continue };
        let values: Vec<(String, Vec<u8>)> = match w {
            4 => [0u32, 1, u32::MAX, 0x7fff_ffff, 0x8000_0000]
                .iter()
                .map(|v| (format!("{v:#x}"), u32le(*v)))
                .collect(),
            16 => vec![
                ("escape".into(), b"\x1b[2Jevil\x07\0\0\0\0\0\0\0".to_vec()),
                ("high bytes".into(), vec![0xff; 16]),
                ("no NUL".into(), b"AAAAAAAAAAAAAAAA".to_vec()),
            ],
            _ => {
                let orig = rd(kva).unwrap_or(0);
                [
                    ("0", 0),
                    ("max", u64::MAX),
                    ("max-7", u64::MAX - 7),
                    ("non-canonical", 1u64 << 63),
                    ("low", 0x1000),
                    ("self", kva),
                    ("self+8", kva + 8),
                    ("self-8", kva.wrapping_sub(8)),
                    ("odd", orig | 1),
                    ("other object", some_kernel_ptr),
                    ("orig+4096", orig.wrapping_add(4096)),
                ]
                .iter()
                .map(|(n, v)| (n.to_string(), u64le(*v)))
                .collect()
            }
        };
        for (vn, bytes) in values {
            let ov = Overlay {
                base: core.clone(),
                patches: Arc::new(vec![(p, bytes)]),
            };
            let image = image.clone();
            let r = bounded(move || analyse_overlay(ov, image));
            t.record("poisoned memory", &format!("{label} = {vn}"), r);
        }
    }
    amplification_memory_cases(core, image, &k, &o, base, t);
}

/// Crafted amplification in memory: a user DSQ table of 8192 buckets whose
/// DSQs all share one 4100-node list (33 M references without a global
/// budget), and a scx_tasks ring of 100 000 nodes.
fn amplification_memory_cases(
    core: &Arc<Vmcore>,
    image: &Arc<KernelImage>,
    k: &Kernel<Arc<Vmcore>>,
    o: &Offsets,
    base: &SchedSnapshot,
    t: &mut Tally,
) {
    let (Some(rht), Some(dq), Some(to), Some(see), Some(ln)) =
        (o.rht, o.dsq, o.task, o.see, o.dsq_lnode)
    else {
        return;
    };
    let pob = k.params().page_offset_base;
    // Scratch RAM: the top 24 MiB of the largest region (the guest's page
    // cache at worst; the overlay never writes the real file).
    let (start, len) = core.regions().into_iter().max_by_key(|r| r.1).unwrap();
    let scratch = start + len - (24 << 20);
    let kva = |pa: u64| pob + pa;
    let mut patches: Vec<(u64, Vec<u8>)> = Vec::new();
    let w64 = |patches: &mut Vec<(u64, Vec<u8>)>, pa: u64, v: u64| patches.push((pa, u64le(v)));
    // One shared list of 4100 fake tasks.
    let node_in_task = to.scx.unwrap_or(0) + see.dsq_list + ln.node;
    let task_size = 0x2000u64;
    let tasks_pa = scratch;
    let n_nodes = 4100u64;
    let head_pa = scratch + n_nodes * task_size; // the shared list head
    let node = |i: u64| kva(tasks_pa + i * task_size + node_in_task);
    let head = kva(head_pa);
    for i in 0..n_nodes {
        let next = if i + 1 == n_nodes { head } else { node(i + 1) };
        let prev = if i == 0 { head } else { node(i - 1) };
        let np = tasks_pa + i * task_size + node_in_task;
        w64(&mut patches, np, next);
        w64(&mut patches, np + 8, prev);
    }
    w64(&mut patches, head_pa, node(0));
    w64(&mut patches, head_pa + 8, node(n_nodes - 1));
    // 8192 DSQs, each with its list head copied from the shared one (so
    // each walk starts into the same ring).
    let n_dsqs = 8192u64;
    let dsq_pa = head_pa + 0x1000;
    let dsq_size = dq.size.next_multiple_of(64);
    let hn = dq.hash_node.unwrap_or(0);
    let tbl_pa = dsq_pa + n_dsqs * dsq_size;
    for i in 0..n_dsqs {
        let d = dsq_pa + i * dsq_size;
        w64(&mut patches, d + dq.list, node(0));
        w64(&mut patches, d + dq.list + 8, node(n_nodes - 1));
        patches.push((d + dq.id.off, u64le(1000 + i)));
        patches.push((d + dq.nr.off, u32le(n_nodes as u32)));
        // hash chain: one DSQ per bucket, then a nulls marker.
        w64(&mut patches, d + hn + rht.next, 1);
        w64(&mut patches, tbl_pa + rht.buckets + i * 8, kva(d + hn));
    }
    patches.push((tbl_pa + rht.size.off, u32le(n_dsqs as u32)));
    let tbl_ptr_kva = match (base.sched.as_ref().and_then(|s| s.sched_kva), o.sched) {
        (Some(sch), Some(so)) => Some(sch + so.dsq_hash + rht.tbl),
        _ => k.sym("dsq_hash").ok().map(|h| h + rht.tbl),
    };
    if let Some(pa) = tbl_ptr_kva.and_then(|v| k.kva_to_pa(v).ok()) {
        let mut p = patches.clone();
        w64(&mut p, pa, kva(tbl_pa));
        let ov = Overlay {
            base: core.clone(),
            patches: Arc::new(p),
        };
        let image2 = image.clone();
        let r = bounded(move || analyse_overlay(ov, image2));
        t.record(
            "amplification",
            "8192 user DSQs sharing a 4100-node list",
            r,
        );
    }
    // Every CPU's local DSQ and runnable list on the shared ring too.
    if let (Ok(rqb), Some(ro), Some(so)) = (k.sym("runqueues"), o.rq, o.scx_rq) {
        let mut p = patches.clone();
        for c in 0..base.nr_cpus {
            if let Some(scx) = ro.scx
                && let Ok(rq) = k.per_cpu_ptr(rqb, c)
                && let Ok(pa) = k.kva_to_pa(rq + scx + so.local_dsq + dq.list)
            {
                w64(&mut p, pa, node(0));
            }
        }
        let ov = Overlay {
            base: core.clone(),
            patches: Arc::new(p),
        };
        let image2 = image.clone();
        let r = bounded(move || analyse_overlay(ov, image2));
        t.record("amplification", "every local DSQ into the shared ring", r);
    }
}

/// Hostile frames through the wire decoder and sequences through the
/// session loop.
fn wire_cases(t: &mut Tally) {
    use ktstr_wire::{GuestMsg, Hello, HostMsg, Phase, Stream, frame};
    let msgs: Vec<GuestMsg> = vec![
        GuestMsg::Hello(Hello {
            proto: ktstr_wire::PROTO_VERSION,
            kernel_release: "7.2.13".into(),
            nr_cpus: 4,
            ..Default::default()
        }),
        GuestMsg::Lifecycle {
            phase: Phase::SchedulerAttached,
            detail: "simple".into(),
        },
        GuestMsg::SchedLog(b"local=1 global=2".to_vec()),
        GuestMsg::Output {
            stream: Stream::Stdout,
            data: b"hello".to_vec(),
        },
        GuestMsg::TestResult {
            passed: true,
            json: "{}".into(),
        },
        GuestMsg::Exit { code: 0 },
        GuestMsg::Log("x".into()),
    ];
    for (mi, m) in msgs.iter().enumerate() {
        let f = frame::encode(m).unwrap();
        for pos in 0..f.len() {
            for v in [0u8, 0xff, f[pos] ^ 1] {
                let mut g = f.clone();
                g[pos] = v;
                let r = std::panic::catch_unwind(|| frame::read_msg::<GuestMsg, _>(&mut &g[..]));
                let outcome = Outcome {
                    result: match r {
                        Ok(Ok(_)) => CaseResult::Ok(vec![]),
                        Ok(Err(_)) => CaseResult::Error,
                        Err(_) => CaseResult::Panic("decoder".into()),
                    },
                    took: Duration::ZERO,
                    heap: 0,
                };
                t.record(
                    "wire frames",
                    &format!("msg {mi} byte {pos} = {v:#x}"),
                    outcome,
                );
            }
        }
        for cut in 0..f.len() {
            let r = std::panic::catch_unwind(|| frame::read_msg::<GuestMsg, _>(&mut &f[..cut]));
            let outcome = Outcome {
                result: match r {
                    Ok(Ok(_)) => CaseResult::Panic(format!("a {cut}-byte prefix decoded")),
                    Ok(Err(_)) => CaseResult::Error,
                    Err(_) => CaseResult::Panic("decoder".into()),
                },
                took: Duration::ZERO,
                heap: 0,
            };
            t.record("wire frames", &format!("msg {mi} cut {cut}"), outcome);
        }
    }
    let _ = HostMsg::Shutdown {
        reason: String::new(),
    };
    // Sessions: a valid Hello, then a mutated message stream.
    let hello = frame::encode(&msgs[0]).unwrap();
    for (mi, m) in msgs.iter().enumerate() {
        let f = frame::encode(m).unwrap();
        for pos in (0..f.len()).step_by(3) {
            let mut g = f.clone();
            g[pos] ^= 0x5a;
            let stream: Vec<u8> = hello.iter().chain(&g).copied().collect();
            let t0 = Instant::now();
            let (vm, mut guest) = ktstr_test::test_utils::FakeVm::new(Duration::from_secs(5));
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let _ = guest.write_all(&stream);
            });
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ktstr_test::host::session::run(
                    &vm,
                    &Default::default(),
                    &mut |_: &ktstr_test::test_utils::FakeVm,
                          _: Option<&Hello>,
                          ops: &[ktstr_wire::KernelOp]| {
                        ops.iter()
                            .map(|_| ktstr_wire::KernelOpReplyPayload::refused("no"))
                            .collect()
                    },
                )
            }));
            let _ = writer.join();
            let took = t0.elapsed();
            let result = match r {
                Ok(_) if took > Duration::from_secs(10) => CaseResult::Hang,
                Ok(_) => CaseResult::Ok(vec![]),
                Err(_) => CaseResult::Panic("session loop".into()),
            };
            t.record(
                "session loop",
                &format!("msg {mi} byte {pos}"),
                Outcome {
                    result,
                    took,
                    heap: 0,
                },
            );
        }
    }
}

/// Boot `kernel` with scx_qmap and busy CPUs, write ktstr's vmcore.
fn vmcore_of(
    kernel: &str,
    dir: &std::path::Path,
) -> Option<(std::path::PathBuf, Arc<KernelImage>)> {
    let env = vm_env(Some(kernel))?;
    if !env.kernel.name.starts_with(kernel) {
        eprintln!("SKIPPED {kernel}: KTSTR_KERNEL selects {}", env.kernel.name);
        return None;
    }
    let image = Arc::new(KernelImage::open(&env.kernel.vmlinux).unwrap());
    let mut init = Initramfs::base();
    init.add_file("/bin/scx_qmap", &env.scheduler("scx_qmap").unwrap())
        .unwrap();
    let path = init.write_cached(&env.initramfs_dir()).unwrap();
    let spec = env.spec(path, Topology::flat(2), 128, Duration::from_secs(200));
    let _slot = ktstr_test::host::env::VcpuSlot::acquire(2);
    let vm = RunningVm::boot(&spec).unwrap();
    let mut run = helper_run(&["spin", "60"], Duration::from_secs(150));
    run.scheduler = Some(SchedSpec {
        path: "/bin/scx_qmap".into(),
        liveness_ms: 1000,
        attach_timeout_ms: 60_000,
        ..Default::default()
    });
    let out = dir.join(format!("{kernel}.vmcore"));
    std::thread::scope(|s| {
        let session = s.spawn(|| ktstr_test::host::session::run(&vm, &run, &mut no_ops()));
        assert!(
            vm.console()
                .wait_for("BPF scheduler \"qmap\" enabled", Duration::from_secs(120)),
            "{}",
            vm.console().tail(30)
        );
        std::thread::sleep(Duration::from_secs(3));
        let f = vm.freeze(Duration::from_secs(10)).unwrap();
        let k = ktstr_test::host::cold::frozen_kernel(&f, &image, None).unwrap();
        ktstr_test::host::vmcore_dump::write_frozen_vmcore(&f, &k, &out).unwrap();
        drop(f);
        vm.kill();
        let _ = session.join();
    });
    Some((out, image))
}

#[test]
fn hostile_inputs_never_panic_hang_explode_or_lie() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tally::default();
    let t0 = Instant::now();
    let mut kernels = 0;
    for kernel in ["7.2", "6.12"] {
        let Some((path, image)) = vmcore_of(kernel, dir.path()) else {
            continue;
        };
        kernels += 1;
        let bytes = std::fs::read(&path).unwrap();
        let full_len = bytes.len();
        // The unmutated dump analyses cleanly: the baseline.
        let core = Arc::new(Vmcore::open(&path).unwrap());
        let base = {
            let k = Kernel::discover(
                core.clone(),
                image.clone(),
                &core.cpus.clone(),
                core.vmcoreinfo.clone().as_ref(),
            )
            .unwrap();
            snapshot(&k, &CollectOptions::default())
        };
        assert!(
            unmarked_impossible(&base).is_empty() && base.suspect.is_empty(),
            "{kernel}: the real dump itself looks impossible: {:?} {:?}",
            unmarked_impossible(&base),
            base.suspect
        );
        assert!(
            base.scx_tasks.len() > 10,
            "{kernel}: {} tasks",
            base.scx_tasks.len()
        );
        let rig = FileRig {
            data: std::cell::RefCell::new(Arc::new(bytes)),
            full_len,
            image: image.clone(),
        };
        file_cases(&rig, &mut t);
        memory_cases(&core, &image, &base, &mut t);
        eprintln!("{kernel}: done after {:?}", t0.elapsed());
    }
    if kernels == 0 {
        return; // skipped, with the reason printed by vm_env
    }
    wire_cases(&mut t);
    let total: usize = t.classes.values().map(|c| c.0).sum();
    eprintln!("mutation suite: {total} cases in {:?}", t0.elapsed());
    for (class, (n, ok, err)) in &t.classes {
        eprintln!("  {class:<16} {n:>5} cases: {ok:>5} analysed, {err:>5} refused with an error");
    }
    eprintln!(
        "  slowest case {:?}, largest heap for one case {} MiB",
        t.slowest,
        t.peak_heap >> 20
    );
    t.slow.sort();
    for (d, n) in t.slow.iter().rev().take(12) {
        eprintln!("  slow: {d:?} {n}");
    }
    assert!(
        t.violations.is_empty(),
        "{} violations:\n{}",
        t.violations.len(),
        t.violations.join("\n")
    );
    assert!(total >= 1118, "only {total} cases");
}
