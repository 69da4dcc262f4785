//! Retries against an origin that fails a random 10% of its answers
//! (nginx's `/flaky/`, split_clients on the request id): nearly every
//! client request succeeds, and the origin sees at most 1.2× the requests
//! a healthy origin would.

use futures_util::StreamExt;

use crate::support::*;

#[tokio::test]
async fn ten_percent_5xx_costs_clients_nothing_and_the_origin_little() {
    let (dir, nginx) = origin();
    const OBJECTS: usize = 1000;
    let bodies: Vec<Vec<u8>> = (0..OBJECTS)
        .map(|i| pseudo_random(4096, 1000 + i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        nginx.put(&format!("f/{i}.bin"), b);
    }
    // Five attempts: with a 10% failure rate, an operation fails for good
    // once in 100 000, so the 99.9% bound holds by a wide margin.
    let config = format!(
        "[retry]\nmax_attempts = 5\nbase_delay = \"20ms\"\n{}",
        http_origin_config(&format!("{}flaky/", nginx.base_url()))
    );
    let sg = Seedgate::start(dir.path(), &config);

    let results: Vec<bool> = futures_util::stream::iter(0..OBJECTS)
        .map(|i| {
            let url = sg.url(&format!("/o/www/f/{i}.bin"));
            let want = sha256(&bodies[i]);
            async move {
                let resp = get(&url).await;
                resp.status() == 200 && sha256(&resp.bytes().await.unwrap()) == want
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let ok = results.iter().filter(|r| **r).count();
    let statuses = statuses_under(&nginx, "/flaky/f/");
    let total = statuses.len();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    // Each object needs one HEAD and one GET from a healthy origin.
    let needed = 2 * OBJECTS;
    let amplification = total as f64 / needed as f64;
    eprintln!(
        "{ok}/{OBJECTS} succeeded; origin saw {total} requests ({} answered 503) for {needed} needed: {amplification:.3}×",
        failed
    );
    assert!(ok * 1000 >= OBJECTS * 999, "{ok}/{OBJECTS} succeeded");
    assert!(amplification <= 1.2, "amplification {amplification:.3}");
    assert!(
        failed * 20 >= total,
        "about 10% were failed on purpose: {failed}/{total}"
    );
}

/// Statuses of the requests the origin logged under path `prefix`.
fn statuses_under(nginx: &Nginx, prefix: &str) -> Vec<u16> {
    std::fs::read_to_string(nginx.root.join("logs/origin.access.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut quoted = l.split('"');
            let path = quoted.nth(1)?.split(' ').nth(1)?;
            let status = quoted.next()?.split_whitespace().next()?.parse().ok()?;
            path.starts_with(prefix).then_some(status)
        })
        .collect()
}
