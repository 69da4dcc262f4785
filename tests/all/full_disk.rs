//! A full disk: `data_dir` on a 200 MiB ext4 loop image (the test runs as
//! root, as CI does), default watermarks and metadata reserve, nginx as the
//! origin. The disk is filled from outside, mid-download and before a
//! restart, as another process on the host would fill it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const MIB: usize = 1 << 20;

/// A small ext4 filesystem on a loop device, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn new(parent: &Path, mib: u64) -> Self {
        let img = parent.join("disk.img");
        let mount = parent.join("disk");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {} (the full-disk test mounts a loop image: it needs root, as CI has)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mount));
        Self { mount }
    }

    fn available(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.mount).unwrap();
        st.f_bavail * st.f_frsize
    }

    /// Fills what is left of the disk with one file, as another process
    /// would; returns its path.
    fn fill(&self, name: &str) -> PathBuf {
        let path = self.mount.join(name);
        let f = std::fs::File::create(&path).unwrap();
        let mut want = self.available();
        while want > 0 {
            match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, want) {
                Ok(()) => break,
                Err(_) => want = want.saturating_sub(256 * 1024),
            }
        }
        f.sync_all().unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

async fn readyz(sg: &Seedgate) -> (u16, serde_json::Value) {
    let resp = get(&sg.url("/readyz")).await;
    (resp.status().as_u16(), json(resp).await)
}

/// GETs `/o/www/{key}` and checks it is whole and right.
async fn whole(sg: &Seedgate, key: &str, data: &[u8]) {
    let resp = get(&sg.url(&format!("/o/www/{key}"))).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        200,
        "{key}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    assert_eq!(sha256(&body), sha256(data), "{key}: bytes differ");
}

/// The full-disk scenario, `SEEDGATE_DISK_LOOPS` times (default 2), each
/// on a fresh disk:
/// 1. an object larger than the disk is refused before it starts (507,
///    with the numbers), and the origin is not asked for its bytes;
/// 2. the disk fills up from outside while an object downloads: that task
///    fails with a reason and is not recorded complete; `/readyz` and the
///    metrics say "disk full"; stored objects keep being served; a new
///    download is served whole or refused with a reason, never a 500;
/// 3. the space is freed: the next download works without a restart, and
///    `/readyz` is ready again; deletes work;
/// 4. the disk is filled again and the process killed: it restarts on the
///    full disk, serves what is stored byte for byte, and says disk full.
#[tokio::test]
async fn a_full_disk_costs_the_request_never_the_store() {
    let loops = env_or("SEEDGATE_DISK_LOOPS", 2);
    for round in 0..loops {
        // Without a quota (the watermarks count the filesystem) and with
        // one (they count seedgate's bytes), in turn.
        one_round(round as u64, round % 2 == 1).await;
    }
}

