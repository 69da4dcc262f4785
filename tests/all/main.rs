//! seedgate's integration tests: one binary (it links once), a module per
//! behaviour, every test against real servers on loopback.

mod dfdaemon;
mod fault_proxy;
mod giftless;
mod registry;
mod s3_server;
mod support;
mod test_scheduler;

mod breaker;
mod builtin_scheduler;
mod bulkheads;
mod cli;
mod config_check;
mod dragonfly;
mod dragonfly_oapi;
mod engine;
mod error_bodies;
mod faults;
mod full_disk;
mod fuzz_corpus;
mod gateway_api;
mod gateway_http_origin;
mod hostile_origins;
mod negative_cache;
mod oci;
mod openapi;
mod operations;
mod origin_example;
mod origin_http;
mod origin_lfs;
mod origin_s3;
mod packaging;
mod plugin_check;
mod plugin_host;
mod plugin_sandbox;
mod preheat;
mod retries;
mod scheduler_policy;
mod seed_conformance;
mod seed_fidelity;
mod soak;
mod status_page;
mod unix_socket;
mod watchdog;
