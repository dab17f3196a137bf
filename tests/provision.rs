//! Opt-in (`KTSTR_TEST_PROVISION=1`): the whole provisioning path from
//! scratch into an empty temporary cache — download linux-source, build
//! the kernel with ktstr's config, install it, then build the static
//! schedulers for it. Takes ~15-20 minutes on 2 cores, so it does not run
//! by default; `KTSTR_TEST_PROVISION_VERSION` picks the kernel (7.2).

use ktstr_kernels::cache::Cache;
use ktstr_kernels::provision::{kernel, sched};

#[test]
fn build_kernel_and_schedulers_from_scratch() {
    if std::env::var("KTSTR_TEST_PROVISION").ok().as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: set KTSTR_TEST_PROVISION=1 to build a kernel and schedulers from scratch (~20 min)"
        );
        return;
    }
    let version = std::env::var("KTSTR_TEST_PROVISION_VERSION").unwrap_or_else(|_| "7.2".into());
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::at(dir.path());
    let start = std::time::Instant::now();
    let m = kernel::build(&cache, &kernel::KernelBuildOptions::new(&version)).unwrap();
    eprintln!("kernel {} built in {:?}", m.version, start.elapsed());
    assert_eq!(m.name, version);
    let arts = cache.kernel(&m.name).unwrap();
    ktstr_kernels::artifact::check_bzimage(&arts.bzimage).unwrap();
    ktstr_kernels::artifact::check_vmlinux(&arts.vmlinux).unwrap();
    let img = ktstr::introspect::image::KernelImage::open(&arts.vmlinux).unwrap();
    img.btf().struct_id("sched_ext_entity").unwrap();
    for s in ["runqueues", "__per_cpu_offset", "jiffies_64"] {
        assert!(img.symbols().addr(s).is_some(), "{s} missing from .symtab");
    }
    if version.starts_with('7') {
        assert!(img.symbols().addr("scx_root").is_some(), "scx_root missing");
    }
    let bins = sched::build(&cache, &m.name, None, 2).unwrap();
    assert_eq!(bins.len(), 2);
    for b in bins {
        assert!(
            ktstr_kernels::artifact::is_static_elf(&std::fs::read(&b).unwrap()).unwrap(),
            "{} not static",
            b.display()
        );
    }
}
