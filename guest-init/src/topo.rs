//! What the guest's sysfs says about CPUs, for the Hello message.

use ktstr_wire::CpuTopo;
use std::fs;

fn read_u32(path: &str) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The online CPUs, per `/sys/devices/system/cpu/cpuN/topology`.
pub fn cpus() -> Vec<CpuTopo> {
    let mut out = Vec::new();
    for cpu in 0..1024u32 {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}");
        if fs::metadata(&base).is_err() {
            break;
        }
        let node = (0..64u32)
            .find(|n| fs::metadata(format!("{base}/node{n}")).is_ok())
            .unwrap_or(0);
        let llc = (0..4u32)
            .rev()
            .find_map(|i| read_u32(&format!("{base}/cache/index{i}/id")))
            .unwrap_or(0);
        out.push(CpuTopo {
            cpu,
            package: read_u32(&format!("{base}/topology/physical_package_id")).unwrap_or(0),
            core: read_u32(&format!("{base}/topology/core_id")).unwrap_or(0),
            node,
            llc,
            siblings: fs::read_to_string(format!("{base}/topology/thread_siblings_list"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        });
    }
    out
}

/// `_text` from /proc/kallsyms (needs kptr_restrict=0, which PID 1 sets).
pub fn kallsyms_text() -> u64 {
    let _ = fs::write("/proc/sys/kernel/kptr_restrict", "0");
    let Ok(f) = fs::File::open("/proc/kallsyms") else {
        return 0;
    };
    use std::io::BufRead;
    for line in std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .take(200_000)
    {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if name == "_text" {
            return u64::from_str_radix(addr, 16).unwrap_or(0);
        }
    }
    0
}
