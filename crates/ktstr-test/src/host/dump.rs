//! Failure dumps: the guest's scheduler state captured at the instant the
//! kernel records a scheduler error (a write watchpoint on the exit kind),
//! or right after teardown when that is not possible, written atomically
//! as JSON and text, with the key lines a failing test prints.

use ktstr_introspect::collect::{CollectOptions, snapshot};
use ktstr_introspect::kernel::Kernel;
use ktstr_introspect::mem::PhysMem;
use ktstr_introspect::scx_exit::ExitKind;
use ktstr_introspect::snapshot::SchedSnapshot;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How the state was captured.
pub const PROVENANCE_WATCHPOINT: &str =
    "watchpoint: frozen at the exit_kind write, before teardown";
pub const PROVENANCE_WATCHPOINT_DONE: &str = "watchpoint: frozen at the disable work's exit_kind write (SCX_EXIT_DONE), before teardown; kind from the kernel's exit reason";
pub const PROVENANCE_SAMPLED: &str = "sampled: exit_kind seen by lock-free sampling (every 10 ms, no watchpoint), frozen at the session's next tick";
/// The watchpoint was armed but did not report the write; the backstop
/// sampler saw it.
pub const PROVENANCE_SAMPLED_BACKSTOP: &str = "sampled: the armed watchpoint did not report the exit_kind write (TCG); lock-free sampling (every 10 ms) saw it, frozen at the session's next tick";
pub const PROVENANCE_AFTER_TEARDOWN: &str =
    "after teardown: frozen when the scheduler's death was reported";

/// One vCPU's registers, RIP resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuRegsSym {
    pub cpu: u32,
    pub rip: u64,
    pub rip_sym: Option<String>,
    pub rsp: u64,
    pub cr3: u64,
}

/// A failure dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureDump {
    pub test: String,
    pub provenance: String,
    pub exit_kind: u32,
    pub exit_kind_name: String,
    /// The kernel's own words (console: `sched_ext: ... disabled (...)` and
    /// the error message line), filled after the run.
    pub exit_reason: Vec<String>,
    /// The vCPU that wrote the exit kind, when known.
    pub writer_cpu: Option<u32>,
    pub regs: Vec<CpuRegsSym>,
    pub snapshot: SchedSnapshot,
    pub console_tail: String,
    pub sched_log_tail: String,
    pub vmcore: Option<PathBuf>,
}

/// Capture the dump body from a frozen kernel.
pub fn capture<M: PhysMem>(
    k: &Kernel<M>,
    regs: &[ktstr_introspect::regs::CpuRegs],
    provenance: &str,
    writer_cpu: Option<u32>,
) -> FailureDump {
    let snap = snapshot(k, &CollectOptions::default());
    let (exit_kind, exit_kind_name) = snap
        .sched
        .as_ref()
        .map(|s| (s.exit_kind, s.exit_kind_name.clone()))
        .unwrap_or((0, "unknown".into()));
    FailureDump {
        test: String::new(),
        provenance: provenance.into(),
        exit_kind,
        exit_kind_name,
        exit_reason: Vec::new(),
        writer_cpu,
        regs: regs
            .iter()
            .map(|r| CpuRegsSym {
                cpu: r.cpu,
                rip: r.rip,
                rip_sym: k.symbolize(r.rip),
                rsp: r.rsp,
                cr3: r.cr3,
            })
            .collect(),
        snapshot: snap,
        console_tail: String::new(),
        sched_log_tail: String::new(),
        vmcore: None,
    }
}

/// The kernel's sched_ext exit lines from a console.
pub fn exit_lines(console: &str) -> Vec<String> {
    let lines: Vec<&str> = console.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("sched_ext: BPF") && l.contains("disabled (") {
            out.push(l.trim().to_string());
            if let Some(next) = lines.get(i + 1).filter(|n| n.contains("sched_ext: ")) {
                out.push(next.trim().to_string());
            }
        }
    }
    out
}

/// The exit kind the kernel's reason text names (`scx_exit_reason()`),
/// for dumps frozen after the kind was already swapped for DONE.
pub fn kind_from_reason(lines: &[String]) -> Option<ExitKind> {
    lines.iter().find_map(|l| ExitKind::from_reason_line(l))
}

/// Tasks whose runnable age exceeds the watchdog timeout.
pub fn stalled_tasks(d: &FailureDump) -> Vec<&ktstr_introspect::snapshot::TaskInfo> {
    let s = &d.snapshot;
    let limit_ms = s
        .sched
        .as_ref()
        .and_then(|x| x.watchdog_timeout)
        .map(|j| ktstr_introspect::getters::jiffies_to_ms(j, s.hz));
    s.tasks
        .iter()
        .filter(|t| match (t.runnable_age_ms, limit_ms) {
            (Some(age), Some(lim)) => age >= lim,
            _ => false,
        })
        .collect()
}

