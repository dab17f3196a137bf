//! Workloads (guest side): worker processes doing a [`WorkType`] under a
//! policy and an affinity, started and stopped together, reporting what
//! they measured. Workers are guest-init's `worker` helper (`/init worker
//! <spec>`), so the test binary never forks itself.

use ktstr_wire::worker::{GROUP_SHM_BYTES, GroupSpec, WorkerSpec, from_hex, to_hex};
pub use ktstr_wire::worker::{SchedPolicy, WorkPhase, WorkType, WorkerReport};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where workers may run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AffinityIntent {
    #[default]
    Inherit,
    Cpus(Vec<u32>),
    /// The CPUs of LLC `i` (from the guest's sysfs topology).
    Llc(u32),
    /// The CPUs of NUMA node `i`.
    Node(u32),
}

/// A group of identical workers.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub num_workers: u32,
    pub affinity: AffinityIntent,
    pub work_type: WorkType,
    pub sched_policy: SchedPolicy,
    pub nice: i32,
    /// Cgroup (below /sys/fs/cgroup) the workers join.
    pub cgroup: String,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            num_workers: 1,
            affinity: AffinityIntent::Inherit,
            work_type: WorkType::SpinWait,
            sched_policy: SchedPolicy::Normal,
            nice: 0,
            cgroup: String::new(),
        }
    }
}

/// The worker binary inside the guest.
pub const WORKER_BIN: &str = "/init";

fn sysfs_cpus(kind: &str, idx: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for cpu in 0..1024u32 {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}");
        if std::fs::metadata(&base).is_err() {
            break;
        }
        let hit = match kind {
            "node" => std::fs::metadata(format!("{base}/node{idx}")).is_ok(),
            _ => {
                (0..4u32)
                    .rev()
                    .find_map(|i| std::fs::read_to_string(format!("{base}/cache/index{i}/id")).ok())
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    == Some(idx)
            }
        };
        if hit {
            out.push(cpu);
        }
    }
    out
}

/// Resolve an affinity intent to a CPU list (empty: inherit).
pub fn resolve_affinity(a: &AffinityIntent) -> Vec<u32> {
    match a {
        AffinityIntent::Inherit => Vec::new(),
        AffinityIntent::Cpus(c) => c.clone(),
        AffinityIntent::Llc(i) => sysfs_cpus("llc", *i),
        AffinityIntent::Node(i) => sysfs_cpus("node", *i),
    }
}

/// Running workers.
pub struct WorkloadHandle {
    children: Vec<Child>,
    started: bool,
    /// Group directories to remove at the end.
    group_dirs: Vec<PathBuf>,
}

/// Distinguishes the group directories of handles in one process.
static HANDLE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Create group `g`'s meeting place: a directory on the guest's tmpfs with
/// the shared file its members map.
fn make_group_dir(seq: u32, g: u32) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ktstr-group-{}-{seq}-{g}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::File::create(dir.join("shm")))
        .and_then(|f| f.set_len(GROUP_SHM_BYTES as u64))
        .map_err(|e| anyhow::anyhow!("worker group directory {}: {e}", dir.display()))?;
    Ok(dir)
}

impl WorkloadHandle {
    /// Spawn the workers (they wait for [`WorkloadHandle::start`]).
    pub fn spawn(cfg: &WorkloadConfig) -> anyhow::Result<Self> {
        cfg.work_type
            .validate()
            .map_err(|e| anyhow::anyhow!("work type {}: {e}", cfg.work_type.name()))?;
        cfg.sched_policy
            .validate()
            .map_err(|e| anyhow::anyhow!("sched_policy: {e}"))?;
        // validate() bounded group sizes to MAX_GROUP_SIZE.
        let group_size = cfg.work_type.worker_group_size().map(|g| g as u32);
        if let Some(g) = group_size
            && (cfg.num_workers == 0 || !cfg.num_workers.is_multiple_of(g))
        {
            anyhow::bail!(
                "work type {} runs in groups of {g} workers; num_workers {} is not a \
                 multiple of {g} (use {})",
                cfg.work_type.name(),
                cfg.num_workers,
                cfg.num_workers.div_ceil(g).max(1) * g
            );
        }
        let cpus = resolve_affinity(&cfg.affinity);
        let mut handle = Self {
            children: Vec::new(),
            started: false,
            group_dirs: Vec::new(),
        };
        let seq = HANDLE_SEQ.fetch_add(1, Ordering::Relaxed);
        for index in 0..cfg.num_workers {
            let group = match group_size {
                Some(size) => {
                    let (g, member) = (index / size, index % size);
                    if member == 0 {
                        handle.group_dirs.push(make_group_dir(seq, g)?);
                    }
                    let dir = handle
                        .group_dirs
                        .last()
                        .map(|d| d.to_string_lossy().into_owned());
                    Some(GroupSpec {
                        dir: dir.unwrap_or_default(),
                        member,
                        size,
                    })
                }
                None => None,
            };
            let spec = WorkerSpec {
                index,
                work: cfg.work_type.clone(),
                policy: cfg.sched_policy,
                nice: cfg.nice,
                cpus: cpus.clone(),
                cgroup: cfg.cgroup.clone(),
                group,
            };
            // Each worker leads its own process group, so teardown also
            // kills whatever it spawned.
            let child = Command::new(WORKER_BIN)
                .arg("worker")
                .process_group(0)
                .arg(to_hex(&spec))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| anyhow::anyhow!("spawn worker {index} ({WORKER_BIN} worker): {e}; workloads run inside ktstr guests"))?;
            handle.children.push(child);
        }
        Ok(handle)
    }

    /// Release every worker at once.
    pub fn start(&mut self) {
        for c in &mut self.children {
            if let Some(i) = c.stdin.as_mut() {
                let _ = i.write_all(b"g");
                let _ = i.flush();
            }
        }
        self.started = true;
    }

    pub fn worker_pids(&self) -> Vec<i32> {
        self.children.iter().map(|c| c.id() as i32).collect()
    }

    /// Stop every worker and collect their reports.
    pub fn stop_and_collect(mut self) -> Vec<WorkerReport> {
        if !self.started {
            self.start();
        }
        for c in &mut self.children {
            // Closing stdin is the stop signal.
            drop(c.stdin.take());
        }
        let mut out = Vec::new();
        for (index, mut c) in std::mem::take(&mut self.children).into_iter().enumerate() {
            let mut report = None;
            if let Some(o) = c.stdout.take() {
                for line in BufReader::new(o).lines().map_while(Result::ok) {
                    if let Some(h) = line.strip_prefix("KTSTR-WORKER ")
                        && let Ok(r) = from_hex::<WorkerReport>(h)
                    {
                        report = Some(r);
                    }
                }
            }
            let status = c.wait();
            // A worker that sent no report is a row with the reason, never
            // a silently missing one.
            out.push(report.unwrap_or_else(|| WorkerReport {
                index: index as u32,
                pid: c.id() as i32,
                errors: vec![format!(
                    "worker sent no report ({})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                )],
                ..Default::default()
            }));
        }
        out.sort_by_key(|r| r.index);
        out
    }
}

impl Drop for WorkloadHandle {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: signalling the process group this worker leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.group_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
