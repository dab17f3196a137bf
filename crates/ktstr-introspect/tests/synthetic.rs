//! Walkers and discovery against synthetic guests laid out with the real
//! BTF of the 7.2 kernel (a checked-in fixture) and 6.12 (../shared): lists empty and full, DSQs
//! with tasks and cursors, a cyclic list, a pointer into unmapped memory,
//! a torn rhashtable chain, a zero per-CPU tail; KASLR discovery by each
//! path; 4- and 5-level paging; arbitrary memory never panics.

use ktstr_introspect::collect::{CollectOptions, SCX_TASK_CURSOR, snapshot};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel::{KaslrSource, discover_params};
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::regs::CpuRegs;
use ktstr_introspect::synth::SynthGuest;
use ktstr_introspect::vmcore::VmcoreInfo;
use std::path::Path;
use std::sync::{Arc, OnceLock};

const SLIDE: u64 = 0x1e0_0000;
const DSQ_LOCAL: u64 = (1 << 63) | 2;
const DSQ_GLOBAL: u64 = (1 << 63) | 1;
const DSQ_BYPASS: u64 = (1 << 63) | 3;

/// jiffies_64 of the synthetic guests: INITIAL_JIFFIES at HZ=1000 plus 100 s.
const JIFFIES: u64 = (1u64 << 32) - 300_000 + 100_000;

/// The 7.2 image comes from the fixture checked in beside this test (its
/// raw BTF, xz-compressed, and the System.map lines the walkers use), so
/// these tests run for any contributor; 6.12 needs `../shared`.
fn image(k: &str) -> Option<Arc<KernelImage>> {
    static I72: OnceLock<Option<Arc<KernelImage>>> = OnceLock::new();
    static I612: OnceLock<Option<Arc<KernelImage>>> = OnceLock::new();
    if k == "7.2" {
        return I72.get_or_init(|| Some(Arc::new(fixture_72()))).clone();
    }
    I612.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/kernels")
            .join(k)
            .join("vmlinux");
        if !p.is_file() {
            eprintln!(
                "SKIPPED: {} not present (needs ../shared beside the checkout)",
                p.display()
            );
            return None;
        }
        Some(Arc::new(KernelImage::open(&p).expect("vmlinux")))
    })
    .clone()
}

/// The checked-in 7.2.13 fixture (`tests/fixtures/7.2`): raw BTF, the
/// System.map lines of the symbols used here, and `linux_banner`'s text.
fn fixture_72() -> KernelImage {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/7.2");
    let xz = std::fs::read(dir.join("btf.xz")).expect("fixture btf.xz");
    let mut raw = Vec::new();
    lzma_rs::xz_decompress(&mut &xz[..], &mut raw).expect("fixture BTF decompresses");
    let tmp = tempfile::tempdir().expect("tempdir");
    let btf = tmp.path().join("btf");
    std::fs::write(&btf, &raw).expect("write BTF");
    let parts =
        KernelImage::open_btf_and_system_map(&btf, &dir.join("System.map")).expect("fixture image");
    let banner = std::fs::read(dir.join("banner")).expect("fixture banner");
    parts.with_banner(banner)
}

/// The scenario: 4 possible CPUs, 2 real; tasks on local, user, global and
/// bypass DSQs and on runnable lists; cursors; a cyclic DSQ on CPU 1; a
/// broken pointer on CPU 0's runnable list; a torn user-DSQ hash chain.
struct Scenario {
    g: SynthGuest,
    tasks: Vec<u64>,
}

