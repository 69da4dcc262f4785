//! The vortex piece-request decoder the piece server runs on untrusted
//! bytes: a header, then the value it announces. Nothing panics, and no
//! value longer than the server's limit is ever asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seedgate::peer::piece_server::{Request, request, request_header};
use vortex_protocol::HEADER_SIZE;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // A connection carries requests in turn.
    while rest.len() >= HEADER_SIZE {
        let head: [u8; HEADER_SIZE] = rest[..HEADER_SIZE].try_into().unwrap();
        rest = &rest[HEADER_SIZE..];
        let (tag, len) = match request_header(&head) {
            Ok(h) => h,
            Err(_) => return,
        };
        assert!(len <= 1024, "a {len}-byte value would be read");
        let value = &rest[..len.min(rest.len())];
        rest = &rest[value.len()..];
        match request(tag, value) {
            Request::Piece(p) => {
                assert_eq!(p.task_id.len(), 64);
                assert!(p.task_id.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            Request::Close => return,
            Request::Refuse(_, why) => assert!(!why.is_empty()),
        }
    }
});
