//! The freeze rendezvous of the kvm engine: stop every vCPU thread at an
//! instant, hold them parked while the host reads and writes guest memory,
//! then let them go.
//!
//! A freezer sets `paused`, then kicks each vCPU thread with a real-time
//! signal. The signal handler sets the thread's `kvm_run.immediate_exit`,
//! so a kick that lands just before `KVM_RUN` is not lost: the ioctl
//! returns `EINTR` at once. A vCPU thread that sees `paused` captures its
//! own registers, counts itself parked and sleeps until the generation
//! changes. Freezes are serialized (`owner`); a watched store parks its
//! vCPU, pauses the rest and queues the hit, and a thaw with hits queued
//! leaves the guest stopped for the watcher, so a hit is always handled at
//! the instant it happened.

use ktstr_introspect::regs::CpuRegs;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A watchpoint hit, queued for the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The vCPU that wrote.
    pub cpu: u32,
    /// Guest-physical address of the store.
    pub gpa: u64,
}

#[derive(Debug, Default)]
struct State {
    paused: bool,
    generation: u64,
    parked: u32,
    owner: bool,
    stopping: bool,
    regs: Vec<Option<CpuRegs>>,
    hits: VecDeque<Hit>,
    /// The guest clock when every vCPU stopped, restored at the thaw.
    clock_at_freeze: Option<u64>,
}

/// Shared between the host and every vCPU thread of one VM.
#[derive(Debug)]
pub struct Rendezvous {
    n: u32,
    state: Mutex<State>,
    /// Freezers and the watcher wait here (parked count, owner, hits).
    cv: Condvar,
    /// Parked vCPUs wait here for the thaw; kept apart so a vCPU parking
    /// does not wake the others.
    vcpu_cv: Condvar,
    threads: Mutex<Vec<libc::pthread_t>>,
    /// The VM whose kvmclock a freeze stops (none in unit tests).
    vm: Mutex<Option<std::sync::Arc<kvm_ioctls::VmFd>>>,
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 3
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, while it runs a vCPU.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only touches a const-initialised thread-local without a destructor,
    // which is async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is this thread's live kvm_run mapping,
        // registered by `set_immediate_exit_ptr` and cleared before unmap.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
}

/// Install the kick handler (once per process).
pub fn install_kick_handler() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
                .map_err(|e| format!("installing the vCPU kick signal handler: {e}"))
        })
        .clone()
}

/// Register (or clear, with null) this thread's `immediate_exit` byte.
pub fn set_immediate_exit_ptr(p: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(p));
}

/// Kick every listed thread; returns how many.
fn kick(threads: &[libc::pthread_t]) -> usize {
    for &t in threads {
        // SAFETY: the list is only read under `Rendezvous::threads`'s lock,
        // and teardown empties it under that lock (`stop_all`) before any
        // vCPU thread is joined, so every pthread_t here is a live thread.
        unsafe { libc::pthread_kill(t, kick_signal()) };
    }
    threads.len()
}

impl Rendezvous {
    pub fn new(n: u32) -> Self {
        Self {
            n,
            state: Mutex::new(State {
                regs: vec![None; n as usize],
                ..Default::default()
            }),
            cv: Condvar::new(),
            vcpu_cv: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            vm: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hide frozen time from the guest: KVM_GET_CLOCK once every vCPU is
    /// parked, KVM_SET_CLOCK back to it at the thaw, so a freeze never
    /// trips soft-lockup or sched_ext watchdogs.
    pub fn set_clock_vm(&self, vm: std::sync::Arc<kvm_ioctls::VmFd>) {
        *self.vm.lock().unwrap_or_else(|e| e.into_inner()) = Some(vm);
    }

    fn save_clock(&self, s: &mut State) {
        if let Some(vm) = self.vm.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            s.clock_at_freeze = vm.get_clock().ok().map(|c| c.clock);
        }
    }

    fn restore_clock(&self, s: &mut State) {
        let Some(clock) = s.clock_at_freeze.take() else {
            return;
        };
        if let Some(vm) = self.vm.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let data = kvm_bindings::kvm_clock_data {
                clock,
                ..Default::default()
            };
            if let Err(e) = vm.set_clock(&data) {
                tracing::warn!(error = %e, "KVM_SET_CLOCK at thaw");
            }
        }
    }