fn build_72(la57: bool) -> Option<Scenario> {
    let img = image("7.2")?;
    let mut g = SynthGuest::new(img, SLIDE, la57);
    let o = g.o.clone();
    let (ro, so, d, see, to) = (
        o.rq.unwrap(),
        o.scx_rq.unwrap(),
        o.dsq.unwrap(),
        o.see.unwrap(),
        o.task.unwrap(),
    );
    let sched_o = o.sched.unwrap();
    let rht = o.rht.unwrap();
    let scx = to.scx.unwrap();
    let rqs = g.set_cpus(4, 2);
    // A real kernel starts jiffies at INITIAL_JIFFIES (2^32 - 300 * HZ).
    g.set_sym_u64("jiffies_64", JIFFIES);
    let swapper = g.new_task(0, "swapper/0");
    let names = [
        "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta",
    ];
    let tasks: Vec<u64> = names
        .iter()
        .enumerate()
        .map(|(i, n)| g.new_task(100 + i as i32, n))
        .collect();
    // scx_tasks: every task plus a cursor entry.
    let head = g.sym("scx_tasks");
    g.list_init(head);
    for &t in &tasks {
        g.list_add_tail(head, t + scx + see.tasks_node);
    }
    let cursor = g.alloc(256);
    g.w32(cursor + see.flags.off, SCX_TASK_CURSOR);
    g.list_add_tail(head, cursor + see.tasks_node);
    for (cpu, &rq) in rqs.iter().enumerate() {
        g.w64(rq + ro.curr.off, swapper);
        let s = rq + ro.scx.unwrap();
        g.init_dsq(s + so.local_dsq, DSQ_LOCAL);
        g.list_init(s + so.runnable_list);
        g.w32(s + so.nr_running.off, cpu as u32 + 1);
        g.w32(s + so.flags.off, 0x1);
        g.w64(s + so.kick_sync.unwrap().off, 42 + cpu as u64);
    }
    let s0 = rqs[0] + ro.scx.unwrap();
    let s1 = rqs[1] + ro.scx.unwrap();
    // CPU 0 local DSQ: alpha, cursor, beta (queued, runnable for 2.5 s).
    g.dsq_push(s0 + so.local_dsq, tasks[0]);
    g.dsq_cursor(s0 + so.local_dsq);
    g.dsq_push(s0 + so.local_dsq, tasks[1]);
    for &t in &tasks[..2] {
        g.w32(t + scx + see.flags.off, 1); // SCX_TASK_QUEUED
        g.w64(t + scx + see.runnable_at.unwrap().off, JIFFIES - 2_500);
    }
    // CPU 1 runnable list: delta.
    g.list_add_tail(s1 + so.runnable_list, tasks[3] + scx + see.runnable_node);
    // CPU 0 runnable list: eta, whose next points into unmapped memory.
    g.list_add_tail(s0 + so.runnable_list, tasks[6] + scx + see.runnable_node);
    g.w64(tasks[6] + scx + see.runnable_node, 0xffff_a000_0000_0000);
    // CPU 1 local DSQ: zeta -> theta -> zeta (a ring that never returns).
    let q1 = s1 + so.local_dsq;
    let ln = o.dsq_lnode.unwrap();
    let nz = tasks[5] + scx + see.dsq_list + ln.node;
    let nt = tasks[7] + scx + see.dsq_list + ln.node;
    // The back links are consistent, so this is a cycle, not a corruption.
    g.w64(q1 + d.list, nz);
    g.w64(nz, nt);
    g.w64(nz + 8, q1 + d.list);
    g.w64(nt, nz);
    g.w64(nt + 8, nz);
    // The scheduler.
    let sch = g.alloc(2048);
    g.set_sym_u64("scx_root", sch);
    g.w32(sch + sched_o.exit_kind.off, 1026);
    g.w32(sch + sched_o.bypass_depth.unwrap().off, 1);
    g.w64(sch + sched_o.watchdog_timeout.unwrap().off, 30_000);
    g.wbytes(sch + sched_o.ops_name.unwrap().off, b"synthetic\0");
    // Global DSQ on node 0 via sch->pnode[0]->global_dsq, holding gamma? no: eps.
    let pnode = g.alloc(256);
    let arr = g.alloc(8);
    g.w64(arr, pnode);
    g.w64(sch + sched_o.pnode.unwrap().off, arr);
    let gq = pnode + sched_o.pnode_global_dsq.unwrap();
    g.init_dsq(gq, DSQ_GLOBAL);
    g.dsq_push(gq, tasks[4]);
    // Bypass DSQs in the per-CPU areas, past each rq.
    let k = ro.size.next_multiple_of(64);
    g.w64(sch + sched_o.pcpu.unwrap().off, g.sym("runqueues") + k);
    for &rq in &rqs {
        g.init_dsq(rq + k + sched_o.pcpu_bypass_dsq.unwrap(), DSQ_BYPASS);
    }
    // User DSQ 7 (gamma) in bucket 1; bucket 2 holds a torn chain.
    let bt_size = 4u64;
    let bt = g.alloc(rht.buckets + bt_size * 8);
    g.w32(bt + rht.size.off, bt_size as u32);
    // Empty buckets hold NULL (the kernel synthesises their nulls marker).
    g.w64(sch + sched_o.dsq_hash + rht.tbl, bt);
    let uq = g.new_dsq(7);
    g.dsq_push(uq, tasks[2]);
    let hn = d.hash_node.unwrap();
    g.w64(bt + rht.buckets + 8, (uq + hn) | 1); // lock bit set on the bucket
    g.w64(uq + hn + rht.next, ((bt + rht.buckets + 8) << 1) | 1); // nulls marker ends the chain
    let torn = g.new_dsq(9);
    g.w64(bt + rht.buckets + 16, torn + hn);
    g.w64(torn + hn + rht.next, 0xffff_a000_0000_1000);
    Some(Scenario { g, tasks })
}

