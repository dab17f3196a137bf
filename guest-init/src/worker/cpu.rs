//! CPU-bound loops: spinning, yielding, cache pressure and `Sequence`
//! phases.

use super::meter::Meter;
use ktstr_wire::worker::{AluWidth, WorkPhase};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(super) fn spin_iters(n: u64) {
    let mut x = 0u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_add(i));
    }
}

/// Strided read-modify-write passes over a private buffer, each followed
/// by `sched_yield` when `yield_after` (`CacheYield`).
pub(super) fn cache_pressure(
    size_kib: usize,
    stride: usize,
    yield_after: bool,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; size_kib.saturating_mul(1024)];
    let stride = stride.max(1);
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0;
        while i < buf.len() {
            buf[i] = buf[i].wrapping_add(1);
            i += stride;
        }
        std::hint::black_box(&mut buf);
        if yield_after {
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
        m.r.iterations += 1;
        m.tick();
    }
}

pub(super) fn spin_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        spin_iters(2000);
        m.tick();
    }
}

pub(super) fn yield_for(d: Duration, m: &mut Meter, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
        m.tick();
    }
}

pub(super) fn phase(p: &WorkPhase, m: &mut Meter, stop: &AtomicBool) {
    match p {
        WorkPhase::Spin(d) => spin_for(*d, m, stop),
        WorkPhase::Sleep(d) => m.sleep(*d, stop),
        WorkPhase::Yield(d) => yield_for(*d, m, stop),
    }
}

/// Steps per `AluHot` work unit.
const ALU_STEPS: u64 = 4096;

/// Four independent multiply-add chains of `N` u32 lanes each, `steps`
/// times: with `N` lanes at a vector width LLVM emits that width.
#[inline(always)]
fn alu_chains<const N: usize>(acc: &mut [[u32; N]; 4], steps: u64) {
    for _ in 0..steps {
        for chain in acc.iter_mut() {
            for l in chain.iter_mut() {
                *l = l.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn alu_chains_avx2(acc: &mut [[u32; 8]; 4], steps: u64) {
    alu_chains(acc, steps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn alu_chains_avx512(acc: &mut [[u32; 16]; 4], steps: u64) {
    alu_chains(acc, steps)
}

/// The vector width in bits `width` runs at on this CPU (0: scalar).
pub(super) fn alu_bits(width: AluWidth) -> u32 {
    #[cfg(target_arch = "x86_64")]
    let (has512, has256) = (
        std::arch::is_x86_feature_detected!("avx512f"),
        std::arch::is_x86_feature_detected!("avx2"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (has512, has256) = (false, false);
    let widest = if has512 {
        512
    } else if has256 {
        256
    } else {
        128
    };
    match width {
        AluWidth::Scalar => 0,
        AluWidth::Vec128 => 128,
        AluWidth::Vec256 => widest.min(256),
        AluWidth::Vec512 | AluWidth::Amx | AluWidth::Widest => widest,
    }
}

/// Independent multiply-add chains at `width` (resolved once): high IPC,
/// no memory traffic. Counter `alu_width_bits`.
pub(super) fn alu_hot(width: AluWidth, m: &mut Meter, stop: &AtomicBool) {
    let bits = alu_bits(width);
    m.add("alu_width_bits", u64::from(bits));
    let mut scalar = [1u64, 3, 5, 7];
    let mut v128 = [[1u32; 4]; 4];
    let mut v256 = [[1u32; 8]; 4];
    let mut v512 = [[1u32; 16]; 4];
    while !stop.load(Ordering::Relaxed) {
        match bits {
            0 => {
                for _ in 0..ALU_STEPS {
                    for a in scalar.iter_mut() {
                        *a = std::hint::black_box(
                            a.wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1_442_695_040_888_963_407),
                        );
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: alu_bits saw AVX-512F on this CPU.
            512 => unsafe { alu_chains_avx512(&mut v512, ALU_STEPS) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: alu_bits saw AVX2 on this CPU.
            256 => unsafe { alu_chains_avx2(&mut v256, ALU_STEPS) },
            _ => alu_chains(&mut v128, ALU_STEPS),
        }
        std::hint::black_box((&mut v128, &mut v256, &mut v512));
        m.r.iterations += 1;
        m.tick();
    }
}

/// PAUSE-spin (`spin_loop`), the sibling-pair load of `SmtSiblingSpin`.
pub(super) fn pause_spin(m: &mut Meter, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1024 {
            std::hint::spin_loop();
        }
        m.r.iterations += 1;
        m.tick();
    }
}

/// Per iteration, `period_iters` cycles of `hot_iters` multiply steps then
/// `cold_iters` random read-modify-writes over a 512 KiB buffer.
pub(super) fn ipc_variance(
    hot_iters: u64,
    cold_iters: u64,
    period_iters: u64,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u64; 64 * 1024];
    let mut acc = [[1u32; 1]; 4];
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    'outer: while !stop.load(Ordering::Relaxed) {
        for _ in 0..period_iters {
            if stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            alu_chains(&mut acc, hot_iters);
            std::hint::black_box(&mut acc);
            for _ in 0..cold_iters {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % buf.len() as u64) as usize;
                buf[i] = buf[i].wrapping_add(rng);
            }
        }
        std::hint::black_box(&mut buf);
        m.r.iterations += 1;
        m.tick();
    }
}

/// Spin for `burst`, then sleep `sleep` (hrtimer arm, idle entry, timer
/// wake); the sample is the oversleep. `precise` sets a 1 ns timer slack
/// first.
pub(super) fn idle_churn(
    burst: Duration,
    sleep: Duration,
    precise: bool,
    m: &mut Meter,
    stop: &AtomicBool,
) {
    if precise {
        // SAFETY: plain prctl on ourselves.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    }
    while !stop.load(Ordering::Relaxed) {
        let end = Instant::now() + burst;
        while Instant::now() < end {
            spin_iters(256);
        }
        let t = Instant::now();
        std::thread::sleep(sleep);
        m.sample(t.elapsed().saturating_sub(sleep).as_nanos() as u64);
        m.r.iterations += 1;
        m.tick();
        // The sleep is not a gap.
        m.last = Instant::now();
    }
}
