//! Media responses: Content-Type by extension, and the single byte range players ask for.

use axum::http::HeaderValue;

/// The Content-Type for a file name. Players (Safari above all) check these.
pub fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
    TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |(_, content_type)| content_type)
}

/// By extension, compared without regard to case (`SEG.TS` is a segment too).
const TYPES: [(&str, &str); 14] = [
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("ts", "video/mp2t"),
    ("m4s", "video/iso.segment"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("mp3", "audio/mpeg"),
    ("vtt", "text/vtt"),
    ("webvtt", "text/vtt"),
    ("json", "application/json"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
];

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No range, or one we answer with the whole file (multi-range, other units, nonsense):
    /// RFC 9110 lets a server ignore Range.
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part { start: u64, end: u64 },
    /// A well-formed range that lies beyond the file: 416.
    Unsatisfiable,
}

pub fn range(header: Option<&HeaderValue>, len: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return RangeAsk::Whole;
    };
    match (number(first.trim()), number(last.trim())) {
        // `bytes=-N`: the last N bytes.
        (None, Some(n)) if first.trim().is_empty() => {
            if n == 0 || len == 0 {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part { start: len.saturating_sub(n), end: len }
            }
        }
        // `bytes=S-`: from S to the end.
        (Some(start), None) if last.trim().is_empty() => part(start, len.saturating_sub(1), len),
        (Some(start), Some(last)) if last >= start => part(start, last, len),
        _ => RangeAsk::Whole,
    }
}

fn part(start: u64, last: u64, len: u64) -> RangeAsk {
    if start >= len {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part { start, end: last.min(len - 1) + 1 }
    }
}

/// A plain decimal; `+5`, `5 `, `0x5` are not.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(h: &str, len: u64) -> RangeAsk {
        range(Some(&HeaderValue::from_str(h).unwrap()), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(range(None, 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=0-3", 10), RangeAsk::Part { start: 0, end: 4 });
        assert_eq!(ask("bytes=5-", 10), RangeAsk::Part { start: 5, end: 10 });
        assert_eq!(ask("bytes=5-100", 10), RangeAsk::Part { start: 5, end: 10 });
        assert_eq!(ask("bytes=-3", 10), RangeAsk::Part { start: 7, end: 10 });
        assert_eq!(ask("bytes=-30", 10), RangeAsk::Part { start: 0, end: 10 });
        assert_eq!(ask("bytes=10-", 10), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 10), RangeAsk::Unsatisfiable);
        assert_eq!(ask("bytes=0-1,3-4", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=4-2", 10), RangeAsk::Whole);
        assert_eq!(ask("items=0-1", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=a-b", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=+1-2", 10), RangeAsk::Whole);
        assert_eq!(ask("bytes=0-0", 0), RangeAsk::Unsatisfiable);
    }

    #[test]
    fn content_types() {
        for (f, t) in [
            ("a.ts", "video/mp2t"),
            ("a.m4s", "video/iso.segment"),
            ("init.mp4", "video/mp4"),
            ("a.m4a", "audio/mp4"),
            ("a.aac", "audio/aac"),
            ("a.vtt", "text/vtt"),
            ("k.key", "application/octet-stream"),
            ("x.m3u8", "application/vnd.apple.mpegurl"),
            ("noext", "application/octet-stream"),
        ] {
            assert_eq!(content_type(f), t, "{f}");
        }
    }
}
