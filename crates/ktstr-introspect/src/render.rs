//! Text rendering of a [`SchedSnapshot`], in the spirit of the kernel's
//! `scx_dump_state` (scheduler line, per-CPU rows, then DSQs with their
//! depth and queued tasks, then tasks, then the EEVDF view).

use crate::snapshot::{SchedSnapshot, TaskRef};
use std::fmt::Write;

/// A guest string made safe for a terminal: control bytes (ESC, BEL, ...)
/// are shown escaped, never written raw.
pub fn safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn task(t: &TaskRef) -> String {
    let mark = if t.suspect.is_empty() { "" } else { "(!)" };
    format!("{}[{}]{mark}", t.pid, safe(&t.comm))
}

fn tasks_line(ts: &[TaskRef]) -> String {
    ts.iter().map(task).collect::<Vec<_>>().join(" ")
}

/// The suspect marks of one object, one indented line each.
fn suspects(o: &mut String, indent: &str, marks: &[String]) {
    for m in marks {
        let _ = writeln!(o, "{indent}!! suspect: {}", safe(m));
    }
}

/// Suspect marks of tasks on a list.
fn task_suspects(o: &mut String, indent: &str, ts: &[TaskRef]) {
    for t in ts.iter().filter(|t| !t.suspect.is_empty()) {
        let _ = writeln!(
            o,
            "{indent}!! suspect task at {:#x}: {}",
            t.kva,
            safe(&t.suspect.join("; "))
        );
    }
}

/// Well-known DSQ ids (include/linux/sched/ext.h `enum scx_dsq_id_flags`).
pub fn dsq_id_name(id: u64) -> String {
    const BUILTIN: u64 = 1 << 63;
    const LOCAL_ON: u64 = 1 << 62;
    match id {
        x if x == BUILTIN | 1 => "SCX_DSQ_GLOBAL".into(),
        x if x == BUILTIN | 2 => "SCX_DSQ_LOCAL".into(),
        x if x == BUILTIN | 3 => "SCX_DSQ_BYPASS".into(),
        x if x & (BUILTIN | LOCAL_ON) == BUILTIN | LOCAL_ON => {
            format!("SCX_DSQ_LOCAL_ON|{}", x & 0xffff_ffff)
        }
        x if x & BUILTIN != 0 => format!("builtin {x:#x}"),
        x => format!("{x:#x}"),
    }
}

