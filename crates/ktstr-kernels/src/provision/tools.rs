//! Build prerequisites for kernels and schedulers: which commands and
//! headers must exist, which Debian packages provide them, and installing
//! them with apt-get when running as root (otherwise printing the command).

use super::{ProvisionError, is_root, run_logged};
use std::path::Path;
use std::process::Command;

/// One prerequisite: a command on PATH or a header file, and its package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// A command name (`flex`) or an absolute header path.
    pub probe: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
}

/// What `ktstr kernel build` needs.
pub const KERNEL_TOOLS: &[Tool] = &[
    Tool {
        probe: "make",
        package: "make",
    },
    Tool {
        probe: "gcc",
        package: "gcc",
    },
    Tool {
        probe: "flex",
        package: "flex",
    },
    Tool {
        probe: "bison",
        package: "bison",
    },
    Tool {
        probe: "bc",
        package: "bc",
    },
    Tool {
        probe: "objcopy",
        package: "binutils",
    },
    Tool {
        probe: "cpio",
        package: "cpio",
    },
    Tool {
        probe: "perl",
        package: "perl",
    },
    Tool {
        probe: "xz",
        package: "xz-utils",
    },
    Tool {
        probe: "pahole",
        package: "dwarves",
    },
    Tool {
        probe: "dpkg-deb",
        package: "dpkg",
    },
    Tool {
        probe: "/usr/share/keyrings/debian-archive-keyring.gpg",
        package: "debian-archive-keyring",
    },
    Tool {
        probe: "/usr/include/libelf.h",
        package: "libelf-dev",
    },
    Tool {
        probe: "/usr/include/openssl/ssl.h",
        package: "libssl-dev",
    },
    Tool {
        probe: "/usr/include/zlib.h",
        package: "zlib1g-dev",
    },
    Tool {
        probe: "/usr/include/zstd.h",
        package: "libzstd-dev",
    },
];

/// What `ktstr sched build` needs besides a BPF-capable clang.
pub const SCHED_TOOLS: &[Tool] = &[
    Tool {
        probe: "make",
        package: "make",
    },
    Tool {
        probe: "gcc",
        package: "gcc",
    },
    Tool {
        probe: "pkg-config",
        package: "pkg-config",
    },
    Tool {
        probe: "/usr/include/libelf.h",
        package: "libelf-dev",
    },
    Tool {
        probe: "/usr/include/zlib.h",
        package: "zlib1g-dev",
    },
    Tool {
        probe: "/usr/include/zstd.h",
        package: "libzstd-dev",
    },
    Tool {
        probe: "/usr/lib/x86_64-linux-gnu/libelf.a",
        package: "libelf-dev",
    },
    Tool {
        probe: "/usr/lib/x86_64-linux-gnu/libzstd.a",
        package: "libzstd-dev",
    },
    Tool {
        probe: "/usr/include/sys/capability.h",
        package: "libcap-dev",
    },
];

/// What `ktstr kernel import FILE.rpm` needs to unpack an RPM.
pub const RPM_TOOLS: &[Tool] = &[
    Tool {
        probe: "rpm2cpio",
        package: "rpm2cpio",
    },
    Tool {
        probe: "cpio",
        package: "cpio",
    },
];

/// Is a command on PATH?
pub fn on_path(cmd: &str) -> bool {
    find_on_path(cmd).is_some()
}

pub use crate::resolve::find_on_path;

fn present(t: &Tool) -> bool {
    if t.probe.starts_with('/') {
        Path::new(t.probe).exists()
    } else {
        on_path(t.probe)
    }
}

/// The tools from `wanted` that are missing.
pub fn missing(wanted: &[Tool]) -> Vec<Tool> {
    wanted.iter().filter(|t| !present(t)).copied().collect()
}

/// The apt-get command line that installs `tools`' packages.
pub fn install_command(tools: &[Tool]) -> String {
    format!("sudo apt-get install -y {}", packages(tools).join(" "))
}

