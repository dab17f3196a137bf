//! The kernel's own words on its console that mean trouble: a panic, an
//! oops, a `BUG:`, a `WARNING:` or a general protection fault. One place
//! for these rules, used by both engines (to classify a run's end) and by
//! the harness (a guest kernel problem is never a pass).

/// The lines that start a kernel problem report, and what each means.
const MARKERS: &[(&str, KernelProblemKind)] = &[
    ("Kernel panic", KernelProblemKind::Panic),
    ("Oops:", KernelProblemKind::Oops),
    ("BUG:", KernelProblemKind::Bug),
    ("WARNING:", KernelProblemKind::Warning),
    (
        "general protection fault",
        KernelProblemKind::GeneralProtection,
    ),
];

/// The line the kernel prints when it panics (`panic()`).
pub const PANIC_LINE: &str = "Kernel panic - not syncing";

/// How many console lines a problem excerpt keeps.
pub const EXCERPT_LINES: usize = 25;

/// What kind of report the kernel printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KernelProblemKind {
    Panic,
    Oops,
    Bug,
    Warning,
    GeneralProtection,
}

/// The first kernel problem on a console, with the lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelProblem {
    pub kind: KernelProblemKind,
    /// The report's first line and the next lines (at most
    /// [`EXCERPT_LINES`]).
    pub excerpt: String,
}

/// The first kernel problem in `console`, if any.
pub fn find_problem(console: &str) -> Option<KernelProblem> {
    let lines: Vec<&str> = console.lines().collect();
    let (i, kind) = lines.iter().enumerate().find_map(|(i, l)| {
        MARKERS
            .iter()
            .find(|(m, _)| l.contains(m))
            .map(|&(_, k)| (i, k))
    })?;
    let end = i.saturating_add(EXCERPT_LINES).min(lines.len());
    Some(KernelProblem {
        kind,
        excerpt: lines[i..end].join("\n"),
    })
}

/// Did the kernel panic (print [`PANIC_LINE`])?
pub fn panicked(console: &str) -> bool {
    console.contains(PANIC_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_found_with_their_kind() {
        assert!(find_problem("[ 1.0] ok\n[ 2.0] all fine\n").is_none());
        let c = "[ 1.0] ok\n[ 2.0] WARNING: CPU: 1 PID: 5 at kernel/sched/ext.c:42\n[ 2.1] trace\n";
        let p = find_problem(c).unwrap();
        assert_eq!(p.kind, KernelProblemKind::Warning);
        assert!(p.excerpt.starts_with("[ 2.0] WARNING"), "{}", p.excerpt);
        assert!(p.excerpt.ends_with("trace"));
        assert_eq!(
            find_problem("BUG: kernel NULL pointer dereference")
                .unwrap()
                .kind,
            KernelProblemKind::Bug
        );
        assert!(panicked(
            "[ 3.0] Kernel panic - not syncing: Fatal exception"
        ));
        assert!(!panicked("[ 3.0] all good"));
        let long: String = (0..100).map(|i| format!("Oops: line {i}\n")).collect();
        assert_eq!(
            find_problem(&long).unwrap().excerpt.lines().count(),
            EXCERPT_LINES
        );
    }
}
