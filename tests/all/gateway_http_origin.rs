//! The end-to-end slice against a real nginx origin: objects fetched through
//! the built-in wasm HTTP plugin, kept as pieces, served by the gateway.

use std::io::{Read, Write};

use crate::support::*;

const MIB: usize = 1024 * 1024;

/// A 100 MiB object read through seedgate has the origin's sha256; the first
/// read costs the origin one HEAD and one ranged GET per 4 MiB piece, and a
/// second read costs it nothing at all.
#[tokio::test]
async fn large_object_matches_origin_and_second_read_is_local() {
    let (dir, nginx) = origin();
    let data = pseudo_random(100 * MIB, 1);
    let want = sha256(&data);
    nginx.put("big.bin", &data);
    drop(data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));

    let resp = get(&sg.url("/o/www/big.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        (100 * MIB).to_string().as_str()
    );
    assert_eq!(resp.headers()["x-seedgate-cache"], "miss");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    let first = nginx.requests("/big.bin");
    assert_eq!(
        first.iter().filter(|(m, _)| m == "HEAD").count(),
        1,
        "{first:?}"
    );
    assert_eq!(
        nginx.gets("/big.bin"),
        25,
        "one ranged GET per 4 MiB piece: {first:?}"
    );
    assert!(
        first
            .iter()
            .filter(|(m, _)| m == "GET")
            .all(|(_, s)| *s == 206),
        "{first:?}"
    );

    wait_stored(&sg.url("/o/www/big.bin")).await;
    let resp = get(&sg.url("/o/www/big.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(
        nginx.requests("/big.bin"),
        first,
        "the second read must not reach the origin"
    );
}

/// Range reads return exactly the requested bytes (206 with Content-Range),
/// cold and warm, across piece boundaries; a range past the end is 416.
#[tokio::test]
async fn range_reads_return_exact_bytes() {
    let (dir, nginx) = origin();
    let len = 10 * MIB + 123;
    let data = pseudo_random(len, 2);
    nginx.put("r.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let url = sg.url("/o/www/r.bin");

    let four = 4 * MIB;
    let cases: Vec<(String, usize, usize)> = vec![
        // Cold: the first request starts the download.
        (
            format!("bytes={}-{}", four - 10, four + 9),
            four - 10,
            four + 10,
        ),
        ("bytes=0-0".into(), 0, 1),
        ("bytes=-100".into(), len - 100, len),
        (format!("bytes={}-", 2 * four + 5), 2 * four + 5, len),
        (format!("bytes=5-{}", len * 2), 5, len),
    ];
    for (range, start, end) in cases {
        let resp = client()
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            resp.headers()["content-range"],
            format!("bytes {start}-{}/{len}", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(
            resp.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        let body = resp.bytes().await.unwrap();
        assert!(body[..] == data[start..end], "{range}: bytes differ");
    }

    let resp = client()
        .get(&url)
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    let resp = client()
        .get(&url)
        .header("range", "bytes=oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("malformed Range"));
    // Every piece was fetched once: 3 pieces, never twice.
    assert_eq!(nginx.gets("/r.bin"), 3);
}

/// A completed object survives a kill -9 and restart on the same data
/// directory: it is served from disk, and the origin sees nothing new.
#[tokio::test]
async fn restart_keeps_objects() {
    let (dir, nginx) = origin();
    let data = pseudo_random(20 * MIB + 7, 3);
    let want = sha256(&data);
    nginx.put("keep/me.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let resp = get(&sg.url("/o/www/keep/me.bin")).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    let before = nginx.requests("/keep/me.bin");
    assert_eq!(
        nginx.gets("/keep/me.bin"),
        6,
        "20 MiB + 7 B is six 4 MiB pieces"
    );

    // A reader has every byte as soon as the pieces land; the task is
    // recorded complete (and flushed) by the committer a moment later. Kill
    // only once the server says the object is stored.
    let url = sg.url("/o/www/keep/me.bin");
    let t = tokio::time::Instant::now();
    while client().head(&url).send().await.unwrap().headers()["x-seedgate-cache"] != "hit" {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "stored in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (config, data_dir) = sg.kill();
    let sg = Seedgate::start_with(&config, &data_dir);
    let resp = get(&sg.url("/o/www/keep/me.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    let head = client()
        .head(sg.url("/o/www/keep/me.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["content-length"],
        (20 * MIB + 7).to_string().as_str()
    );
    assert_eq!(
        nginx.requests("/keep/me.bin"),
        before,
        "restarted seedgate must not ask the origin"
    );
}

/// HEAD answers the origin's length and ETag without downloading anything.
#[tokio::test]
async fn head_reports_metadata_without_downloading() {
    let (dir, nginx) = origin();
    nginx.put("h.bin", &pseudo_random(5 * MIB, 4));
    let direct = client()
        .head(format!("{}h.bin", nginx.base_url()))
        .send()
        .await
        .unwrap();
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));

    let resp = client().head(sg.url("/o/www/h.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        (5 * MIB).to_string().as_str()
    );
    assert_eq!(resp.headers()["etag"], direct.headers()["etag"]);
    assert_eq!(
        resp.headers()["last-modified"],
        direct.headers()["last-modified"]
    );
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(nginx.gets("/h.bin"), 0, "HEAD must not start a download");

    // A HEAD with a range reports the part's length.
    let resp = client()
        .head(sg.url("/o/www/h.bin"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-length"], "10");
}

/// Missing objects, unknown origins and bad keys get a clear status and a
/// one-line reason naming the cause; the server keeps serving.
#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (dir, nginx) = origin();
    nginx.put("ok.txt", b"still here\n");
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));

    let resp = get(&sg.url("/o/www/missing.bin")).await;
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(
        body.contains("origin 'www'") && body.contains("missing.bin"),
        "{body:?}"
    );

    let resp = get(&sg.url("/o/nowhere/x")).await;
    assert_eq!(resp.status(), 404);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("unknown origin 'nowhere'")
    );

    let resp = client()
        .head(sg.url("/o/www/missing.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Path traversal, sent raw because HTTP clients normalise '..' away.
    let mut stream = std::net::TcpStream::connect(sg.addr).unwrap();
    write!(
        stream,
        "GET /o/www/a/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("'..'"), "{answer}");

    let resp = get(&sg.url("/o/www/ok.txt")).await;
    assert_eq!(resp.text().await.unwrap(), "still here\n");
    // The origin saw only what it had to: never the traversal.
    assert!(nginx.requests("/etc/passwd").is_empty());
}

/// An origin that does not honour ranges (and announces it) is read as one
/// stream cut into pieces, still with the origin's bytes.
#[tokio::test]
async fn origin_without_ranges_is_read_sequentially() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("py");
    std::fs::create_dir_all(&root).unwrap();
    let data = pseudo_random(9 * MIB + 1, 5);
    std::fs::write(root.join("seq.bin"), &data).unwrap();
    // Python's http.server ignores Range and sends no Accept-Ranges.
    let port = free_port();
    let mut py = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let sg = Seedgate::start(
        dir.path(),
        &http_origin_config(&format!("http://127.0.0.1:{port}/")),
    );
    let resp = get(&sg.url("/o/www/seq.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let resp = client()
        .get(sg.url("/o/www/seq.bin"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert!(resp.bytes().await.unwrap()[..] == data[100..200]);
    let _ = py.kill();
    let _ = py.wait();
}

/// A custom plugin is loaded from `plugins.dir` by file name; a file that is
/// not a component stops startup with an error naming the plugin.
#[tokio::test]
async fn custom_plugins_load_from_a_directory() {
    let (dir, nginx) = origin();
    let data = pseudo_random(MIB, 6);
    nginx.put("c.bin", &data);
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    let http_wasm = seedgate::plugin::BUILTINS
        .iter()
        .find(|(n, _)| *n == "http")
        .unwrap()
        .1;
    std::fs::write(plugins.join("myorigin.wasm"), http_wasm).unwrap();
    let config = format!(
        "[plugins]\ndir = \"{}\"\n\n[origins.mine]\nplugin = \"myorigin\"\nbase_url = \"{}\"\n",
        plugins.display(),
        nginx.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);
    let resp = get(&sg.url("/o/mine/c.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    drop(sg);

    std::fs::write(plugins.join("broken.wasm"), b"\0asm not really").unwrap();
    std::fs::write(dir.path().join("seedgate.toml"), &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seedgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("seedgate.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin 'broken' is not a WebAssembly component"),
        "{stderr}"
    );
}

/// Every `server.sendfile` setting sends stored pieces byte for byte, over
/// TCP (loopback: `auto` copies, `always` uses sendfile) and over the unix
/// socket: a miss, a hit, a range across three pieces, and the origin saw
/// one copy.
#[tokio::test]
async fn every_sendfile_setting_sends_the_stored_bytes() {
    let (dir, nginx) = origin();
    let data = pseudo_random(10 * MIB, 78);
    let want = sha256(&data);
    for setting in ["auto", "always", "never"] {
        let key = format!("sendfile-{setting}.bin");
        nginx.put(&key, &data);
        let home = dir.path().join(format!("sg-{setting}"));
        std::fs::create_dir_all(&home).unwrap();
        let socket = home.join("seedgate.sock");
        let config = format!(
            "[server]\nsendfile = \"{setting}\"\nunix_socket = \"{}\"\n{}",
            socket.display(),
            http_origin_config(&nginx.base_url())
        );
        let sg = Seedgate::start(&home, &config);
        let url = sg.url(&format!("/o/www/{key}"));
        let c = client();
        for read in ["miss", "hit"] {
            let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(sha256(&body), want, "{setting}: {read}");
        }
        let (from, to) = (3 * MIB - 7, 9 * MIB + 5);
        let r = c
            .get(&url)
            .header("range", format!("bytes={from}-{to}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{setting}");
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..], &data[from..=to], "{setting}: range");
        let (status, body) = crate::unix_socket::get_unix(&socket, &format!("/o/www/{key}")).await;
        assert_eq!(status, 200, "{setting}");
        assert_eq!(sha256(&body), want, "{setting}: unix socket");
        assert_eq!(
            nginx.bytes_sent(&format!("/{key}")),
            data.len() as u64,
            "{setting}: one copy"
        );
    }
}

/// Every `server.connection_threads` setting serves: none (the main runtime's
/// workers), one, and more than the cores. 64 concurrent clients on
/// kept-alive connections each read a cold and then a stored object
/// (the download that the first reads start runs on the main runtime and
/// outlives their requests), every body has the origin's sha256, the
/// origin saw one copy, and SIGTERM stops the process cleanly within 5 s.
#[tokio::test]
async fn every_connection_thread_count_serves_and_stops_cleanly() {
    let (dir, nginx) = origin();
    let data = pseudo_random(6 * MIB, 77);
    let want = sha256(&data);
    for threads in [0, 1, 5] {
        let key = format!("threads-{threads}.bin");
        nginx.put(&key, &data);
        let home = dir.path().join(format!("sg-{threads}"));
        std::fs::create_dir_all(&home).unwrap();
        let config = format!(
            "[server]\nconnection_threads = {threads}\n{}",
            http_origin_config(&nginx.base_url())
        );
        let mut sg = Seedgate::start(&home, &config);
        let url = sg.url(&format!("/o/www/{key}"));
        let clients = (0..64).map(|_| {
            let (url, want) = (url.clone(), want.clone());
            async move {
                let c = client();
                for _ in 0..2 {
                    let body = c.get(&url).send().await.unwrap().bytes().await.unwrap();
                    assert_eq!(sha256(&body), want, "connection_threads = {threads}");
                }
            }
        });
        futures_util::future::join_all(clients).await;
        let sent = nginx.bytes_sent(&format!("/{key}"));
        assert_eq!(
            sent,
            data.len() as u64,
            "connection_threads = {threads}: one copy"
        );
        // Idle kept-alive connections are closed at once: no 30 s wait.
        let status = sg.terminate(std::time::Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "connection_threads = {threads}: SIGTERM gave {status:?}"
        );
    }
}
