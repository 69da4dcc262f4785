//! Piece rules, as Dragonfly computes them, so the same pieces can be served
//! to Dragonfly peers: task ids, the piece length rule (and the one check of
//! a length someone asked for), piece counts and spans, piece digests.
//! A leaf: it imports nothing from the crate.
//!
//! The task id mirrors `dragonfly-client-util`'s `IDGenerator::task_id` for
//! URL-based tasks: sha256 over the canonical URL (filtered query parameters
//! dropped and the rest sorted by key, Go's `url.QueryEscape` encoding), then
//! tag, application and piece length when given, then the task type
//! `STANDARD`.
//!
//! An OCI blob URL (`…/v2/<name>/blobs/<alg>:<hex>`) of a content-addressed
//! origin has the id Dragonfly's registry mirror gives it
//! (`enable_task_id_based_blob_digest`, `TaskIDParameter::BlobDigestBased`):
//! the digest's hex alone, whatever the registry, repository, tag or piece
//! length ([`blob_digest`]).

use sha2::{Digest, Sha256};
use url::{Position, Url, form_urlencoded};

/// Smallest piece: 4 MiB.
pub const MIN_PIECE_LENGTH: u64 = 4 * 1024 * 1024;
/// Largest piece: 64 MiB.
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;
/// Dragonfly aims at no more than this many pieces per task.
pub const MAX_PIECE_COUNT: u64 = 500;

/// What a task id is made of.
#[derive(Debug, Clone, Default)]
pub struct TaskIdParams<'a> {
    pub url: &'a str,
    pub piece_length: Option<u64>,
    pub tag: Option<&'a str>,
    pub application: Option<&'a str>,
    /// Query parameters left out of the id (signatures, expiry).
    pub filtered_query_params: &'a [String],
}

/// The digest an OCI blob URL names, as Dragonfly's `BLOB_URL_REGEX`
/// reads it: the part after the last `/blobs/` of a `…://…/v2/…` URL, up
/// to its query. Only `sha256:` with 64 lowercase hex digits is taken
/// (`(algorithm, hex)`): its hex is the task id. Dragonfly would also take
/// `sha512:` and `crc32:` digests, and any 64 characters; those make ids
/// that are not 64 hex digits, which no peer here accepts, so they stay
/// URL-based.
pub fn blob_digest(url: &str) -> Option<(&str, &str)> {
    static BLOB_URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^(.*)://(.*)/v2/(.*)/blobs/([^?]+)(?:\?.*)?$").expect("valid")
    });
    let digest = BLOB_URL.captures(url)?.get(4)?.as_str();
    let (alg, hex) = digest.split_once(':')?;
    (alg == "sha256"
        && hex.len() == 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some((alg, hex))
}

/// The Dragonfly task id of a URL-based task.
pub fn task_id(p: &TaskIdParams<'_>) -> Result<String, url::ParseError> {
    let url = canonical_url(p.url, p.filtered_query_params)?;
    Ok(hash_task(&url, p))
}

/// [`task_id`] of a URL already parsed: one without a query is its own
/// canonical form (a parsed URL's serialization parses to itself, and
/// there is nothing to filter), so a hit does not parse it again.
pub fn task_id_of_url(url: &Url, p: &TaskIdParams<'_>) -> Result<String, url::ParseError> {
    if url.query().is_none() {
        return Ok(hash_task(url.as_str(), p));
    }
    task_id(p)
}

fn hash_task(url: &str, p: &TaskIdParams<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(url.as_bytes());
    if let Some(tag) = p.tag {
        hasher.update(tag.as_bytes());
    }
    if let Some(application) = p.application {
        hasher.update(application.as_bytes());
    }
    if let Some(len) = p.piece_length {
        hasher.update(len.to_string().as_bytes());
    }
    hasher.update(b"STANDARD");
    // Through a table into a buffer: `hex::encode` builds its string one
    // char at a time, and this runs on every hit.
    let mut out = [0u8; 64];
    hex::encode_to_slice(hasher.finalize(), &mut out).expect("32 bytes are 64 hex digits");
    std::str::from_utf8(&out)
        .expect("hex digits are ASCII")
        .to_owned()
}

