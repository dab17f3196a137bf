//! Wake placement: grouped workers (separate processes) waking each other
//! through FIFOs, futex words and an eventfd. Every wake carries the
//! waker's CLOCK_MONOTONIC timestamp, so the wakee's sample is the
//! wake-to-run latency as the kernel delivered it.

use super::cpu::spin_iters;
use super::group::{Group, read_u64, write_u64};
use super::meter::{Meter, now_ns};
use crate::sys::{futex_wait, futex_wake};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

fn mono() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

/// Record the latency of a wake stamped `ts` (0: the first turn, which
/// nobody woke).
fn woke(m: &mut Meter, ts: u64) {
    if ts != 0 {
        m.sample(mono().saturating_sub(ts));
    }
}

/// Wait until `word` != `val` or stop; true if it changed. Counts the
/// waits that slept as `futex_waits`.
fn wait_change(word: &AtomicU32, val: u32, m: &mut Meter, stop: &AtomicBool) -> bool {
    while word.load(Ordering::Acquire) == val {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if futex_wait(word, val) {
            m.count("futex_waits");
        }
    }
    true
}

/// A pair passing a stamped message through two FIFOs, spinning
/// `burst_iters` between hops (pipe wake-ups are WF_SYNC). With a
/// working set, each hop also walks it (`CachePipe`).
pub(super) fn pipe_pair(
    g: &Group,
    burst_iters: u64,
    mut working_set: Option<&mut [u8]>,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let (rx, tx) = if g.member == 0 {
        ("b", "a")
    } else {
        ("a", "b")
    };
    let (rx, tx) = match (g.fifo(rx), g.fifo(tx)) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => return m.r.errors.push(e),
    };
    if g.member == 0 && !write_u64(&tx, mono()) {
        return m.r.errors.push("PipeIo: first write failed".into());
    }
    while let Some(ts) = read_u64(&rx, stop) {
        woke(m, ts);
        spin_iters(burst_iters);
        if let Some(ws) = working_set.as_deref_mut() {
            touch(ws);
        }
        if !write_u64(&tx, mono()) {
            break;
        }
        m.r.iterations += 1;
        m.tick();
    }
}

/// Spin for `d` without ticking (one hop's work).
fn spin_duration(d: Duration) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        spin_iters(256);
    }
}

/// One read-modify-write per cache line of `ws`.
pub(super) fn touch(ws: &mut [u8]) {
    for b in ws.iter_mut().step_by(64) {
        *b = b.wrapping_add(1);
    }
    std::hint::black_box(ws);
}

/// A pair handing a turn word back and forth (FUTEX_WAIT/WAKE), spinning
/// `spin_iters` per turn.
pub(super) fn futex_pair(g: &Group, spin: u64, m: &mut Meter, stop: &AtomicBool) {
    let (turn, ts) = (g.slot(0), g.slot64(0));
    let (me, other) = (g.member, 1 - g.member.min(1));
    while !stop.load(Ordering::Relaxed) {
        if !wait_change(turn, other, m, stop) {
            break;
        }
        if turn.load(Ordering::Acquire) != me {
            continue;
        }
        woke(m, ts.load(Ordering::Acquire));
        spin_iters(spin);
        ts.store(mono(), Ordering::Release);
        turn.store(other, Ordering::Release);
        futex_wake(turn, 1);
        m.r.iterations += 1;
        m.tick();
    }
}

/// What the members of a fan-out do around each broadcast.
pub(super) enum FanOut {
    /// `FutexFanOut`: everyone spins this many iterations per round.
    Spin(u64),
    /// `ThunderingHerd`: the waker sleeps this long between broadcasts.
    Herd(Duration),
    /// `FanOutCompute`: receivers sleep, then run `operations` matrix
    /// products over `matrix` (input then output halves).
    Compute {
        sleep: Duration,
        operations: usize,
        matrix: Vec<u64>,
    },
}

