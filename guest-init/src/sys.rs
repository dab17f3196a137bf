//! Thin, checked wrappers over the syscalls PID 1 needs: mount, reboot,
//! mknod, pidfd, waitid, poll, inotify, affinity, futex.

use std::ffi::CString;
use std::io;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// mount(2); EBUSY (already mounted) counts as success.
pub fn mount(src: &str, target: &str, fstype: &str, data: Option<&str>) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (cstr(src)?, cstr(target)?, cstr(fstype)?);
    let d = data.map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings (or NULL for data)
    // that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            0,
            d.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    match check(rc) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Power the machine off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; RB_POWER_OFF is valid for PID 1.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; there is nothing better to do.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// pidfd_open(2).
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that we now own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
}

/// poll one fd for readability with a timeout in ms; true if ready.
pub fn poll_readable(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is a valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    match check(rc) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Peek at a zombie child without reaping it: returns its pid.
pub fn peek_zombie() -> Option<i32> {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to `info`; flags are standard.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: waitid filled `info` for a child when rc == 0; si_pid is 0 if none.
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// Reap `pid` (blocking if it has not exited yet); returns the raw status.
pub fn reap(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: valid pointer to `status`.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc >= 0 {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Non-blocking reap of `pid`: Some(status) if it exited.
pub fn try_reap(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: valid pointer to `status`.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (rc == pid).then_some(status)
}

/// Describe a wait status like a shell would.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Exit code for a status (128+signal for signals).
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// An inotify instance watching one directory for creates/modifies.
pub struct Inotify(std::os::fd::OwnedFd);

impl Inotify {
    pub fn watch_dir(path: &str) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
        // SAFETY: fresh fd owned from here on.
        let owned: std::os::fd::OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let p = cstr(path)?;
        // SAFETY: valid fd and NUL-terminated path.
        check(unsafe {
            libc::inotify_add_watch(
                fd,
                p.as_ptr(),
                libc::IN_CREATE | libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_MOVED_TO,
            )
        })?;
        Ok(Self(owned))
    }

    /// Wait up to `ms` for any event, then drain.
    pub fn wait(&self, ms: i32) -> bool {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let ready = poll_readable(fd, ms).unwrap_or(false);
        if ready {
            let mut buf = [0u8; 4096];
            // SAFETY: valid buffer and fd; non-blocking read.
            while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        ready
    }
}

/// The CPUs this thread may run on now.
pub fn allowed_cpus() -> Vec<u32> {
    // SAFETY: zeroed cpu_set_t is a valid out-parameter.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set of the right size for ourselves.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return Vec::new();
    }
    // SAFETY: indexes below CPU_SETSIZE.
    (0..1024u32)
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect()
}

/// Restrict this thread to `cpus` (indexes >= 1024 are ignored).
pub fn set_affinity(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: zeroed cpu_set_t is valid; CPU_SET on indexes < 1024.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < 1024) {
        // SAFETY: index checked above.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    // SAFETY: valid set of the right size for pid 0 (ourselves).
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// FUTEX_WAIT on `word` while it holds `val`, for at most 50 ms (so a
/// stop is always noticed). Not FUTEX_PRIVATE: the word may live in a
/// mapping shared between processes. True if the wait slept and was woken
/// (as opposed to value mismatch, timeout or signal).
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, val: u32) -> bool {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call;
    // the timeout is a valid timespec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            &ts as *const libc::timespec,
            0,
            0,
        )
    };
    rc == 0
}

/// FUTEX_WAKE up to `n` waiters on `word`; how many were woken.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32);
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE reads no timeout.
    let rc = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n, 0, 0, 0) };
    u32::try_from(rc).unwrap_or(0)
}
