//! Builds the static guest-init that every test VM boots as PID 1, so the
//! harness can embed it. Uses a private target directory (no lock
//! contention with the outer build) and `+crt-static`.
//! `KTSTR_GUEST_INIT=/path/to/static/binary` skips the build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("ktstr-guest-init");
    println!("cargo:rerun-if-env-changed=KTSTR_GUEST_INIT");
    if let Some(p) = std::env::var_os("KTSTR_GUEST_INIT") {
        std::fs::copy(&p, &dest).expect("copy KTSTR_GUEST_INIT");
        return;
    }
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ws = manifest.join("../..");
    for p in [
        "guest-init/src",
        "guest-init/Cargo.toml",
        "crates/ktstr-wire/src",
        "crates/ktstr-wire/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", ws.join(p).display());
    }
    let target_dir = out.join("guest-init-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&ws)
        .args([
            "build",
            "--release",
            "-p",
            "ktstr-guest-init",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo to build guest-init");
    assert!(status.success(), "building the static guest-init failed");
    let built = target_dir.join("x86_64-unknown-linux-gnu/release/ktstr-guest-init");
    std::fs::copy(&built, &dest).expect("copy guest-init");
}
