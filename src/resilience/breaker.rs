//! Circuit breakers per origin authority (`host:port`): stop calling what
//! is broken, and let one probe find out when it is back.
//!
//! Closed: calls pass; the breaker opens after `consecutive_failures`
//! failures in a row, or when at least `min_requests` calls in the last
//! `window` failed at `failure_rate` or more. Open: calls fail at once with
//! 503 and Retry-After, for an interval that starts at `open_base` and
//! doubles (with jitter) each time a probe fails, up to `open_max`.
//! Half-open: one probe passes; its success closes the breaker, its failure
//! opens it again. Only transient and timeout outcomes are failures: a 404
//! or a 403 is the origin working. Transitions are logged once each.
//!
//! A plugin has a breaker of its own, which counts only its traps and
//! deadline kills: a plugin that keeps crashing stops being called (and
//! stops burning CPU) while every other plugin goes on.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{BreakerLabels, METRICS, TransitionLabels};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    state: State,
    consecutive: u32,
    /// (when, failed) of recent calls, oldest first.
    recent: VecDeque<(Instant, bool)>,
    open_until: Instant,
    /// Open intervals in a row without a successful probe.
    level: u32,
    probing: bool,
    opens: u64,
}

/// What a set of breakers guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The authorities an origin reaches; transient and timeout outcomes
    /// are failures.
    Origin(String),
    /// One plugin (whatever origin calls it); its traps and deadline kills
    /// are failures.
    Plugin(String),
}

impl Scope {
    fn failed(&self, e: &Error) -> bool {
        match self {
            Scope::Origin(_) => e.kind.is_retryable(),
            Scope::Plugin(_) => {
                matches!(e.kind, ErrorKind::PluginFailed | ErrorKind::PluginTimeout)
            }
        }
    }
}

/// A breaker as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    pub state: State,
    pub consecutive_failures: u32,
    pub opens: u64,
    pub retry_in_ms: u64,
}

type Table = Arc<Mutex<HashMap<String, Breaker>>>;

/// The breakers of one scope: an origin's by authority, or a plugin's one.
#[derive(Debug)]
pub struct Breakers {
    scope: Scope,
    config: BreakerConfig,
    by_authority: Table,
}

/// Permission to make one call; report its outcome with [`Breakers::record`].
/// A ticket dropped unreported (its call was cancelled) frees the probe it
/// held, so a cancelled probe cannot leave a breaker half-open for good.
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    authority: String,
    probe: bool,
    table: Option<Table>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.probe
            && let Some(table) = self.table.take()
            && let Some(b) = table.lock().get_mut(&self.authority)
        {
            b.probing = false;
        }
    }
}

impl Breakers {
    pub fn new(origin: &str, config: BreakerConfig) -> Self {
        Self::scoped(Scope::Origin(origin.to_string()), config)
    }

    pub fn scoped(scope: Scope, config: BreakerConfig) -> Self {
        Self {
            scope,
            config,
            by_authority: Table::default(),
        }
    }

    /// The open-breaker error for `key`, to be retried in `left`.
    fn open_error(&self, key: &str, left: Duration) -> Error {
        let message = match &self.scope {
            Scope::Origin(origin) => format!(
                "origin '{origin}': circuit to {key} is open after repeated failures; next try in {} ms",
                left.as_millis()
            ),
            Scope::Plugin(plugin) => format!(
                "plugin '{plugin}' is not called: its circuit is open after repeated traps or deadline kills; next try in {} ms",
                left.as_millis()
            ),
        };
        let mut e = Error::new(ErrorKind::CircuitOpen, message);
        e.retry_after = Some(left);
        e
    }

