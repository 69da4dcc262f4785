//! Key and full-URL normalisation: a key that passes the checks is served
//! from under the base path however the origin decodes it, and has a task
//! id (`seedgate::origin::key::check_escape`). Full URLs go through the
//! same check on the part below the base.
//! The body is in `fuzz/bodies.rs`, shared with the test suite's replay.
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| bodies::key(input));
