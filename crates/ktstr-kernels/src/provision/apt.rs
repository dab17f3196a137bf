//! Debian packages without touching the system's apt setup.
//!
//! Kernel sources and the newer pahole/clang that 7.x kernels need come
//! from suites the machine's apt sources may lack (sid). We fetch them
//! with a private sources list, private package lists and a private
//! cache (`apt-get -o Dir::Etc::SourceList=… -o Dir::State::Lists=…`), so
//! the system's apt configuration is never changed. The mirror is taken
//! from the machine's own configuration, which is also what a user behind
//! their own mirror wants.

use super::{ProvisionError, run_logged};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, ProvisionError>;

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The Debian mirror from the machine's apt configuration: the `URIs:` of
/// a deb822 `.sources` file or the URL of a `deb` line, skipping
/// security mirrors.
pub fn system_mirror() -> Option<String> {
    let mut texts = Vec::new();
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "sources" || e == "list")
                && let Ok(t) = fs::read_to_string(&p)
            {
                texts.push(t);
            }
        }
    }
    if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    texts.iter().find_map(|t| mirror_from(t))
}

/// Find a Debian (non-security) mirror in one apt sources text.
pub fn mirror_from(text: &str) -> Option<String> {
    let is_debian = |u: &str| {
        (u.starts_with("http://") || u.starts_with("https://"))
            && u.trim_end_matches('/').ends_with("/debian")
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("URIs:") {
            if let Some(u) = rest.split_whitespace().find(|u| is_debian(u)) {
                return Some(u.trim_end_matches('/').to_string());
            }
        } else if line.starts_with("deb ")
            && let Some(u) = line.split_whitespace().find(|u| is_debian(u))
        {
            return Some(u.trim_end_matches('/').to_string());
        }
    }
    None
}

/// The machine's Debian codename (`bookworm`).
pub fn codename() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("VERSION_CODENAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "bookworm".into())
}

/// A private apt state for one suite under `dir`.
pub struct PrivateApt {
    dir: PathBuf,
    suite: String,
}

impl PrivateApt {
    /// Prepare `dir` for `suite` from `mirror`; nothing is downloaded yet.
    pub fn new(dir: &Path, mirror: &str, suite: &str) -> Result<Self> {
        Self::with_suites(dir, mirror, &[suite])
    }

