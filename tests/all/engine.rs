//! The piece engine against a real nginx origin: coalescing, streaming,
//! priority, version pinning, digests, reconciliation, eviction and kill -9.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::support::*;

const MIB: usize = 1024 * 1024;

/// A config with origin `www` on `base`, plus extra TOML sections.
fn config(base: &str, extra: &str) -> String {
    format!("{extra}\n{}", http_origin_config(base))
}

/// 64 concurrent readers of one cold object: every reader gets the
/// origin's bytes, and the origin sends each byte exactly once (one HEAD,
/// one ranged GET per piece).
#[tokio::test]
async fn concurrent_readers_share_one_fetch_of_each_byte() {
    let (dir, nginx) = origin();
    let data = pseudo_random(32 * MIB, 11);
    let want = sha256(&data);
    nginx.put("shared.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));

    let readers = (0..64).map(|_| {
        let url = sg.url("/o/www/shared.bin");
        tokio::spawn(async move {
            let resp = get(&url).await;
            assert_eq!(resp.status(), 200);
            sha256(&resp.bytes().await.unwrap())
        })
    });
    for got in futures_util::future::join_all(readers).await {
        assert_eq!(got.unwrap(), want);
    }
    let seen = nginx.requests("/shared.bin");
    assert_eq!(
        seen.iter().filter(|(m, _)| m == "HEAD").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        nginx.gets("/shared.bin"),
        8,
        "one GET per 4 MiB piece: {seen:?}"
    );
    assert_eq!(
        nginx.bytes_sent("/shared.bin"),
        data.len() as u64,
        "each origin byte is read once"
    );
}

/// On a slow origin (2 MB/s per connection, 2 pieces at a time), a reader
/// gets its first bytes when the first piece lands — long before the
/// object is stored — and a Range read of a cold object's tail gets its
/// piece fetched first instead of after all the pieces before it.
#[tokio::test]
async fn cold_reads_stream_and_ranges_fetch_their_pieces_first() {
    let (dir, nginx) = origin();
    let data = pseudo_random(64 * MIB, 12);
    nginx.put("a.bin", &data);
    nginx.put("b.bin", &data);
    let base = nginx.slow_base_url();
    let sg = Seedgate::start(
        dir.path(),
        &config(&base, "[download]\npiece_concurrency = 2\n"),
    );

    // Streaming: at the first body chunk at most the first two pieces have
    // been answered by the origin (16 pieces in all).
    let resp = get(&sg.url("/o/www/a.bin")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let answered = nginx.gets("/slow/a.bin");
    assert!(answered <= 2, "first bytes waited for {answered} pieces");
    assert_eq!(&first[..], &data[..first.len()]);
    drop(body);

    // Priority: the last MiB of a cold object, with 2 workers; only the
    // last piece (and the one other worker's) may have been fetched.
    let t = Instant::now();
    let resp = client()
        .get(sg.url("/o/www/b.bin"))
        .header("range", format!("bytes={}-", 63 * MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    let tail = resp.bytes().await.unwrap();
    assert_eq!(&tail[..], &data[63 * MIB..]);
    let answered = nginx.gets("/slow/b.bin");
    assert!(
        answered <= 2,
        "the tail waited for {answered} pieces ({:?})",
        t.elapsed()
    );
}

/// The origin replaces the object mid-download: the reader of the old
/// version is cut off with only old bytes, the task starts over, and the
/// next read returns exactly the new version.
#[tokio::test]
async fn object_changed_mid_download_restarts_without_mixing_versions() {
    let (dir, nginx) = origin();
    let old = pseudo_random(32 * MIB, 13);
    let new = pseudo_random(32 * MIB, 14);
    nginx.put("v.bin", &old);
    let base = nginx.slow_base_url();
    let sg = Seedgate::start(
        dir.path(),
        &config(&base, "[download]\npiece_concurrency = 2\n"),
    );

    let resp = get(&sg.url("/o/www/v.bin")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = body.next().await.unwrap().unwrap().to_vec();
    // Replace it with another version (new mtime, so a new ETag).
    let path = nginx.root.join("www/v.bin");
    let tmp = nginx.root.join("www/v.bin.tmp");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let mut cut = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the old version's reader must not complete");
    assert!(got.len() < old.len());
    assert_eq!(&got[..], &old[..got.len()], "only old bytes were served");

    // The task restarted on the new version by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = get(&sg.url("/o/www/v.bin")).await;
        if resp.status() == 200
            && let Ok(bytes) = resp.bytes().await
            && bytes.len() == new.len()
        {
            assert_eq!(sha256(&bytes), sha256(&new), "never a mix of versions");
            break;
        }
        assert!(Instant::now() < deadline, "the task never restarted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Hits keep a stored task's content file open, but no more than
/// `storage.open_files` of them: reading many distinct objects must not
/// run the process out of descriptors (it refused accepts and downloads
/// once the soft limit, often 1,024, was reached).
#[tokio::test]
async fn hits_keep_at_most_open_files_content_files_open() {
    let (dir, nginx) = origin();
    let mut want = Vec::new();
    for i in 0..40 {
        let data = pseudo_random(8 * 1024 + i, 300 + i as u64);
        want.push(sha256(&data));
        nginx.put(&format!("f/{i}.bin"), &data);
    }
    let config = format!(
        "[storage]\nopen_files = 8\n{}",
        http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    for (i, want) in want.iter().enumerate() {
        let url = sg.url(&format!("/o/www/f/{i}.bin"));
        assert_eq!(&sha256(&get(&url).await.bytes().await.unwrap()), want);
        wait_stored(&url).await;
    }
    let content = sg.data_dir.join("content");
    let open_content = || {
        std::fs::read_dir(format!("/proc/{}/fd", sg.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(&content))
            .count()
    };
    for round in 0..2 {
        for (i, want) in want.iter().enumerate() {
            let resp = get(&sg.url(&format!("/o/www/f/{i}.bin"))).await;
            assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
            assert_eq!(&sha256(&resp.bytes().await.unwrap()), want, "round {round}");
        }
        let open = open_content();
        assert!(
            open <= 8,
            "{open} content files open after 40 distinct hits"
        );
        assert!(open >= 1, "the newest hits stay open");
    }
    let origin_gets: usize = (0..40).map(|i| nginx.gets(&format!("/f/{i}.bin"))).sum();
    assert_eq!(origin_gets, 40, "hits never went to the origin");
}

/// A piece checked once is then sent from the file without being read
/// (sendfile); bytes that rot on disk after that are the scrubber's to
/// find. It drops the piece, and the next read fetches exactly that piece
/// again: the corrupt bytes are never served once it has run.
#[tokio::test]
async fn the_scrubber_finds_a_piece_that_rotted_after_its_check() {
    let (dir, nginx) = origin();
    let data = pseudo_random(16 * MIB, 16);
    let want = sha256(&data);
    nginx.put("s.bin", &data);
    let config = format!(
        "[storage]\nscrub_interval = \"1s\"\nscrub_rate = \"256 MiB\"\n{}",
        http_origin_config(&nginx.base_url())
    );
    let sg = Seedgate::start(dir.path(), &config);
    let resp = get(&sg.url("/o/www/s.bin")).await;
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    wait_stored(&sg.url("/o/www/s.bin")).await;
    // Hits: the first checks every piece, the second sends them unread.
    for _ in 0..2 {
        let resp = get(&sg.url("/o/www/s.bin")).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    }
    assert_eq!(nginx.gets("/s.bin"), 4);
    // Right after a pass ends (one of 16 MiB takes ~60 ms, one starts every
    // second), so that the next pass reads every piece after the flip.
    let passes = metric(&sg, "seedgate_scrub_passes_total").await;
    let passes = wait_metric(&sg, "seedgate_scrub_passes_total", passes + 1.0).await;
    let scrubbed = metric(&sg, "seedgate_scrub_pieces_total").await;

    // One byte of piece 1 flips in place (the file keeps its length).
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(sg.content_file(&task))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(4 * MIB as u64 + 777))
            .unwrap();
        f.write_all(&[data[4 * MIB + 777] ^ 0x5a]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&sg, "seedgate_scrub_corrupt_pieces_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the scrubber never found the piece"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pass that found it read all four pieces once it ended.
    wait_metric(&sg, "seedgate_scrub_passes_total", passes + 1.0).await;
    assert!(metric(&sg, "seedgate_scrub_pieces_total").await >= scrubbed + 4.0);
    assert_eq!(
        metric(&sg, "seedgate_scrub_corrupt_pieces_total").await,
        1.0
    );

    let resp = get(&sg.url("/o/www/s.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(
        nginx.gets("/s.bin"),
        5,
        "exactly the rotten piece is fetched again"
    );
    wait_stored(&sg.url("/o/www/s.bin")).await;
    assert_eq!(
        std::fs::read(sg.content_file(&task)).unwrap(),
        data,
        "repaired on disk"
    );
    // Later passes find nothing more.
    let passes = metric(&sg, "seedgate_scrub_passes_total").await;
    while metric(&sg, "seedgate_scrub_passes_total").await < passes + 2.0 {
        assert!(Instant::now() < deadline, "no further scrub pass");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&sg, "seedgate_scrub_corrupt_pieces_total").await,
        1.0
    );
}

/// A byte flipped in a stored piece is caught by its crc32: never served,
/// that one piece fetched again, then served from disk.
#[tokio::test]
async fn corrupt_piece_is_detected_and_refetched() {
    let (dir, nginx) = origin();
    let data = pseudo_random(16 * MIB, 15);
    let want = sha256(&data);
    nginx.put("c.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let resp = get(&sg.url("/o/www/c.bin")).await;
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(nginx.gets("/c.bin"), 4);
    // Stored whole first: a piece is trusted from its landing while its
    // download is live (its crc was computed from the bytes received), so
    // a flip that raced the download's end could be sent unchecked.
    wait_stored(&sg.url("/o/www/c.bin")).await;

    // Flip one byte in piece 2.
    let file = sg.content_file(&task);
    flip_byte(&file, 2 * 4 * MIB + 12345);

    let resp = get(&sg.url("/o/www/c.bin")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(
        nginx.gets("/c.bin"),
        5,
        "exactly the corrupt piece is refetched"
    );
    assert_eq!(std::fs::read(&file).unwrap(), data, "repaired on disk");

    wait_stored(&sg.url("/o/www/c.bin")).await;
    let resp = get(&sg.url("/o/www/c.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(nginx.gets("/c.bin"), 5);
}

/// A hit that finds the object in memory takes a shorter way (no copy of
/// the request for a repair it may never need, on an origin that forwards
/// no header): a piece that fails its digest there is still fetched again.
/// A ranged read of piece 0 puts the object in memory with only piece 0
/// checked; then piece 2 is flipped and the whole object read.
#[tokio::test]
async fn a_hit_in_memory_still_repairs_a_corrupt_piece() {
    let (dir, nginx) = origin();
    let data = pseudo_random(16 * MIB, 16);
    let want = sha256(&data);
    nginx.put("m.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let url = sg.url("/o/www/m.bin");
    let resp = get(&url).await;
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    wait_stored(&url).await;
    assert_eq!(nginx.gets("/m.bin"), 4);

    let resp = client()
        .get(&url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[..100]);

    let file = sg.content_file(&task);
    flip_byte(&file, 2 * 4 * MIB + 777);

    let resp = get(&url).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(
        nginx.gets("/m.bin"),
        5,
        "exactly the corrupt piece is refetched"
    );
    assert_eq!(std::fs::read(&file).unwrap(), data, "repaired on disk");
    wait_stored(&url).await;
    let resp = get(&url).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    assert_eq!(nginx.gets("/m.bin"), 5);
}

/// A small object (one piece, answered from one read without the piece
/// stream once its piece is trusted) keeps the rule of every other piece:
/// a flipped byte is caught on its first read since it was stored, the
/// piece is fetched again, and later hits and ranges get the right bytes.
#[tokio::test]
async fn small_object_flip_is_caught_before_its_one_read_answers() {
    let (dir, nginx) = origin();
    let data = pseudo_random(4096, 17);
    let want = sha256(&data);
    nginx.put("s.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let url = sg.url("/o/www/s.bin");
    let resp = get(&url).await;
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), want);
    wait_stored(&url).await;
    let file = sg.content_file(&task);
    flip_byte(&file, 1000);

    for round in 0..3 {
        let resp = get(&url).await;
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), want, "round {round}");
    }
    assert_eq!(
        nginx.gets("/s.bin"),
        2,
        "the flipped piece is fetched once more"
    );
    wait_stored(&url).await;
    let resp = client()
        .get(&url)
        .header("range", "bytes=100-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    assert_eq!(&resp.bytes().await.unwrap()[..], &data[100..1100]);
    assert_eq!(nginx.gets("/s.bin"), 2);
}

/// Startup reconciles: a content file without a record is deleted; a
/// record whose content file vanished is fetched again rather than served.
#[tokio::test]
async fn startup_reconciles_records_and_content_files() {
    let (dir, nginx) = origin();
    let data = pseudo_random(8 * MIB, 16);
    nginx.put("r.bin", &data);
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let resp = get(&sg.url("/o/www/r.bin")).await;
    let task = task_of(&resp);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let file = sg.content_file(&task);
    let (config, data_dir) = sg.kill();

    std::fs::remove_file(&file).unwrap();
    let stray = data_dir
        .join("content/abc/abc0000000000000000000000000000000000000000000000000000000000000");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"bytes without a record").unwrap();

    let sg = Seedgate::start_with(&config, &data_dir);
    assert!(
        !stray.exists(),
        "a file without a record is removed at startup"
    );
    let resp = get(&sg.url("/o/www/r.bin")).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "miss");
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert_eq!(nginx.gets("/r.bin"), 4, "both pieces fetched again");
}

/// Sum of the content files' lengths under a data directory.
fn content_bytes(sg: &Seedgate) -> u64 {
    let mut total = 0;
    for dir in std::fs::read_dir(sg.data_dir.join("content"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            total += f.metadata().unwrap().len();
        }
    }
    total
}

/// Under a 64 MiB quota (high 75 %, low 50 %), storing past 48 MiB evicts
/// the least recently read tasks down to 32 MiB — never the one a reader
/// is still holding, which then completes with the origin's bytes.
#[tokio::test]
async fn eviction_keeps_watermarks_and_spares_tasks_being_read() {
    let (dir, nginx) = origin();
    let held = pseudo_random(24 * MIB, 20);
    nginx.put("held.bin", &held);
    for name in ["b", "c", "d", "e"] {
        nginx.put(
            &format!("{name}.bin"),
            &pseudo_random(8 * MIB, name.len() as u64 + 21),
        );
    }
    let sg = Seedgate::start(
        dir.path(),
        &config(
            &nginx.base_url(),
            "[storage]\nquota = \"64 MiB\"\nhigh_watermark = 0.75\nlow_watermark = 0.5\ngc_interval = \"200ms\"\n",
        ),
    );
    // Store `held`, then hold it open: read one chunk and stop reading.
    let resp = get(&sg.url("/o/www/held.bin")).await;
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&held));
    let resp = get(&sg.url("/o/www/held.bin")).await;
    let mut reading = resp.bytes_stream();
    let mut got = reading.next().await.unwrap().unwrap().to_vec();

    for name in ["b", "c", "d"] {
        let resp = get(&sg.url(&format!("/o/www/{name}.bin"))).await;
        assert_eq!(resp.bytes().await.unwrap().len(), 8 * MIB);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        content_bytes(&sg),
        48 * MIB as u64,
        "at the high watermark, nothing goes"
    );
    let resp = get(&sg.url("/o/www/e.bin")).await;
    assert_eq!(resp.bytes().await.unwrap().len(), 8 * MIB);

    // 56 MiB > 48: b, c, d (least recently read, not held) go; 32 MiB left.
    wait_until(
        "eviction down to the low watermark",
        Duration::from_secs(10),
        || content_bytes(&sg) <= 32 * MIB as u64,
    )
    .await;
    assert_eq!(content_bytes(&sg), 32 * MIB as u64);
    for (name, cached) in [("held", "hit"), ("e", "hit"), ("b", "miss"), ("d", "miss")] {
        let resp = client()
            .head(sg.url(&format!("/o/www/{name}.bin")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-seedgate-cache"], cached, "{name}");
    }
    while let Some(chunk) = reading.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        sha256(&got),
        sha256(&held),
        "the held task was never evicted"
    );
}

/// A task unread for its TTL is evicted; an explicit delete frees a task
/// at once, is a 404 for an unknown task and a 409 while it is being read.
#[tokio::test]
async fn ttl_and_explicit_delete_free_space_at_once() {
    let (dir, nginx) = origin();
    nginx.put("t.bin", &pseudo_random(4 * MIB, 30));
    nginx.put("big.bin", &pseudo_random(32 * MIB, 31));
    let sg = Seedgate::start(
        dir.path(),
        &config(
            &nginx.base_url(),
            "[storage]\ntask_ttl = \"1s\"\ngc_interval = \"100ms\"\n",
        ),
    );
    let resp = get(&sg.url("/o/www/t.bin")).await;
    let task = task_of(&resp);
    resp.bytes().await.unwrap();
    assert!(sg.content_file(&task).exists());
    wait_until("TTL expiry", Duration::from_secs(10), || {
        !sg.content_file(&task).exists()
    })
    .await;

    let resp = get(&sg.url("/o/www/big.bin")).await;
    let task = task_of(&resp);
    let mut reading = resp.bytes_stream();
    reading.next().await.unwrap().unwrap();
    let api = sg.url(&format!("/api/v1/tasks/{task}"));
    let resp = client().delete(&api).send().await.unwrap();
    assert_eq!(resp.status(), 409, "{}", resp.text().await.unwrap());
    drop(reading);
    // The server notices the dropped reader when its write fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        let resp = client().delete(&api).send().await.unwrap();
        if resp.status() != 409 || Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert!(!sg.content_file(&task).exists(), "space freed at once");
    let resp = client().delete(&api).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// kill -9 at random moments while large objects download, restarting on
/// the same data directory each time, until `SEEDGATE_KILL_LOOPS` (default
/// 20) kills have landed in the middle of a download (the killed reader had
/// been answered `miss`). Every byte ever served equals the origin's; each
/// object completes (then the next one is downloaded, killed, completed);
/// finished pieces are never fetched again (origin bytes stay within the
/// objects plus the pieces in flight at each kill).
#[tokio::test]
async fn kill_9_at_random_moments_never_serves_a_wrong_byte() {
    let loops: usize = std::env::var("SEEDGATE_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (dir, nginx) = origin();
    let size = 64 * MIB;
    let object = |i: u64| (format!("k{i}.bin"), pseudo_random(size, 40 + i));
    let (mut name, mut data) = object(0);
    nginx.put(&name, &data);
    let mut objects = 1u64;
    let mut sg = Seedgate::start(dir.path(), &config(&nginx.slow_base_url(), ""));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let (mut mid_download, mut kills, mut served) = (0, 0, 0u64);
    while mid_download < loops {
        assert!(
            kills < loops * 4,
            "only {mid_download} of {kills} kills came mid-download"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Pieces land after ~2 s (4 MiB at 2 MB/s): kill before, during and
        // after the first ones.
        let after = Duration::from_millis(rng % 3000);
        let url = sg.url(&format!("/o/www/{name}"));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut cache = None;
            if let Ok(resp) = client().get(url).send().await {
                cache = resp
                    .headers()
                    .get("x-seedgate-cache")
                    .map(|v| v.to_str().unwrap().to_string());
                let mut body = resp.bytes_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    got.extend_from_slice(&chunk);
                }
            }
            (cache, got)
        });
        tokio::time::sleep(after).await;
        let (config, data_dir) = sg.kill();
        kills += 1;
        let (cache, got) = reader.await.unwrap();
        assert_eq!(
            &got[..],
            &data[..got.len()],
            "kill {kills} ({name}): a served byte differs"
        );
        served += got.len() as u64;
        sg = Seedgate::start_with(&config, &data_dir);
        match cache.as_deref() {
            Some("miss") => mid_download += 1,
            Some("hit") => {
                // Complete: check it whole, then download the next one.
                let resp = get(&sg.url(&format!("/o/www/{name}"))).await;
                assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
                assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
                (name, data) = object(objects);
                nginx.put(&name, &data);
                objects += 1;
            }
            _ => {} // killed before the answer
        }
    }
    let resp = get(&sg.url(&format!("/o/www/{name}"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    assert!(served > 0, "no kill came after the first bytes were served");
    let fetched: u64 = (0..objects)
        .map(|i| nginx.bytes_sent(&format!("/slow/k{i}.bin")))
        .sum();
    // A kill costs at most the pieces being fetched when it lands:
    // download.piece_concurrency (4) pieces of 4 MiB. Pieces that landed
    // are flushed with their batch, so none of them is fetched again.
    let bound = objects * size as u64 + kills as u64 * 4 * 4 * MIB as u64;
    assert!(
        fetched <= bound,
        "origin sent {fetched} bytes (bound {bound})"
    );
    eprintln!(
        "kill -9: {kills} kills, {mid_download} mid-download, {objects} objects of {size} B, \
         {served} B served before kills, origin sent {fetched} B ({:.2}x the objects, {:.1} MiB re-fetched per kill)",
        fetched as f64 / (objects * size as u64) as f64,
        fetched.saturating_sub(objects * size as u64) as f64 / kills as f64 / MIB as f64
    );
    wait_stored(&sg.url(&format!("/o/www/{name}"))).await;
    let resp = get(&sg.url(&format!("/o/www/{name}"))).await;
    assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
}

/// A plugin whose plans expire 1.5 s after it makes them (presigned-URL
/// style): the host asks for a new plan before one expires, so a download
/// longer than a plan's life completes with the origin's bytes, its piece
/// requests carrying several plans.
#[tokio::test]
async fn expiring_plans_are_renewed_during_a_download() {
    let (dir, nginx) = origin();
    let data = pseudo_random(24 * MIB, 50);
    nginx.put("e.bin", &data);
    let plugins = install_hostile(dir.path());
    let config = format!(
        r#"
[plugins]
dir = "{plugins}"

[download]
piece_concurrency = 2
plan_refresh_margin = "1s"

[origins.exp]
plugin = "hostile"
base_url = "{base}"

[origins.exp.config]
expiring-url = "{base}slow/e.bin"
expiring-length = "{len}"
"#,
        plugins = plugins.display(),
        base = nginx.base_url(),
        len = data.len(),
    );
    let sg = Seedgate::start(dir.path(), &config);
    let resp = get(&sg.url("/o/exp/expiring")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let log = std::fs::read_to_string(nginx.root.join("logs/origin.access.log")).unwrap();
    let plans: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| l.split("GET /slow/e.bin?plan=").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    let gets = log.matches("GET /slow/e.bin?plan=").count();
    assert_eq!(gets, 6, "one GET per piece");
    assert!(
        plans.len() >= 2,
        "a 6 s download under 1.5 s plans used only {plans:?}"
    );
}

/// Waits (up to 30 s) until metric `name` reaches `at_least`; its value.
async fn wait_metric(sg: &Seedgate, name: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(sg, name).await;
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {v} (< {at_least})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
