//! The negative cache: objects an origin said do not exist, remembered for
//! a while so that clients asking again (and again) get their 404 at once
//! and the origin is not asked.
//!
//! Keyed by task id (the object's identity). An entry lives for
//! `negative_cache.ttl`, or for the origin's Retry-After when it gave one
//! (capped by `max_ttl`). The cache is bounded: when full, expired entries go
//! first, then the ones closest to expiring. Entries are listed and purged
//! through the API. Time is tokio's, so tests can pause it.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::NegativeCacheConfig;
use crate::error::{Error, ErrorKind};

#[derive(Debug, Clone)]
struct Entry {
    origin: String,
    url: String,
    reason: String,
    upstream_status: Option<u16>,
    expires: Instant,
    hits: u64,
}

/// An entry as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct NegativeEntry {
    pub task_id: String,
    pub origin: String,
    pub url: String,
    pub reason: String,
    pub expires_in_ms: u64,
    pub hits: u64,
}

#[derive(Debug)]
pub struct NegativeCache {
    config: NegativeCacheConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

impl NegativeCache {
    pub fn new(config: NegativeCacheConfig) -> Self {
        Self {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.config.ttl.is_zero() && self.config.max_entries > 0
    }

    /// The remembered not-found answer for `id`, if it has not expired.
    pub fn get(&self, id: &str) -> Option<Error> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        let e = entries.get_mut(id)?;
        if e.expires <= now {
            entries.remove(id);
            return None;
        }
        e.hits += 1;
        crate::metrics::METRICS.negative_hits.inc();
        let left = e.expires - now;
        Some(Error {
            kind: ErrorKind::NotFound,
            blame: crate::error::Blame::Origin,
            message: format!(
                "{} (remembered; asked again in {}s)",
                e.reason,
                left.as_secs_f64().ceil() as u64
            ),
            upstream_status: e.upstream_status,
            retry_after: Some(left),
            final_attempt: false,
        })
    }

    /// Remembers `error` for `id` when it says the object does not exist.
    pub fn record(&self, id: &str, origin: &str, url: &str, error: &Error) {
        if error.kind != ErrorKind::NotFound || !self.enabled() {
            return;
        }
        let ttl = error
            .retry_after
            .unwrap_or(self.config.ttl)
            .min(self.config.max_ttl)
            .max(Duration::from_millis(1));
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= self.config.max_entries && !entries.contains_key(id) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.config.max_entries
                && let Some(soonest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            id.to_string(),
            Entry {
                origin: origin.to_string(),
                url: url.to_string(),
                reason: error.message.clone(),
                upstream_status: error.upstream_status,
                expires: now + ttl,
                hits: 0,
            },
        );
    }

    /// Live entries, soonest to expire first.
    pub fn list(&self) -> Vec<NegativeEntry> {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        entries.retain(|_, e| e.expires > now);
        let mut v: Vec<NegativeEntry> = entries
            .iter()
            .map(|(id, e)| NegativeEntry {
                task_id: id.clone(),
                origin: e.origin.clone(),
                url: e.url.clone(),
                reason: e.reason.clone(),
                expires_in_ms: (e.expires - now).as_millis() as u64,
                hits: e.hits,
            })
            .collect();
        v.sort_by_key(|e| e.expires_in_ms);
        v
    }

    /// Forgets `id`; whether it was there.
    pub fn purge(&self, id: &str) -> bool {
        self.entries.lock().remove(id).is_some()
    }

    /// Forgets everything; how many entries there were.
    pub fn purge_all(&self) -> usize {
        let mut entries = self.entries.lock();
        let n = entries.len();
        entries.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, max: usize) -> NegativeCache {
        NegativeCache::new(NegativeCacheConfig {
            ttl: Duration::from_millis(ttl_ms),
            max_ttl: Duration::from_secs(60),
            max_entries: max,
        })
    }

    fn missing() -> Error {
        Error::new(ErrorKind::NotFound, "origin 'o': gone")
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl_or_retry_after() {
        let c = cache(1000, 10);
        c.record("a", "o", "u", &missing());
        let mut hinted = missing();
        hinted.retry_after = Some(Duration::from_secs(5));
        c.record("b", "o", "u", &hinted);
        c.record("c", "o", "u", &Error::new(ErrorKind::Transient, "5xx"));
        assert!(c.get("a").is_some() && c.get("b").is_some() && c.get("c").is_none());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(c.get("a").is_none(), "ttl passed");
        assert!(c.get("b").is_some(), "the origin's Retry-After wins");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(c.get("b").is_none());
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_what_expires_soonest() {
        let c = cache(1000, 3);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            c.record(id, "o", "u", &missing());
            tokio::time::advance(Duration::from_millis(10 * (i as u64 + 1))).await;
        }
        c.record("d", "o", "u", &missing());
        assert_eq!(c.len(), 3);
        assert!(c.get("a").is_none(), "the oldest went");
        assert!(c.get("d").is_some());
        assert_eq!(c.purge_all(), 3);
    }
}
