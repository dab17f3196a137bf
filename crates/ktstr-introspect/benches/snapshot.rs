//! Prints figures for introspection speed on a synthetic 7.2 guest
//! (real BTF layouts): address translation (direct map, kernel image,
//! page-table walk cold and cached) and a full sched_ext snapshot — every
//! CPU, every DSQ, task details for 1000 tasks. Target: snapshot <= 5 ms.
//!
//! Run: `cargo bench -p ktstr-introspect --bench snapshot`.

use ktstr_introspect::collect::{CollectOptions, snapshot_with};
use ktstr_introspect::image::KernelImage;
use ktstr_introspect::synth::{PCPU_VA, SynthGuest};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DSQ_LOCAL: u64 = (1 << 63) | 2;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kernels/7.2/vmlinux");
    if !p.is_file() {
        println!("snapshot bench: SKIPPED ({} not present)", p.display());
        return;
    }
    let t0 = Instant::now();
    let img = Arc::new(KernelImage::open(&p).expect("vmlinux"));
    println!(
        "load vmlinux symbols + BTF: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let mut g = SynthGuest::new(img, 0x1e0_0000, false);
    let o = g.o.clone();
    let (ro, so, see, to) = (
        o.rq.unwrap(),
        o.scx_rq.unwrap(),
        o.see.unwrap(),
        o.task.unwrap(),
    );
    let scx = to.scx.unwrap();
    let ncpu = 8;
    let rqs = g.set_cpus(ncpu, ncpu);
    let head = g.sym("scx_tasks");
    g.list_init(head);
    g.set_sym_u64("jiffies_64", 1_000_000);
    for &rq in &rqs {
        let s = rq + ro.scx.unwrap();
        g.init_dsq(s + so.local_dsq, DSQ_LOCAL);
        g.list_init(s + so.runnable_list);
    }
    let user: Vec<u64> = (0..4).map(|i| g.new_dsq(i)).collect();
    for i in 0..1000 {
        let t = g.new_task(1000 + i, &format!("worker-{i}"));
        g.list_add_tail(head, t + scx + see.tasks_node);
        let rq = rqs[i as usize % ncpu as usize];
        match i % 3 {
            0 => g.dsq_push(rq + ro.scx.unwrap() + so.local_dsq, t),
            1 => g.list_add_tail(
                rq + ro.scx.unwrap() + so.runnable_list,
                t + scx + see.runnable_node,
            ),
            _ => g.dsq_push(user[i as usize % 4], t),
        }
    }
    let k = g.kernel();
    // Translation.
    let n = 200_000u64;
    let dm = ktstr_introspect::synth::PAGE_OFFSET + 0x700_0000;
    let t = Instant::now();
    for i in 0..n {
        black_box(k.kva_to_pa(dm + (i & 0xffff) * 8).unwrap());
    }
    println!(
        "translate direct-map kva: {:.1} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let text = g.sym("jiffies_64");
    let t = Instant::now();
    for _ in 0..n {
        black_box(k.kva_to_pa(text).unwrap());
    }
    println!(
        "translate kernel-image kva: {:.1} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let t = Instant::now();
    for i in 0..n {
        black_box(k.kva_to_pa(PCPU_VA + (i % 2) * 0x1000).unwrap());
    }
    println!(
        "translate vmalloc kva (page walk, cached): {:.1} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let walks = 20_000;
    let t = Instant::now();
    for _ in 0..walks {
        let fresh = g.kernel();
        black_box(fresh.kva_to_pa(PCPU_VA + 0x1000).unwrap());
    }
    println!(
        "translate vmalloc kva (page walk, cold): {:.1} ns",
        t.elapsed().as_nanos() as f64 / walks as f64
    );
    // Full snapshot.
    let opts = CollectOptions::default();
    let mut times = Vec::new();
    let mut ntasks = 0;
    for _ in 0..50 {
        let k = g.kernel();
        let t = Instant::now();
        let s = snapshot_with(&k, &o, &opts);
        times.push(t.elapsed());
        ntasks = s.tasks.len();
        black_box(s);
    }
    let med = median(times.clone());
    let p90 = {
        let mut v = times;
        v.sort();
        v[v.len() * 9 / 10]
    };
    println!(
        "full sched_ext snapshot ({ncpu} CPUs, {} DSQs, {ntasks} tasks with details): median {:.2} ms, p90 {:.2} ms (target <= 5 ms)",
        ncpu as usize + 4 + 1,
        med.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
}