    fn scope_kind(&self) -> &'static str {
        match &self.scope {
            Scope::Origin(_) => "origin",
            Scope::Plugin(_) => "plugin",
        }
    }

    /// Counts a transition of `key`'s breaker to `to`.
    fn moved(&self, key: &str, to: State) {
        let to = match to {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        };
        METRICS
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                scope: self.scope_kind().into(),
                name: self.scope_name().into(),
                key: key.into(),
                to: to.into(),
            })
            .inc();
    }

    /// Sets the `seedgate_breaker_state` gauges of these breakers.
    pub fn export_states(&self) {
        for (key, b) in self.by_authority.lock().iter() {
            let value = match b.state {
                State::Closed => 0,
                State::Open => 1,
                State::HalfOpen => 2,
            };
            METRICS
                .breaker_state
                .get_or_create(&BreakerLabels {
                    scope: self.scope_kind().into(),
                    name: self.scope_name().into(),
                    key: key.clone(),
                })
                .set(value);
        }
    }

    fn scope_name(&self) -> &str {
        match &self.scope {
            Scope::Origin(n) | Scope::Plugin(n) => n,
        }
    }

    fn enabled(&self) -> bool {
        self.config.consecutive_failures > 0
    }

    /// A ticket for a call to `authority`, or the error of an open breaker.
    pub fn admit(&self, authority: &str) -> Result<Ticket> {
        let ticket = Ticket {
            authority: authority.to_string(),
            probe: false,
            table: Some(self.by_authority.clone()),
        };
        if !self.enabled() {
            return Ok(ticket);
        }
        let now = Instant::now();
        let mut all = self.by_authority.lock();
        let b = all.entry(authority.to_string()).or_insert_with(|| Breaker {
            state: State::Closed,
            consecutive: 0,
            recent: VecDeque::new(),
            open_until: now,
            level: 0,
            probing: false,
            opens: 0,
        });
        match b.state {
            State::Closed => Ok(ticket),
            State::Open if now >= b.open_until => {
                b.state = State::HalfOpen;
                b.probing = true;
                tracing::info!(scope = self.scope_kind(), name = %self.scope_name(), key = authority, "circuit half-open: sending one probe");
                self.moved(authority, State::HalfOpen);
                let mut ticket = ticket;
                ticket.probe = true;
                Ok(ticket)
            }
            State::HalfOpen if !b.probing => {
                b.probing = true;
                let mut ticket = ticket;
                ticket.probe = true;
                Ok(ticket)
            }
            _ => {
                let left = b
                    .open_until
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1));
                METRICS.refused(self.scope_kind(), self.scope_name(), "breaker");
                Err(self.open_error(authority, left))
            }
        }
    }

    /// Reports how the call behind `ticket` went.
    pub fn record<T>(&self, mut ticket: Ticket, outcome: &Result<T>) {
        ticket.table = None;
        if !self.enabled() {
            return;
        }
        let failed = matches!(outcome, Err(e) if self.scope.failed(e));
        let now = Instant::now();
        let c = &self.config;
        let mut all = self.by_authority.lock();
        let Some(b) = all.get_mut(&ticket.authority) else {
            return;
        };
        if ticket.probe {
            b.probing = false;
        }
        b.recent.push_back((now, failed));
        while b
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > c.window)
        {
            b.recent.pop_front();
        }
        if !failed {
            b.consecutive = 0;
            if b.state != State::Closed && ticket.probe {
                b.state = State::Closed;
                b.level = 0;
                b.recent.clear();
                tracing::info!(scope = self.scope_kind(), name = %self.scope_name(), key = %ticket.authority, "circuit closed: the probe succeeded");
                self.moved(&ticket.authority, State::Closed);
            }
            return;
        }
        b.consecutive += 1;
        let failures = b.recent.iter().filter(|(_, f)| *f).count();
        let rate_trips = b.recent.len() >= c.min_requests as usize
            && failures as f64 >= c.failure_rate * b.recent.len() as f64;
        let trips = match b.state {
            State::Closed => b.consecutive >= c.consecutive_failures || rate_trips,
            State::HalfOpen => ticket.probe,
            State::Open => false,
        };
        if trips {
            let interval = c
                .open_base
                .saturating_mul(1u32 << b.level.min(16))
                .min(c.open_max);
            // Up to 20% of jitter so breakers of many peers do not probe in step.
            let interval = interval.mul_f64(1.0 + 0.2 * fastrand::f64());
            b.level += 1;
            b.state = State::Open;
            b.open_until = now + interval;
            b.opens += 1;
            tracing::warn!(
                scope = self.scope_kind(), name = %self.scope_name(),
                key = %ticket.authority,
                consecutive_failures = b.consecutive,
                open_for_ms = interval.as_millis() as u64,
                "circuit opened"
            );
            self.moved(&ticket.authority, State::Open);
        }
    }

    pub fn list(&self) -> Vec<BreakerView> {
        let now = Instant::now();
        self.by_authority
            .lock()
            .iter()
            .map(|(a, b)| BreakerView {
                origin: match &self.scope {
                    Scope::Origin(o) => Some(o.clone()),
                    Scope::Plugin(_) => None,
                },
                authority: matches!(self.scope, Scope::Origin(_)).then(|| a.clone()),
                plugin: match &self.scope {
                    Scope::Plugin(p) => Some(p.clone()),
                    Scope::Origin(_) => None,
                },
                state: b.state,
                consecutive_failures: b.consecutive,
                opens: b.opens,
                retry_in_ms: match b.state {
                    State::Open => b.open_until.saturating_duration_since(now).as_millis() as u64,
                    _ => 0,
                },
            })
            .collect()
    }
}

/// `host:port` of a URL, the key of its breaker.
pub fn authority(url: &url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or(""),
        url.port_or_known_default().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(
            "o",
            BreakerConfig {
                consecutive_failures: 3,
                failure_rate: 0.5,
                min_requests: 10,
                window: Duration::from_secs(10),
                open_base: Duration::from_secs(1),
                open_max: Duration::from_secs(8),
            },
        )
    }

    fn fail() -> Result<()> {
        Err(Error::new(ErrorKind::Transient, "reset"))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_probes_once_and_closes() {
        let b = breakers();
        for _ in 0..3 {
            let t = b.admit("h:1").unwrap();
            b.record(t, &fail());
        }
        let e = b.admit("h:1").unwrap_err();
        assert_eq!(e.kind, ErrorKind::CircuitOpen);
        assert!(e.retry_after.unwrap() <= Duration::from_millis(1200));
        assert!(b.admit("other:1").is_ok(), "per authority");
        tokio::time::advance(Duration::from_millis(1201)).await;
        let probe = b.admit("h:1").unwrap();
        assert!(b.admit("h:1").is_err(), "one probe at a time");
        b.record(probe, &fail());
        // Failed probe: open again, for twice as long.
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(b.admit("h:1").is_err());
        tokio::time::advance(Duration::from_millis(1200)).await;
        let probe = b.admit("h:1").unwrap();
        b.record(probe, &Ok(()));
        assert_eq!(b.list()[0].state, State::Closed);
        assert!(b.admit("h:1").is_ok());
        // A 404 is the origin working, not a failure.
        for _ in 0..5 {
            let t = b.admit("h:1").unwrap();
            b.record::<()>(t, &Err(Error::new(ErrorKind::NotFound, "gone")));
        }
        assert!(b.admit("h:1").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_rate_over_the_minimum_window_opens() {
        let b = breakers();
        // 11 calls in the window, 6 failed (the last one among them).
        for i in 0..11 {
            let t = b.admit("h:1").unwrap();
            if i % 2 == 0 {
                b.record(t, &fail());
            } else {
                b.record(t, &Ok(()));
            }
        }
        assert_eq!(b.admit("h:1").unwrap_err().kind, ErrorKind::CircuitOpen);
    }
}
