//! `seedgate plugin check FILE.wasm` on good plugins of both worlds and on
//! each kind of bad file: what it reports and its exit status.

use std::path::Path;
use std::process::Command;

fn check(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["plugin", "check"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn reports_worlds_imports_exports_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    for (name, bytes) in seedgate::plugin::BUILTINS {
        let (ok, text) = check(&write(d, &format!("{name}.wasm"), bytes));
        assert!(ok, "{name}: {text}");
        assert!(
            text.contains("world: seedgate:plugin/origin-plugin@0.1.0"),
            "{text}"
        );
        assert!(
            text.contains(
                "seedgate:plugin/origin@0.1.0 (functions: schemes, stat, plan-read, list-objects)"
            ),
            "{text}"
        );
        assert!(
            text.contains("seedgate:plugin/http@0.1.0"),
            "{name} imports http: {text}"
        );
        assert!(text.trim_end().ends_with("ok"), "{text}");
    }

    let (_, sched) = seedgate::plugin::scheduler::BUILTIN_SCHEDULERS[0];
    let (ok, text) = check(&write(d, "default.wasm", sched));
    assert!(ok, "{text}");
    assert!(
        text.contains("world: seedgate:plugin/scheduler-plugin@0.1.0"),
        "{text}"
    );
    assert!(
        !text.contains("seedgate:plugin/http"),
        "a policy imports no http: {text}"
    );

    let (ok, text) = check(Path::new(seedgate::plugin::test_components::INCOMPLETE));
    assert!(!ok);
    assert!(text.contains("world: none that seedgate runs"), "{text}");
    assert!(
        text.contains("missing export: function `plan-read` of seedgate:plugin/origin@0.1.0"),
        "{text}"
    );
    assert!(
        text.contains("missing export: function `list-objects`"),
        "{text}"
    );

    let (ok, text) = check(Path::new(seedgate::plugin::test_components::WRONG_WORLD));
    assert!(!ok);
    assert!(
        text.contains("a component of another world: it exports example:other/greeter@1.0.0"),
        "{text}"
    );

    // The smallest valid core module: header and version, no sections.
    let (ok, text) = check(&write(d, "core.wasm", b"\0asm\x01\0\0\0"));
    assert!(!ok);
    assert!(text.contains("core WebAssembly module"), "{text}");
    assert!(text.contains("a core module, not a component"), "{text}");

    let (ok, text) = check(&write(d, "notes.wasm", b"hello, I am text"));
    assert!(!ok);
    assert!(text.contains("not a WebAssembly binary"), "{text}");

    let (ok, text) = check(&d.join("missing.wasm"));
    assert!(!ok);
    assert!(text.contains("missing.wasm: No such file"), "{text}");
}