/// Member 0 broadcasts a generation bump (stamped) to the other members
/// with one FUTEX_WAKE and waits for all of them to acknowledge; the
/// others measure the wake and do their share of `mode`. Counter
/// `woken` (the messenger's FUTEX_WAKE results).
pub(super) fn fan_out(g: &Group, mut mode: FanOut, m: &mut Meter, stop: &AtomicBool) {
    let (generation, ts, acks) = (g.slot(0), g.slot64(0), g.slot(1));
    let receivers = g.size - 1;
    if g.member == 0 {
        while !stop.load(Ordering::Relaxed) {
            match &mode {
                FanOut::Spin(n) => spin_iters(*n),
                FanOut::Herd(pause) => m.sleep(*pause, stop),
                FanOut::Compute { .. } => spin_iters(1024),
            }
            acks.store(0, Ordering::Release);
            ts.store(mono(), Ordering::Release);
            generation.fetch_add(1, Ordering::AcqRel);
            let n = futex_wake(generation, u32::MAX);
            m.add("woken", u64::from(n));
            loop {
                let a = acks.load(Ordering::Acquire);
                if a >= receivers || stop.load(Ordering::Relaxed) {
                    break;
                }
                futex_wait(acks, a);
            }
            m.r.iterations += 1;
            m.tick();
            // Waiting for the acknowledgements is not a gap.
            m.last = std::time::Instant::now();
        }
        return;
    }
    // From the file's initial 0, not the current value: a broadcast sent
    // before this receiver got here must still be answered, or the
    // messenger waits for its acknowledgement until stop.
    let mut seen = 0;
    while wait_change(generation, seen, m, stop) {
        seen = generation.load(Ordering::Acquire);
        woke(m, ts.load(Ordering::Acquire));
        match &mut mode {
            FanOut::Spin(n) => spin_iters(*n),
            FanOut::Herd(_) => {}
            FanOut::Compute {
                sleep,
                operations,
                matrix,
            } => {
                std::thread::sleep(*sleep);
                for _ in 0..*operations {
                    multiply(matrix);
                }
            }
        }
        if acks.fetch_add(1, Ordering::AcqRel) + 1 >= receivers {
            futex_wake(acks, 1);
        }
        m.r.iterations += 1;
        m.tick();
    }
}

/// Square `n x n` matrix product over `mx` (input then output, `2 n^2`
/// words), the think time of `FanOutCompute`.
fn multiply(mx: &mut [u64]) {
    let n = (mx.len() / 2).isqrt();
    let (a, out) = mx.split_at_mut(n * n);
    for i in 0..n {
        for j in 0..n {
            let mut s = 0u64;
            for k in 0..n {
                s = s.wrapping_add(a[i * n + k].wrapping_mul(a[k * n + j]));
            }
            out[i * n + j] = s;
        }
    }
    std::hint::black_box(out);
}

/// A waker (member 0) and a wakee in different classes: the waker spins
/// `burst_iters`, stamps and bumps a futex word and wakes; the wakee
/// waits for the bump (the sample) and spins `burst_iters`.
pub(super) fn asymmetric_waker(g: &Group, burst_iters: u64, m: &mut Meter, stop: &AtomicBool) {
    let (word, ts) = (g.slot(0), g.slot64(0));
    if g.member == 0 {
        while !stop.load(Ordering::Relaxed) {
            spin_iters(burst_iters);
            ts.store(mono(), Ordering::Release);
            word.fetch_add(1, Ordering::AcqRel);
            if futex_wake(word, 1) > 0 {
                m.count("wakes_delivered");
            }
            m.r.iterations += 1;
            m.tick();
        }
        return;
    }
    let mut seen = word.load(Ordering::Acquire);
    while wait_change(word, seen, m, stop) {
        seen = word.load(Ordering::Acquire);
        woke(m, ts.load(Ordering::Acquire));
        spin_iters(burst_iters);
        m.r.iterations += 1;
        m.tick();
    }
}

/// A ring of `g.size` hops: member i waits for the token, spins for
/// `work`, passes it to member i+1 (through a FIFO, or a futex word
/// per hop).
pub(super) fn wake_chain(g: &Group, pipe: bool, work: Duration, m: &mut Meter, stop: &AtomicBool) {
    let next = (g.member + 1) % g.size;
    if pipe {
        let (rx, tx) = match (
            g.fifo(&format!("hop{}", g.member)),
            g.fifo(&format!("hop{next}")),
        ) {
            (Ok(r), Ok(t)) => (r, t),
            (Err(e), _) | (_, Err(e)) => return m.r.errors.push(e),
        };
        if g.member == 0 && !write_u64(&tx, mono()) {
            return m.r.errors.push("WakeChain: first write failed".into());
        }
        while let Some(ts) = read_u64(&rx, stop) {
            woke(m, ts);
            spin_duration(work);
            if !write_u64(&tx, mono()) {
                break;
            }
            m.r.iterations += 1;
            m.tick();
        }
        return;
    }
    let (mine, my_ts) = (g.slot(g.member as usize), g.slot64(g.member as usize));
    let (theirs, their_ts) = (g.slot(next as usize), g.slot64(next as usize));
    if g.member == 0 {
        my_ts.store(mono(), Ordering::Release);
        mine.store(1, Ordering::Release);
    }
    while wait_change(mine, 0, m, stop) {
        mine.store(0, Ordering::Release);
        woke(m, my_ts.load(Ordering::Acquire));
        spin_duration(work);
        their_ts.store(mono(), Ordering::Release);
        theirs.store(1, Ordering::Release);
        futex_wake(theirs, 1);
        m.r.iterations += 1;
        m.tick();
    }
}

