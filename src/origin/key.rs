//! Keys: the part of an object URL below its origin's `base_url`.
//!
//! A key is checked segment by segment *after* percent-decoding, because
//! that is how the origin will read it: nginx, S3 and most servers decode
//! `%2f` to `/` and `%2e` to `.` before they resolve the path, so
//! `..%2fsecret` climbs out of the base path at the origin even though it
//! is a single harmless-looking segment here. Refused, on every entry point
//! (`/o/`, `/fetch`, preheat items and listings, the seed peer's
//! `DownloadTask`):
//! - empty segments (`a//b`, a trailing `/`);
//! - `.` and `..`, written plainly or encoded (`%2e`, `.%2E`, ...);
//! - a segment whose decoding holds `/` or `\` (an encoded separator);
//! - control characters, plain or encoded (`%00`, `%0a`);
//! - malformed escapes are kept as literal text (the origin sees `%zz`), as
//!   servers do; they cannot form a separator or a dot.
//!
//! The text is otherwise passed through unchanged, so keys that carry
//! legitimate escapes (`a%20b`) reach the origin as the client wrote them.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    EmptySegment,
    DotSegment,
    EncodedSeparator,
    Control,
}

impl KeyError {
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::Empty => "empty key",
            KeyError::EmptySegment => "empty path segment",
            KeyError::DotSegment => {
                "'.' and '..' segments (plain or percent-encoded) are not allowed"
            }
            KeyError::EncodedSeparator => {
                "a percent-encoded '/' or '\\' inside a segment is not allowed (the origin would read it as a separator)"
            }
            KeyError::Control => "control characters (plain or percent-encoded) are not allowed",
        }
    }
}

/// One segment as the origin will read it.
fn decoded(segment: &str) -> Cow<'_, str> {
    percent_decode_str(segment).decode_utf8_lossy()
}

/// Checks one path segment of a key.
pub fn check_segment(segment: &str) -> Result<(), KeyError> {
    if segment.is_empty() {
        return Err(KeyError::EmptySegment);
    }
    if segment.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    let d = decoded(segment);
    if d == "." || d == ".." {
        return Err(KeyError::DotSegment);
    }
    if d.contains(['/', '\\']) {
        return Err(KeyError::EncodedSeparator);
    }
    if d.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    Ok(())
}

/// Checks a whole key (segments separated by `/`).
pub fn check_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    key.split('/').try_for_each(check_segment)
}

/// Checks a key prefix for a listing: like a key, but it may be empty or
/// end with `/` (a "directory"), and its last segment may be partial.
pub fn check_prefix(prefix: &str) -> Result<(), KeyError> {
    let trimmed = prefix.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(());
    }
    check_key(trimmed)
}

/// The URL of `key` under `base` (a URL whose path ends in `/`): the key's
/// segments pushed as written (their escapes kept), after [`check_key`].
pub fn object_url(base: &url::Url, key: &str) -> Result<url::Url, KeyError> {
    check_key(key)?;
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().map_err(|_| KeyError::Empty)?;
        segments.pop_if_empty();
        for segment in key.split('/') {
            segments.push(segment);
        }
    }
    // Belt and braces: what the URL library made of it must still be
    // under the base path.
    if !url.path().starts_with(base.path()) {
        return Err(KeyError::DotSegment);
    }
    Ok(url)
}

/// The path `url` names as a server resolves it: percent-decoded, then
/// dot segments removed (RFC 3986 §5.2.4) — what nginx does.
pub fn served_path(path: &str) -> String {
    let decoded = percent_decode_str(path)
        .decode_utf8_lossy()
        .replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "." | "" => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// The fuzz target's property: a key that passes is served from under
/// the base path, however the origin decodes it. Panics when it is not.
pub fn check_escape(base: &url::Url, key: &str) {
    if let Ok(url) = object_url(base, key) {
        let served = served_path(url.path());
        let under = served_path(base.path());
        assert!(
            served.starts_with(&under) && served.len() > under.len(),
            "key {key:?} -> {url} is served as {served}, outside {under}"
        );
        // The task id of what it names computes.
        crate::piece::task_id(&crate::piece::TaskIdParams {
            url: url.as_str(),
            piece_length: None,
            tag: None,
            application: None,
            filtered_query_params: &[],
        })
        .expect("an object URL has a task id");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_pass() {
        for k in [
            "a",
            "a/b/c.txt",
            "a%20b",
            "layers/sha256:abc",
            "%zz",
            "...",
            "a..b",
            ".hidden",
        ] {
            assert_eq!(check_key(k), Ok(()), "{k}");
        }
    }

    #[test]
    fn escapes_out_of_the_base_are_refused() {
        use KeyError::*;
        for (k, why) in [
            ("", Empty),
            ("a//b", EmptySegment),
            ("a/", EmptySegment),
            ("..", DotSegment),
            ("x/../y", DotSegment),
            ("%2e%2e/secret", DotSegment),
            ("%2E", DotSegment),
            (".%2e", DotSegment),
            ("..%2fsecret.txt", EncodedSeparator),
            ("x/..%2f..%2fsecret.txt", EncodedSeparator),
            ("..%2Fsecret", EncodedSeparator),
            ("..%5csecret", EncodedSeparator),
            ("a%00b", Control),
            ("a%0ab", Control),
            ("a\nb", Control),
        ] {
            assert_eq!(check_key(k), Err(why), "{k}");
        }
    }

    #[test]
    fn what_passes_is_served_under_the_base() {
        let base = url::Url::parse("http://h/pub/").unwrap();
        for k in [
            "a", "a/b", "a%20b", "...", "%zz", "..%2fx", "%2e%2e", "a/../b",
        ] {
            check_escape(&base, k);
        }
        assert_eq!(served_path("/pub/..%2fsecret"), "/secret");
    }

    #[test]
    fn prefixes() {
        assert_eq!(check_prefix(""), Ok(()));
        assert_eq!(check_prefix("models/"), Ok(()));
        assert_eq!(check_prefix("models/v1"), Ok(()));
        assert!(check_prefix("../").is_err());
        assert!(check_prefix("%2e%2e/").is_err());
    }
}
