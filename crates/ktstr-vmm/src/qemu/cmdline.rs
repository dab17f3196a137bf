//! The QEMU command line for a [`VmSpec`] (pure, unit-tested).
//!
//! Machine choice: `-M pc`. Measured on this project's machines, `microvm`
//! hangs the 7.2 kernel in TSC calibration (no PIT/HPET reference) and
//! hangs 6.12 now and then, for ~5% faster boots; `pc` boots both
//! reliably. `-accel tcg,thread=multi` (MTTCG) unless KVM is asked for.

use crate::spec::VmSpec;
use std::path::Path;

/// Paths and knobs the command line refers to.
pub struct Sockets<'a> {
    pub qmp: &'a Path,
    pub gdb: &'a Path,
    /// (port, socket path) per channel.
    pub channels: Vec<(u32, &'a Path)>,
    /// RAM backing files, one per NUMA node.
    pub ram_files: Vec<&'a Path>,
}

/// Which accelerator QEMU should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// Kernel command line options the engine always adds.
pub const BASE_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 oops=panic panic=-1 \
    i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd reboot=t tsc=reliable no_timer_check \
    rcupdate.rcu_expedited=1 mitigations=off";

/// Build the argument vector (without the program name).
pub fn build_args(spec: &VmSpec, s: &Sockets<'_>, accel: Accel) -> Vec<String> {
    let t = spec.topology;
    let mut a: Vec<String> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    push(&["-M", "pc,vmport=off,smbus=off,sata=off,usb=off"]);
    match accel {
        Accel::Tcg => push(&["-accel", "tcg,thread=multi,tb-size=256"]),
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
    }
    let sockets = t.nodes * t.llcs;
    let smp = format!(
        "{},sockets={sockets},cores={},threads={}",
        t.nr_cpus(),
        t.cores,
        t.threads
    );
    push(&["-smp", &smp]);
    let total = spec.memory_mb as u64;
    push(&["-m", &format!("{total}M")]);
    let per_node = node_sizes_mb(total, t.nodes);
    for (i, f) in s.ram_files.iter().enumerate() {
        let obj = format!(
            "memory-backend-file,id=ram{i},size={}M,mem-path={},share=on,prealloc=off",
            per_node[i],
            f.display()
        );
        push(&["-object", &obj]);
    }
    if t.nodes == 1 {
        push(&["-machine", "memory-backend=ram0"]);
    } else {
        let cpus_per_node = t.llcs * t.cores * t.threads;
        for n in 0..t.nodes {
            let first = n * cpus_per_node;
            let last = first + cpus_per_node - 1;
            push(&[
                "-numa",
                &format!("node,nodeid={n},cpus={first}-{last},memdev=ram{n}"),
            ]);
        }
    }
    push(&["-kernel", &spec.kernel.display().to_string()]);
    if let Some(i) = &spec.initramfs {
        push(&["-initrd", &i.display().to_string()]);
    }
    let cmdline = format!("{BASE_CMDLINE} {}", spec.cmdline)
        .trim()
        .to_string();
    push(&["-append", &cmdline]);
    push(&["-serial", "stdio"]);
    push(&["-device", "vmcoreinfo", "-device", "pvpanic"]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", s.qmp.display()),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=gdb0,path={},server=on,wait=off", s.gdb.display()),
    ]);
    push(&["-gdb", "chardev:gdb0"]);
    if !s.channels.is_empty() {
        push(&["-device", "virtio-serial-pci,id=vser0,max_ports=16"]);
        for (port, path) in &s.channels {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=ch{port},path={},server=on,wait=off",
                    path.display()
                ),
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=ch{port},name=ktstr.{port}"),
            ]);
        }
    }
    push(&["-action", "reboot=shutdown,shutdown=poweroff,panic=none"]);
    a
}

/// Split `total` MiB over `nodes` nodes in whole MiB (the first nodes get
/// the remainder).
pub fn node_sizes_mb(total: u64, nodes: u32) -> Vec<u64> {
    let n = nodes.max(1) as u64;
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Topology;

    #[test]
    fn numa_topology_becomes_smp_and_numa_nodes() {
        let mut spec = VmSpec::new("/k/bzImage");
        spec.topology = Topology {
            nodes: 2,
            llcs: 2,
            cores: 2,
            threads: 2,
        };
        spec.memory_mb = 1001;
        spec.channels = vec![0];
        let ch = Path::new("/s/ch0");
        let (r0, r1) = (Path::new("/r0"), Path::new("/r1"));
        let s = Sockets {
            qmp: Path::new("/s/qmp"),
            gdb: Path::new("/s/gdb"),
            channels: vec![(0, ch)],
            ram_files: vec![r0, r1],
        };
        let a = build_args(&spec, &s, Accel::Tcg).join(" ");
        assert!(a.contains("-smp 16,sockets=4,cores=2,threads=2"), "{a}");
        assert!(a.contains("node,nodeid=1,cpus=8-15,memdev=ram1"), "{a}");
        assert!(a.contains("id=ram0,size=501M"), "{a}");
        assert!(a.contains("id=ram1,size=500M"), "{a}");
        assert!(a.contains("name=ktstr.0"), "{a}");
        assert!(a.contains("oops=panic panic=-1"), "{a}");
        assert!(!a.contains("memory-backend=ram0"), "{a}");
    }

    #[test]
    fn node_split() {
        assert_eq!(node_sizes_mb(10, 3), vec![4, 3, 3]);
        assert_eq!(node_sizes_mb(512, 1), vec![512]);
    }
}
