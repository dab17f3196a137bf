//! `ktstr run`: boot a VM with the default kernel and a scheduler, run a
//! built-in scenario, print a report, exit non-zero on failure (writing a
//! dump when the scheduler fails). Provisions kernel and schedulers on
//! first use. Also the guest side (`ktstr __guest-scenario`), since this
//! very binary is the payload inside the VM.

use super::{Cli, cache};
use clap::Args;
use ktstr_test::cache::{Cache, kernel_from_env_value, resolve_scheduler};
use ktstr_test::runner::{RunRequest, judge, run};
use ktstr_test::scenario::{BUILTIN, ScenarioReport};
use ktstr_test::vmtest::VmEnv;
use ktstr_vmm::Topology;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scheduler: a cached name (scx_simple, scx_qmap), a path to a static
    /// binary, or `eevdf` for no sched_ext scheduler.
    #[arg(long, default_value = "scx_simple")]
    pub scheduler: String,
    /// Arguments for the scheduler, as one string (e.g. "-t 2").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub sched_args: Option<String>,
    /// Topology N,L,C,T: NUMA nodes, LLCs per node, cores per LLC,
    /// threads per core [default: 1,1,C,1 with C = min(4, host CPUs), so a
    /// run never overcommits the host by default].
    #[arg(long)]
    pub topology: Option<Topology>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
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

fn ensure_kernel(
    cache: &Cache,
    requested: Option<&str>,
) -> anyhow::Result<ktstr_test::cache::KernelArtifacts> {
    let env = std::env::var("KTSTR_KERNEL").ok();
    if let Some(v) = env.as_deref().or(requested)
        && let Ok(k) = kernel_from_env_value(v, cache)
    {
        return Ok(k);
    }
    if let (None, None) = (env.as_deref(), requested)
        && let Some(k) = cache.default_kernel()?
    {
        return Ok(k);
    }
    let version = requested
        .filter(|v| !v.contains('/'))
        .unwrap_or(ktstr_test::provision::kernel::DEFAULT_VERSION);
    eprintln!(
        "ktstr: no kernel {version} in {}: building it now (first use; ~15-20 minutes on 2 cores)",
        cache.root().display()
    );
    let m = ktstr_test::provision::kernel::build(
        cache,
        &ktstr_test::provision::kernel::KernelBuildOptions::new(version),
    )?;
    Ok(cache.kernel(&m.name)?)
}

fn scheduler(cache: &Cache, kernel: &str, s: &str) -> anyhow::Result<Option<PathBuf>> {
    if s == "eevdf" || s == "none" {
        return Ok(None);
    }
    if s.contains('/') {
        let p = PathBuf::from(s);
        anyhow::ensure!(p.is_file(), "scheduler {s} does not exist");
        return Ok(Some(p));
    }
    let dir = std::env::var("KTSTR_SCHED_DIR").ok();
    match resolve_scheduler(s, kernel, dir.as_deref(), cache) {
        Ok(p) => Ok(Some(p)),
        Err(_) if ktstr_test::provision::sched::SCHEDULERS.contains(&s) => {
            eprintln!(
                "ktstr: {s} is not built for kernel {kernel}: building the schedulers now (first use)"
            );
            let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
            ktstr_test::provision::sched::build(cache, kernel, None, jobs)?;
            Ok(Some(resolve_scheduler(s, kernel, dir.as_deref(), cache)?))
        }
        Err(e) => Err(e.into()),
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
    let kernel = ensure_kernel(&cache, a.kernel.as_deref())?;
    let sched = scheduler(&cache, &kernel.name, &a.scheduler)?;
    let args: Vec<String> = a
        .sched_args
        .as_deref()
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
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
            }))?
        );
    } else {
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
    let r = ktstr_test::scenario::run_builtin(name)?;
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