    /// Record the vCPU threads to kick (call once every thread runs).
    pub fn set_threads(&self, t: Vec<libc::pthread_t>) {
        *self.threads.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Kick every vCPU thread (none once teardown has begun); returns how
    /// many were kicked.
    fn kick_all(&self) -> usize {
        let t = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        kick(&t)
    }

    /// Should a vCPU stop running now (pause or teardown)?
    pub fn should_stop_running(&self) -> bool {
        let s = self.lock();
        s.paused || s.stopping
    }

    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Tear down: wake and release every vCPU and kick them out of
    /// KVM_RUN one last time. The thread list is emptied under its lock,
    /// so a freezer that raced past its `stopping` check can no longer
    /// kick threads the caller is about to join.
    pub fn stop_all(&self) {
        self.lock().stopping = true;
        self.cv.notify_all();
        self.vcpu_cv.notify_all();
        let mut t = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        kick(&t);
        t.clear();
    }

    /// vCPU side: park with `regs` until thawed or stopping.
    pub fn park(&self, cpu: u32, regs: CpuRegs) {
        let mut s = self.lock();
        if !s.paused || s.stopping {
            return;
        }
        let g = s.generation;
        s.regs[cpu as usize] = Some(regs);
        s.parked += 1;
        if s.parked == self.n || !s.hits.is_empty() {
            self.cv.notify_all();
        }
        while s.paused && s.generation == g && !s.stopping {
            s = self.vcpu_cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.parked -= 1;
    }

    fn wait_parked<'a>(
        &'a self,
        mut s: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> Result<MutexGuard<'a, State>, MutexGuard<'a, State>> {
        let mut last_kick = Instant::now();
        while s.parked < self.n && !s.stopping {
            let now = Instant::now();
            if now >= deadline {
                return Err(s);
            }
            // Re-kick now and then: a thread busy in the VMM (an exit being
            // handled) sees `paused` on its own, but be robust anyway.
            if now.duration_since(last_kick) > Duration::from_millis(20) {
                drop(s);
                self.kick_all();
                s = self.lock();
                last_kick = Instant::now();
                continue;
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            s = self
                .cv
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(s)
    }

    /// Host side: stop every vCPU and capture registers; every vCPU stays
    /// parked until [`Rendezvous::thaw`].
    pub fn freeze(&self, timeout: Duration) -> Result<Vec<CpuRegs>, String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.owner && !s.stopping {
            let now = Instant::now();
            if now >= deadline {
                return Err("timed out waiting for another freeze to end".into());
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if s.stopping {
            return Err("the VM is shutting down".into());
        }
        s.owner = true;
        s.paused = true;
        drop(s);
        self.kick_all();
        match self.wait_parked(self.lock(), deadline) {
            Ok(s) if s.stopping => {
                drop(s);
                self.release(false);
                Err("the VM ended during the freeze".into())
            }
            Ok(mut s) => {
                self.save_clock(&mut s);
                Ok(s.regs.iter().flatten().cloned().collect())
            }
            Err(s) => {
                let parked = s.parked;
                drop(s);
                self.release(false);
                Err(format!(
                    "only {parked} of {} vCPUs stopped within {timeout:?}",
                    self.n
                ))
            }
        }
    }

    /// Host side: end a freeze. With watchpoint hits queued the guest stays
    /// stopped and the watcher takes over.
    pub fn thaw(&self) {
        self.release(true);
    }

    fn release(&self, keep_for_hits: bool) {
        let mut s = self.lock();
        s.owner = false;
        if !keep_for_hits || s.hits.is_empty() {
            self.restore_clock(&mut s);
            s.paused = false;
            s.generation += 1;
        }
        drop(s);
        self.vcpu_cv.notify_all();
        self.cv.notify_all();
    }

    /// vCPU side, on a store to the watched range: queue the hit and stop
    /// the other vCPUs (this one parks next).
    pub fn report_hit(&self, hit: Hit) {
        let mut s = self.lock();
        s.hits.push_back(hit);
        let kick_needed = !s.paused;
        s.paused = true;
        drop(s);
        self.cv.notify_all();
        if kick_needed {
            self.kick_all();
        }
    }

    /// Watcher side: wait up to `timeout` for a hit with the guest fully
    /// stopped and nobody else freezing; take ownership of the freeze.
    pub fn take_hit(&self, timeout: Duration) -> Option<(Hit, Vec<CpuRegs>)> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if s.stopping {
                return None;
            }
            if !s.hits.is_empty() && !s.owner && s.paused {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.owner = true;
        // The hitting vCPU kicked the others; wait for all to park.
        match self.wait_parked(s, Instant::now() + Duration::from_secs(10)) {
            Ok(mut s) => {
                if s.clock_at_freeze.is_none() {
                    self.save_clock(&mut s);
                }
                let hit = s.hits.pop_front()?;
                let regs = s.regs.iter().flatten().cloned().collect();
                Some((hit, regs))
            }
            Err(mut s) => {
                tracing::warn!("vCPUs did not stop for a watchpoint hit");
                s.hits.clear();
                drop(s);
                self.release(false);
                None
            }
        }
    }

    /// Drop queued hits (the watch is gone).
    pub fn clear_hits(&self) {
        self.lock().hits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// After teardown begins nothing is kicked any more: the threads may be
    /// joined (and their pthread_t reused) at any moment.
    #[test]
    fn no_kick_after_teardown_began() {
        install_kick_handler().unwrap();
        let r = Rendezvous::new(1);
        // SAFETY: pthread_self has no preconditions.
        r.set_threads(vec![unsafe { libc::pthread_self() }]);
        assert_eq!(r.kick_all(), 1);
        r.stop_all();
        assert_eq!(
            r.kick_all(),
            0,
            "a freezer racing teardown must kick nobody"
        );
        assert!(r.freeze(Duration::from_millis(10)).is_err());
    }

    /// Plain threads stand in for vCPUs: they count while running and park
    /// when asked; a kick interrupts their sleep like it interrupts KVM_RUN.
    fn spawn_fake(
        r: &Arc<Rendezvous>,
        n: u32,
    ) -> (Vec<std::thread::JoinHandle<()>>, Arc<Vec<AtomicU64>>) {
        install_kick_handler().unwrap();
        let counters: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (r, c) = (r.clone(), counters.clone());
                std::thread::spawn(move || {
                    while !r.stopping() {
                        if r.should_stop_running() {
                            let regs = CpuRegs {
                                cpu: i,
                                rax: c[i as usize].load(Ordering::SeqCst),
                                ..Default::default()
                            };
                            r.park(i, regs);
                            continue;
                        }
                        c[i as usize].fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        r.set_threads(hs.iter().map(|h| h.as_pthread_t()).collect());
        (hs, counters)
    }

    #[test]
    fn freeze_stops_every_thread_and_thaw_resumes() {
        let r = Arc::new(Rendezvous::new(4));
        let (hs, c) = spawn_fake(&r, 4);
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..50 {
            let regs = r.freeze(Duration::from_secs(5)).unwrap();
            assert_eq!(regs.len(), 4);
            let before: Vec<u64> = c.iter().map(|a| a.load(Ordering::SeqCst)).collect();
            std::thread::sleep(Duration::from_millis(2));
            let after: Vec<u64> = c.iter().map(|a| a.load(Ordering::SeqCst)).collect();
            assert_eq!(before, after, "a thread ran while frozen");
            for (reg, n) in regs.iter().zip(&after) {
                assert_eq!(reg.rax, *n, "registers are captured at the park");
            }
            r.thaw();
        }
        let a = c[0].load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert!(c[0].load(Ordering::SeqCst) > a, "thaw resumes");
        r.stop_all();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_hit_during_a_freeze_keeps_the_guest_stopped_for_the_watcher() {
        let r = Arc::new(Rendezvous::new(2));
        let (hs, c) = spawn_fake(&r, 2);
        r.freeze(Duration::from_secs(5)).unwrap();
        r.report_hit(Hit {
            cpu: 1,
            gpa: 0x1000,
        });
        r.thaw();
        let frozen_at = c[0].load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c[0].load(Ordering::SeqCst), frozen_at, "still stopped");
        let (hit, _) = r.take_hit(Duration::from_secs(1)).unwrap();
        assert_eq!(hit.cpu, 1);
        r.thaw();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c[0].load(Ordering::SeqCst) > frozen_at);
        assert!(r.take_hit(Duration::from_millis(10)).is_none());
        r.stop_all();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn freeze_times_out_when_a_vcpu_never_parks() {
        let r = Rendezvous::new(2);
        // No threads: nobody parks.
        let e = r.freeze(Duration::from_millis(30)).unwrap_err();
        assert!(e.contains("0 of 2"), "{e}");
        // The failed freeze released ownership.
        assert!(!r.lock().owner && !r.lock().paused);
    }
}