/// The distinct packages providing `tools`, sorted.
fn packages(tools: &[Tool]) -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = tools.iter().map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    pkgs
}

/// Make sure `wanted` is present: install the missing packages as root,
/// or fail with the exact command to run.
pub fn ensure(wanted: &[Tool], log: &Path) -> Result<(), ProvisionError> {
    let miss = missing(wanted);
    if miss.is_empty() {
        return Ok(());
    }
    let command = install_command(&miss);
    if !is_root() {
        return Err(ProvisionError::MissingTools {
            missing: miss.iter().map(|t| t.probe).collect::<Vec<_>>().join(", "),
            command,
        });
    }
    let pkgs = packages(&miss);
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q"])
        .args(&pkgs);
    if let Err(first) = run_logged(&mut c, log, &format!("apt-get install {}", pkgs.join(" "))) {
        // Package lists may be missing on a fresh machine: update once, retry.
        let mut u = Command::new("apt-get");
        u.args(["update", "-q"]);
        run_logged(&mut u, log, "apt-get update").map_err(|_| first)?;
        run_logged(&mut c, log, &format!("apt-get install {}", pkgs.join(" ")))?;
    }
    let still = missing(wanted);
    if still.is_empty() {
        Ok(())
    } else {
        Err(ProvisionError::MissingTools {
            missing: still.iter().map(|t| t.probe).collect::<Vec<_>>().join(", "),
            command: install_command(&still),
        })
    }
}

/// Install QEMU >= 10 (root only): the system's suite when it is newer
/// than bookworm, else bookworm-backports through a private apt state
/// (bookworm's own QEMU 7.2 crashes guests under MTTCG when schedulers
/// load and unload). Not root: the exact command to run.
pub fn ensure_qemu(cache: &crate::Cache, log: &Path) -> Result<(), ProvisionError> {
    let code = super::apt::codename();
    let backports = format!("{code}-backports");
    let mirror = super::apt::system_mirror();
    let shown = mirror.as_deref().unwrap_or("<your Debian mirror>");
    let command = if code == "bookworm" {
        format!(
            "echo 'deb {shown} {backports} main' > /etc/apt/sources.list.d/backports.list && \
             apt-get update && apt-get install -y -t {backports} qemu-system-x86"
        )
    } else {
        "apt-get install -y qemu-system-x86".to_string()
    };
    if !is_root() {
        return Err(ProvisionError::MissingTools {
            missing: "qemu-system-x86_64 (QEMU >= 10)".into(),
            command: format!("sudo sh -c \"{command}\""),
        });
    }
    let mirror = mirror.ok_or_else(|| ProvisionError::MissingTools {
        missing: "qemu-system-x86_64 (QEMU >= 10), and no Debian mirror in the apt sources".into(),
        command: command.clone(),
    })?;
    let dir = cache
        .work_dir()
        .join("apt")
        .join(format!("{code}+backports"));
    let st =
        super::apt::PrivateApt::with_suites(&dir, &mirror, &[code.as_str(), backports.as_str()])?;
    st.update(log)?;
    let target = (code == "bookworm").then_some(backports.as_str());
    st.install(&["qemu-system-x86"], target, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_dedups_packages() {
        let t = [
            Tool {
                probe: "/usr/include/libelf.h",
                package: "libelf-dev",
            },
            Tool {
                probe: "/usr/lib/x86_64-linux-gnu/libelf.a",
                package: "libelf-dev",
            },
            Tool {
                probe: "flex",
                package: "flex",
            },
        ];
        assert_eq!(
            install_command(&t),
            "sudo apt-get install -y flex libelf-dev"
        );
    }

    #[test]
    fn probes_find_real_things() {
        assert!(on_path("sh"));
        assert!(!on_path("definitely-not-a-ktstr-command"));
        let miss = missing(&[Tool {
            probe: "/nonexistent/x.h",
            package: "x-dev",
        }]);
        assert_eq!(miss.len(), 1);
    }
}
