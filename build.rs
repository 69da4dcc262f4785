//! Builds the guest plugins in `plugins/` (their own cargo workspace, target
//! wasm32-wasip2) and hands their paths to the host crate, which embeds them
//! as built-in plugins with `include_bytes!`.
//!
//! The wasm32-wasip2 target is installed with rustup when it is missing, so
//! a fresh machine needs nothing but `cargo`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Plugin crates: (directory under plugins/, artifact stem, env var); the
/// SDK is a library with no artifact of its own.
/// Test components are only used by tests/, through the same env vars.
const PLUGINS: &[(&str, &str, &str)] = &[
    ("sdk", "", ""),
    ("http", "seedgate_plugin_http", "SEEDGATE_PLUGIN_HTTP_WASM"),
    ("s3", "seedgate_plugin_s3", "SEEDGATE_PLUGIN_S3_WASM"),
    (
        "gitlab-lfs",
        "seedgate_plugin_gitlab_lfs",
        "SEEDGATE_PLUGIN_GITLAB_LFS_WASM",
    ),
    ("oci", "seedgate_plugin_oci", "SEEDGATE_PLUGIN_OCI_WASM"),
    (
        "scheduler-default",
        "seedgate_scheduler_default",
        "SEEDGATE_SCHEDULER_DEFAULT_WASM",
    ),
    (
        "example-artifact",
        "seedgate_example_artifact",
        "SEEDGATE_EXAMPLE_ARTIFACT_WASM",
    ),
    (
        "test-hostile",
        "seedgate_test_hostile",
        "SEEDGATE_TEST_HOSTILE_WASM",
    ),
    (
        "test-incomplete",
        "seedgate_test_incomplete",
        "SEEDGATE_TEST_INCOMPLETE_WASM",
    ),
    (
        "test-wrong-world",
        "seedgate_test_wrong_world",
        "SEEDGATE_TEST_WRONG_WORLD_WASM",
    ),
    (
        "test-hostile-policy",
        "seedgate_test_hostile_policy",
        "SEEDGATE_TEST_HOSTILE_POLICY_WASM",
    ),
];

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-changed=plugins/Cargo.toml");
    println!("cargo:rerun-if-changed=plugins/Cargo.lock");
    for (dir, _, _) in PLUGINS {
        println!("cargo:rerun-if-changed=plugins/{dir}");
    }

    ensure_target();

    // Keep plugin builds beside, not inside, the host's target dir: the outer
    // cargo holds a lock on its own build directory.
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| root.join("target/wasm-plugins"));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    // The host's flags (coverage, sanitizers, target-cpu) mean nothing to a
    // wasm guest and some break it.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("failed to run cargo for the plugins");
    assert!(
        status.success(),
        "building the plugins in {} failed",
        plugins.display()
    );

    let version = workspace_version(&plugins.join("Cargo.toml"));
    for (_, stem, var) in PLUGINS.iter().filter(|p| !p.1.is_empty()) {
        let wasm = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{stem}.wasm"));
        assert!(wasm.exists(), "plugin artifact {} missing", wasm.display());
        // The component with its version in a `version` custom section, as
        // `wasm-tools metadata add --version` writes it: the host shows it.
        let mut bytes = std::fs::read(&wasm).expect("reading a plugin artifact");
        append_custom_section(&mut bytes, "version", version.as_bytes());
        let stamped = out.join(format!("{stem}.wasm"));
        std::fs::write(&stamped, bytes).expect("writing a plugin artifact");
        println!("cargo:rustc-env={var}={}", stamped.display());
    }
}

/// `version = "..."` of `[workspace.package]` in the plugins' Cargo.toml.
fn workspace_version(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).expect("reading plugins/Cargo.toml");
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            return v
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"')
                .to_string();
        }
    }
    panic!(
        "no version in [workspace.package] of {}",
        manifest.display()
    );
}

/// Appends a custom section (id 0: name, then payload) to a wasm binary;
/// a component may carry custom sections anywhere at its top level.
fn append_custom_section(wasm: &mut Vec<u8>, name: &str, payload: &[u8]) {
    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    wasm.push(0);
    leb(wasm, body.len());
    wasm.extend_from_slice(&body);
}

/// Installs the wasm32-wasip2 standard library with rustup when it is absent.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot
        .as_deref()
        .map(|s| Path::new(s).join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("the wasm32-wasip2 target is missing and rustup could not be run to install it");
    assert!(status.success(), "rustup target add {TARGET} failed");
}
