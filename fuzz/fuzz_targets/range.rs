//! The gateway's `Range` parser and resolver: any header, any length.
//! Property (in `seedgate::gateway::range::check`): a 206 part lies inside
//! the object and is not empty; nothing panics.
//! The body is in `fuzz/bodies.rs`, shared with the test suite's replay.
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|input: (&str, u64)| bodies::range(input));
