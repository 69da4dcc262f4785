//! What an object read answers, from the object's metadata and the
//! request's headers alone: status, validators, `Range` (206, 416) and
//! conditional requests (304). Pure, so every rule has a unit test.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppError;
use super::range::{RangeAsk, RangeHeader};
use crate::task::ObjectInfo;

/// A `Range` header of a request, parsed before any origin work so a
/// malformed one costs nothing.
pub(super) fn range_header(headers: &HeaderMap) -> Result<Option<RangeHeader>, AppError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| AppError::bad_request("Range header is not ASCII"))?;
    RangeHeader::parse(text)
        .map(Some)
        .map_err(|why| AppError::bad_request(format!("malformed Range header '{text}': {why}")))
}

/// [`RangeHeader::resolve`], refusals as 416.
pub(super) fn resolve_range(range: &RangeHeader, length: u64) -> Result<RangeAsk, AppError> {
    range
        .resolve(length)
        .map_err(|_| AppError::unsatisfiable(range.text(), length))
}

pub(super) fn object_headers(info: &ObjectInfo<'_>) -> HeaderMap {
    // Sized for every header an answer may carry (with Content-Range and
    // Content-Length), so none of them grows the map.
    let mut h = HeaderMap::with_capacity(10);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let etag = match &info.etag {
        Some(etag) => HeaderValue::from_str(etag),
        None => HeaderValue::from_str(&format!(
            "\"{}\"",
            &info.task_id[..32.min(info.task_id.len())]
        )),
    };
    if let Ok(v) = etag {
        h.insert(header::ETAG, v);
    }
    if let Some(v) = info
        .last_modified
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    let ctype = info
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Ok(v) = HeaderValue::from_str(&info.task_id) {
        h.insert(X_SEEDGATE_TASK, v);
    }
    h.insert(
        X_SEEDGATE_CACHE,
        HeaderValue::from_static(if info.cached { "hit" } else { "miss" }),
    );
    h
}

/// Names made once, not parsed on every answer.
const X_SEEDGATE_TASK: HeaderName = HeaderName::from_static("x-seedgate-task");
const X_SEEDGATE_CACHE: HeaderName = HeaderName::from_static("x-seedgate-cache");

/// Status, headers and byte span `start..end` of the answer about `info`
/// to a request for `range`.
pub(super) fn answer(
    range: Option<&RangeHeader>,
    info: &ObjectInfo<'_>,
) -> Result<(StatusCode, HeaderMap, u64, u64), AppError> {
    answer_with(range, info.content_length, object_headers(info))
}

/// [`answer`] with the object's headers already made (`h`, from
/// [`object_headers`]) for an object of `length` bytes.
pub(super) fn answer_with(
    range: Option<&RangeHeader>,
    length: u64,
    mut h: HeaderMap,
) -> Result<(StatusCode, HeaderMap, u64, u64), AppError> {
    let ask = match range {
        Some(r) => resolve_range(r, length)?,
        None => RangeAsk::Whole,
    };
    let (status, start, end) = match ask {
        RangeAsk::Whole => (StatusCode::OK, 0, length),
        RangeAsk::Part(start, last) => {
            let range = format!("bytes {start}-{last}/{length}");
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).expect("digits are a valid header"),
            );
            (StatusCode::PARTIAL_CONTENT, start, last + 1)
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    Ok((status, h, start, end))
}

/// Whether the client's copy (`If-None-Match`, else `If-Modified-Since`)
/// is the object's current version, so the answer is 304.
pub(super) fn not_modified(headers: &HeaderMap, info: &ObjectInfo<'_>) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        let weak = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return match &info.etag {
            Some(etag) => inm
                .split(',')
                .any(|t| t.trim() == "*" || weak(t) == weak(etag)),
            None => false,
        };
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = info
        .last_modified
        .as_deref()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

pub(super) fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

