//! The kernel config fragment ktstr builds with, and the check that every
//! option it asks for survived `make olddefconfig`.
//!
//! Kconfig silently drops an option whose dependencies are not met, so a
//! fragment is a wish, not a result: after `olddefconfig` we compare the
//! fragment with the resulting `.config` and fail naming each option that
//! did not come out the way the fragment asked.

use std::collections::HashMap;

/// The fragment kept in this repository (`assets/ktstr.config`).
pub const FRAGMENT: &str = include_str!("../assets/ktstr.config");

/// What the fragment asks of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// `CONFIG_X=value` (usually `y`).
    Set(String),
    /// `# CONFIG_X is not set`.
    Unset,
}

/// One requirement of the fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Option name including the `CONFIG_` prefix.
    pub name: String,
    /// What the fragment asks for.
    pub want: Want,
}

/// An option whose value in `.config` differs from what the fragment asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Option name including the `CONFIG_` prefix.
    pub name: String,
    /// What the fragment asked for.
    pub want: Want,
    /// The value `.config` has (`None`: not set or absent).
    pub got: Option<String>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.want, &self.got) {
            (Want::Set(v), None) => write!(f, "{}={v} wanted, but it is not set", self.name),
            (Want::Set(v), Some(g)) => write!(f, "{}={v} wanted, but it is {g}", self.name),
            (Want::Unset, Some(g)) => {
                write!(f, "{} wanted off, but it is {g}", self.name)
            }
            (Want::Unset, None) => write!(f, "{} (no mismatch)", self.name),
        }
    }
}

/// Parse a config fragment or `.config` into requirements. Blank lines and
/// comments other than `# CONFIG_X is not set` are skipped; a later line
/// for the same option wins, as in Kconfig.
pub fn parse(text: &str) -> Vec<Requirement> {
    let mut order: Vec<String> = Vec::new();
    let mut map: HashMap<String, Want> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let (name, want) = if let Some(rest) = line.strip_prefix("# ") {
            match rest.strip_suffix(" is not set") {
                Some(name) if name.starts_with("CONFIG_") => (name.to_string(), Want::Unset),
                _ => continue,
            }
        } else if line.starts_with("CONFIG_") {
            match line.split_once('=') {
                Some((n, v)) => (n.to_string(), Want::Set(v.to_string())),
                None => continue,
            }
        } else {
            continue;
        };
        if !map.contains_key(&name) {
            order.push(name.clone());
        }
        map.insert(name, want);
    }
    order
        .into_iter()
        .filter_map(|name| {
            let want = map.remove(&name)?;
            Some(Requirement { name, want })
        })
        .collect()
}

/// Values of every option set in a `.config` (`CONFIG_X=v` lines only).
pub fn values(dot_config: &str) -> HashMap<String, String> {
    parse(dot_config)
        .into_iter()
        .filter_map(|r| match r.want {
            Want::Set(v) => Some((r.name, v)),
            Want::Unset => None,
        })
        .collect()
}

/// Compare a fragment with the `.config` that came out of `olddefconfig`.
pub fn verify(fragment: &str, dot_config: &str) -> Vec<Mismatch> {
    let have = values(dot_config);
    parse(fragment)
        .into_iter()
        .filter_map(|req| {
            let got = have.get(&req.name).cloned();
            let ok = match (&req.want, &got) {
                (Want::Set(v), Some(g)) => v == g,
                (Want::Set(_), None) => false,
                // `=n` is how some tools spell "not set".
                (Want::Unset, Some(g)) => g == "n",
                (Want::Unset, None) => true,
            };
            (!ok).then_some(Mismatch {
                name: req.name,
                want: req.want,
                got,
            })
        })
        .collect()
}

/// The kernel version a `.config` was generated for, from its header line
/// (`# Linux/x86 7.2.13 Kernel Configuration`).
pub fn kernel_version(dot_config: &str) -> Option<String> {
    dot_config.lines().take(10).find_map(|l| {
        let rest = l.strip_prefix("# Linux/")?;
        let (_arch, rest) = rest.split_once(' ')?;
        let ver = rest.strip_suffix(" Kernel Configuration")?;
        Some(ver.trim().to_string())
    })
}

/// Options a scheduler author asks about, with a short label: what real
/// sched_ext schedulers need (scx_lavd and others refuse to start without
/// `FUNCTION_TRACER`) and what ktstr's checks use.
pub const CAPABILITIES: &[(&str, &str)] = &[
    ("CONFIG_SCHED_CLASS_EXT", "scx"),
    ("CONFIG_DEBUG_INFO_BTF", "btf"),
    ("CONFIG_FUNCTION_TRACER", "ftrace"),
    ("CONFIG_CFS_BANDWIDTH", "cpu.max"),
    ("CONFIG_MEMCG", "memcg"),
    ("CONFIG_NUMA", "numa"),
    ("CONFIG_SCHED_SMT", "smt"),
    ("CONFIG_PROVE_LOCKING", "lockdep"),
];