    /// A state over several suites (e.g. `bookworm` + `bookworm-backports`,
    /// so a backport's dependencies resolve); the first names it.
    pub fn with_suites(dir: &Path, mirror: &str, suites: &[&str]) -> Result<Self> {
        let suite = suites.first().copied().unwrap_or("sid");
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| ProvisionError::io(&d, e))?;
        }
        let list = dir.join("sources.list");
        let text: String = suites
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {mirror} {s} main\n"))
            .collect();
        fs::write(&list, text).map_err(|e| ProvisionError::io(&list, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            suite: suite.to_string(),
        })
    }

    /// Package names starting with `prefix` in the suite's lists
    /// (`apt-cache pkgnames`; call [`PrivateApt::update`] first).
    pub fn pkgnames(&self, prefix: &str) -> Result<Vec<String>> {
        let mut c = self.apt_tool("apt-cache", "pkgnames");
        c.arg(prefix);
        let out = c
            .output()
            .map_err(|e| ProvisionError::Failed(format!("apt-cache pkgnames: {e}")))?;
        if !out.status.success() {
            return Err(ProvisionError::Failed(format!(
                "apt-cache pkgnames {prefix} ({}): {}",
                self.suite,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// The suite this state fetches from.
    pub fn suite(&self) -> &str {
        &self.suite
    }

    fn apt(&self, verb: &str) -> Command {
        self.apt_tool("apt-get", verb)
    }

    fn apt_tool(&self, tool: &str, verb: &str) -> Command {
        let mut c = Command::new(tool);
        let d = |s: &str| self.dir.join(s).display().to_string();
        c.args(["-q", "-o"])
            .arg(format!("Dir::Etc::SourceList={}", d("sources.list")))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null", "-o"])
            .arg(format!("Dir::State::Lists={}", d("lists")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d("cache")))
            .args(["-o", "APT::Sandbox::User=root"])
            .arg(verb);
        c
    }

    /// Fetch the suite's package lists (skipped when fetched within a day).
    pub fn update(&self, log: &Path) -> Result<()> {
        let stamp = self.dir.join("lists/.ktstr-updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < 86_400);
        if fresh {
            return Ok(());
        }
        run_logged(
            &mut self.apt("update"),
            log,
            &format!("apt-get update ({})", self.suite),
        )?;
        fs::write(&stamp, b"").map_err(|e| ProvisionError::io(&stamp, e))
    }

    /// Install packages on the system from this state's lists (`-t
    /// target` picks a suite such as a backport); the system's sources are
    /// not touched. Root only.
    pub fn install(&self, packages: &[&str], target: Option<&str>, log: &Path) -> Result<()> {
        let mut c = self.apt("install");
        c.env("DEBIAN_FRONTEND", "noninteractive").args(["-y"]);
        if let Some(t) = target {
            c.args(["-t", t]);
        }
        c.args(packages);
        run_logged(
            &mut c,
            log,
            &format!(
                "apt-get install {} ({})",
                packages.join(" "),
                target.unwrap_or(&self.suite)
            ),
        )
    }

    /// Download packages into `<dir>/debs` and return their paths.
    pub fn download(&self, packages: &[&str], log: &Path) -> Result<Vec<PathBuf>> {
        let debs = self.dir.join("debs");
        let mut cmd = self.apt("download");
        cmd.args(packages).current_dir(&debs);
        run_logged(
            &mut cmd,
            log,
            &format!("apt-get download {}", packages.join(" ")),
        )?;
        let mut out = Vec::new();
        for p in packages {
            let prefix = format!("{p}_");
            let mut found: Vec<PathBuf> = fs::read_dir(&debs)
                .map_err(|e| ProvisionError::io(&debs, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                        && f.extension().is_some_and(|e| e == "deb")
                })
                .collect();
            found.sort_by_key(|f| fs::metadata(f).and_then(|m| m.modified()).ok());
            match found.pop() {
                Some(f) => out.push(f),
                None => {
                    return Err(ProvisionError::Failed(format!(
                        "apt-get download {p} produced no .deb in {}",
                        debs.display()
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// `apt-get download PKG` with the machine's own sources and package
/// lists (nothing is installed or reconfigured) into `dir`.
pub fn download_with_system_sources(pkg: &str, dir: &Path, log: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| ProvisionError::io(dir, e))?;
    let mut c = Command::new("apt-get");
    c.args(["-q", "-o", "APT::Sandbox::User=root", "download", pkg])
        .current_dir(dir);
    run_logged(
        &mut c,
        log,
        &format!("apt-get download {pkg} (system sources)"),
    )?;
    let prefix = format!("{pkg}_");
    fs::read_dir(dir)
        .map_err(|e| ProvisionError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .max()
        .ok_or_else(|| ProvisionError::Failed(format!("apt-get download {pkg} produced no .deb")))
}

/// Unpack a .deb into `root` with `dpkg -x` (installs nothing).
pub fn unpack(deb: &Path, root: &Path, log: &Path) -> Result<()> {
    fs::create_dir_all(root).map_err(|e| ProvisionError::io(root, e))?;
    let mut c = Command::new("dpkg");
    c.arg("-x").arg(deb).arg(root);
    run_logged(&mut c, log, &format!("dpkg -x {}", deb.display()))
}

/// `Version:` of a .deb (`dpkg-deb -f`).
pub fn deb_version(deb: &Path) -> Option<String> {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .arg("Version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822_and_one_line_styles() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_from(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let sec_first = "URIs: http://m.example/debian-security\nURIs: https://m.example/debian/\n";
        assert_eq!(
            mirror_from(sec_first).as_deref(),
            Some("https://m.example/debian")
        );
        let one_line = "# c\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_from(one_line).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from("deb https://other.example/apt stable main\n"),
            None
        );
    }
}
