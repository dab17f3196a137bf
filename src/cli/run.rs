//! `ktstr run`: boot a VM with the default kernel and a scheduler, run a
//! built-in scenario, print a report, exit non-zero on failure (writing a
//! dump when the scheduler fails). Provisions kernel and schedulers on
//! first use. Also the guest side (`ktstr __guest-scenario`), since this
//! very binary is the payload inside the VM.

use super::{Cli, cache};
use clap::Args;
use ktstr_kernels::cache::{Cache, CacheError, KernelArtifacts};
use ktstr_kernels::resolve::{KernelRequest, kernel_from_request, resolve_scheduler};
use ktstr_test::guest::scenario::{BUILTIN, ScenarioReport};
use ktstr_test::host::env::VmEnv;
use ktstr_test::host::runner::{RunRequest, judge, run};
use ktstr_vmm::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scheduler: a cached name (scx_simple, scx_qmap, or one built with
    /// `ktstr sched build --crate`, e.g. scx_bpfland or scx_bpfland@1.1.4),
    /// a path to a binary (static or dynamic: its libraries come along),
    /// or `eevdf` for no sched_ext scheduler.
    #[arg(long, default_value = "scx_simple")]
    pub scheduler: String,
    /// Arguments for the scheduler as one string, split like a shell
    /// would (quotes group words: "-t 2 --name 'a b'").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub sched_args: Option<String>,
    /// One argument for the scheduler, as is (repeat for more; may contain
    /// spaces). Appended after --sched-args.
    #[arg(long = "sched-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sched_arg: Vec<String>,
    /// Topology N,L,C,T: NUMA nodes, LLCs per node, cores per LLC,
    /// threads per core [default: 1,1,C,1 with C = min(4, host CPUs), so a
    /// run never overcommits the host by default].
    #[arg(long)]
    pub topology: Option<Topology>,
    /// Guest memory in MiB (128 ..= 1048576).
    #[arg(long, default_value_t = 512, value_parser = parse_memory)]
    pub memory: u32,
    /// Scenario duration (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Built-in scenario: steady, cgroups, wake-chains.
    #[arg(long, default_value = "steady")]
    pub scenario: String,
    /// Kernel: a cached name (7.2, 6.12) or a directory with bzImage and
    /// vmlinux [default: KTSTR_KERNEL, else the newest cached; built on
    /// first use].
    #[arg(long)]
    pub kernel: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a vmcore at the instant of a scheduler failure.
    #[arg(long)]
    pub vmcore: bool,
    /// How long the scheduler may take to attach (e.g. 60s) [default: 120s
    /// under TCG, where verifying a large BPF program takes tens of
    /// seconds; 10s with native KVM].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub attach_timeout: Option<std::time::Duration>,
    /// Scheduler arguments after `--`, as is (appended last).
    #[arg(last = true, value_name = "SCHED_ARGS")]
    pub trailing_sched_args: Vec<String>,
}

impl RunArgs {
    /// The scheduler's argv: `--sched-args` (shell-split), then each
    /// `--sched-arg`, then everything after `--`.
    pub fn scheduler_args(&self) -> anyhow::Result<Vec<String>> {
        let mut v = match &self.sched_args {
            Some(s) => shlex::split(s).ok_or_else(|| {
                anyhow::anyhow!(
                    "--sched-args {s:?}: unbalanced quotes; quote each argument, or pass them \
                     one by one with --sched-arg, or after `--`"
                )
            })?,
            None => Vec::new(),
        };
        v.extend(self.sched_arg.iter().cloned());
        v.extend(self.trailing_sched_args.iter().cloned());
        Ok(v)
    }
}

/// Guest memory in MiB, within the VM's limits.
fn parse_memory(s: &str) -> Result<u32, String> {
    let mb: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("bad memory `{s}`: a number of MiB, e.g. 512"))?;
    ktstr_vmm::spec::validate_memory_mb(mb)?;
    Ok(mb)
}