impl FailureDump {
    /// The lines a failing test prints: exit kind and reason, the stalled
    /// tasks, the DSQ depths.
    pub fn key_lines(&self) -> Vec<String> {
        let mut v = vec![format!(
            "exit kind: {} ({})",
            self.exit_kind_name, self.exit_kind
        )];
        v.extend(self.exit_reason.iter().map(|r| format!("reason: {r}")));
        v.push(format!("captured: {}", self.provenance));
        for t in stalled_tasks(self) {
            v.push(format!(
                "stalled: {}[{}] runnable for {} ms on {}",
                t.pid,
                t.comm,
                t.runnable_age_ms.unwrap_or(0),
                t.found_on.join(", ")
            ));
        }
        let depths: Vec<String> = self
            .snapshot
            .dsqs
            .iter()
            .filter(|d| d.nr > 0)
            .map(|d| format!("{}={}", d.origin, d.nr))
            .collect();
        v.push(format!(
            "DSQ depths: {}",
            if depths.is_empty() {
                "all empty".into()
            } else {
                depths.join(", ")
            }
        ));
        v
    }

    /// The text form: key lines, registers, then the snapshot.
    pub fn render_text(&self) -> String {
        let mut s = format!("ktstr failure dump: {}\n", self.test);
        for l in self.key_lines() {
            s += &format!("  {l}\n");
        }
        s += "\nvCPU registers\n--------------\n";
        for r in &self.regs {
            s += &format!(
                "CPU {}{}: rip={:#x} {} rsp={:#x} cr3={:#x}\n",
                r.cpu,
                if self.writer_cpu == Some(r.cpu) {
                    " (wrote exit_kind)"
                } else {
                    ""
                },
                r.rip,
                r.rip_sym.as_deref().unwrap_or("?"),
                r.rsp,
                r.cr3
            );
        }
        s += "\n";
        s += &ktstr_introspect::render::render_text(&self.snapshot);
        if !self.sched_log_tail.is_empty() {
            s += &format!(
                "\nScheduler log (tail)\n--------------------\n{}\n",
                self.sched_log_tail
            );
        }
        s += &format!("\nConsole (tail)\n--------------\n{}\n", self.console_tail);
        s
    }

    /// Write `dump.json` and `dump.txt` into `dir` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, body) in [
            (
                "dump.json",
                serde_json::to_string_pretty(self).map_err(std::io::Error::other)?,
            ),
            ("dump.txt", self.render_text()),
        ] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body)?;
            std::fs::rename(&tmp, dir.join(name))?;
        }
        Ok(())
    }

    /// Read a saved dump (`dump.json`, or a directory holding one).
    pub fn load(path: &Path) -> Result<Self, String> {
        let p = if path.is_dir() {
            path.join("dump.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a ktstr dump: {e}", p.display()))
    }
}

/// Where dumps go: `$KTSTR_DUMP_DIR`, else `<cargo target>/ktstr`, else
/// `./target/ktstr`.
pub fn dump_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KTSTR_DUMP_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(t) = exe
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "target"))
    {
        return t.join("ktstr");
    }
    PathBuf::from("target/ktstr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines_and_round_trip() {
        let con = "[ 9.1] foo\n[ 9.2] sched_ext: BPF scheduler \"qmap\" disabled (runtime error)\n[ 9.2] sched_ext: qmap: scx_bpf_error (boom)\n[ 9.3] bar\n";
        assert_eq!(exit_lines(con).len(), 2);
        let d = FailureDump {
            test: "t".into(),
            provenance: PROVENANCE_WATCHPOINT.into(),
            exit_kind: 1025,
            exit_kind_name: "SCX_EXIT_ERROR_BPF".into(),
            exit_reason: exit_lines(con),
            writer_cpu: Some(1),
            regs: vec![],
            snapshot: SchedSnapshot::default(),
            console_tail: con.into(),
            sched_log_tail: String::new(),
            vmcore: None,
        };
        let t = tempfile::tempdir().unwrap();
        d.write(t.path()).unwrap();
        assert_eq!(FailureDump::load(t.path()).unwrap(), d);
        let txt = std::fs::read_to_string(t.path().join("dump.txt")).unwrap();
        assert!(
            txt.contains("SCX_EXIT_ERROR_BPF") && txt.contains("scx_bpf_error (boom)"),
            "{txt}"
        );
        assert!(FailureDump::load(Path::new("/nonexistent")).is_err());
    }
}
