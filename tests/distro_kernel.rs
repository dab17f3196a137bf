//! Kernels shipped without symbols (distribution packages).
//!
//! In the default run (needs a VM): the cached kernel's bzImage is treated
//! as a distribution would ship it — its payload decompressed to a vmlinux
//! without `.symtab`, symbols captured by booting it — and every captured
//! address must equal the real `.symtab`'s, KASLR notwithstanding.
//!
//! Opt-in (`KTSTR_TEST_PROVISION=1`, network): `ktstr kernel fetch
//! debian:7.2` into an empty cache, then `ktstr run --kernel debian:7.2`
//! with scx_simple from the normal cache.

use ktstr::introspect::image::KernelImage;
use ktstr_test::host::{env, kallsyms};
use std::process::Command;

#[test]
fn symbols_captured_from_a_stripped_image_match_the_symtab() {
    let Some(base) = env::vm_env(None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let img = std::fs::read(&base.kernel.bzimage).unwrap();
    let stripped = ktstr_kernels::bzimage::extract_vmlinux(&img).expect("payload decompresses");
    std::fs::write(dir.path().join("bzImage"), &img).unwrap();
    std::fs::write(dir.path().join("vmlinux"), &stripped).unwrap();
    let staged = dir.path().join("vmlinux");
    // Without a System.map the stripped image is not a usable vmlinux.
    assert!(ktstr_kernels::artifact::check_vmlinux(&staged).is_err());

    let mut envx = base.clone();
    envx.kernel.bzimage = dir.path().join("bzImage");
    envx.kernel.vmlinux = staged.clone();
    let t = std::time::Instant::now();
    let (map, n) = kallsyms::capture(&envx, &staged).expect("kallsyms captured");
    eprintln!("captured {n} symbols in {:?}", t.elapsed());
    std::fs::write(dir.path().join("System.map"), &map).unwrap();
    ktstr_kernels::artifact::check_vmlinux(&staged).expect("stripped vmlinux + System.map");

    let real = KernelImage::open(&base.kernel.vmlinux).unwrap();
    let got = KernelImage::open(&staged).expect("opens with System.map symbols");
    let mut compared = 0;
    for s in [
        "_text",
        "init_task",
        "runqueues",
        "__per_cpu_offset",
        "jiffies_64",
        "scx_root",
        "scx_tasks",
        "linux_banner",
        "schedule",
    ] {
        let Some(want) = real.symbols().addr(s) else {
            continue;
        };
        assert_eq!(
            got.symbols().addr(s),
            Some(want),
            "{s}: captured {:x?} vs .symtab {want:#x}",
            got.symbols().addr(s)
        );
        compared += 1;
    }
    assert!(compared >= 7, "only {compared} symbols compared");
    assert_eq!(
        got.banner(),
        real.banner(),
        "linux_banner read through System.map"
    );
    got.btf()
        .struct_id("sched_ext_entity")
        .expect("types from the image's own .BTF");
}

#[test]
fn debian_kernel_fetches_and_runs_scx_simple() {
    if std::env::var("KTSTR_TEST_PROVISION").ok().as_deref() != Some("1") {
        eprintln!(
            "SKIPPED: set KTSTR_TEST_PROVISION=1 to fetch a Debian kernel (network, ~30 s) and run on it"
        );
        return;
    }
    let Some(base) = env::vm_env(None) else {
        return;
    };
    let sched = base.scheduler("scx_simple").expect("scx_simple cached");
    let dir = tempfile::tempdir().unwrap();
    let ktstr = env!("CARGO_BIN_EXE_ktstr");
    let t = std::time::Instant::now();
    let out = Command::new(ktstr)
        .args(["kernel", "fetch", "debian:7.2"])
        .env("KTSTR_CACHE_DIR", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fetch failed:\n{err}");
    eprintln!("fetched in {:?}", t.elapsed());
    let out = Command::new(ktstr)
        .args([
            "run",
            "--kernel",
            "debian:7.2",
            "--duration",
            "5s",
            "--scheduler",
        ])
        .arg(&sched)
        .env("KTSTR_CACHE_DIR", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("verdict: PASS"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("kernel debian-7.2-cloud") || err.contains("kernel debian-7.2-cloud"),
        "{text}\n{err}"
    );
}

/// `ktstr kernel import` of a directory holding only `vmlinuz` + `config`
/// (what a distribution's package or `/boot` holds), offline: the image is
/// decompressed, its symbols captured, and the kernel listed as imported
/// with its capabilities, then cleaned away.
#[test]
fn kernel_import_of_a_vmlinuz_directory_then_list_and_clean() {
    let Some(base) = env::vm_env(None) else {
        return;
    };
    let pkg = tempfile::tempdir().unwrap();
    std::fs::copy(&base.kernel.bzimage, pkg.path().join("vmlinuz")).unwrap();
    let cfg = base
        .kernel
        .config
        .clone()
        .expect("the cached kernel has a config");
    std::fs::copy(&cfg, pkg.path().join("config")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let ktstr = env!("CARGO_BIN_EXE_ktstr");
    let run = |args: &[&str]| {
        let o = Command::new(ktstr)
            .args(args)
            .env("KTSTR_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, text) = run(&[
        "kernel",
        "import",
        pkg.path().to_str().unwrap(),
        "--name",
        "distro-x",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("symbols"), "{text}");
    let dir = cache.path().join("kernels/distro-x");
    assert!(ktstr_kernels::artifact::has_system_map(
        &dir.join("System.map")
    ));
    KernelImage::open(&dir.join("vmlinux")).expect("imported vmlinux opens");
    let (ok, text) = run(&["kernel", "list"]);
    assert!(
        ok && text.contains("distro-x") && text.contains("imported"),
        "{text}"
    );
    assert!(text.contains(" scx ") && text.contains("btf"), "{text}");
    let (ok, text) = run(&["kernel", "clean", "--keep", "0"]);
    assert!(ok && text.contains("removed distro-x"), "{text}");
    assert!(!dir.exists());
    let (ok, text) = run(&["kernel", "import", "/nonexistent/k.rpm"]);
    assert!(!ok && text.contains("no such file"), "{text}");
}
