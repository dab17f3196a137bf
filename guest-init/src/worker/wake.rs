//! Wake placement: tasks waking each other through pipes and futexes.

use super::meter::Meter;
use crate::sys::futex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

/// Two threads passing a token through pipes: a wake chain of two tasks.
pub(super) fn ping_pong(m: &mut Meter, stop: &Arc<AtomicBool>) {
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: valid arrays for pipe(2).
    if unsafe { libc::pipe(a.as_mut_ptr()) } != 0 || unsafe { libc::pipe(b.as_mut_ptr()) } != 0 {
        m.r.errors.push("pipe failed".into());
        return;
    }
    let s2 = stop.clone();
    let (ar, bw) = (a[0], b[1]);
    let peer = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while !s2.load(Ordering::Relaxed) {
            // SAFETY: valid fds and buffer.
            if unsafe { libc::read(ar, byte.as_mut_ptr().cast(), 1) } != 1 {
                break;
            }
            // SAFETY: as above.
            if unsafe { libc::write(bw, byte.as_ptr().cast(), 1) } != 1 {
                break;
            }
        }
    });
    let (aw, br) = (a[1], b[0]);
    let byte = [1u8; 1];
    let mut back = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        // SAFETY: valid fds and buffers.
        if unsafe { libc::write(aw, byte.as_ptr().cast(), 1) } != 1
            || unsafe { libc::read(br, back.as_mut_ptr().cast(), 1) } != 1
        {
            break;
        }
        m.sample(t.elapsed().as_nanos() as u64);
        m.tick();
    }
    // SAFETY: closing our pipe ends wakes the peer with EOF.
    unsafe {
        libc::close(aw);
        libc::close(br);
    }
    let _ = peer.join();
}

/// Two threads handing a token back and forth through a futex word: a
/// wake chain of two tasks (wake latency measured per round trip).
pub(super) fn futex_ping_pong(m: &mut Meter, stop: &Arc<AtomicBool>) {
    let word = Arc::new(AtomicU32::new(0));
    let (w2, s2) = (word.clone(), stop.clone());
    let peer = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            if w2.load(Ordering::Acquire) == 1 {
                w2.store(0, Ordering::Release);
                futex(&w2, libc::FUTEX_WAKE, 1);
            } else {
                futex(&w2, libc::FUTEX_WAIT, 0);
            }
        }
    });
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        word.store(1, Ordering::Release);
        futex(&word, libc::FUTEX_WAKE, 1);
        while word.load(Ordering::Acquire) == 1 && !stop.load(Ordering::Relaxed) {
            futex(&word, libc::FUTEX_WAIT, 1);
        }
        m.sample(t.elapsed().as_nanos() as u64);
        m.tick();
    }
    let _ = peer.join();
}
