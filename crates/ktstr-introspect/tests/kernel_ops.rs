//! Cold-path kernel ops on a synthetic 7.2 guest: a task-field write that
//! passes every layer, each layer's refusal, and width/alignment checks.

use ktstr_introspect::image::KernelImage;
use ktstr_introspect::kernel_ops::execute;
use ktstr_introspect::synth::SynthGuest;
use ktstr_wire::{KernelOp, KernelOpValue, KernelTarget, KernelValue, KernelValueWidth};
use std::path::Path;
use std::sync::Arc;

fn guest() -> Option<(SynthGuest, u64)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kernels/7.2/vmlinux");
    if !p.is_file() {
        eprintln!("SKIPPED: {} not present", p.display());
        return None;
    }
    let img = Arc::new(KernelImage::open(&p).unwrap());
    let mut g = SynthGuest::new(img, 0x1e0_0000, false);
    let o = g.o.clone();
    let (see, to) = (o.see.unwrap(), o.task.unwrap());
    g.set_cpus(2, 2);
    let head = g.sym("scx_tasks");
    g.list_init(head);
    let t = g.new_task(77, "sleeper");
    g.list_add_tail(head, t + to.scx.unwrap() + see.tasks_node);
    g.w64(t + to.start_time.unwrap().off, 5_230_000_000);
    g.w64(t + to.start_boottime.unwrap().off, 5_230_000_000);
    g.w32(t + to.policy.unwrap().off, 0);
    Some((g, t))
}

const START: u64 = 5_230_000_000;

fn write(g: &SynthGuest, pid: u32, start: u64) -> (bool, String) {
    let op = KernelOp::Write {
        target: KernelTarget::task_field(pid, start, "scx.dsq_vtime"),
        value: KernelValue::u64(123),
    };
    let (_, r) = execute(&g.kernel(), &g.o, &op);
    (r.success, r.reason)
}

fn read(
    g: &SynthGuest,
    target: KernelTarget,
    width: KernelValueWidth,
) -> (bool, String, Vec<KernelOpValue>) {
    let (tag, r) = execute(
        &g.kernel(),
        &g.o,
        &KernelOp::Read {
            tag: "t".into(),
            target,
            width,
        },
    );
    assert_eq!(tag.as_deref(), Some("t"));
    (r.success, r.reason, r.read_values)
}

#[test]
fn a_task_that_passes_every_layer_is_written() {
    let Some((g, _t)) = guest() else { return };
    assert_eq!(
        write(&g, 77, START + 3_000_000),
        (true, "ok".into()),
        "same USER_HZ tick"
    );
    let (ok, why, v) = read(
        &g,
        KernelTarget::task_field(77, START, "scx.dsq_vtime"),
        KernelValueWidth::u64(),
    );
    assert!(ok, "{why}");
    assert_eq!(v, vec![KernelOpValue::U64(123)]);
}

#[test]
fn each_layer_refuses_with_its_name() {
    let Some((g, t)) = guest() else { return };
    let o = g.o.clone();
    let (see, to) = (o.see.unwrap(), o.task.unwrap());
    let scx = to.scx.unwrap();
    let expect = |g: &SynthGuest, pid: u32, start: u64, layer: &str| {
        let (ok, why) = write(g, pid, start);
        assert!(!ok && why.starts_with(layer), "want {layer}, got {why}");
    };
    expect(&g, 78, START, "L1 pid");
    expect(&g, 77, START + 20_000_000, "L2 start_time");
    g.w32(t + to.flags.off, 0x4);
    expect(&g, 77, START, "L3 lifetime");
    g.w32(t + to.flags.off, 0);
    g.w32(t + to.on_rq.unwrap().off, 1);
    expect(&g, 77, START, "L4 on_rq");
    g.w32(t + to.on_rq.unwrap().off, 0);
    g.w64(t + scx + see.dsq.off, 0xffff_9a00_0000_1000);
    expect(&g, 77, START, "L5 scx queued");
    g.w64(t + scx + see.dsq.off, 0);
    let fair = g.sym("fair_sched_class");
    g.w64(t + to.sched_class.unwrap().off, fair);
    expect(&g, 77, START, "L6 sched_class");
    let ext = g.sym("ext_sched_class");
    g.w64(t + to.sched_class.unwrap().off, ext);
    g.w32(t + to.policy.unwrap().off, 1);
    expect(&g, 77, START, "L7 policy");
    g.w32(t + to.policy.unwrap().off, 7);
    g.w64(t + to.start_boottime.unwrap().off, 0);
    expect(&g, 77, START, "L8 start_boottime");
    // Nothing was written by any refused op.
    let k = g.kernel();
    assert_eq!(k.read_u64(t + scx + see.dsq_vtime.unwrap().off).unwrap(), 0);
}

#[test]
fn widths_and_alignment_are_checked() {
    let Some((mut g, _)) = guest() else { return };
    g.set_sym_u64("jiffies_64", 4242);
    let (ok, _, v) = read(
        &g,
        KernelTarget::symbol("jiffies_64"),
        KernelValueWidth::u64(),
    );
    assert!(ok && v == vec![KernelOpValue::U64(4242)]);
    let (ok, why, _) = read(
        &g,
        KernelTarget::symbol("jiffies_64"),
        KernelValueWidth::u32(),
    );
    assert!(!ok && why.contains("larger than the 4-byte width"), "{why}");
    let (ok, why, _) = read(
        &g,
        KernelTarget::per_cpu_field("runqueues", "nr_running", 1),
        KernelValueWidth::u64(),
    );
    assert!(!ok && why.contains("larger than the 4-byte field"), "{why}");
    let (ok, why, v) = read(
        &g,
        KernelTarget::per_cpu_field("runqueues", "nr_running", 1),
        KernelValueWidth::u32(),
    );
    assert!(ok && v == vec![KernelOpValue::U32(0)], "{why}");
    let (ok, why, _) = read(
        &g,
        KernelTarget::per_cpu_field("runqueues", "nr_running", 9),
        KernelValueWidth::u32(),
    );
    assert!(!ok && why.contains("out of range"), "{why}");
    let addr = g.sym("jiffies_64") + 1;
    let (ok, why, _) = read(&g, KernelTarget::kva(addr), KernelValueWidth::u64());
    assert!(!ok && why.contains("aligned"), "{why}");
    let (ok, _, v) = read(&g, KernelTarget::kva(addr - 1), KernelValueWidth::bytes(2));
    assert!(ok && v == vec![KernelOpValue::Bytes(vec![0x92, 0x10])]);
    let (ok, why, _) = read(
        &g,
        KernelTarget::symbol("no_such_symbol"),
        KernelValueWidth::u64(),
    );
    assert!(!ok && why.contains("no symbol"), "{why}");
    let (ok, why, _) = read(
        &g,
        KernelTarget::kva(0xffff_a000_0000_0000),
        KernelValueWidth::u64(),
    );
    assert!(!ok, "{why}");
}
