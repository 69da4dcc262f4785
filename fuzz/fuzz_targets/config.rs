//! The config loader: any TOML text parses to a config or to problems
//! that each name a key path; validating a parsed config never panics.
//! The body is in `fuzz/bodies.rs`, shared with the test suite's replay.
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|input: &str| bodies::config(input));