/// Which [`CAPABILITIES`] a `.config` enables: (label, enabled), plus
/// `NR_CPUS` when set.
pub fn capabilities(dot_config: &str) -> (Vec<(&'static str, bool)>, Option<u32>) {
    let v = values(dot_config);
    let caps = CAPABILITIES
        .iter()
        .map(|(opt, label)| (*label, v.get(*opt).is_some_and(|x| x == "y")))
        .collect();
    let nr = v.get("CONFIG_NR_CPUS").and_then(|n| n.parse().ok());
    (caps, nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_has_the_required_options() {
        let reqs = parse(FRAGMENT);
        let has = |n: &str, w: Want| reqs.iter().any(|r| r.name == n && r.want == w);
        for n in [
            "CONFIG_BPF",
            "CONFIG_BPF_SYSCALL",
            "CONFIG_BPF_JIT",
            "CONFIG_SCHED_CLASS_EXT",
            "CONFIG_DEBUG_INFO",
            "CONFIG_DEBUG_INFO_BTF",
            "CONFIG_KALLSYMS_ALL",
            "CONFIG_IKCONFIG_PROC",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
            "CONFIG_VIRTIO_VSOCKETS",
            "CONFIG_PVH",
            "CONFIG_FW_CFG_SYSFS_CMDLINE",
            "CONFIG_RANDOMIZE_BASE",
            "CONFIG_NUMA",
            "CONFIG_SCHED_MC",
            // what real schedulers need (scx_bpfland & co. refuse to start
            // without FUNCTION_TRACER) and cgroup controllers scenarios use
            "CONFIG_FUNCTION_TRACER",
            "CONFIG_CFS_BANDWIDTH",
            "CONFIG_MEMCG",
            "CONFIG_PSI",
        ] {
            assert!(has(n, Want::Set("y".into())), "{n} missing from fragment");
        }
        for n in ["CONFIG_MODULES", "CONFIG_DEBUG_INFO_REDUCED"] {
            assert!(has(n, Want::Unset), "{n} not disabled in fragment");
        }
    }

    #[test]
    fn verify_reports_dropped_and_unwanted_options() {
        let frag = "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=64\n";
        let cfg = "# Linux/x86 7.2.13 Kernel Configuration\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=32\n";
        let bad = verify(frag, cfg);
        let names: Vec<_> = bad.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_B", "CONFIG_C", "CONFIG_D"]);
        assert_eq!(bad[0].to_string(), "CONFIG_B=y wanted, but it is not set");
        assert_eq!(bad[1].to_string(), "CONFIG_C wanted off, but it is y");
        assert_eq!(bad[2].to_string(), "CONFIG_D=64 wanted, but it is 32");
        assert_eq!(kernel_version(cfg).as_deref(), Some("7.2.13"));
    }

    #[test]
    fn verify_accepts_a_matching_config() {
        let frag = "CONFIG_A=y\n# CONFIG_C is not set\n";
        assert!(verify(frag, "CONFIG_A=y\nCONFIG_C=n\n").is_empty());
        assert!(verify(frag, "CONFIG_A=y\n").is_empty());
    }

    #[test]
    fn later_lines_win() {
        let reqs = parse("CONFIG_A=y\n# CONFIG_A is not set\n");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].want, Want::Unset);
    }

    /// The prebuilt kernels in ../shared were built from an equivalent
    /// fragment; our fragment must verify against their configs too.
    #[test]
    fn shared_kernel_configs_satisfy_the_fragment() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/kernels");
        let mut seen = 0;
        for name in ["6.12", "7.2"] {
            let Ok(cfg) = std::fs::read_to_string(root.join(name).join("config")) else {
                continue;
            };
            seen += 1;
            let bad = verify(FRAGMENT, &cfg);
            assert!(bad.is_empty(), "{name}: {bad:?}");
        }
        if seen == 0 {
            eprintln!("skipped: ../shared/kernels/*/config not present beside the checkout");
        }
    }

    #[test]
    fn capabilities_of_a_config() {
        let (caps, nr) = capabilities(
            "CONFIG_SCHED_CLASS_EXT=y\n# CONFIG_FUNCTION_TRACER is not set\nCONFIG_NR_CPUS=512\n",
        );
        assert!(caps.contains(&("scx", true)));
        assert!(caps.contains(&("ftrace", false)));
        assert!(caps.contains(&("btf", false)));
        assert_eq!(nr, Some(512));
    }
}
