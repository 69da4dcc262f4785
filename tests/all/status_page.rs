//! The live status page in headless Chromium (Debian's `chromium`, which
//! scripts/setup installs): while a preheat job runs, the page's script
//! fills in the job with its progress bar, the download in flight, the
//! plugins and the negative cache, read from the live API. A screenshot is
//! left in the target directory (`status-page.png`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::*;

fn chromium(args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is not installed: run scripts/test (scripts/setup installs it)")
}

#[tokio::test]
async fn the_status_page_shows_a_running_preheat() {
    let (dir, nginx) = origin();
    let proxy = FaultProxy::start(nginx.port).await;
    let keys: Vec<String> = (0..8).map(|i| format!("page/{i}.bin")).collect();
    for (i, k) in keys.iter().enumerate() {
        nginx.put(k, &pseudo_random(2 << 20, 400 + i as u64));
    }
    let sg = Seedgate::start(dir.path(), &http_origin_config(&proxy.base_url()));
    // Each piece answer takes 4 s, one object at a time: the job runs for
    // half a minute, long after the page has looked (even on a loaded
    // runner).
    proxy.inject(
        Fault::Delay(Duration::from_secs(4)),
        Some(http::Method::GET),
        usize::MAX,
    );
    assert_eq!(get(&sg.url("/o/www/page/missing.bin")).await.status(), 404);
    let (status, job) = create_preheat(
        &sg,
        serde_json::json!({"origin": "www", "keys": keys, "concurrency": 1}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();

    let url = sg.url("/");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&["--dump-dom"], &url)
    })
    .await
    .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    // What the script rendered from the live API, not the static page.
    assert!(
        html.contains(&format!(r#"data-id="{id}""#)),
        "the job row: {html}"
    );
    assert!(
        html.contains(r#"class="state-running">running"#),
        "running: {html}"
    );
    assert!(
        html.contains(r#"<span class="bar"><span style="width:"#),
        "progress bars: {html}"
    );
    assert!(html.contains("/page/missing.bin"), "negative cache: {html}");
    assert!(html.contains(">ready<"), "readiness: {html}");
    assert!(html.contains("gitlab-lfs"), "plugins: {html}");
    assert!(!html.contains("loading…"), "refreshed: {html}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let out =
        tokio::task::spawn_blocking(move || chromium(&[&arg, "--window-size=1280,1000"], &url))
            .await
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(png.len() > 20_000, "a rendered page, {} bytes", png.len());
    eprintln!("screenshot: {}", shot.display());

    // The job was still running while the page looked.
    let j: serde_json::Value = serde_json::from_slice(
        &get(&sg.url(&format!("/api/v1/preheat/{id}")))
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_ne!(j["state"], "succeeded", "{j}");
}