/// A futex mutex (0 free, 1 held, 2 held with waiters) shared by the
/// group: lock, hold `hold_iters`, unlock, work `work_iters`. The sample
/// is the time to acquire; `futex_waits` counts waits that slept.
pub(super) fn mutex_contention(g: &Group, hold: u64, work: u64, m: &mut Meter, stop: &AtomicBool) {
    let lock = g.slot(0);
    while !stop.load(Ordering::Relaxed) {
        let t = mono();
        let mut c = match lock.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => 0,
            Err(c) => c,
        };
        if c != 0 {
            if c != 2 {
                c = lock.swap(2, Ordering::Acquire);
            }
            while c != 0 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if futex_wait(lock, 2) {
                    m.count("futex_waits");
                }
                c = lock.swap(2, Ordering::Acquire);
            }
        }
        m.sample(mono().saturating_sub(t));
        spin_iters(hold);
        if lock.fetch_sub(1, Ordering::Release) != 1 {
            lock.store(0, Ordering::Release);
            futex_wake(lock, 1);
        }
        m.count("acquisitions");
        spin_iters(work);
        m.r.iterations += 1;
        m.tick();
    }
}

/// Producers (members below `producers`) write `events_per_burst` events
/// to one eventfd, then sleep 1 ms; consumers `epoll_wait` on it with
/// EPOLLEXCLUSIVE (one consumer woken per event) and drain it.
pub(super) fn epoll_storm(
    g: &Group,
    producers: u32,
    events_per_burst: u32,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let (fd_word, ready, ts) = (g.slot(0), g.slot(1), g.slot64(1));
    let efd = if g.member == 0 {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return m
                .r
                .errors
                .push(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        fd_word.store(fd as u32, Ordering::Release);
        ready.store(1, Ordering::Release);
        futex_wake(ready, u32::MAX);
        // SAFETY: a fresh fd we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    } else {
        if !wait_change(ready, 0, m, stop) {
            return;
        }
        match steal_fd(g.pid(0), fd_word.load(Ordering::Acquire)) {
            Ok(fd) => fd,
            Err(e) => return m.r.errors.push(e),
        }
    };
    if g.member < producers {
        let one = 1u64.to_ne_bytes();
        while !stop.load(Ordering::Relaxed) {
            ts.store(mono(), Ordering::Release);
            for _ in 0..events_per_burst {
                // SAFETY: valid fd and 8-byte buffer.
                if unsafe { libc::write(efd.as_raw_fd(), one.as_ptr().cast(), 8) } == 8 {
                    m.count("events_sent");
                }
            }
            m.r.iterations += 1;
            m.tick();
            m.sleep(Duration::from_millis(1), stop);
        }
        return;
    }
    // SAFETY: plain syscall; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return m.r.errors.push(format!(
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd we own.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
        u64: 0,
    };
    // SAFETY: valid epoll fd, target fd and event.
    if unsafe {
        libc::epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            efd.as_raw_fd(),
            &mut ev,
        )
    } != 0
    {
        return m.r.errors.push(format!(
            "epoll_ctl EPOLLEXCLUSIVE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: valid epoll fd and output buffer of 4 events.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), 4, 50) };
        if n <= 0 {
            continue;
        }
        woke(m, ts.load(Ordering::Acquire));
        let mut v = [0u8; 8];
        // SAFETY: valid fd and 8-byte buffer; EAGAIN when another
        // consumer drained it first.
        if unsafe { libc::read(efd.as_raw_fd(), v.as_mut_ptr().cast(), 8) } == 8 {
            m.add("events_received", u64::from_ne_bytes(v));
        }
        m.r.iterations += 1;
        m.tick();
    }
}

/// Duplicate fd `fd` of process `pid` into this one (pidfd_getfd).
fn steal_fd(pid: i32, fd: u32) -> Result<OwnedFd, String> {
    let pidfd = crate::sys::pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?;
    // SAFETY: plain syscall on a pidfd we own; the result is checked.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(format!(
            "pidfd_getfd {pid}/{fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
}
