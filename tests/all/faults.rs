//! Scenario 5: origins that cut bodies short or lie about their length. A
//! broken piece is rejected and fetched again; nothing wrong is ever
//! stored or served.

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::*;

#[tokio::test]
async fn truncated_and_lying_bodies_are_refetched_and_never_stored() {
    let (dir, nginx) = origin();
    let data = pseudo_random(20 << 20, 51);
    nginx.put("f/obj.bin", &data);
    let proxy = FaultProxy::start(nginx.port).await;
    let config = format!(
        r#"
[download]
piece_length = "4 MiB"
idle_timeout = "1s"

# One more attempt than there are faults: whichever pieces the faults
# land on, each piece gets through.
[retry]
base_delay = "10ms"
max_attempts = 9

{}"#,
        http_origin_config(&proxy.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    // The first five piece requests break, each in its own way, and three
    // retries meet 503s and a reset; the retries after them go through.
    let get_ = Some(http::Method::GET);
    proxy.inject(Fault::TruncateAfter(1 << 20), get_.clone(), 1);
    proxy.inject(Fault::TruncateAfter(0), get_.clone(), 1);
    proxy.inject(Fault::LieLength(-1000), get_.clone(), 1);
    proxy.inject(Fault::LieLength(1000), get_.clone(), 1);
    proxy.inject(Fault::StallAfter(3 << 20), get_.clone(), 1);
    // And a burst of 5xx and a reset on top.
    proxy.inject(Fault::Status(503), get_.clone(), 2);
    proxy.inject(Fault::Reset, get_, 1);

    let resp = get(&sg.url("/o/www/f/obj.bin")).await;
    assert_eq!(resp.status(), 200);
    let task = task_of(&resp);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), data.len());
    assert_eq!(sha256(&body), sha256(&data), "served bytes");
    assert_eq!(proxy.faulted(), 8);
    // 1 HEAD, 5 pieces and one more request for each broken answer.
    assert_eq!(proxy.requests(), 14);

    // What was stored is the origin's object, and it is served from disk.
    let content = std::fs::read(sg.content_file(&task)).unwrap();
    assert_eq!(sha256(&content), sha256(&data), "stored bytes");
    wait_stored(&sg.url("/o/www/f/obj.bin")).await;
    let before = proxy.requests();
    let resp = get(&sg.url("/o/www/f/obj.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert_eq!(proxy.requests(), before);
}

/// An origin that keeps breaking one piece past the retry limit fails the
/// download with a reason; the client's status says so (the gateway answers
/// only once the first piece it sends is in), and no task is stored.
#[tokio::test]
async fn a_piece_that_never_arrives_whole_fails_cleanly() {
    let (dir, nginx) = origin();
    let data = pseudo_random(1 << 20, 52);
    nginx.put("f/small.bin", &data);
    let proxy = FaultProxy::start(nginx.port).await;
    let config = format!(
        r#"
[retry]
base_delay = "10ms"
max_attempts = 3

{}"#,
        http_origin_config(&proxy.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    proxy.inject(Fault::LieLength(-10), Some(http::Method::GET), usize::MAX);
    let resp = get(&sg.url("/o/www/f/small.bin")).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    // Caught at the answer's head (its Content-Length), or at its end.
    assert!(
        text.contains("Content-Length 1048566 where 1048576 bytes were asked")
            || text.contains("piece 0 ended after"),
        "{text}"
    );
    assert_eq!(proxy.faulted(), 3, "3 attempts");

    proxy.heal();
    let resp = get(&sg.url("/o/www/f/small.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seedgate-cache"], "miss");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
}
