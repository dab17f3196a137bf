//! Provisioning: building test kernels and sched_ext schedulers from
//! Debian's `linux-source-*` packages into the cache.
//!
//! Submodules: [`apt`] (private apt state for other suites), [`tools`] (build prerequisites),
//! [`kernel`] (`ktstr kernel build`), [`sched`] (`ktstr sched build`),
//! [`cargo_sched`] (`ktstr sched build --crate/--workspace`), [`debian`]
//! (`ktstr kernel fetch debian:...`).
//! Long steps run with their output in a log file and a spinner on a
//! terminal; a failure names the log and prints its tail. The config
//! fragment and its verification live in [`crate::kconfig`].

pub mod apt;
pub mod cargo_sched;
pub mod debian;
pub mod kernel;
pub mod sched;
pub mod toolchain;
pub mod tools;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{phase} failed ({status}); full log: {log}\n--- last lines ---\n{tail}")]
    Step {
        phase: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("missing build tools: {missing}.\nInstall them with:\n  {command}")]
    MissingTools { missing: String, command: String },
    #[error(
        "kernel config check failed: these options did not survive `make olddefconfig`:\n  {0}"
    )]
    Config(String),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("{0}")]
    Failed(String),
}

impl ProvisionError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Run a command with stdout and stderr appended to `log`. On a terminal a
/// spinner shows the phase, the elapsed time and the latest output line;
/// elsewhere one line announces the phase and one reports its duration.
pub fn run_logged(cmd: &mut Command, log: &Path, phase: &str) -> Result<(), ProvisionError> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).map_err(|e| ProvisionError::io(parent, e))?;
    }
    let mut logf = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ProvisionError::io(log, e))?;
    let _ = writeln!(logf, "\n===== {phase}: {cmd:?}");
    let (reader, writer) = std::io::pipe().map_err(|e| ProvisionError::io(log, e))?;
    let writer2 = writer.try_clone().map_err(|e| ProvisionError::io(log, e))?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let start = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {prefix}: {wide_msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b.set_prefix(phase.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    if bar.is_none() {
        eprintln!("ktstr: {phase} ...");
    }
    let mut child = cmd.spawn().map_err(|e| ProvisionError::Step {
        phase: phase.to_string(),
        status: format!("could not start {:?}: {e}", cmd.get_program()),
        log: log.to_path_buf(),
        tail: String::new(),
    })?;
    // Drop our copies of the write ends so EOF arrives when the child exits.
    cmd.stdout(Stdio::null());
    cmd.stderr(Stdio::null());
    for line in BufReader::new(reader).split(b'\n') {
        let Ok(line) = line else { break };
        let _ = logf.write_all(&line);
        let _ = logf.write_all(b"\n");
        if let Some(b) = &bar {
            let s = String::from_utf8_lossy(&line);
            let s = s.trim();
            if !s.is_empty() {
                b.set_message(s.chars().take(120).collect::<String>());
            }
        }
    }
    let status = child.wait().map_err(|e| ProvisionError::io(log, e))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    if status.success() {
        eprintln!("ktstr: {phase}: done in {secs:.1}s");
        Ok(())
    } else {
        Err(ProvisionError::Step {
            phase: phase.to_string(),
            status: status.to_string(),
            log: log.to_path_buf(),
            tail: tail(log, 40),
        })
    }
}

/// Run a command quietly and return its stdout (for version probes).
pub fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Is this process root (so apt-get may install)?
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
