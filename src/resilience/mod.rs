//! The guards around everything that can fail slowly or often: origins and
//! plugins. Each is a small state machine with its own tests; none knows
//! what it guards.
//!
//! - [`breaker`]: circuit breakers per origin authority or plugin scope
//!   (consecutive failures or a failure rate open one; probes close it).
//! - [`retry`]: jittered retries of what may pass, within a budget.
//! - [`watchdog`]: progress deadlines for a download that stops moving.
//! - [`negative`]: "not found" remembered for a while, so a storm of asks
//!   for a missing object costs the origin one request.
//!
//! A leaf below `origin`, `plugin` and `task`: it imports only `config`,
//! `error` and `metrics`.

pub mod breaker;
pub mod negative;
pub mod retry;
pub mod watchdog;
