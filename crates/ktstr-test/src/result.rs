//! What the host learns from one run: [`VmResult`], the argument of
//! `post_vm` callbacks.

use crate::assert::AssertResult;
use crate::host::cold::SnapshotBridge;
use crate::host::dump::FailureDump;
use ktstr_wire::Phase;
use std::path::PathBuf;

/// Everything the host learns from a run.
#[derive(Debug, Clone)]
pub struct VmResult {
    pub exit_code: i32,
    pub timed_out: bool,
    /// Kernel panic / oops text, or an engine failure.
    pub crash_message: Option<String>,
    pub guest_result: Option<AssertResult>,
    /// The payload's raw result JSON (tests: an AssertResult; `ktstr run`:
    /// a scenario report).
    pub guest_json: Option<String>,
    pub console: String,
    pub sched_log: String,
    pub stdout: String,
    pub stderr: String,
    pub lifecycle: Vec<(Phase, String)>,
    /// How long the scheduler took to attach (host-observed).
    pub attach_time: Option<std::time::Duration>,
    /// A protocol or channel problem, if any.
    pub session_error: Option<String>,
    pub snapshot_bridge: SnapshotBridge,
    /// Directory of the failure dump (`dump.json`, `dump.txt`), if the
    /// scheduler failed.
    pub failure_dump: Option<PathBuf>,
    /// The failure dump itself.
    pub dump: Option<FailureDump>,
}