async fn one_round(round: u64, quota: bool) {
    let (dir, nginx) = origin();
    let disk = SmallDisk::new(dir.path(), 200);
    let data_dir = disk.mount.join("data");
    let object = |name: &str, mib: usize, seed: u64| {
        let data = pseudo_random(mib * MIB, seed + round * 100);
        nginx.put(name, &data);
        data
    };
    let big = object("big.bin", 300, 1);
    let a = object("a.bin", 24, 2);
    let c = object("c.bin", 40, 3);
    let d = object("d.bin", 4, 4);
    let e = object("e.bin", 8, 5);
    drop(big);
    let storage = if quota {
        "[storage]\nquota = \"100MiB\"\n"
    } else {
        ""
    };
    let config = dir.path().join("seedgate.toml");
    std::fs::write(
        &config,
        format!("{storage}{}", http_origin_config(&nginx.base_url())),
    )
    .unwrap();
    // The slow path (2 MB/s per connection) for the object the disk fills
    // under; the fast one for the rest.
    let slow_config = dir.path().join("slow.toml");
    std::fs::write(
        &slow_config,
        format!(
            "{storage}{}\n[origins.slow]\nplugin = \"http\"\nbase_url = \"{}\"\n",
            http_origin_config(&nginx.base_url()),
            nginx.slow_base_url()
        ),
    )
    .unwrap();
    let sg = Seedgate::start_with(&slow_config, &data_dir);
    let (status, ready) = readyz(&sg).await;
    assert_eq!(status, 200, "{ready}");

    // 1. Too big for the disk: refused before it starts.
    let resp = get(&sg.url("/o/www/big.bin")).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("300.0 MiB does not fit")
            && body.contains(if quota {
                "storage.quota"
            } else {
                "metadata reserve"
            })
            && body.contains("evictable"),
        "{body}"
    );
    assert_eq!(
        nginx.gets("/big.bin"),
        0,
        "the origin was asked for its bytes"
    );
    assert!(metric(&sg, "seedgate_storage_refused_total").await >= 1.0);

    // 2. The disk fills up while c downloads.
    whole(&sg, "a.bin", &a).await;
    wait_stored(&sg.url("/o/www/a.bin")).await;
    let reader = {
        let url = sg.url("/o/slow/c.bin");
        tokio::spawn(async move {
            let resp = client().get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            let task = resp
                .headers()
                .get("x-seedgate-task")
                .map(|v| v.to_str().unwrap().to_string());
            let mut got = 0usize;
            let mut body = resp.bytes_stream();
            use futures_util::StreamExt;
            while let Some(Ok(chunk)) = body.next().await {
                got += chunk.len();
            }
            (status, task, got)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let filler = disk.fill("filler");
    let (status, task, got) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the download under a full disk ended")
        .unwrap();
    assert!(
        status == 507 || (status == 200 && got < c.len()),
        "c: status {status}, {got} of {} bytes",
        c.len()
    );
    if let Some(task) = &task {
        // Failed, so never recorded complete: partial, or already evicted.
        let resp = get(&sg.url(&format!("/api/v1/tasks/{task}"))).await;
        if resp.status() != 404 {
            let view = json(resp).await;
            assert_ne!(view["state"], "succeeded", "{view}");
        }
    }
    let (status, ready) = readyz(&sg).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["storage"].as_str().unwrap().contains("disk full"),
        "{ready}"
    );
    assert_eq!(metric(&sg, "seedgate_disk_full").await, 1.0);
    // Stored objects are still served, whole.
    whole(&sg, "a.bin", &a).await;
    let resp = client().head(sg.url("/o/www/a.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A new object: served whole (room made by evicting idle tasks) or
    // refused with a reason; never a 500 and never short.
    let resp = get(&sg.url("/o/www/d.bin")).await;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    match status {
        200 => assert_eq!(sha256(&body), sha256(&d)),
        507 => {
            let why = String::from_utf8_lossy(&body);
            assert!(
                why.contains("disk") || why.contains("does not fit"),
                "{why}"
            );
        }
        _ => panic!("d: {status} {}", String::from_utf8_lossy(&body)),
    }

    // 3. Space is freed: the next download works, without a restart.
    std::fs::remove_file(&filler).unwrap();
    whole(&sg, "e.bin", &e).await;
    wait_stored(&sg.url("/o/www/e.bin")).await;
    let mut ready_again = false;
    for _ in 0..100 {
        if readyz(&sg).await.0 == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_again, "{}", readyz(&sg).await.1);
    assert_eq!(metric(&sg, "seedgate_disk_full").await, 0.0);
    whole(&sg, "a.bin", &a).await;
    let a_task = task_of(&client().head(sg.url("/o/www/a.bin")).send().await.unwrap());
    // 409 "being read": the read that just ended may not have let the
    // task go yet; the answer says to try again when it is idle.
    let mut resp = None;
    for _ in 0..50 {
        let r = client()
            .delete(sg.url(&format!("/api/v1/tasks/{a_task}")))
            .send()
            .await
            .unwrap();
        if r.status() != 409 {
            resp = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = resp.expect("the task stayed busy for 1 s after its read ended");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // 4. Full again, and killed: it comes back on the full disk and
    // serves what it has byte for byte. Without a quota the watermarks
    // count the whole filesystem, so the collector may evict what the
    // filler crowds out (as Dragonfly's does); with one, they count only
    // seedgate's bytes and `e` stays.
    let filler = disk.fill("filler");
    let (_, data_dir) = sg.kill();
    let sg = Seedgate::start_with(&config, &data_dir);
    let listed = json(get(&sg.url("/api/v1/tasks")).await).await;
    let stored: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "succeeded")
        .map(|t| {
            t["url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for key in &stored {
        let bytes = std::fs::read(nginx.root.join("www").join(key)).unwrap();
        whole(&sg, key, &bytes).await;
    }
    if quota {
        assert!(stored.contains(&"e.bin".to_string()), "{listed}");
        let resp = get(&sg.url("/o/www/e.bin")).await;
        assert_eq!(resp.headers()["x-seedgate-cache"], "hit");
    }
    let (status, ready) = readyz(&sg).await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["storage"].as_str().unwrap().contains("disk full"),
        "{ready}"
    );
    // And once space is back, it downloads again.
    std::fs::remove_file(&filler).unwrap();
    whole(&sg, "a.bin", &a).await;
    drop(sg);
    drop(disk);
}

/// With no metadata reserve at all, a metadata write on a full disk fails
/// (sled then fails every call until reopened): the request gets 507 with
/// the reason, stored objects are still served, and once space is back the
/// store is reopened in place — deletes and new jobs work, no restart.
#[tokio::test]
async fn a_metadata_store_that_hit_enospc_is_reopened_in_place() {
    let (dir, nginx) = origin();
    let disk = SmallDisk::new(dir.path(), 64);
    let data = pseudo_random(4 * MIB, 60);
    nginx.put("a.bin", &data);
    for i in 0..3 {
        nginx.put(&format!("p{i}.bin"), &pseudo_random(64 * 1024, 61 + i));
    }
    let sg = Seedgate::start_with(
        &{
            let path = dir.path().join("seedgate.toml");
            std::fs::write(
                &path,
                format!(
                    "[storage]\nmetadata_reserve = \"0 B\"\n{}",
                    http_origin_config(&nginx.base_url())
                ),
            )
            .unwrap();
            path
        },
        &disk.mount.join("data"),
    );
    whole(&sg, "a.bin", &data).await;
    wait_stored(&sg.url("/o/www/a.bin")).await;
    let filler = disk.fill("filler");
    // Metadata writes until one fails for want of space: preheat jobs are
    // recorded (and flushed) before they are acknowledged.
    let mut refused = None;
    for i in 0..200 {
        let keys: Vec<String> = (0..50)
            .map(|k| format!("job{i}-key{k}-{}", "x".repeat(200)))
            .collect();
        let (status, answer) = create_preheat(
            &sg,
            serde_json::json!({ "origin": "www", "keys": keys }),
            None,
        )
        .await;
        if status != 201 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("a metadata write failed on the full disk");
    assert_eq!(status, 507, "{answer}");
    assert!(answer.to_string().contains("No space left"), "{answer}");
    // What is stored is still served.
    whole(&sg, "a.bin", &data).await;
    // Space back: the next call that needs the store reopens it.
    std::fs::remove_file(&filler).unwrap();
    let a = task_of(&client().head(sg.url("/o/www/a.bin")).send().await.unwrap());
    let resp = client()
        .delete(sg.url(&format!("/api/v1/tasks/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (status, answer) = create_preheat(
        &sg,
        serde_json::json!({ "origin": "www", "keys": ["p0.bin", "p1.bin", "p2.bin"] }),
        None,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert!(metric(&sg, "seedgate_metadata_reopens_total").await >= 1.0);
    whole(&sg, "a.bin", &data).await;
    drop(sg);
    drop(disk);
}

/// Under a quota, an object that fits only once idle tasks go evicts them
/// first (least recently read first) and is then stored; one that cannot
/// fit even then is refused before the origin is asked for its bytes.
#[tokio::test]
async fn admission_evicts_idle_tasks_to_make_room() {
    let (dir, nginx) = origin();
    let objects: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(3 * MIB, 70 + i)).collect();
    for (i, data) in objects.iter().enumerate() {
        nginx.put(&format!("{i}.bin"), data);
    }
    let big = pseudo_random(8 * MIB, 79);
    nginx.put("big.bin", &big);
    nginx.put("huge.bin", &pseudo_random(11 * MIB, 80));
    let sg = Seedgate::start(
        dir.path(),
        &format!(
            "[storage]\nquota = \"10MiB\"\nhigh_watermark = 0.99\nlow_watermark = 0.9\n{}",
            http_origin_config(&nginx.base_url())
        ),
    );
    for (i, data) in objects.iter().enumerate() {
        whole(&sg, &format!("{i}.bin"), data).await;
        wait_stored(&sg.url(&format!("/o/www/{i}.bin"))).await;
    }
    // 9 MiB stored of 10: 8 more fit only once two idle tasks go.
    whole(&sg, "big.bin", &big).await;
    wait_stored(&sg.url("/o/www/big.bin")).await;
    let resp = client().head(sg.url("/o/www/2.bin")).send().await.unwrap();
    assert_eq!(
        resp.headers()["x-seedgate-cache"],
        "miss",
        "the older tasks went first"
    );
    let resp = get(&sg.url("/o/www/huge.bin")).await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("11.0 MiB does not fit"), "{body}");
    assert_eq!(nginx.gets("/huge.bin"), 0);
}
