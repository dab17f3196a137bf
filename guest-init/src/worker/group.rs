//! Worker groups: the members of one grouped work type (a ping-pong pair,
//! a wake chain, a herd and its waker) are separate processes, each with
//! its own pid, spec and report. They meet in a directory the test side
//! created under the guest's tmpfs: a [`GROUP_SHM_BYTES`] file every
//! member maps `MAP_SHARED` (futex words, timestamps, member pids), and
//! FIFOs created on demand for the pipe-based types.
//!
//! Layout of the shared file, in 64-byte lines so no two members' words
//! share a cache line: line 0 the arrival count, lines 1..=256 member
//! pids, the rest numbered slots for the work type ([`Group::slot`]).

use ktstr_wire::worker::{GROUP_SHM_BYTES, GroupSpec, MAX_GROUP_SIZE};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LINE: usize = 64;
const PID_LINE0: usize = 1;
const SLOT_LINE0: usize = PID_LINE0 + MAX_GROUP_SIZE as usize;
/// Numbered slots available to a work type.
pub(super) const SLOTS: usize = GROUP_SHM_BYTES / LINE - SLOT_LINE0;

/// How long members wait for each other before giving up.
const RENDEZVOUS: Duration = Duration::from_secs(15);

/// This worker's view of its group.
#[derive(Debug)]
pub(super) struct Group {
    /// This member's index in the group (0-based).
    pub member: u32,
    /// Members in the group.
    pub size: u32,
    dir: PathBuf,
    base: NonNull<u8>,
}

impl Group {
    /// Map the group's shared file and record this member's pid.
    pub fn join(g: &GroupSpec) -> Result<Self, String> {
        if g.size == 0 || g.size > MAX_GROUP_SIZE || g.member >= g.size {
            return Err(format!(
                "bad group: member {} of {} (max {MAX_GROUP_SIZE})",
                g.member, g.size
            ));
        }
        let path = PathBuf::from(&g.dir).join("shm");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < GROUP_SHM_BYTES as u64 {
            return Err(format!(
                "{} is {len} bytes, needs {GROUP_SHM_BYTES}",
                path.display()
            ));
        }
        // SAFETY: a fresh shared mapping of a file we hold open, of a length
        // the file has; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                GROUP_SHM_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or("mmap returned NULL")?;
        let grp = Self {
            member: g.member,
            size: g.size,
            dir: PathBuf::from(&g.dir),
            base,
        };
        grp.pid_word(g.member)
            .store(std::process::id() as i32, Ordering::SeqCst);
        Ok(grp)
    }

    fn line<T>(&self, line: usize) -> &T {
        assert!(line < GROUP_SHM_BYTES / LINE && size_of::<T>() <= LINE);
        // SAFETY: in bounds of the live mapping (checked above), 64-byte
        // aligned (mmap is page aligned), and only ever accessed as atomics.
        unsafe { &*self.base.as_ptr().add(line * LINE).cast::<T>() }
    }

    fn pid_word(&self, member: u32) -> &AtomicI32 {
        self.line(PID_LINE0 + member as usize)
    }

    /// The pid of `member` (0 until it joined).
    pub fn pid(&self, member: u32) -> i32 {
        if member >= self.size {
            return 0;
        }
        self.pid_word(member).load(Ordering::SeqCst)
    }

    /// Work-type slot `i` (< [`SLOTS`]) as a futex word.
    pub fn slot(&self, i: usize) -> &AtomicU32 {
        assert!(i < SLOTS, "slot {i} of {SLOTS}");
        self.line(SLOT_LINE0 + i)
    }

    /// The 64-bit word beside [`Group::slot`] `i` (timestamps).
    pub fn slot64(&self, i: usize) -> &AtomicU64 {
        assert!(i < SLOTS, "slot {i} of {SLOTS}");
        let w: &[AtomicU64; 2] = self.line(SLOT_LINE0 + i);
        &w[1]
    }