/// `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, mul) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1u64)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration `{s}`: use e.g. 10s, 500ms, 2m"))?;
    let ms = n
        .checked_mul(mul)
        .filter(|&ms| ms > 0 && ms <= 3_600_000)
        .ok_or_else(|| format!("duration `{s}` must be between 1 ms and 1 hour"))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// A bare `major.minor` version (`7.2`): the only kind of name that is
/// built when it is not cached.
fn is_version_name(s: &str) -> bool {
    let mut it = s.split('.');
    matches!((it.next(), it.next(), it.next()),
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()))
}

fn build_kernel(cache: &Cache, version: &str) -> anyhow::Result<KernelArtifacts> {
    eprintln!(
        "ktstr: no kernel {version} in {}: building it now (first use; ~15-20 minutes on 2 cores)",
        cache.root().display()
    );
    let m = ktstr_kernels::provision::kernel::build(
        cache,
        &ktstr_kernels::provision::kernel::KernelBuildOptions::new(version),
    )?;
    Ok(cache.kernel(&m.name)?)
}

/// The kernel to boot: `KTSTR_KERNEL` > `--kernel` > the cache's newest >
/// a build of the default version. A path that does not exist is an error
/// naming it; only a bare version that is not cached is built.
fn ensure_kernel(cache: &Cache, requested: Option<&str>) -> anyhow::Result<KernelArtifacts> {
    let env = std::env::var("KTSTR_KERNEL").ok().filter(|v| !v.is_empty());
    let (value, from) = match (env.as_deref(), requested) {
        (Some(v), _) => (Some(v), "KTSTR_KERNEL"),
        (None, Some(r)) => (Some(r), "--kernel"),
        (None, None) => (None, ""),
    };
    let Some(value) = value else {
        return match cache.default_kernel()? {
            Some(k) => Ok(k),
            // Fastest first result: a Debian kernel package (seconds)
            // rather than a kernel build (~20 minutes on 2 cores).
            None if ktstr_kernels::provision::apt::system_mirror().is_some() => {
                eprintln!(
                    "ktstr: no kernel in {}: fetching Debian's newest (first use; `ktstr kernel build` makes one with ktstr's config)",
                    cache.root().display()
                );
                let m = super::provision::fetch(cache, "debian")?;
                Ok(cache.kernel(&m.name)?)
            }
            None => build_kernel(cache, ktstr_kernels::provision::kernel::DEFAULT_VERSION),
        };
    };
    match kernel_from_request(value, cache) {
        Ok(k) => Ok(k),
        Err(CacheError::UnknownKernel { name, .. }) if is_version_name(&name) => {
            build_kernel(cache, &name)
        }
        Err(CacheError::NotFetched { request, .. }) => {
            let m = super::provision::fetch(cache, &request)?;
            Ok(cache.kernel(&m.name)?)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("{from}={value}"))),
    }
}

/// The kernel name whose cached schedulers fit `kernel`: its own name when
/// it is cached, else (a directory kernel) the cached kernel of the same
/// `major.minor` version.
fn scheduler_kernel(cache: &Cache, kernel: &KernelArtifacts) -> Option<String> {
    if cache
        .kernel(&kernel.name)
        .is_ok_and(|k| k.bzimage == kernel.bzimage)
    {
        return Some(kernel.name.clone());
    }
    let cfg = std::fs::read_to_string(kernel.config.as_ref()?).ok()?;
    let v = ktstr_kernels::kconfig::kernel_version(&cfg)?;
    let short: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
    cache.kernel(&short).ok().map(|_| short)
}

