//! The gateway's `Range` parser and resolver: any header, any length.
//! Property (in `seedgate::gateway::range::check`): a 206 part lies inside
//! the object and is not empty; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (text, length) = input;
    let _ = seedgate::gateway::range::check(text, length);
    // Small lengths are where the edges are.
    let _ = seedgate::gateway::range::check(text, length % 4096);
});
