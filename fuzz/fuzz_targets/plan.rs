//! What a plugin returns and what an origin answers, as the host checks
//! them: request plans (URLs, methods, headers, ranges), the choice of the
//! whole-object plan, and the origin's status, Content-Length and
//! Content-Range against the piece asked for. A lying plugin or origin is
//! refused with a reason; nothing panics; an answer that passes for a
//! ranged piece carries exactly that range.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use seedgate::origin::policy::AllowList;
use seedgate::origin::{Expect, check_answer, validate_plan};
use seedgate::plugin::bindings::seedgate::plugin::types as wit;

#[derive(Debug, Arbitrary)]
struct Plan {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    host_may_set_range: bool,
    range: Option<(u64, u64)>,
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    plans: Vec<Plan>,
    content_length: u64,
    piece_length_log2: u8,
    piece: u32,
    status: u16,
    answer_length: Option<u64>,
    content_range: Option<String>,
    lie: bool,
}

fuzz_target!(|input: Input| {
    let base = url::Url::parse("http://origin.example:8000/pub/").unwrap();
    let allow = AllowList::new(&base, &["10.0.0.0/8".into(), "*.cdn.example".into()]).unwrap();
    let plans: Vec<wit::RequestPlan> = input
        .plans
        .iter()
        .take(8)
        .map(|p| wit::RequestPlan {
            method: p.method.clone(),
            url: p.url.clone(),
            headers: p
                .headers
                .iter()
                .map(|(n, v)| wit::Header {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            host_may_set_range: p.host_may_set_range,
            range: p
                .range
                .map(|(start, length)| wit::ByteRange { start, length }),
            expires_at_ms: p.expires_at_ms,
            if_match: None,
        })
        .collect();
    for plan in &plans {
        if let Ok((url, _)) = validate_plan(&allow, "fuzz", "o", plan) {
            assert!(allow.check_url(&url).is_ok());
        }
    }
    let length = input.content_length % (1 << 40);
    let _ = seedgate::task::whole_object_plan(&plans, "fuzz", length);
    let piece_length = 1u64 << (22 + input.piece_length_log2 % 5);
    let count = seedgate::task::piece_count(length, piece_length);
    if count == 0 {
        return;
    }
    let n = input.piece % count;
    let (offset, len) = seedgate::task::piece_span(n, length, piece_length);
    let expect = Expect {
        offset,
        length: len,
        total: length,
    };
    let truthful = format!("bytes {}-{}/{}", offset, offset + len.max(1) - 1, length);
    let range = if input.lie {
        input.content_range.clone()
    } else {
        Some(truthful.clone())
    };
    for ranged in [false, true] {
        let r = check_answer(
            "o",
            &base,
            input.status,
            input.answer_length,
            range.as_deref(),
            expect,
            ranged,
        );
        if let Err(e) = &r {
            assert!(!e.message.is_empty());
        } else if ranged && input.status == 206 {
            assert_eq!(range.as_deref(), Some(truthful.as_str()));
            assert!(input.answer_length.is_none_or(|l| l == len));
        }
    }
});
