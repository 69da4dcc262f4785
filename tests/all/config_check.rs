//! `seedgate config check` on valid and invalid example configs
//! (`tests/fixtures/configs/`), against reviewed snapshots of its output
//! (`tests/all/snapshots/`). A new or changed example writes a `.snap.new`
//! next to the snapshot and fails until it is reviewed (`INSTA_UPDATE=always`
//! accepts it, outside CI).

use std::process::Command;

#[test]
fn config_examples_match_their_snapshots() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/configs");
    insta::glob!(dir, "*.toml", |path| {
        let out = Command::new(env!("CARGO_BIN_EXE_seedgate"))
            .args(["config", "check"])
            .arg(path)
            .env("SEEDGATE_LOG", "off")
            .env_remove("SEEDGATE_TEST_UNSET_VARIABLE")
            .output()
            .unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = format!(
            "exit: {}\n{}{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace(&path.display().to_string(), &name);
        let valid = name.starts_with("valid");
        assert_eq!(out.status.success(), valid, "{name}: {text}");
        insta::assert_snapshot!(text);
    });
}

/// The shipped default config (`config/seedgate.toml`, the README's first
/// command) passes the check.
#[test]
fn the_default_config_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["config", "check"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/seedgate.toml"))
        .env("SEEDGATE_LOG", "off")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