/// The URL as Dragonfly hashes it. Without filters the URL is taken verbatim.
pub fn canonical_url(url: &str, filtered: &[String]) -> Result<String, url::ParseError> {
    if filtered.is_empty() {
        // Still reject what is not a URL at all.
        Url::parse(url)?;
        return Ok(url.to_string());
    }
    let empty_path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['?', '#']).next())
        .is_some_and(|authority| !authority.contains('/'));
    let mut parsed = Url::parse(url)?;
    let mut pairs: Vec<(String, String)> = parsed
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|segment| !segment.contains(';'))
        .flat_map(|segment| form_urlencoded::parse(segment.as_bytes()))
        .filter(|(k, _)| !filtered.iter().any(|f| f.as_str() == k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Stable: values of one key keep their order.
    pairs.sort_by(|(a, _), (b, _)| a.cmp(b));
    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect::<Vec<_>>()
            .join("&");
        parsed.set_query(Some(&query));
    }
    if empty_path {
        return Ok(format!(
            "{}{}",
            &parsed[..Position::BeforePath],
            &parsed[Position::AfterPath..]
        ));
    }
    Ok(parsed.into())
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'-' | b'.' | b'0'..=b'9' | b'A'..=b'Z' | b'_' | b'a'..=b'z' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Dragonfly's piece length for an object: length / 500 rounded up to a
/// power of two, clamped to 4–64 MiB.
pub fn piece_length(content_length: u64) -> u64 {
    let per_piece = content_length / MAX_PIECE_COUNT;
    per_piece
        .next_power_of_two()
        .clamp(MIN_PIECE_LENGTH, MAX_PIECE_LENGTH)
}

/// The one check of a fixed piece length, whoever asks for it (the config's
/// `download.piece_length`, a preheat job, a Dragonfly `DownloadTask`): the
/// reason names the length and the bounds.
pub fn check_piece_length(len: u64) -> Result<(), String> {
    if (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&len) {
        Ok(())
    } else {
        Err(format!(
            "piece_length {len} ({}) is outside 4 MiB..=64 MiB",
            mib(len)
        ))
    }
}

fn mib(len: u64) -> String {
    if len.is_multiple_of(1024 * 1024) {
        format!("{} MiB", len / (1024 * 1024))
    } else {
        format!("{:.2} MiB", len as f64 / (1024.0 * 1024.0))
    }
}

/// Number of pieces of an object; a zero-length object has none.
pub fn piece_count(content_length: u64, piece_length: u64) -> u32 {
    content_length.div_ceil(piece_length) as u32
}

/// Offset and length of piece `number`.
pub fn piece_span(number: u32, content_length: u64, piece_length: u64) -> (u64, u64) {
    let offset = number as u64 * piece_length;
    (
        offset,
        piece_length.min(content_length.saturating_sub(offset)),
    )
}

/// A piece digest as Dragonfly writes it: `crc32:<decimal>` (CRC-32/IEEE).
pub fn crc32_digest(crc: u32) -> String {
    format!("crc32:{crc}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_a_parsed_url_is_the_id_of_its_text() {
        let filtered = ["X-Amz-Signature".to_string(), "t".to_string()];
        for text in [
            "http://example.com/a/b.bin",
            "http://example.com",
            "https://Example.COM:443/x%2Fy?b=2&a=1&t=9",
            "http://h/p?X-Amz-Signature=s",
            "http://h/p#frag",
        ] {
            let url = Url::parse(text).unwrap();
            for filtered in [&filtered[..], &[]] {
                let p = TaskIdParams {
                    url: url.as_str(),
                    piece_length: Some(4 << 20),
                    tag: Some("tag"),
                    application: None,
                    filtered_query_params: filtered,
                };
                assert_eq!(
                    task_id_of_url(&url, &p).unwrap(),
                    task_id(&p).unwrap(),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn piece_lengths_outside_the_bounds_are_refused_with_them() {
        assert!(check_piece_length(MIN_PIECE_LENGTH).is_ok());
        assert!(check_piece_length(MAX_PIECE_LENGTH).is_ok());
        let e = check_piece_length(MIN_PIECE_LENGTH - 1).unwrap_err();
        assert!(e.contains("4194303") && e.contains("4 MiB..=64 MiB"), "{e}");
        let e = check_piece_length(128 * 1024 * 1024).unwrap_err();
        assert!(e.contains("128 MiB"), "{e}");
    }

    #[test]
    fn spans_cover_the_object_once() {
        let (len, piece) = (10 * 1024 * 1024 + 5, 4 * 1024 * 1024);
        assert_eq!(piece_count(len, piece), 3);
        assert_eq!(piece_count(0, piece), 0);
        let spans: Vec<_> = (0..3).map(|n| piece_span(n, len, piece)).collect();
        assert_eq!(spans[2], (8 * 1024 * 1024, 2 * 1024 * 1024 + 5));
        assert_eq!(spans.iter().map(|s| s.1).sum::<u64>(), len);
        assert_eq!(piece_span(3, len, piece).1, 0, "past the end is empty");
        assert_eq!(piece_length(0), MIN_PIECE_LENGTH);
        assert_eq!(piece_length(500 * 64 * 1024 * 1024 * 4), MAX_PIECE_LENGTH);
        assert_eq!(piece_length(3 * 1024 * 1024 * 1024), 8 * 1024 * 1024);
    }

    /// url, piece length, tag, application, filtered params, expected id.
    type Vector = (
        &'static str,
        Option<u64>,
        Option<&'static str>,
        Option<&'static str>,
        &'static [&'static str],
        &'static str,
    );

    /// Vectors from dragonfly-client-util 1.5's own tests.
    #[test]
    fn task_ids_match_dragonfly() {
        let cases: &[Vector] = &[
            (
                "https://example.com",
                None,
                Some("foo"),
                Some("bar"),
                &[],
                "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca",
            ),
            (
                "https://example.com",
                None,
                Some("foo"),
                None,
                &[],
                "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a",
            ),
            (
                "https://example.com",
                None,
                None,
                Some("bar"),
                &[],
                "c9f9261b7305c24371244f9f149f5d4589ed601348fdf22d7f6f4b10658fdba2",
            ),
            (
                "https://example.com",
                Some(1024),
                None,
                None,
                &[],
                "9f7c9aafbc6f30f8f41a96ca77eeae80c5b60964b3034b0ee43ccf7b2f9e52b8",
            ),
            (
                "https://example.com?foo=foo&bar=bar",
                None,
                None,
                None,
                &["foo", "bar"],
                "457b4328cde278e422c9e243f7bfd1e97f511fec43a80f535cf6b0ef6b086776",
            ),
            (
                "https://example.com/file.txt?z=9&b=2&a=1",
                None,
                Some("foo"),
                Some("bar"),
                &["z"],
                "8b3f6e9b9b8fe20903bced565cfd1d0aaef354a4c17573f0c2c1979210443f9d",
            ),
            (
                "https://example.com/file.txt?b=2&a=1&b=1",
                None,
                None,
                None,
                &["c"],
                "7c8801d0596be5e8f9449d5c4af23866c72fe5205119c0e5912981f3b16a37aa",
            ),
            (
                "https://example.com/file.txt?k=a b&m=x*y&n=c~d",
                Some(1024),
                None,
                None,
                &["none"],
                "6196a6846023f6d3c1e4d30f6c86f3d4186e4c664a33e5692b0e04e49b26a9af",
            ),
            (
                "https://example.com/file.txt?a=1&b=2",
                None,
                Some("foo"),
                None,
                &["a", "b"],
                "c8f4b41117329d54af920010394f6f607bac707e933ab2f18d372e3dd4c7fcb3",
            ),
            (
                "https://example.com/file.txt?b=2&a=1",
                None,
                None,
                None,
                &[],
                "980ee327518ccc5a7c30703e1a2232e8ba9047b39431f940636c85b6146f8b9a",
            ),
        ];
        for (url, piece_length, tag, application, filters, expected) in cases {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            let id = task_id(&TaskIdParams {
                url,
                piece_length: *piece_length,
                tag: *tag,
                application: *application,
                filtered_query_params: &filters,
            })
            .unwrap();
            assert_eq!(
                &id, expected,
                "{url} {piece_length:?} {tag:?} {application:?} {filters:?}"
            );
        }
    }

    /// Vectors from dragonfly-client-util 1.5.10's
    /// `task_id_extracts_oci_digests_or_rejects_invalid_urls`.
    #[test]
    fn blob_task_ids_match_dragonfly() {
        let hex = "b2c366cce7e68013d5441c6326d5a3e1b12aeb5ed58564d0fd3fa089bc29cb6e";
        for (url, id) in [
            (format!("http://registry.example.com/v2/library/ubuntu/blobs/sha256:{hex}"), Some(hex)),
            (format!("http://localhost:5000/v2/myrepo/blobs/sha256:{hex}?ns=docker.io"), Some(hex)),
            ("https://example.com/file.txt".into(), None),
            ("http://registry.example.com/v2/library/ubuntu/blobs/sha256:abc".into(), None),
            ("http://registry.example.com/v2/library/ubuntu/blobs/md5:8a04994a666b4e4b20a2fd9e5a44f44c".into(), None),
            (format!("http://registry.example.com/v2/library/ubuntu/manifests/sha256:{hex}"), None),
            // Nested repositories and a port are part of the name, not the id.
            (format!("http://127.0.0.1:5000/v2/team/app/x/blobs/sha256:{hex}"), Some(hex)),
        ] {
            assert_eq!(blob_digest(&url).map(|(_, h)| h), id, "{url}");
        }
        // sha512 makes a 128-digit id in Dragonfly, which is not a task id
        // here: such a blob keeps its URL-based id.
        let long = "94381a28e8c039fedfa78de025158a068226c3ccd041b22c2c8e73fc993584e9b167d9ae32bc8b372c66701c808ab134e0768c8f16b9a3e61eec1ccf8faa9db8";
        assert_eq!(
            blob_digest(&format!("https://r/v2/a/b/blobs/sha512:{long}")),
            None
        );
    }

    #[test]
    fn piece_length_follows_dragonfly_rule() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(piece_length(0), 4 * MIB);
        assert_eq!(piece_length(100 * MIB), 4 * MIB);
        assert_eq!(piece_length(1024 * MIB), 4 * MIB); // 2.05 MiB -> 4 MiB
        assert_eq!(piece_length(4000 * MIB), 8 * MIB); // exactly 8 MiB
        assert_eq!(piece_length(4001 * MIB), 16 * MIB);
        assert_eq!(piece_length(100_000 * MIB), 64 * MIB);
        assert_eq!(piece_count(10 * MIB, 4 * MIB), 3);
        assert_eq!(piece_span(2, 10 * MIB, 4 * MIB), (8 * MIB, 2 * MIB));
        assert_eq!(piece_count(0, 4 * MIB), 0);
    }

    #[test]
    fn digest_is_crc32_ieee_in_decimal() {
        // CRC-32/IEEE check value of "123456789" is 0xCBF43926.
        assert_eq!(
            crc32_digest(crc32fast::hash(b"123456789")),
            "crc32:3421780262"
        );
    }
}