fn check_72(sc: &Scenario) {
    let k = sc.g.kernel();
    let s = snapshot(&k, &CollectOptions::default());
    let text = ktstr_introspect::render::render_text(&s);
    // 4 possible CPUs, only 2 with per-CPU areas: the other two are
    // reported as suspect, never read, never silently dropped.
    assert_eq!(s.nr_cpus, 4, "{text}");
    assert_eq!(s.cpus.len(), 2);
    assert!(
        s.suspect
            .iter()
            .any(|w| w.starts_with("cpu 2: per-CPU offset 0"))
            && s.suspect.iter().any(|w| w.starts_with("cpu 3:")),
        "{:?}",
        s.suspect
    );
    assert_eq!(s.cpus[0].nr_running, 1);
    assert_eq!(s.cpus[1].kick_sync, Some(43));
    assert_eq!(s.cpus[0].curr.as_ref().unwrap().comm, "swapper/0");
    let sch = s.sched.as_ref().unwrap();
    assert_eq!(sch.exit_kind, 1026);
    assert_eq!(sch.exit_kind_name, "SCX_EXIT_ERROR_STALL");
    assert_eq!(sch.ops_name.as_deref(), Some("synthetic"));
    assert_eq!(sch.bypass_depth, Some(1));
    let dsq = |origin: &str| {
        s.dsqs
            .iter()
            .find(|d| d.origin == origin)
            .unwrap_or_else(|| panic!("no {origin}:\n{text}"))
    };
    let comms = |ts: &[ktstr_introspect::snapshot::TaskRef]| {
        ts.iter().map(|t| t.comm.clone()).collect::<Vec<_>>()
    };
    // Local DSQ in order, cursor skipped.
    let l0 = dsq("local cpu 0");
    assert_eq!(comms(&l0.tasks), ["alpha", "beta"]);
    assert_eq!((l0.nr, l0.id, l0.truncated), (2, DSQ_LOCAL, false));
    // The ring on CPU 1 is cut, not followed forever.
    let l1 = dsq("local cpu 1");
    assert!(l1.truncated, "{l1:?}");
    assert_eq!(comms(&l1.tasks), ["zeta", "theta"]);
    assert_eq!(comms(&dsq("global node 0").tasks), ["eps"]);
    assert!(
        s.dsqs
            .iter()
            .any(|d| d.origin == "bypass cpu 1" && d.id == DSQ_BYPASS)
    );
    let users: Vec<_> = s.dsqs.iter().filter(|d| d.origin == "user").collect();
    assert_eq!(users.len(), 2, "{text}");
    assert_eq!(comms(&users[0].tasks), ["gamma"]);
    assert!(
        s.problems.iter().any(|p| p.contains("dsq_hash: bucket 2")),
        "{:?}",
        s.problems
    );
    // Runnable lists: delta on CPU 1; eta then a broken pointer on CPU 0.
    assert_eq!(comms(&s.cpus[1].runnable), ["delta"]);
    assert_eq!(comms(&s.cpus[0].runnable), ["eta"]);
    assert!(
        s.problems
            .iter()
            .any(|p| p.contains("cpu 0 runnable_list: node") && p.contains("does not translate")),
        "{:?}",
        s.problems
    );
    // scx_tasks: all eight, cursor skipped.
    assert_eq!(s.scx_tasks.len(), 8);
    // Task details.
    let alpha = s.task(100).unwrap();
    assert_eq!(alpha.class, "ext");
    assert_eq!(alpha.dsq_id, Some(DSQ_LOCAL));
    assert_eq!(alpha.runnable_age_ms, Some(2500));
    assert!(
        alpha.found_on.contains(&"dsq local cpu 0".to_string())
            && alpha.found_on.contains(&"scx_tasks".to_string())
    );
    assert_eq!(s.task(102).unwrap().dsq_id, Some(7));
    assert!(
        text.contains("DSQ SCX_DSQ_LOCAL (local cpu 0) nr=2"),
        "{text}"
    );
    assert!(text.contains("100[alpha] 101[beta]"), "{text}");
    let _ = &sc.tasks;
}

