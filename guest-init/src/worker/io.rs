//! I/O paths: synchronous writes that wait for the storage layer.
//!
//! Without a scratch disk in the VM the file is on the guest's tmpfs,
//! where O_SYNC and fdatasync complete without sleeping; the counter
//! `tmpfs_backed` says so, so nobody mistakes it for a block-I/O wait.

use super::meter::Meter;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Blocks per `IoSyncWrite` iteration, and their size.
const BLOCKS: u64 = 16;
const BLOCK: usize = 4096;
/// The file wraps after this many bytes.
const WRAP: u64 = 64 << 20;

/// 16 x 4 KiB `pwrite` to an O_SYNC file in `dir`, then `fdatasync`; the
/// sample is the fdatasync latency. Counters `fsyncs`, `bytes_written`.
pub(super) fn sync_write(dir: &str, m: &mut Meter, stop: &AtomicBool) {
    let path = std::path::Path::new(dir).join(format!("ktstr-io-{}", std::process::id()));
    let f = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_SYNC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return m.r.errors.push(format!("open {}: {e}", path.display())),
    };
    if is_tmpfs(dir) {
        m.count("tmpfs_backed");
    }
    let block = [0xa5u8; BLOCK];
    let mut at = 0u64;
    'run: while !stop.load(Ordering::Relaxed) {
        for _ in 0..BLOCKS {
            if at >= WRAP {
                at = 0;
            }
            if let Err(e) = f.write_all_at(&block, at) {
                m.r.errors.push(format!("pwrite {}: {e}", path.display()));
                break 'run;
            }
            at += BLOCK as u64;
            m.add("bytes_written", BLOCK as u64);
        }
        let t = Instant::now();
        // SAFETY: a valid fd we own.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } == 0 {
            m.count("fsyncs");
        }
        m.sample(t.elapsed().as_nanos() as u64);
        m.r.iterations += 1;
        m.tick();
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
}

fn is_tmpfs(dir: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(dir) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; valid path.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type == libc::TMPFS_MAGIC }
}
