//! No module cycles inside any crate of the workspace.
//!
//! Each source file is a module (`src/host/runner.rs` is `host::runner`).
//! A module depends on another when its non-test code names it by path
//! (`crate::host::session::...`, `super::session::...`, or a `use` of
//! either). Edges between a module and its own ancestors or descendants
//! are containment (a parent declaring or re-exporting its children), not
//! layering, and are left out. The test fails listing every cycle found
//! (strongly connected components of more than one module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file relative to its crate's `src`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "bin") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's text without its unit tests (from `#[cfg(test)]` on).
fn non_test_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Paths named in the code: `crate::a::b`, `super::a`, `self::a`, and the
/// groups of a `use` (`use crate::host::{a, b::c}` names `host::a` and
/// `host::b::c`).
fn named_paths(code: &str, me: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "self::" => me.to_vec(),
                _ => me[..me.len().saturating_sub(1)].to_vec(),
            };
            let rest = &code[from..];
            // super::super::x
            let mut rest = rest;
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let ident_path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            let (head, group) = match ident_path.split_once('{') {
                Some((h, _)) => {
                    let close = rest.find('}').unwrap_or(rest.len());
                    let open = rest.find('{').unwrap_or(0);
                    (h.to_string(), Some(rest[open + 1..close].to_string()))
                }
                None => (ident_path.clone(), None),
            };
            let mut p = base.clone();
            p.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
            match group {
                Some(g) => {
                    for item in g.split(',') {
                        let mut q = p.clone();
                        q.extend(
                            item.trim()
                                .split("::")
                                .filter(|s| !s.is_empty())
                                .map(String::from),
                        );
                        out.push(q);
                    }
                }
                None => out.push(p),
            }
        }
    }
    out
}

fn cycles_in_crate(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| {
            (
                module_of(src, f),
                non_test_code(&std::fs::read_to_string(f).unwrap_or_default()).to_string(),
            )
        })
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, code) in &modules {
        for p in named_paths(code, m) {
            // The longest module that prefixes the named path.
            let target = (0..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|c| modules.contains_key(c));
            let Some(t) = target else { continue };
            let related = t.starts_with(m) || m.starts_with(&t);
            if !related {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    // Tarjan's strongly connected components.
    struct St<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<Vec<String>, usize>,
        low: BTreeMap<Vec<String>, usize>,
        stack: Vec<Vec<String>>,
        on: BTreeSet<Vec<String>>,
        next: usize,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit(s: &mut St<'_>, v: &Vec<String>) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on.insert(v.clone());
        let succ: Vec<Vec<String>> = s
            .edges
            .get(v)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        for w in succ {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = w == *v;
                comp.push(w);
                if done {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let mut s = St {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for m in modules.keys() {
        if !s.index.contains_key(m) {
            visit(&mut s, m);
        }
    }
    s.out
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.into_iter().map(|m| m.join("::")).collect())
        .collect()
}

fn crate_srcs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("src"), root.join("guest-init/src")];
    if let Ok(rd) = std::fs::read_dir(root.join("crates")) {
        for e in rd.flatten() {
            v.push(e.path().join("src"));
        }
    }
    v.retain(|p| p.is_dir());
    v.sort();
    v
}

#[test]
fn no_module_cycle_in_any_crate() {
    let mut found = Vec::new();
    let srcs = crate_srcs();
    assert!(srcs.len() >= 6, "workspace crates not found: {srcs:?}");
    for src in &srcs {
        for c in cycles_in_crate(src) {
            found.push(format!("{}: {}", src.display(), c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

/// The checker finds a cycle when there is one.
#[test]
fn the_checker_sees_a_planted_cycle() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = d.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::X;\n").expect("write");
    std::fs::write(src.join("b.rs"), "pub struct X; use super::c::{Y};\n").expect("write");
    std::fs::write(src.join("c.rs"), "pub struct Y; fn f() { crate::a::g() }\n").expect("write");
    let c = cycles_in_crate(src);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].len(), 3, "{c:?}");
    // Tests inside a file do not count.
    std::fs::write(
        src.join("c.rs"),
        "pub struct Y;\n#[cfg(test)]\nmod tests { use crate::a::g; }\n",
    )
    .expect("write");
    assert!(cycles_in_crate(src).is_empty());
}
