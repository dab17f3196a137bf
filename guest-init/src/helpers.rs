//! Built-in helper programs, run as `/init <helper> ...` when not PID 1:
//! small guests for testing the harness itself (spin, sleep, exit with a
//! code, panic the kernel, and misbehaving fake schedulers).

use std::time::{Duration, Instant};

/// Run a helper; returns its exit code, or None if `args[0]` is not one.
pub fn run(args: &[String]) -> Option<i32> {
    let num = |i: usize, d: u64| args.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    match args.first().map(String::as_str)? {
        // Busy-loop on every CPU for N seconds.
        "spin" => {
            let secs = num(1, 1);
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            let end = Instant::now() + Duration::from_secs(secs);
            let hs: Vec<_> = (0..n)
                .map(|_| {
                    std::thread::spawn(move || {
                        let mut x = 0u64;
                        while Instant::now() < end {
                            x = std::hint::black_box(x.wrapping_add(1));
                        }
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
            println!("spun {secs}s on {n} CPUs");
            Some(0)
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(num(1, 1)));
            Some(0)
        }
        // Print the rest and exit with a code.
        "exit" => {
            let code = num(1, 0) as i32;
            println!("{}", args[2..].join(" "));
            eprintln!("exiting with {code}");
            Some(code)
        }
        // Crash the kernel (sysrq c).
        "panic" => {
            let _ = std::fs::write("/proc/sysrq-trigger", "c");
            Some(1)
        }
        // A "scheduler" that dies at once, writing a log line first.
        "sched-die" => {
            eprintln!("fake scheduler: failing at init on purpose");
            Some(2)
        }
        // A "scheduler" that stays alive and never attaches.
        "sched-idle" => {
            eprintln!("fake scheduler: alive, never attaching");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => None,
    }
}
