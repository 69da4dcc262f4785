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

/// The middle value of a figure's rounds (the upper one of an even count).
pub fn median<T: PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("figures are comparable"));
    v.swap_remove(v.len() / 2)
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
    write_rate(dir, bytes, false)
}

/// Touches `bytes` of anonymous memory and frees it at once, so that the
/// measured step that follows writes into memory the host backs, as on
/// hardware, whatever the step before it freed and when.
///
/// Why: this VM hands free guest pages back to its host (virtio-balloon
/// free page reporting, `page_reporting_order=11`, at about 50 MiB/s
/// starting 2 s after they are freed), and the first touch of a page that
/// went back costs a host fault. Measured with `dd` of 1 GiB into page
/// cache: 3.7-5.0 GB/s right after deleting a 1 GiB file, 300 MB/s 3 s
/// later, 106-149 MB/s into memory never touched. Which side of a
/// comparison ran right after a deletion decided its figure; warmed the
/// same way before each step, both sides write into backed memory.
/// Outside the timed part; does nothing where the kernel reports no pages.
pub fn warm_memory(bytes: usize) {
    if !std::path::Path::new("/sys/module/page_reporting").exists() {
        return;
    }
    let mut v: Vec<u8> = Vec::with_capacity(bytes);
    let p = v.as_mut_ptr();
    for i in (0..bytes).step_by(4096) {
        // SAFETY: `i < bytes`, within the allocation; volatile so that the
        // stores into memory freed right after are not elided.
        unsafe { p.add(i).write_volatile(1) };
    }
    drop(v);
}

/// A `Name:   N kB` figure of a /proc text (`/proc/meminfo`,
/// `/proc/PID/status`), in KiB; 0 when absent.
fn kib_of(text: &str, field: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Writes back what earlier steps left dirty (`sync(2)`), so that the
/// measured step that follows does not share the disk with their
/// writeback; returns how many MiB were dirty.
///
/// Why: nginx writes its proxy_cache files without syncing; in the engine
/// bench the whole 1 GiB of its MISS was still dirty when seedgate's cold
/// step began, and seedgate syncs what it stores before recording it, so
/// its `fdatasync` calls could wait behind nginx's gigabyte (a direct
/// download, which stores nothing, never does). Outside the timed part,
/// before every step of a comparison alike.
pub fn settle_disk() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let dirty = (kib_of(&meminfo, "Dirty:") + kib_of(&meminfo, "Writeback:")) / 1024.0;
    rustix::fs::sync();
    dirty
}

/// A resident-set figure of a process from `/proc` (`VmHWM:` its peak,
/// `VmRSS:` now), in MiB.
pub fn rss_mib(field: &str, pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    kib_of(&status, field) / 1024.0
}

/// CPU time (user + system, seconds) used so far by process `pid`, its
/// threads and its direct children (nginx's workers).
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = |pid: &str| -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0;
        };
        // Fields after the command, which is in parentheses.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    (ticks(&pid.to_string()) + children.split_whitespace().map(ticks).sum::<u64>()) as f64 / hz
}

/// Writes `bytes` of zeros under `dir` and syncs them; returns the MiB/s.
/// A store that records bytes only once they are durable is bound by it.
pub fn synced_write_rate(dir: &std::path::Path, bytes: usize) -> f64 {
    write_rate(dir, bytes, true)
}

/// Writes `bytes` of zeros in 4 MiB calls to a file under `dir` (synced
/// once whole if `sync`), deletes it, and returns the MiB/s.
fn write_rate(dir: &std::path::Path, bytes: usize, sync: bool) -> f64 {
    use std::io::Write;
    let path = dir.join("write-rate.bin");
    let t = tokio::time::Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4 << 20];
    for _ in 0..bytes.div_ceil(chunk.len()) {
        f.write_all(&chunk).unwrap();
    }
    if sync {
        f.sync_all().unwrap();
    }
    drop(f);
    let rate = bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    rate
}
