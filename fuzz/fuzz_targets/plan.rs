//! What a plugin returns and what an origin answers, as the host checks
//! them: request plans (URLs, methods, headers, ranges), the choice of the
//! whole-object plan, and the origin's status, Content-Length and
//! Content-Range against the piece asked for. A lying plugin or origin is
//! refused with a reason; nothing panics; an answer that passes for a
//! ranged piece carries exactly that range.
//! The body is in `fuzz/bodies.rs`, shared with the test suite's replay.
#![no_main]

#[path = "../bodies.rs"]
#[allow(dead_code)]
mod bodies;

libfuzzer_sys::fuzz_target!(|input: bodies::PlanInput| bodies::plan(input));
