//! The vortex piece-request decoder the piece server runs on untrusted
//! bytes: a header, then the value it announces. Nothing panics, and no
//! value longer than the server's limit is ever asked for.
//! The body is in `fuzz/bodies.rs`, shared with the test suite's replay.
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::piece_request(data));
