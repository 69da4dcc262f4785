//! The API on a unix socket (`server.unix_socket`): served like TCP; a
//! socket left by a kill -9 is taken back at restart; a live instance's
//! socket, or a path that is not a socket, is never taken over.

use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A GET over the unix socket: (status, body).
pub async fn get_unix(socket: &Path, path: &str) -> (u16, Vec<u8>) {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

/// A second instance on the same socket: its exit status and output.
fn second_instance(dir: &Path, config: &str) -> (bool, String) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("seedgate.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "SEEDGATE_PLUGIN_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_socket_serves_survives_kill_9_and_is_never_stolen() {
    let (dir, nginx) = origin();
    let data = pseudo_random(300_000, 81);
    nginx.put("u/a.bin", &data);
    let socket = dir.path().join("seedgate.sock");
    let config = format!(
        "[server]\nunix_socket = \"{}\"\n{}",
        socket.display(),
        http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    let (status, body) = get_unix(&socket, "/o/www/u/a.bin").await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&data));
    let (status, body) = get_unix(&socket, "/readyz").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // A second instance while the first lives: refused, socket untouched.
    let (ok, out) = second_instance(&dir.path().join("second"), &config);
    assert!(!ok, "{out}");
    assert!(out.contains("another process is listening on it"), "{out}");
    assert_eq!(
        get_unix(&socket, "/healthz").await.0,
        200,
        "still the first's"
    );

    // kill -9 leaves the socket file; a restart takes it back.
    let (config_path, data_dir) = sg.kill();
    assert!(socket.exists(), "a killed process leaves its socket");
    let sg = Seedgate::start_with(&config_path, &data_dir);
    let (status, body) = get_unix(&socket, "/o/www/u/a.bin").await;
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), sha256(&data));
    drop(sg);

    // A path that is not a socket is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let other = format!(
        "[server]\nunix_socket = \"{}\"\n{}",
        file.display(),
        http_origin_config(&nginx.base_url())
    );
    let (ok, out) = second_instance(&dir.path().join("third"), &other);
    assert!(!ok, "{out}");
    assert!(out.contains("is not a socket"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}
