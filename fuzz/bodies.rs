//! The fuzz targets' bodies, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`, run by `scripts/fuzz`) and by the host test
//! suite (`tests/all/fuzz_corpus.rs`), which replays every committed corpus
//! input through the same body, decoded the same way (`arbitrary`'s
//! `arbitrary_take_rest`, as `fuzz_target!` does).
//!
//! Each body asserts its property; a panic is a finding.

use arbitrary::{Arbitrary, Unstructured};
use seedgate::allowlist::AllowList;
use seedgate::origin::{Expect, check_answer, validate_plan};
use seedgate::peer::piece_server::{Request, request, request_header};
use seedgate::plugin::bindings::seedgate::plugin::types as wit;
use url::Url;
use vortex_protocol::HEADER_SIZE;

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: [&str; 5] = ["range", "key", "piece_request", "config", "plan"];

/// Decodes `data` as target `name`'s input and runs its body.
pub fn run(name: &str, data: &[u8]) {
    fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
        T::arbitrary_take_rest(Unstructured::new(data)).ok()
    }
    match name {
        "range" => decode(data).map(range),
        "key" => decode(data).map(key),
        "piece_request" => {
            piece_request(data);
            None
        }
        "config" => decode(data).map(config),
        "plan" => decode(data).map(plan),
        other => panic!("no fuzz target '{other}'"),
    };
}

/// The gateway's `Range` parser and resolver: any header, any length.
/// Property (in `seedgate::gateway::range::check`): a 206 part lies inside
/// the object and is not empty; nothing panics.
pub fn range((text, length): (&str, u64)) {
    let _ = seedgate::gateway::range::check(text, length);
    // Small lengths are where the edges are.
    let _ = seedgate::gateway::range::check(text, length % 4096);
}

/// Key and full-URL normalisation: a key that passes the checks is served
/// from under the base path however the origin decodes it, and has a task
/// id (`seedgate::origin::key::check_escape`). Full URLs go through the
/// same check on the part below the base.
pub fn key((key, prefix): (&str, &str)) {
    for base in [
        "http://origin.example/pub/",
        "http://origin.example/",
        "http://10.0.0.1:8000/a/b/",
    ] {
        let base = Url::parse(base).unwrap();
        seedgate::origin::key::check_escape(&base, key);
        // A full URL under the base: the key is what follows it.
        if let Ok(url) = Url::parse(&format!("{base}{key}"))
            && let Some(rest) = url.as_str().strip_prefix(base.as_str())
        {
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            seedgate::origin::key::check_escape(&base, rest);
        }
    }
    let _ = seedgate::origin::key::check_prefix(prefix);
}

/// The vortex piece-request decoder the piece server runs on untrusted
/// bytes: a header, then the value it announces. Nothing panics, and no
/// value longer than the server's limit is ever asked for.
pub fn piece_request(data: &[u8]) {
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
}

/// The config loader: any TOML text parses to a config or to problems
/// that each name a key path; validating a parsed config never panics.
pub fn config(text: &str) {
    let path = std::path::Path::new("fuzz.toml");
    match seedgate::config::Config::parse(text, path) {
        Ok(config) => {
            let _ = config.validate();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[derive(Debug, Arbitrary)]
pub struct Plan {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    host_may_set_range: bool,
    range: Option<(u64, u64)>,
    expires_at_ms: Option<u64>,
}

#[derive(Debug, Arbitrary)]
pub struct PlanInput {
    plans: Vec<Plan>,
    content_length: u64,
    piece_length_log2: u8,
    piece: u32,
    status: u16,
    answer_length: Option<u64>,
    content_range: Option<String>,
    lie: bool,
}

/// What a plugin returns and what an origin answers, as the host checks
/// them: request plans (URLs, methods, headers, ranges), the choice of the
/// whole-object plan, and the origin's status, Content-Length and
/// Content-Range against the piece asked for. A lying plugin or origin is
/// refused with a reason; nothing panics; an answer that passes for a
/// ranged piece carries exactly that range.
pub fn plan(input: PlanInput) {
    let base = Url::parse("http://origin.example:8000/pub/").unwrap();
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
    let _ = seedgate::origin::whole_object_plan(&plans, "fuzz", length);
    let piece_length = 1u64 << (22 + input.piece_length_log2 % 5);
    let count = seedgate::piece::piece_count(length, piece_length);
    if count == 0 {
        return;
    }
    let n = input.piece % count;
    let (offset, len) = seedgate::piece::piece_span(n, length, piece_length);
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
}
