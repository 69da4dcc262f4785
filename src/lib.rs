//! seedgate: a seed peer and origin gateway for P2P file distribution.
//!
//! The layers, each importing only those below it:
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | front | [`server`], [`gateway`], [`peer`], [`scheduler`], `preheat` | HTTP gateway and admin API; Dragonfly seed peer (gRPC upload, piece server, scheduler announcer); Dragonfly scheduler; preheat jobs |
//! | engine | `task` | one download per task, pieces landing on disk, readers of stored and landing objects |
//! | origins | [`origin`] | named origins: keys, plans, guarded stat and fetch (guard order at its top) |
//! | plugins | [`plugin`] | the WebAssembly host: origin and scheduling-policy components through WIT |
//! | records | `storage` | the sled store of task, piece and job records |
//! | leaves | [`config`], [`piece`], [`oci`], [`allowlist`], `resilience`, `clock`, `error`, `metrics` | rules everything may use |
//!
//! Data flows one way: gateway → task → origin → plugin, with bytes
//! landing in storage. [`Server`] wires them together. The modules shown
//! without a link are the engine's internals (`pub(crate)`); what is
//! public is what the binary, the tests, the benchmarks and the fuzz
//! targets use.

pub mod allowlist;
pub(crate) mod clock;
pub mod config;
pub(crate) mod error;
pub mod gateway;
pub(crate) mod metrics;
pub mod oci;
pub mod origin;
pub mod peer;
pub mod piece;
pub mod plugin;
pub(crate) mod preheat;
pub(crate) mod resilience;
pub mod scheduler;
pub mod server;
pub mod service;
#[cfg(feature = "bench-internals")]
pub mod storage;
#[cfg(not(feature = "bench-internals"))]
pub(crate) mod storage;
pub(crate) mod task;
pub mod telemetry;
pub(crate) mod zerocopy;

pub use server::{Server, bind_unix};