#[test]
fn walkers_on_a_synthetic_72_guest() {
    let Some(sc) = build_72(false) else { return };
    check_72(&sc);
}

#[test]
fn walkers_with_five_level_paging() {
    let Some(sc) = build_72(true) else { return };
    check_72(&sc);
}

#[test]
fn kaslr_discovery_by_every_path() {
    let Some(sc) = build_72(false) else { return };
    let g = &sc.g;
    let img = g.image.clone();
    let want = g.p;
    let link = |n: &str| img.symbols().addr(n).unwrap();
    // 1. VMCOREINFO.
    let info = VmcoreInfo::parse(&format!("KERNELOFFSET={:x}\nNUMBER(phys_base)=0\n", SLIDE));
    let cpu = CpuRegs {
        cr3: want.cr3,
        ..Default::default()
    };
    let (p, src) = discover_params(&g.mem, &img, std::slice::from_ref(&cpu), Some(&info)).unwrap();
    assert_eq!((p, src), (want, KaslrSource::Vmcoreinfo));
    // 2. MSR_LSTAR.
    let c = CpuRegs {
        cr3: want.cr3,
        lstar: Some(link("entry_SYSCALL_64") + SLIDE),
        ..Default::default()
    };
    let (p, src) = discover_params(&g.mem, &img, &[c], None).unwrap();
    assert_eq!((p, src), (want, KaslrSource::Lstar));
    // 3. The IDT (as crash does): gate 0 -> asm_exc_divide_error.
    let mut g2 = build_72(false).unwrap().g;
    let idt = (g2.alloc(0x2000) + 0xfff) & !0xfff;
    let h = link("asm_exc_divide_error") + SLIDE;
    let mut gate = [0u8; 16];
    gate[0..2].copy_from_slice(&(h as u16).to_le_bytes());
    gate[6..8].copy_from_slice(&((h >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((h >> 32) as u32).to_le_bytes());
    g2.wbytes(idt, &gate);
    let cea = 0xffff_fe00_0000_0000;
    let idt_pa = g2.pa(idt);
    g2.map(cea, idt_pa, 1);
    let c = CpuRegs {
        cr3: want.cr3,
        idtr_base: Some(cea),
        ..Default::default()
    };
    let (p, src) = discover_params(&g2.mem, &img, &[c], None).unwrap();
    assert_eq!((p, src), (want, KaslrSource::Idt));
    // 4. Nothing but memory: the banner.
    let banner = img.banner().unwrap().to_vec();
    g2.mem
        .write_phys(g2.text_pa(link("linux_banner")), &banner)
        .unwrap();
    let (p, src) = discover_params(&g2.mem, &img, &[], None).unwrap();
    assert_eq!((p, src), (want, KaslrSource::BannerScan));
    // Nothing at all: a clear error.
    let empty = SynthGuest::new(img.clone(), SLIDE, false);
    let e = discover_params(&empty.mem, &img, &[], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("banner"), "{e}");
}

#[test]
fn walkers_on_a_synthetic_612_guest_use_its_globals() {
    let Some(img) = image("6.12") else { return };
    let mut g = SynthGuest::new(img, SLIDE, false);
    let o = g.o.clone();
    let (ro, so, see, to) = (
        o.rq.unwrap(),
        o.scx_rq.unwrap(),
        o.see.unwrap(),
        o.task.unwrap(),
    );
    let rqs = g.set_cpus(2, 2);
    let t = g.new_task(42, "worker");
    let head = g.sym("scx_tasks");
    g.list_init(head);
    g.list_add_tail(head, t + to.scx.unwrap() + see.tasks_node);
    for &rq in &rqs {
        let s = rq + ro.scx.unwrap();
        g.init_dsq(s + so.local_dsq, DSQ_LOCAL);
        g.list_init(s + so.runnable_list);
        g.w64(s + so.pnt_seq.unwrap().off, 5);
    }
    g.dsq_push(rqs[1] + ro.scx.unwrap() + so.local_dsq, t);
    g.set_sym_u32("scx_exit_kind", 1025);
    let gq = g.new_dsq(DSQ_GLOBAL);
    let arr = g.alloc(8);
    g.w64(arr, gq);
    g.set_sym_u64("global_dsqs", arr);
    let s = snapshot(&g.kernel(), &CollectOptions::default());
    let sch = s.sched.as_ref().unwrap();
    assert_eq!(sch.source, "globals");
    assert_eq!(sch.exit_kind_name, "SCX_EXIT_ERROR_BPF");
    assert_eq!(s.cpus[0].kick_sync, Some(5), "6.12's pnt_seq");
    assert!(s.cpus[0].ops_qseq.is_none());
    let l1 = s.dsqs.iter().find(|d| d.origin == "local cpu 1").unwrap();
    assert_eq!(l1.tasks[0].comm, "worker");
    assert!(s.dsqs.iter().any(|d| d.origin == "global node 0"));
    assert_eq!(s.scx_tasks.len(), 1);
}

mod fuzz {
    use super::*;
    use ktstr_introspect::mem::PhysMemExt;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
        /// Scribble over the structures the walkers read (list heads, DSQ
        /// headers, rq->scx, the task area, the hash table) with pointers
        /// that are valid, garbage, NULL, self-referencing or unmapped:
        /// the snapshot must finish, quickly, without panicking.
        #[test]
        fn arbitrary_memory_never_panics(writes in proptest::collection::vec((0u64..0x20_0000, 0usize..10, any::<u64>()), 1..200)) {
            let Some(sc) = build_72(false) else { return Ok(()) };
            let g = &sc.g;
            let base = g.pa(sc.tasks[0]) & !0xfff;
            for (off, kind, raw) in writes {
                let pa = (base + off) & !7;
                let v = match kind {
                    0 => raw,
                    1 => 0,
                    2 => ktstr_introspect::synth::PAGE_OFFSET + (raw % ktstr_introspect::synth::RAM),
                    3 => 0xffff_a000_0000_0000 | (raw & 0xffff),
                    4 => ktstr_introspect::synth::PAGE_OFFSET + pa,
                    // Near the top of the address space: sums overflow.
                    5 => u64::MAX - (raw % 0x1_0000),
                    // A back pointer: the field's own list head's prev slot.
                    6 => (ktstr_introspect::synth::PAGE_OFFSET + pa).wrapping_sub(8),
                    // Self + 8 (`&head + 8`: a non-node pretending to be one).
                    7 => ktstr_introspect::synth::PAGE_OFFSET + pa + 8,
                    // Small counts and ids near the u32 limits.
                    8 => u64::from(u32::MAX) - (raw % 4),
                    _ => raw | 1,
                };
                let _ = g.mem.write_u64(pa, v);
            }
            let start = std::time::Instant::now();
            let s = snapshot(&g.kernel(), &CollectOptions::default());
            let _ = ktstr_introspect::render::render_text(&s);
            let _ = serde_json::to_string(&s);
            prop_assert!(start.elapsed() < std::time::Duration::from_secs(5), "took {:?}", start.elapsed());
        }
    }
}
