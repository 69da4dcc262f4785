//! Retries of origin work that may pass (transient and timeout errors only):
//! exponential backoff with full jitter, a bounded number of attempts, and a
//! retry budget per origin, so retries add at most `budget_ratio` to the
//! load of an origin that keeps failing (Finagle's and linkerd's design).
//!
//! The budget counts first attempts and retries over a sliding window of
//! `BUDGET_WINDOW`; a retry is allowed while retries stay under
//! `budget_ratio` × first attempts, plus `budget_min_per_second` × the
//! window so that an origin with little traffic still gets its retries.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::RetryConfig;
use crate::error::{Error, Result};
use crate::metrics::METRICS;

/// How far back the budget looks.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Counts in the current and the previous half-window.
#[derive(Debug)]
struct Window {
    started: Instant,
    attempts: [u64; 2],
    retries: [u64; 2],
}

#[derive(Debug)]
pub struct RetryPolicy {
    /// The origin's name, for metrics.
    origin: String,
    config: RetryConfig,
    window: Mutex<Window>,
}

impl RetryPolicy {
    pub fn new(origin: &str, config: RetryConfig) -> Self {
        Self {
            origin: origin.to_string(),
            config,
            window: Mutex::new(Window {
                started: Instant::now(),
                attempts: [0; 2],
                retries: [0; 2],
            }),
        }
    }

    /// Rolls the half-windows forward to now.
    fn roll(w: &mut Window) {
        let half = BUDGET_WINDOW / 2;
        let now = Instant::now();
        while now.duration_since(w.started) >= half {
            w.attempts = [w.attempts[1], 0];
            w.retries = [w.retries[1], 0];
            w.started += half;
            if now.duration_since(w.started) >= BUDGET_WINDOW {
                w.started = now;
                w.attempts = [0; 2];
                w.retries = [0; 2];
            }
        }
    }

    fn note_attempt(&self) {
        let mut w = self.window.lock();
        Self::roll(&mut w);
        w.attempts[1] += 1;
    }

    /// Takes one retry from the budget, if there is one left.
    fn withdraw(&self) -> bool {
        let mut w = self.window.lock();
        Self::roll(&mut w);
        let attempts = (w.attempts[0] + w.attempts[1]) as f64;
        let retries = w.retries[0] + w.retries[1];
        let floor = self.config.budget_min_per_second as f64 * BUDGET_WINDOW.as_secs_f64();
        let allowed = (attempts * self.config.budget_ratio).max(floor);
        if (retries as f64) < allowed {
            w.retries[1] += 1;
            true
        } else {
            false
        }
    }

    /// Full jitter: a random wait between 0 and the capped exponential.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .config
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.config.max_delay);
        exp.mul_f64(fastrand::f64())
    }

    /// Runs `op` until it succeeds, fails with an error that a retry cannot
    /// help, runs out of attempts, or the origin's budget is spent.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.note_attempt();
        let mut attempt = 1;
        loop {
            let e: Error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !e.is_retryable() || attempt >= self.config.max_attempts {
                return Err(e);
            }
            let labels = crate::metrics::OriginLabels {
                origin: self.origin.clone(),
            };
            if !self.withdraw() {
                METRICS.retries_denied.get_or_create(&labels).inc();
                tracing::debug!(what, error = %e, "retry budget spent; not retrying");
                return Err(e);
            }
            let wait = match e.retry_after {
                Some(hint) => hint.min(self.config.max_delay),
                None => self.backoff(attempt - 1),
            };
            METRICS.retries.get_or_create(&labels).inc();
            tracing::debug!(what, attempt, ?wait, error = %e, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(max_attempts: u32, ratio: f64, min_per_sec: u32) -> RetryPolicy {
        RetryPolicy::new(
            "o",
            RetryConfig {
                max_attempts,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                budget_ratio: ratio,
                budget_min_per_second: min_per_sec,
            },
        )
    }

    async fn failing(p: &RetryPolicy, kind: ErrorKind, calls: &AtomicU32) -> Result<()> {
        p.run("op", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(Error::new(kind, "no"))
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn only_transient_and_timeout_are_retried_up_to_the_limit() {
        let p = policy(4, 1.0, 100);
        for (kind, want) in [
            (ErrorKind::Transient, 4),
            (ErrorKind::Timeout, 4),
            (ErrorKind::NotFound, 1),
            (ErrorKind::Forbidden, 1),
            (ErrorKind::Invalid, 1),
        ] {
            let calls = AtomicU32::new(0);
            assert!(failing(&p, kind, &calls).await.is_err());
            assert_eq!(calls.load(Ordering::Relaxed), want, "{kind:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_jittered_and_capped() {
        let p = policy(4, 1.0, 100);
        for retry in 0..10 {
            let cap = Duration::from_millis(100)
                .saturating_mul(1 << retry)
                .min(Duration::from_secs(2));
            for _ in 0..50 {
                assert!(p.backoff(retry) <= cap);
            }
        }
        let spread: std::collections::BTreeSet<u128> =
            (0..50).map(|_| p.backoff(3).as_micros()).collect();
        assert!(spread.len() > 40, "full jitter spreads the waits");
    }

    /// Against an origin that always fails, retries add at most the ratio.
    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_at_the_ratio() {
        let p = policy(4, 0.2, 0);
        let calls = AtomicU32::new(0);
        for _ in 0..1000 {
            let _ = failing(&p, ErrorKind::Transient, &calls).await;
        }
        let calls = calls.load(Ordering::Relaxed);
        // 20% of 1000, give or take the window's rounding.
        assert!(calls <= 1202, "1000 operations cost {calls} calls");
        assert!(calls > 1000, "some retries were allowed: {calls}");
    }
}
