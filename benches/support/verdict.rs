//! The verdict lines of the performance targets (issue 15's table): each
//! benchmark prints one line per figure it measures, and `scripts/bench`
//! gathers them into one table at the end.
//!
//! A line reads `VERDICT | figure | measured | target | PASS or MISS`.

/// Which way a figure must lie against its target.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    AtLeast,
    AtMost,
}

/// Prints the verdict line of `figure`: `value` against `target`, with
/// `shown` as the measured text (the ratio and what it is made of).
pub fn verdict(figure: &str, value: f64, want: Want, target: f64, shown: &str) -> bool {
    let (pass, op) = match want {
        Want::AtLeast => (value >= target, ">="),
        Want::AtMost => (value <= target, "<="),
    };
    println!(
        "VERDICT | {figure} | {shown} | {op} {target} | {}",
        if pass { "PASS" } else { "MISS" }
    );
    pass
}

/// A line for a figure that is printed beside its baseline, with no target.
pub fn printed(figure: &str, shown: &str) {
    println!("VERDICT | {figure} | {shown} | printed | -");
}

/// Writes and deletes `bytes` of zeros under `dir`; returns the write's
/// MiB/s, printed at the start of the benches that store bytes.
///
/// On a VM whose host backs guest memory lazily and takes freed pages back
/// within seconds (free page reporting; Firecracker here), writing into
/// page cache that is not backed yet runs far slower than on hardware
/// (`dd` of 1 GiB took 0.3 s one morning and 11 s the same afternoon).
/// Every figure that stores bytes is bound by it on both sides, and a
/// side that stores nothing (a direct download) is not: read those
/// figures with this rate beside them.
pub fn fresh_write_rate(dir: &std::path::Path, bytes: usize) -> f64 {
    use std::io::Write;
    let path = dir.join("warm-memory.bin");
    let t = tokio::time::Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let rate = bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    rate
}

/// A resident-set figure of a process from `/proc` (`VmHWM:` its peak,
/// `VmRSS:` now), in MiB.
pub fn rss_mib(field: &str, pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Writes `bytes` of zeros under `dir` and syncs them; returns the MiB/s.
/// A store that records bytes only once they are durable is bound by it.
pub fn synced_write_rate(dir: &std::path::Path, bytes: usize) -> f64 {
    use std::io::Write;
    let path = dir.join("synced-write.bin");
    let t = tokio::time::Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let rate = bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    rate
}