fn scheduler(cache: &Cache, kernel: &KernelArtifacts, s: &str) -> anyhow::Result<Option<PathBuf>> {
    if s == "eevdf" || s == "none" {
        return Ok(None);
    }
    if matches!(KernelRequest::parse(s), KernelRequest::Path(_)) {
        let p = PathBuf::from(s);
        anyhow::ensure!(p.is_file(), "--scheduler {s}: no such file");
        return Ok(Some(p));
    }
    let dir = std::env::var("KTSTR_SCHED_DIR").ok();
    let sk = scheduler_kernel(cache, kernel);
    let lookup = sk.as_deref().unwrap_or(&kernel.name);
    match resolve_scheduler(s, lookup, dir.as_deref(), cache) {
        Ok(p) => Ok(Some(p)),
        Err(e) if !ktstr_kernels::provision::sched::SCHEDULERS.contains(&s) => Err(e.into()),
        Err(e) => match sk {
            Some(k) => {
                eprintln!(
                    "ktstr: {s} is not built for kernel {k}: building the schedulers now (first use)"
                );
                let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
                ktstr_kernels::provision::sched::build(cache, &k, None, jobs)?;
                Ok(Some(resolve_scheduler(s, &k, dir.as_deref(), cache)?))
            }
            None => Err(anyhow::Error::new(e).context(format!(
                "{s} has not been built for the kernel in {}: import it (`ktstr kernel import {}`) and \
                 run `ktstr sched build --kernel NAME`, or pass --scheduler PATH, or set KTSTR_SCHED_DIR",
                kernel.bzimage.parent().map(|p| p.display().to_string()).unwrap_or_default(),
                kernel.bzimage.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            ))),
        },
    }
}

fn print_report(r: &ScenarioReport) {
    println!("scenario {} ({} ms)", r.scenario, r.duration_ms);
    println!(
        "{:<10} {:>6} {:>7} {:>12} {:>10} {:>8} {:>11} {:<10}",
        "cgroup", "worker", "pid", "work units", "cpu ms", "migr", "max gap ms", "cpus"
    );
    for cg in &r.cgroups {
        for w in &cg.reports {
            let cpus: Vec<String> = w.cpus.iter().map(u32::to_string).collect();
            println!(
                "{:<10} {:>6} {:>7} {:>12} {:>10.0} {:>8} {:>11.1} {:<10}",
                cg.name,
                w.index,
                w.pid,
                w.work_units,
                w.cpu_time_ns as f64 / 1e6,
                w.migrations,
                w.max_gap_ns as f64 / 1e6,
                cpus.join(",")
            );
        }
    }
    println!("checks:");
    for d in &r.checks.details {
        println!(
            "  [{}] {}: {}",
            if d.passed { "PASS" } else { "FAIL" },
            d.name,
            d.message
        );
    }
}