/// Render the snapshot as terminal text.
pub fn render_text(s: &SchedSnapshot) -> String {
    let mut o = String::new();
    match &s.sched {
        Some(sc) => {
            let _ = write!(
                o,
                "sched_ext: ops={} state={} exit_kind={} ({})",
                sc.ops_name.as_deref().unwrap_or("-"),
                sc.enable_state.as_deref().unwrap_or("-"),
                sc.exit_kind_name,
                sc.exit_kind
            );
            if let Some(a) = sc.aborting {
                let _ = write!(o, " aborting={}", a as u8);
            }
            if let Some(b) = sc.bypass_depth {
                let _ = write!(o, " bypass_depth={b}");
            }
            if let Some(w) = sc.watchdog_timeout {
                let _ = write!(o, " watchdog_timeout={w}j");
            }
            let _ = writeln!(
                o,
                " [{}{}]",
                sc.source,
                sc.sched_kva
                    .map(|k| format!(" @{k:#x}"))
                    .unwrap_or_default()
            );
            if let Some(r) = &sc.exit_reason {
                let _ = writeln!(o, "  reason: {r}");
            }
            if let Some(m) = &sc.exit_msg {
                let _ = writeln!(o, "  msg: {m}");
            }
        }
        None => o.push_str("sched_ext: no scheduler state (kernel without sched_ext?)\n"),
    }
    let _ = writeln!(
        o,
        "jiffies={} HZ={} cpus={} (translation: {}, kaslr_offset={:#x}, phys_base={:#x})",
        s.jiffies.map_or("-".into(), |j| j.to_string()),
        s.hz,
        s.nr_cpus,
        s.translation.source,
        s.translation.kaslr_offset,
        s.translation.phys_base
    );

    suspects(&mut o, "", &s.suspect);
    if s.budget_exhausted {
        o.push_str("!! the walk budget ran out: some lists below are cut short\n");
    }
    o.push_str("\nCPU states\n----------\n");
    for c in &s.cpus {
        let _ = write!(
            o,
            "CPU {:<3}: nr_run={} flags={:#x}",
            c.cpu, c.nr_running, c.flags
        );
        if let Some(r) = c.cpu_released {
            let _ = write!(o, " cpu_rel={}", r as u8);
        }
        if let Some(q) = c.ops_qseq {
            let _ = write!(o, " ops_qseq={q}");
        }
        if let Some(k) = c.kick_sync {
            let _ = write!(o, " kick_sync={k}");
        }
        if let Some(n) = c.nr_immed {
            let _ = write!(o, " nr_immed={n}");
        }
        let _ = write!(o, " rq_nr_running={}", c.rq_nr_running);
        if let Some(t) = &c.curr {
            let _ = write!(o, " curr={}", task(t));
        }
        o.push('\n');
        suspects(&mut o, "          ", &c.suspect);
        if let Some(t) = &c.curr {
            task_suspects(&mut o, "          ", std::slice::from_ref(t));
        }
        if !c.runnable.is_empty() {
            let _ = writeln!(
                o,
                "          runnable: {}{}",
                tasks_line(&c.runnable),
                if c.runnable_truncated {
                    " (truncated)"
                } else {
                    ""
                }
            );
            task_suspects(&mut o, "          ", &c.runnable);
        }
    }

    o.push_str("\nDSQs\n----\n");
    for d in &s.dsqs {
        if d.nr == 0
            && d.tasks.is_empty()
            && d.suspect.is_empty()
            && d.origin != "user"
            && !d.origin.starts_with("global")
        {
            continue; // empty per-CPU queues would drown the rest
        }
        let _ = write!(o, "DSQ {} ({}) nr={}", dsq_id_name(d.id), d.origin, d.nr);
        if let Some(seq) = d.seq {
            let _ = write!(o, " seq={seq}");
        }
        if !d.tasks.is_empty() {
            let _ = write!(o, ": {}", tasks_line(&d.tasks));
        }
        if d.truncated {
            o.push_str(" (truncated)");
        }
        o.push('\n');
        suspects(&mut o, "    ", &d.suspect);
        task_suspects(&mut o, "    ", &d.tasks);
    }
    let empty = s
        .dsqs
        .iter()
        .filter(|d| {
            d.nr == 0
                && d.tasks.is_empty()
                && d.suspect.is_empty()
                && d.origin != "user"
                && !d.origin.starts_with("global")
        })
        .count();
    if empty > 0 {
        let _ = writeln!(o, "({empty} empty per-CPU DSQs not shown)");
    }

    let _ = writeln!(
        o,
        "\nscx_tasks: {} tasks{}",
        s.scx_tasks.len(),
        if s.scx_tasks_truncated {
            " (truncated)"
        } else {
            ""
        }
    );

    if !s.tasks.is_empty() {
        o.push_str("\nTasks\n-----\n");
        let _ = writeln!(
            o,
            "{:>7} {:>7} {:<16} {:<2} {:<5} {:>4} {:<22} {:>10} {:>6} {:>8} {:<8} FOUND ON",
            "PID",
            "TGID",
            "COMM",
            "ST",
            "CLASS",
            "CPU",
            "DSQ",
            "SLICE",
            "WEIGHT",
            "AGE(ms)",
            "CPUS"
        );
        for t in &s.tasks {
            let _ = writeln!(
                o,
                "{:>7} {:>7} {:<16} {:<2} {:<5} {:>4} {:<22} {:>10} {:>6} {:>8} {:<8} {}",
                t.pid,
                t.tgid,
                safe(&t.comm),
                t.state,
                t.class,
                t.cpu.map_or("-".into(), |c| c.to_string()),
                t.dsq_id.map_or("-".into(), dsq_id_name),
                t.slice.map_or("-".into(), |v| v.to_string()),
                t.weight.map_or("-".into(), |v| v.to_string()),
                t.runnable_age_ms.map_or("-".into(), |v| v.to_string()),
                t.cpus_allowed,
                t.found_on.join(", ")
            );
            suspects(&mut o, "        ", &t.suspect);
        }
    }

    if !s.cfs.is_empty() {
        o.push_str("\nEEVDF (cfs_rq per CPU)\n----------------------\n");
        let _ = writeln!(
            o,
            "{:>4} {:>9} {:>11} {:>20} {:>8} {:>8} {:>8} {:>8}",
            "CPU",
            "nr_queued",
            "h_nr_queued",
            "min_vruntime",
            "load",
            "util",
            "util_est",
            "capacity"
        );
        let d = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        for c in &s.cfs {
            let _ = writeln!(
                o,
                "{:>4} {:>9} {:>11} {:>20} {:>8} {:>8} {:>8} {:>8}",
                c.cpu,
                d(c.nr_queued.map(u64::from)),
                d(c.h_nr_queued.map(u64::from)),
                d(c.min_vruntime),
                d(c.load_avg),
                d(c.util_avg),
                d(c.util_est.map(u64::from)),
                d(c.cpu_capacity)
            );
        }
    }
    if !s.problems.is_empty() {
        o.push_str("\nProblems while walking (best effort)\n");
        for p in &s.problems {
            let _ = writeln!(o, "  - {}", safe(p));
        }
    }
    o
}
