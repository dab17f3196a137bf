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
            let spin = move || {
                let mut x = 0u64;
                while Instant::now() < end {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            };
            // n-1 threads plus the main thread: every thread of the
            // process stays runnable.
            let hs: Vec<_> = (1..n).map(|_| std::thread::spawn(spin)).collect();
            spin();
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
        // A "scheduler" that passes the liveness gate, then dies before
        // attaching, naming a kernel option it lacks (as scx_utils does).
        "sched-die-late" => {
            std::thread::sleep(Duration::from_secs(num(1, 2)));
            eprintln!("Error: kernel is missing CONFIG_FUNCTION_TRACER");
            Some(3)
        }
        // A "scheduler" that stays alive and never attaches.
        "sched-idle" => {
            eprintln!("fake scheduler: alive, never attaching");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // SIGKILL every process whose comm is NAME, after DELAY seconds;
        // then sleep SECS so the host sees what follows.
        "pkill" => {
            let name = args.get(1).cloned().unwrap_or_default();
            std::thread::sleep(Duration::from_secs(num(2, 1)));
            let mut killed = 0;
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if comm.trim() == name {
                    // SAFETY: plain kill syscall.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    killed += 1;
                }
            }
            println!("killed {killed} process(es) named {name}");
            std::thread::sleep(Duration::from_secs(num(3, 2)));
            Some(if killed > 0 { 0 } else { 1 })
        }
        // Report what the guest itself sees (attached ops, process ids)
        // on stdout and the console, then sleep SECS for the host to look.
        "report" => {
            let ops = std::fs::read_to_string("/sys/kernel/sched_ext/root/ops").unwrap_or_default();
            let mut pids: Vec<u32> = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect();
            pids.sort_unstable();
            let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
            let text = format!(
                "KTSTR-REPORT OPS={}\nKTSTR-REPORT PIDS={}\nKTSTR-REPORT READY\n",
                ops.trim(),
                pids.join(",")
            );
            print!("{text}");
            let _ = std::fs::write("/dev/console", &text);
            std::thread::sleep(Duration::from_secs(num(1, 10)));
            Some(0)
        }
        // A workload worker (see worker.rs).
        "worker" => Some(crate::worker::run(
            args.get(1).map(String::as_str).unwrap_or(""),
        )),
        // Exercise the cold path: a sleeping child gets its scx.dsq_vtime
        // written and read back, plus a per-CPU and a symbol read, plus
        // two writes that must be refused (running task, wrong start).
        "kernel-ops" => Some(kernel_ops()),
        _ => None,
    }
}

/// `/proc/<pid>/stat` starttime in ns (USER_HZ ticks * 10 ms).
fn start_time_ns(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

fn kernel_ops() -> i32 {
    use ktstr_wire::*;
    let mut child = match std::process::Command::new("/init")
        .args(["sleep", "30"])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spawn sleeper: {e}");
            return 1;
        }
    };
    // A task that is always running or queued (on_rq != 0).
    let mut spinner = match std::process::Command::new("/init")
        .args(["spin", "30"])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spawn spinner: {e}");
            return 1;
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id();
    let me = spinner.id();
    let (Some(st), Some(my_st)) = (start_time_ns(pid), start_time_ns(me)) else {
        eprintln!("cannot read start times");
        return 1;
    };
    const SEED: u64 = 30 * 86_400 * 1_000_000_000;
    let t = |p: u32, s: u64| KernelTarget::task_field(p, s, "scx.dsq_vtime");
    let ops = vec![
        KernelOp::Write {
            target: t(pid, st),
            value: KernelValue::u64(SEED),
        },
        KernelOp::Read {
            tag: "vtime".into(),
            target: t(pid, st),
            width: KernelValueWidth::u64(),
        },
        KernelOp::Read {
            tag: "nr_running".into(),
            target: KernelTarget::per_cpu_field("runqueues", "nr_running", 0),
            width: KernelValueWidth::u32(),
        },
        KernelOp::Read {
            tag: "jiffies".into(),
            target: KernelTarget::symbol("jiffies_64"),
            width: KernelValueWidth::u64(),
        },
        KernelOp::Write {
            target: t(me, my_st),
            value: KernelValue::u64(1),
        },
        KernelOp::Write {
            target: t(pid, st + 5_000_000_000),
            value: KernelValue::u64(1),
        },
        KernelOp::Read {
            tag: "narrow".into(),
            target: KernelTarget::symbol("jiffies_64"),
            width: KernelValueWidth::u32(),
        },
    ];
    let replies = match RelayClient::from_env().and_then(|mut c| c.kernel_ops(ops)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relay: {e}");
            return 1;
        }
    };
    for (i, r) in replies.iter().enumerate() {
        println!(
            "op{i} success={} values={:?} reason={}",
            r.success, r.read_values, r.reason
        );
    }
    for c in [&mut child, &mut spinner] {
        let _ = c.kill();
        let _ = c.wait();
    }
    0
}
