//! Reading a sched_ext scheduler's own log for why it failed: a kernel
//! option it says is missing, the dynamic loader failing to start it, the
//! BPF verifier or libbpf refusing its programs, or its own last error
//! line. Shared by guest-init (the lifecycle detail) and the host (the
//! report), so both say the same thing.

/// Most log lines [`relevant_lines`] returns.
pub const MAX_RELEVANT: usize = 40;

/// The likely cause of a scheduler's failure, from its log.
pub fn likely_cause(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // "Error: kernel is missing CONFIG_FUNCTION_TRACER" (scx_utils), and
    // similar wordings naming a CONFIG_ option.
    if let Some((l, opt)) = lines.iter().find_map(|l| {
        let lower = l.to_ascii_lowercase();
        (lower.contains("missing") || lower.contains("not enabled") || lower.contains("requires"))
            .then(|| config_option(l).map(|o| (*l, o)))
            .flatten()
    }) {
        return Some(format!(
            "the kernel lacks {opt}, which the scheduler needs (its log: {l:?}); rebuild the \
             kernel with {opt}=y (ktstr's fragment has it) or use a kernel that has it"
        ));
    }
    if let Some(l) = lines
        .iter()
        .find(|l| l.contains("error while loading shared libraries") || l.contains("ld-linux"))
    {
        return Some(format!(
            "the dynamic loader could not start it: {l} (ktstr copies the binary's interpreter \
             and DT_NEEDED libraries; a library found only at run time, e.g. by dlopen, must be \
             added)"
        ));
    }
    let verifier: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| is_verifier_line(l))
        .collect();
    if !verifier.is_empty() {
        let shown: Vec<&str> = verifier.iter().rev().take(4).rev().copied().collect();
        return Some(format!(
            "the BPF verifier or libbpf refused it: {}",
            shown.join(" | ")
        ));
    }
    lines
        .iter()
        .rev()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.starts_with("error") || lower.contains("panicked at") || lower.contains("fatal")
        })
        .map(|l| format!("its last error: {l}"))
}

/// A `CONFIG_X` name in a line.
fn config_option(line: &str) -> Option<String> {
    let i = line.find("CONFIG_")?;
    let name: String = line[i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (name.len() > "CONFIG_".len()).then_some(name)
}

fn is_verifier_line(l: &str) -> bool {
    l.starts_with("libbpf:")
        || l.contains("BPF program load failed")
        || l.contains("failed to load")
        || l.contains("invalid mem access")
        || l.contains("processed ") && l.contains(" insns")
        || l.contains("verifier")
}

/// The lines of a scheduler log a report shows: every libbpf/verifier
/// line, then the last lines, at most [`MAX_RELEVANT`] in all.
pub fn relevant_lines(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .filter(|l| is_verifier_line(l.trim()))
        .map(|l| l.to_string())
        .collect();
    out.truncate(MAX_RELEVANT / 2);
    let room = MAX_RELEVANT - out.len();
    for l in &lines[lines.len().saturating_sub(room)..] {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named() {
        let c =
            likely_cause("starting\nError: kernel is missing CONFIG_FUNCTION_TRACER\n").unwrap();
        assert!(c.contains("CONFIG_FUNCTION_TRACER=y"), "{c}");
        let c = likely_cause(
            "/bin/scheduler: error while loading shared libraries: libelf.so.1: cannot open shared object file",
        )
        .unwrap();
        assert!(
            c.contains("dynamic loader") && c.contains("libelf.so.1"),
            "{c}"
        );
        let c = likely_cause("libbpf: prog 'x': BPF program load failed: Permission denied\nlibbpf: -- BEGIN PROG LOAD LOG --\nR7 invalid mem access 'scalar'\n").unwrap();
        assert!(
            c.contains("verifier") && c.contains("invalid mem access"),
            "{c}"
        );
        let c = likely_cause("hello\nError: failed to attach\n").unwrap();
        assert!(c.contains("failed to attach"), "{c}");
        assert!(likely_cause("all good\n").is_none());
        assert!(likely_cause("").is_none());
    }

    #[test]
    fn relevant_lines_keep_verifier_lines_and_the_tail() {
        let mut log = String::from("libbpf: loading\n");
        for i in 0..100 {
            log += &format!("line {i}\n");
        }
        let r = relevant_lines(&log);
        assert_eq!(r[0], "libbpf: loading");
        assert_eq!(r.last().unwrap(), "line 99");
        assert!(r.len() <= MAX_RELEVANT);
    }
}
