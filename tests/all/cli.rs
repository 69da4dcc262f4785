//! The client commands of the `seedgate` binary against a running server
//! (and nginx behind it): `get` with resume, `preheat --wait`, `status`.

use std::process::{Command, Output};

use crate::support::*;

fn seedgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(args)
        .env_remove("SEEDGATE_SERVER")
        .env_remove("SEEDGATE_TOKEN")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `get` writes the object; an interrupted download (a `.part` of the same
/// version) is resumed with a Range request, not started over; a stale
/// `.part` of another version is discarded; errors say why.
#[tokio::test]
async fn get_downloads_and_resumes() {
    let (dir, nginx) = origin();
    let data = pseudo_random(5 << 20, 91);
    nginx.put("cli/a.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let server = sg.url("");
    let out = dir.path().join("a.bin");
    let o = seedgate(&[
        "get",
        "www/cli/a.bin",
        "-o",
        out.to_str().unwrap(),
        "--server",
        &server,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    wait_stored(&sg.url("/o/www/cli/a.bin")).await;

    // An interrupted download: the first 2 MiB are in a.bin.part, with the
    // record of what they are of.
    let resumed = dir.path().join("b.bin");
    let head = client()
        .head(sg.url("/o/www/cli/a.bin"))
        .send()
        .await
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    std::fs::write(dir.path().join("b.bin.part"), &data[..2 << 20]).unwrap();
    std::fs::write(
        dir.path().join("b.bin.part.json"),
        serde_json::json!({"source": "www/cli/a.bin", "etag": etag, "length": data.len()})
            .to_string(),
    )
    .unwrap();
    let served = || metric(&sg, r#"seedgate_served_bytes_total{source="local"}"#);
    let before = served().await;
    let o = seedgate(&[
        "get",
        "www/cli/a.bin",
        "-o",
        resumed.to_str().unwrap(),
        "--server",
        &server,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    assert_eq!(sha256(&std::fs::read(&resumed).unwrap()), sha256(&data));
    assert_eq!(
        served().await - before,
        (3 << 20) as f64,
        "only the rest was sent"
    );
    assert!(!dir.path().join("b.bin.part").exists());

    // A .part of another version is not appended to.
    let stale = dir.path().join("c.bin");
    std::fs::write(dir.path().join("c.bin.part"), b"stale bytes").unwrap();
    std::fs::write(
        dir.path().join("c.bin.part.json"),
        serde_json::json!({"source": "www/cli/a.bin", "etag": "\"old\"", "length": data.len()})
            .to_string(),
    )
    .unwrap();
    let o = seedgate(&[
        "get",
        "www/cli/a.bin",
        "-o",
        stale.to_str().unwrap(),
        "--server",
        &server,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sha256(&std::fs::read(&stale).unwrap()), sha256(&data));

    let o = seedgate(&[
        "get",
        "www/cli/none.bin",
        "-o",
        "/dev/null",
        "--server",
        &server,
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("404"), "{}", text(&o));
    let o = seedgate(&["get", "no-slash", "-o", "/dev/null", "--server", &server]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("neither ORIGIN/KEY nor a full URL"),
        "{}",
        text(&o)
    );
}

/// `preheat --wait` follows the job to its end and exits 0 only when every
/// object is stored; `status` prints the live state.
#[tokio::test]
async fn preheat_waits_and_status_prints() {
    let (dir, nginx) = origin();
    for i in 0..3 {
        nginx.put(&format!("cli/p{i}.bin"), &pseudo_random(1 << 20, 92 + i));
    }
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let server = sg.url("");
    let o = seedgate(&[
        "preheat",
        "--origin",
        "www",
        "--key",
        "cli/p0.bin",
        "--key",
        "cli/p1.bin",
        "--key",
        "cli/p2.bin",
        "--wait",
        "--server",
        &server,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("succeeded: 3 of 3 objects done"),
        "{}",
        text(&o)
    );
    for i in 0..3 {
        let resp = get(&sg.url(&format!("/o/www/cli/p{i}.bin"))).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    }
    let o = seedgate(&[
        "preheat",
        "--origin",
        "www",
        "--key",
        "cli/missing.bin",
        "--wait",
        "--server",
        &server,
    ]);
    assert!(!o.status.success(), "a missing object fails the job");
    assert!(text(&o).contains("missing"), "{}", text(&o));

    let o = seedgate(&["status", "--server", &server]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    for want in [
        "ready",
        "preheat jobs: 2",
        "plugins:",
        "http",
        "negative cache: 1",
        "tasks: 3",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // `status | head`: the reader goes away first; the command ends
    // quietly (SIGPIPE), not with a panic in println!.
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["status", "--server", &server])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(o.status.code(), Some(101), "{stderr}");

    let o = seedgate(&["status", "--server", "http://127.0.0.1:1"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("asking http://127.0.0.1:1"),
        "{}",
        text(&o)
    );
}

/// Logs written to a file (or a journal, or a pipe) carry no colour
/// codes; only a terminal gets them.
#[test]
fn logs_to_a_file_have_no_colour_codes() {
    use std::io::BufRead;
    let (dir, nginx) = origin();
    let config = dir.path().join("seedgate.toml");
    std::fs::write(&config, http_origin_config(&nginx.base_url())).unwrap();
    let log = dir.path().join("seedgate.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("SEEDGATE_LOG", "info")
        .env(
            "SEEDGATE_PLUGIN_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("seedgate listening"), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text:?}"
    );
}
