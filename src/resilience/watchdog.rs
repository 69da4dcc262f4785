//! The task watchdog: a task that makes no progress for its timeout fails,
//! and every reader waiting on it is released with 504 at once.
//!
//! Progress is any sign of life from the origin: an answer to `stat` or
//! `plan-read`, or a byte of any piece. The per-request watchdogs (connect,
//! first byte, idle) bound one request; this one bounds the task across
//! its retries, so a hanging origin costs a client at most the timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a task last made progress.
#[derive(Debug)]
pub struct Watchdog {
    base: Instant,
    /// Milliseconds after `base` of the last progress.
    last_ms: AtomicU64,
    timeout: Duration,
}

impl Watchdog {
    pub fn new(timeout: Duration) -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            timeout,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records progress now.
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Completes once `timeout` passes without progress.
    pub async fn expired(&self) {
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + self.timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn progress_postpones_expiry() {
        let w = Watchdog::new(Duration::from_secs(2));
        let start = Instant::now();
        let expired = async {
            w.expired().await;
            start.elapsed()
        };
        let progress = async {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                w.touch();
            }
            std::future::pending::<Duration>().await
        };
        let took = tokio::select! {
            t = expired => t,
            t = progress => t,
        };
        // Last progress at 4.5 s, so expiry at 6.5 s.
        assert!(
            took >= Duration::from_millis(6500) && took < Duration::from_millis(6600),
            "{took:?}"
        );
    }
}
