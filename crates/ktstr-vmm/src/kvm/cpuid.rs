//! CPUID for a requested topology: KVM's supported CPUID rewritten per
//! vCPU so the guest sees `nodes × llcs` packages (one LLC each) of
//! `cores` cores of `threads` threads, with x2APIC ids packed as
//! package | core | thread bit fields (leaves 0x1, 0x4, 0xB, 0x1F and
//! AMD's 0x80000008, 0x8000001D, 0x8000001E).

use crate::spec::Topology;
use kvm_bindings::{CpuId, kvm_cpuid_entry2};

fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Where vCPU `i` sits and its APIC id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub package: u32,
    pub core: u32,
    pub thread: u32,
    pub apic_id: u32,
}

/// APIC-id field widths: (thread bits, core bits).
pub fn widths(t: &Topology) -> (u32, u32) {
    (bits_for(t.threads), bits_for(t.cores))
}

/// Place vCPU `i` (enumerated package-major, then core, then thread).
pub fn place(t: &Topology, i: u32) -> Place {
    let (tb, cb) = widths(t);
    let thread = i % t.threads;
    let core = (i / t.threads) % t.cores;
    let package = i / (t.threads * t.cores);
    Place {
        package,
        core,
        thread,
        apic_id: (package << (tb + cb)) | (core << tb) | thread,
    }
}

fn set_field(v: u32, lo: u32, width: u32, x: u32) -> u32 {
    let mask = ((1u64 << width) - 1) as u32;
    (v & !(mask << lo)) | ((x & mask) << lo)
}

/// Rewrite `base` (KVM_GET_SUPPORTED_CPUID) for vCPU `i` of `t`.
pub fn for_vcpu(base: &CpuId, t: &Topology, i: u32) -> Result<CpuId, String> {
    let p = place(t, i);
    let (tb, cb) = widths(t);
    let per_pkg = t.cores * t.threads;
    let mut out: Vec<kvm_cpuid_entry2> = Vec::new();
    for e in base.as_slice() {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx = set_field(e.ebx, 24, 8, p.apic_id);
                e.ebx = set_field(e.ebx, 16, 8, 1 << (tb + cb));
                e.edx |= 1 << 28; // HTT: the field above is valid
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            0x4 => {
                let level = (e.eax >> 5) & 0x7;
                if e.eax & 0x1f != 0 {
                    let sharing = if level >= 3 { 1 << (tb + cb) } else { 1 << tb };
                    e.eax = set_field(e.eax, 14, 12, sharing - 1);
                    e.eax = set_field(e.eax, 26, 6, (1 << cb) - 1);
                }
            }
            // Regenerated below with every level.
            0xb | 0x1f => continue,
            0x8000_0008 => {
                e.ecx = set_field(e.ecx, 12, 4, tb + cb);
                e.ecx = set_field(e.ecx, 0, 8, per_pkg - 1);
            }
            0x8000_001d => {
                let level = (e.eax >> 5) & 0x7;
                if e.eax & 0x1f != 0 {
                    let sharing = if level >= 3 { per_pkg } else { t.threads };
                    e.eax = set_field(e.eax, 14, 12, sharing - 1);
                }
            }
            0x8000_001e => {
                e.eax = p.apic_id;
                e.ebx = ((t.threads - 1) << 8) | (p.core & 0xff);
                e.ecx = (p.package / t.llcs) & 0xff; // node id
            }
            _ => {}
        }
        out.push(e);
    }
    // The extended topology leaves, SMT and core levels then the
    // terminator: KVM reports only an empty subleaf 0 of 0xB, which
    // leaves Linux with one CPU per package.
    let max_basic = base
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    for function in [0xb, 0x1f] {
        if function > max_basic {
            continue;
        }
        for index in 0..3u32 {
            let (shift, count, ty) = match index {
                0 => (tb, t.threads, 1),
                1 => (tb + cb, per_pkg, 2),
                _ => (0, 0, 0),
            };
            out.push(kvm_cpuid_entry2 {
                function,
                index,
                flags: kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax: shift,
                ebx: count,
                ecx: (ty << 8) | index,
                edx: p.apic_id,
                ..Default::default()
            });
        }
    }
    CpuId::from_entries(&out).map_err(|e| format!("building CPUID: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(nodes: u32, llcs: u32, cores: u32, threads: u32) -> Topology {
        Topology {
            nodes,
            llcs,
            cores,
            threads,
        }
    }

    #[test]
    fn apic_ids_pack_package_core_thread() {
        let t = topo(1, 2, 3, 2);
        assert_eq!(widths(&t), (1, 2));
        let ids: Vec<u32> = (0..t.nr_cpus()).map(|i| place(&t, i).apic_id).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        assert_eq!(place(&t, 7).package, 1);
        assert_eq!(place(&t, 7).core, 0);
        assert_eq!(place(&t, 7).thread, 1);
    }

    #[test]
    fn leaves_describe_the_topology() {
        let entry = |function, index, eax| kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ..Default::default()
        };
        let base = CpuId::from_entries(&[
            entry(0x0, 0, 0xd),
            entry(0x1, 0, 0),
            entry(0x4, 0, (1 << 5) | 1),
            entry(0x4, 3, (3 << 5) | 3),
            entry(0xb, 0, 0),
            entry(0x8000_001e, 0, 0),
        ])
        .unwrap();
        let t = topo(2, 1, 4, 2);
        let c = for_vcpu(&base, &t, 11).unwrap();
        let get = |f: u32, i: u32| {
            *c.as_slice()
                .iter()
                .find(|e| e.function == f && e.index == i)
                .unwrap()
        };
        let p = place(&t, 11);
        assert_eq!(
            p.apic_id,
            (1 << 3) | (1 << 1) | 1,
            "package 1, core 1, thread 1"
        );
        assert_eq!(get(0x1, 0).ebx >> 24, p.apic_id);
        assert_eq!((get(0x4, 0).eax >> 14) & 0xfff, 1, "L1 shared by 2 threads");
        assert_eq!((get(0x4, 3).eax >> 14) & 0xfff, 7, "L3 shared by 8");
        assert_eq!((get(0x4, 3).eax >> 26) & 0x3f, 3, "4 cores per package");
        assert_eq!(get(0xb, 0).eax, 1);
        assert_eq!(get(0xb, 0).ebx, 2);
        assert_eq!(get(0xb, 1).eax, 3);
        assert_eq!(get(0xb, 1).ebx, 8);
        assert_eq!(get(0xb, 1).edx, p.apic_id);
        assert_eq!((get(0xb, 2).ecx >> 8) & 0xff, 0, "terminating level");
        assert_eq!(get(0x8000_001e, 0).ecx, 1, "node 1");
        assert!(
            !c.as_slice().iter().any(|e| e.function == 0x1f),
            "no 0x1F above the maximum basic leaf"
        );
    }

    /// KVM's own supported CPUID (AMD on this project's machines, where
    /// leaf 0xB has only an empty subleaf 0) still yields every level.
    #[test]
    fn host_cpuid_gets_full_topology_leaves() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("SKIPPED: no usable /dev/kvm");
            return;
        };
        let base = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let t = topo(1, 2, 2, 1);
        let c = for_vcpu(&base, &t, 3).unwrap();
        let b: Vec<_> = c
            .as_slice()
            .iter()
            .filter(|e| e.function == 0xb)
            .map(|e| (e.index, e.eax, e.ebx, (e.ecx >> 8) & 0xff, e.edx))
            .collect();
        assert_eq!(b, vec![(0, 0, 1, 1, 3), (1, 1, 2, 2, 3), (2, 0, 0, 0, 3)]);
    }
}
