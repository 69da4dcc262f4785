//! The one wall clock: milliseconds since the Unix epoch, for what is
//! stored or shown (record times, job times, a plugin's `clock` import).
//! Deadlines and intervals use `tokio::time::Instant`, so tests can pause
//! them; this clock is only for timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