pub fn run_cmd(cli: &Cli, a: &RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        BUILTIN.iter().any(|(n, _)| *n == a.scenario),
        "unknown scenario `{}`; built-in: {}",
        a.scenario,
        BUILTIN
            .iter()
            .map(|(n, d)| format!("{n} ({d})"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let cache = cache(&cli.cache_dir)?;
    super::provision::ensure_engine(&cache)?;
    let kernel = ensure_kernel(&cache, a.kernel.as_deref())?;
    let sched = scheduler(&cache, &kernel, &a.scheduler)?;
    let args = a.scheduler_args()?;
    let env = VmEnv { cache, kernel };
    let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let topology = a.topology.unwrap_or(Topology::flat(host.clamp(1, 4)));
    let req = RunRequest {
        name: format!("run-{}", a.scenario),
        scheduler: sched.map(|p| (p, args)),
        topology,
        memory_mb: a.memory,
        duration_s: a.duration.as_secs().max(1),
        watchdog_timeout_s: 30,
        payload: std::env::current_exe()?,
        payload_args: vec!["__guest-scenario".into(), a.scenario.clone()],
        payload_env: vec![(
            "KTSTR_DURATION_MS".into(),
            a.duration.as_millis().to_string(),
        )],
        vmcore: a.vmcore,
        attach_timeout: a.attach_timeout,
        capture: ktstr_test::host::failure::CaptureMode::from_env(),
    };
    eprintln!(
        "ktstr: kernel {} | scheduler {} | topology {} | {} for {:?}",
        env.kernel.name, a.scheduler, topology, a.scenario, a.duration
    );
    let vr = run(&env, &req).map_err(anyhow::Error::msg)?;
    let report: Option<ScenarioReport> = vr
        .guest_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let mut failures = judge(&vr, false, None);
    if let Some(r) = &report {
        if !r.checks.passed() {
            failures.push(format!("checks failed:\n{}", r.checks.summary()));
        }
    } else if failures.is_empty() {
        failures.push("the guest sent no scenario report".into());
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "report": report,
                "passed": failures.is_empty(),
                "failures": failures,
                "dump": vr.failure_dump,
                "attach_time_ms": vr.attach_time.map(|t| t.as_millis() as u64),
                "scheduler_log": ktstr_wire::sched_diag::relevant_lines(&vr.sched_log),
            }))?
        );
    } else {
        if let Some(t) = vr.attach_time {
            println!("scheduler attached in {:.1}s", t.as_secs_f64());
        }
        if let Some(r) = &report {
            print_report(r);
        }
        if let Some(d) = &vr.dump {
            println!(
                "scheduler failure captured ({}):",
                vr.failure_dump
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            for l in d.key_lines() {
                println!("  {l}");
            }
        }
        println!(
            "verdict: {}",
            if failures.is_empty() { "PASS" } else { "FAIL" }
        );
        for f in &failures {
            println!("  - {}", f.replace('\n', "\n    "));
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Inside the guest: run the scenario and send the report.
pub fn guest_scenario(name: &str) -> anyhow::Result<ExitCode> {
    let r = ktstr_test::guest::scenario::run_builtin(name)?;
    let passed = r.checks.passed();
    let mut c = ktstr_wire::RelayClient::from_env().map_err(anyhow::Error::msg)?;
    c.send(&ktstr_wire::GuestMsg::TestResult {
        passed,
        json: serde_json::to_string(&r)?,
    })
    .map_err(anyhow::Error::msg)?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> RunArgs {
        match crate::cli::Cli::parse_from(std::iter::once("ktstr").chain(v.iter().copied())).command
        {
            crate::cli::Command::Run(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scheduler_args_keep_spaces_and_order() {
        let a = args(&[
            "run",
            "--sched-args",
            "-t 2 --name 'a b'",
            "--sched-arg",
            "--cell name",
            "--",
            "-v",
            "x y",
        ]);
        assert_eq!(
            a.scheduler_args().unwrap(),
            ["-t", "2", "--name", "a b", "--cell name", "-v", "x y"]
        );
        let bad = args(&["run", "--sched-args", "-t 'oops"]);
        let e = bad.scheduler_args().unwrap_err().to_string();
        assert!(
            e.contains("unbalanced quotes") && e.contains("--sched-arg"),
            "{e}"
        );
    }

    #[test]
    fn absurd_numbers_are_refused_naming_the_limit() {
        use clap::Parser;
        let e = crate::cli::Cli::try_parse_from(["ktstr", "run", "--topology", "65536,65536,1,1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 252"), "{e}");
        let e = crate::cli::Cli::try_parse_from(["ktstr", "run", "--memory", "16"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("128..="), "{e}");
        let e = crate::cli::Cli::try_parse_from(["ktstr", "run", "--duration", "99999h"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn only_bare_versions_are_built() {
        for v in ["7.2", "6.12", "10.0"] {
            assert!(is_version_name(v), "{v}");
        }
        for v in ["7", "7.2.13", "7.x", "", ".2", "debian:7.2", "./7.2"] {
            assert!(!is_version_name(v), "{v}");
        }
    }

    #[test]
    fn a_kernel_path_typo_is_an_error_not_a_build() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::at(t.path());
        let e = ensure_kernel(&cache, Some("./no/such/kernel")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("./no/such/kernel") && msg.contains("no such file"),
            "{msg}"
        );
        assert!(
            !t.path().join("work").exists(),
            "nothing was downloaded or built"
        );
    }
}