/// 304 with the object's validators.
pub(super) fn not_modified_answer(info: &ObjectInfo<'_>) -> Response {
    let mut h = HeaderMap::new();
    for (k, v) in object_headers(info).iter() {
        if k == header::ETAG || k == header::LAST_MODIFIED || k.as_str().starts_with("x-seedgate") {
            h.insert(k.clone(), v.clone());
        }
    }
    (StatusCode::NOT_MODIFIED, h).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(etag: Option<&'a str>, last_modified: Option<&'a str>) -> ObjectInfo<'a> {
        ObjectInfo {
            task_id: "0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            content_length: 100,
            etag: etag.map(Into::into),
            last_modified: last_modified.map(Into::into),
            content_type: None,
            cached: true,
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    fn ranged(text: &str) -> Option<RangeHeader> {
        range_header(&headers(&[(header::RANGE, text)])).unwrap()
    }

    #[test]
    fn a_whole_answer_has_the_length_and_validators() {
        let i = info(Some("\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        let (status, h, start, end) = answer(None, &i).unwrap();
        assert_eq!((status, start, end), (StatusCode::OK, 0, 100));
        assert_eq!(h[header::CONTENT_LENGTH], "100");
        assert_eq!(h[header::ETAG], "\"v1\"");
        assert_eq!(h[header::LAST_MODIFIED], "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(h[header::ACCEPT_RANGES], "bytes");
        assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h["x-seedgate-cache"], "hit");
        assert!(h.get(header::CONTENT_RANGE).is_none());
    }

    #[test]
    fn an_object_without_an_etag_gets_one_from_its_task_id() {
        let (_, h, _, _) = answer(None, &info(None, None)).unwrap();
        assert_eq!(h[header::ETAG], "\"0123456789abcdef0123456789abcdef\"");
    }

    #[test]
    fn ranges_answer_206_with_content_range_or_416() {
        let i = info(None, None);
        for (text, span, content_range) in [
            ("bytes=0-9", (0, 10), "bytes 0-9/100"),
            ("bytes=90-", (90, 100), "bytes 90-99/100"),
            ("bytes=-5", (95, 100), "bytes 95-99/100"),
            ("bytes=50-1000", (50, 100), "bytes 50-99/100"),
        ] {
            let (status, h, start, end) = answer(ranged(text).as_ref(), &i).unwrap();
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{text}");
            assert_eq!((start, end), span, "{text}");
            assert_eq!(h[header::CONTENT_RANGE], content_range, "{text}");
            assert_eq!(
                h[header::CONTENT_LENGTH],
                (span.1 - span.0).to_string().as_str()
            );
        }
        let past = answer(ranged("bytes=100-").as_ref(), &i).unwrap_err();
        assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(past.message.contains("100"), "{}", past.message);
    }

    #[test]
    fn a_malformed_range_is_a_400_naming_it() {
        for text in ["bytes=", "items=0-1", "bytes=a-b"] {
            let e = range_header(&headers(&[(header::RANGE, text)])).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{text}");
            assert!(e.message.contains(text), "{text}: {}", e.message);
        }
        assert!(range_header(&HeaderMap::new()).unwrap().is_none());
        // Well-formed but backwards: nothing of the object is selected.
        let backwards = answer(ranged("bytes=5-2").as_ref(), &info(None, None)).unwrap_err();
        assert_eq!(backwards.status, StatusCode::RANGE_NOT_SATISFIABLE);
        // Several ranges are allowed an answer of the whole object.
        let (status, _, start, end) =
            answer(ranged("bytes=0-1,5-9").as_ref(), &info(None, None)).unwrap();
        assert_eq!((status, start, end), (StatusCode::OK, 0, 100));
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins_over_if_modified_since() {
        let i = info(Some("\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        let inm = |v: &str| headers(&[(header::IF_NONE_MATCH, v)]);
        assert!(not_modified(&inm("\"v1\""), &i));
        assert!(not_modified(&inm("W/\"v1\""), &i));
        assert!(not_modified(&inm("\"x\", \"v1\""), &i));
        assert!(not_modified(&inm("*"), &i));
        assert!(!not_modified(&inm("\"v2\""), &i));
        // If-None-Match present: If-Modified-Since is not looked at.
        let both = headers(&[
            (header::IF_NONE_MATCH, "\"v2\""),
            (header::IF_MODIFIED_SINCE, "Thu, 22 Oct 2015 07:28:00 GMT"),
        ]);
        assert!(!not_modified(&both, &i));
        // No ETag of its own: never matches.
        assert!(!not_modified(&inm("\"v1\""), &info(None, None)));
    }

    #[test]
    fn if_modified_since_is_not_modified_when_not_newer() {
        let i = info(None, Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        let ims = |v: &str| headers(&[(header::IF_MODIFIED_SINCE, v)]);
        assert!(not_modified(&ims("Wed, 21 Oct 2015 07:28:00 GMT"), &i));
        assert!(not_modified(&ims("Thu, 22 Oct 2015 07:28:00 GMT"), &i));
        assert!(!not_modified(&ims("Tue, 20 Oct 2015 07:28:00 GMT"), &i));
        assert!(!not_modified(&ims("not a date"), &i));
        assert!(!not_modified(
            &ims("Wed, 21 Oct 2015 07:28:00 GMT"),
            &info(None, None)
        ));
        assert!(is_conditional(&ims("x")));
        assert!(!is_conditional(&HeaderMap::new()));
    }

    #[test]
    fn a_304_keeps_only_the_validators() {
        let resp = not_modified_answer(&info(Some("\"v1\""), None));
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let h = resp.headers();
        assert_eq!(h[header::ETAG], "\"v1\"");
        assert!(h.contains_key("x-seedgate-task"));
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(h.get(header::CONTENT_TYPE).is_none());
    }
}
