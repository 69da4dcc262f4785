//! `Range` requests (RFC 9110 §14): one range is answered with 206, several
//! with the whole object (allowed by §14.2), a range past the end with 416.
//! Pure and small, so the fuzzer (`fuzz/`, target `range`) drives it with
//! arbitrary headers and lengths.

use http_range_header::{ParsedRanges, StartPosition, SyntacticallyCorrectRange};

/// What a `Range` header asks for, once checked against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range, or one the server chooses to ignore (several ranges).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
}

/// The range selects no byte of the object (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A `Range` header that parsed.
#[derive(Debug, Clone)]
pub struct RangeHeader {
    text: String,
    parsed: ParsedRanges,
}

impl RangeHeader {
    /// Parses a header value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = http_range_header::parse_range_header(text).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.to_string(),
            parsed,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first byte asked for, when known before the length (`a-b`, `a-`),
    /// so a cold download fetches that piece first.
    pub fn first_byte(&self) -> u64 {
        match self.parsed.ranges.first().map(|r| r.start) {
            Some(StartPosition::Index(n)) => n,
            _ => 0,
        }
    }

    /// What to answer for an object of `length` bytes.
    pub fn resolve(&self, length: u64) -> Result<RangeAsk, Unsatisfiable> {
        if length == 0 {
            // No byte of an empty object can be addressed.
            return Err(Unsatisfiable);
        }
        // A suffix longer than the object selects all of it (RFC 9110
        // §14.1.2), where the parser would call it out of bounds.
        let clamped = ParsedRanges {
            ranges: self
                .parsed
                .ranges
                .iter()
                .map(|r| match r.start {
                    StartPosition::FromLast(n) if n > length => SyntacticallyCorrectRange {
                        start: StartPosition::FromLast(length),
                        end: r.end,
                    },
                    _ => *r,
                })
                .collect(),
        };
        let ranges = clamped.validate(length).map_err(|_| Unsatisfiable)?;
        match ranges.as_slice() {
            [one] => Ok(RangeAsk::Part(*one.start(), *one.end())),
            // Multiple ranges: answering the whole object is allowed (RFC 9110 §14.2).
            _ => Ok(RangeAsk::Whole),
        }
    }
}

/// Parses `text` and resolves it against `length`, checking what any
/// answer must satisfy: a part lies inside the object and is not empty.
/// The fuzz target's property; `None` when the header does not parse.
pub fn check(text: &str, length: u64) -> Option<Result<RangeAsk, Unsatisfiable>> {
    let header = RangeHeader::parse(text).ok()?;
    let _ = header.first_byte();
    let r = header.resolve(length);
    if let Ok(RangeAsk::Part(start, end)) = r {
        assert!(
            start <= end && end < length,
            "{text} on {length}: {start}-{end}"
        );
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, len: u64) -> Result<RangeAsk, &'static str> {
        match check(range, len) {
            None => Err("malformed"),
            Some(Err(Unsatisfiable)) => Err("unsatisfiable"),
            Some(Ok(a)) => Ok(a),
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(ask("bytes=0-0", 10), Ok(RangeAsk::Part(0, 0)));
        assert_eq!(ask("bytes=5-", 10), Ok(RangeAsk::Part(5, 9)));
        assert_eq!(ask("bytes=-3", 10), Ok(RangeAsk::Part(7, 9)));
        assert_eq!(ask("bytes=-30", 10), Ok(RangeAsk::Part(0, 9)));
        assert_eq!(ask("bytes=2-100", 10), Ok(RangeAsk::Part(2, 9)));
        assert_eq!(ask("bytes=0-1,4-5", 10), Ok(RangeAsk::Whole));
        assert_eq!(ask("bytes=10-", 10), Err("unsatisfiable"));
        assert_eq!(ask("bytes=0-0", 0), Err("unsatisfiable"));
        assert_eq!(ask("bytes=x-1", 10), Err("malformed"));
        assert_eq!(ask("bytes=-", 10), Err("malformed"));
        assert_eq!(ask("lines=1-2", 10), Err("malformed"));
    }

    #[test]
    fn first_byte_is_known_before_the_length_only_for_a_start_index() {
        let first = |range: &str| RangeHeader::parse(range).unwrap().first_byte();
        assert_eq!(first("bytes=100-200"), 100);
        assert_eq!(first("bytes=7-"), 7);
        assert_eq!(first("bytes=-5"), 0);
        assert_eq!(first("bytes=9-10,0-1"), 9);
    }
}