    /// Wait until every member has joined and been released.
    pub fn rendezvous(&self, stop: &AtomicBool) -> Result<(), String> {
        let arrived: &AtomicU32 = self.line(0);
        arrived.fetch_add(1, Ordering::SeqCst);
        crate::sys::futex_wake(arrived, u32::MAX);
        let end = Instant::now() + RENDEZVOUS;
        loop {
            let n = arrived.load(Ordering::SeqCst);
            if n >= self.size || stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!(
                    "group of {}: only {n} members arrived within {RENDEZVOUS:?}",
                    self.size
                ));
            }
            crate::sys::futex_wait(arrived, n);
        }
    }

    /// A FIFO of this group by name, opened read-write (never blocks on
    /// open; reads go through [`read_u64`]).
    pub fn fifo(&self, name: &str) -> Result<OwnedFd, String> {
        let path = self.dir.join(name);
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "NUL in group path".to_string())?;
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("mkfifo {}: {e}", path.display()));
            }
        }
        // SAFETY: valid path; O_RDWR on a FIFO does not block.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "open {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping `join` created; no references
        // outlive `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), GROUP_SHM_BYTES) };
    }
}

/// Write one u64 message (a timestamp, usually) to a pipe.
pub(super) fn write_u64(fd: &OwnedFd, v: u64) -> bool {
    let b = v.to_ne_bytes();
    // SAFETY: valid fd and 8-byte buffer; pipe writes <= PIPE_BUF are atomic.
    unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 8) == 8 }
}

/// Read one u64 message, polling so a stop is noticed within 50 ms;
/// `None` on stop or error.
pub(super) fn read_u64(fd: &OwnedFd, stop: &AtomicBool) -> Option<u64> {
    while !stop.load(Ordering::Relaxed) {
        match crate::sys::poll_readable(fd.as_raw_fd(), 50) {
            Ok(true) => {
                let mut b = [0u8; 8];
                // SAFETY: valid fd and 8-byte buffer.
                let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
                return (n == 8).then(|| u64::from_ne_bytes(b));
            }
            Ok(false) => {}
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_share_words_and_fifos() {
        let d = tempfile::tempdir().unwrap();
        std::fs::File::create(d.path().join("shm"))
            .unwrap()
            .set_len(GROUP_SHM_BYTES as u64)
            .unwrap();
        let spec = |member| GroupSpec {
            dir: d.path().to_string_lossy().into_owned(),
            member,
            size: 2,
        };
        let stop = AtomicBool::new(false);
        let s1 = spec(1);
        let peer = std::thread::spawn(move || {
            let b = Group::join(&s1).unwrap();
            b.rendezvous(&AtomicBool::new(false))
        });
        let a = Group::join(&spec(0)).unwrap();
        a.rendezvous(&stop).unwrap();
        peer.join().unwrap().unwrap();
        let b = Group::join(&spec(1)).unwrap();
        a.slot(SLOTS - 1).store(7, Ordering::SeqCst);
        assert_eq!(b.slot(SLOTS - 1).load(Ordering::SeqCst), 7);
        b.slot64(3).store(u64::MAX, Ordering::SeqCst);
        assert_eq!(a.slot64(3).load(Ordering::SeqCst), u64::MAX);
        assert_eq!(a.slot(3).load(Ordering::SeqCst), 0, "slot64 is beside slot");
        assert_eq!(a.pid(1), std::process::id() as i32);
        let (fa, fb) = (a.fifo("x").unwrap(), b.fifo("x").unwrap());
        assert!(write_u64(&fa, 42));
        assert_eq!(read_u64(&fb, &stop), Some(42));
        stop.store(true, Ordering::SeqCst);
        assert_eq!(read_u64(&fb, &stop), None);
        assert!(Group::join(&spec(2)).is_err(), "member beyond size");
    }

    #[test]
    fn a_short_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("shm"), b"x").unwrap();
        let g = GroupSpec {
            dir: d.path().to_string_lossy().into_owned(),
            member: 0,
            size: 1,
        };
        assert!(Group::join(&g).unwrap_err().contains("needs"));
    }
}
