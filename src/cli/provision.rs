//! First-use provisioning the CLI commands share: a working VM engine
//! (QEMU >= 10, installed as root) and distribution kernels (fetch or
//! import, symbols captured by one boot, installed into the cache).

/// The selected engine runs here; for QEMU that is a QEMU >= 10, which is
/// installed (as root) when missing or older.
pub fn ensure_engine(cache: &ktstr_kernels::Cache) -> anyhow::Result<()> {
    let engine = ktstr_vmm::engine::select()?;
    if !matches!(engine.kind, ktstr_vmm::EngineKind::Qemu(_)) {
        return Ok(ktstr_test::host::env::check_engine(&engine)?);
    }
    let why = match ktstr_vmm::qemu::qemu_version() {
        Ok((maj, _)) if maj >= 10 => return Ok(()),
        Ok((maj, min)) => format!(
            "QEMU {maj}.{min} is too old (guests crash under MTTCG when schedulers load and unload)"
        ),
        Err(e) => e.to_string(),
    };
    eprintln!("ktstr: {why}; installing QEMU >= 10");
    let log = ktstr_kernels::provision::kernel::log_path(cache, "qemu");
    ktstr_kernels::provision::tools::ensure_qemu(cache, &log)?;
    match ktstr_vmm::qemu::qemu_version() {
        Ok((maj, _)) if maj >= 10 => Ok(()),
        Ok((maj, min)) => anyhow::bail!(
            "installed QEMU is {maj}.{min}, still older than 10 (log: {})",
            log.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Fetch a Debian kernel (`debian[:VERSION][:FLAVOR]`), capture its
/// symbols by booting it once, and install it into the cache.
pub fn fetch(
    cache: &ktstr_kernels::Cache,
    spec: &str,
) -> anyhow::Result<ktstr_kernels::KernelManifest> {
    let parsed = ktstr_kernels::distro::DebianSpec::parse(spec)
        .ok_or_else(|| {
            anyhow::anyhow!("{spec}: ktstr fetches Debian kernels: `debian[:VERSION][:FLAVOR]`")
        })?
        .map_err(anyhow::Error::msg)?;
    let log = ktstr_kernels::provision::kernel::log_path(
        cache,
        &format!("fetch-{}", spec.replace(':', "-")),
    );
    let t0 = std::time::Instant::now();
    eprintln!("ktstr: fetching {spec} (log: {})", log.display());
    let staged = ktstr_kernels::provision::debian::fetch(cache, &parsed, &log)?;
    install_staged(cache, staged, t0)
}

/// Capture a staged kernel's symbols by booting it once, then install it.
pub fn install_staged(
    cache: &ktstr_kernels::Cache,
    staged: ktstr_kernels::provision::debian::Staged,
    t0: std::time::Instant,
) -> anyhow::Result<ktstr_kernels::KernelManifest> {
    use anyhow::Context;
    eprintln!(
        "ktstr: {} staged in {:.1} s; booting it once to capture its symbols",
        staged.source,
        t0.elapsed().as_secs_f64()
    );
    ensure_engine(cache)?;
    let env = ktstr_test::host::env::VmEnv {
        cache: cache.clone(),
        kernel: ktstr_kernels::KernelArtifacts {
            name: staged.name.clone(),
            bzimage: staged.dir.join("bzImage"),
            vmlinux: staged.dir.join("vmlinux"),
            config: Some(staged.dir.join("config")),
        },
    };
    let (map, n) = ktstr_test::host::kallsyms::capture(&env, &env.kernel.vmlinux)
        .with_context(|| format!("capturing the symbols of {}", staged.source))?;
    let sm = staged.dir.join("System.map");
    std::fs::write(&sm, map).with_context(|| sm.display().to_string())?;
    let m = cache.import_kernel(&staged.dir, Some(&staged.name))?;
    let _ = std::fs::remove_dir_all(&staged.dir);
    eprintln!(
        "ktstr: installed {} ({}, {n} symbols) in {:.1} s",
        m.name,
        m.version,
        t0.elapsed().as_secs_f64()
    );
    Ok(m)
}
