//! Which stream and which file a request names, or why the path is refused (400) before any
//! token is looked at.
//!
//! The decoded path is what tokens are hashed over (nginx's `$uri` is decoded too), and it is
//! the only thing the origin ever sees, so every traversal trick must die here.

use std::fmt;

use percent_encoding::percent_decode_str;

/// A request path that is safe to hash and to hand to an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPath {
    decoded: String,
    stream_end: usize,
}

impl StreamPath {
    /// The whole decoded path, starting with `/`: what tokens are signed over.
    pub fn as_str(&self) -> &str {
        &self.decoded
    }

    /// The first segment.
    pub fn stream(&self) -> &str {
        self.decoded.get(1..self.stream_end).unwrap_or("")
    }

    /// The file inside the stream, without a leading `/` (empty for the stream itself).
    pub fn file(&self) -> &str {
        self.decoded.get(self.stream_end..).unwrap_or("").trim_start_matches('/')
    }

    /// The path below the streams folder (`stream/file`): what an origin is asked for.
    pub fn origin_path(&self) -> &str {
        self.decoded.trim_start_matches('/')
    }

    pub fn is_playlist(&self) -> bool {
        is_playlist(&self.decoded)
    }
}

/// Whether a path names a playlist: `.m3u8`, or the older `.m3u`, in any case (RFC 8216 §4).
/// The one answer every caller uses, so a playlist is never served unrewritten because its
/// name was spelled `INDEX.M3U8`.
pub fn is_playlist(path: &str) -> bool {
    let ends_with = |suffix: &str| {
        path.len() >= suffix.len()
            && path.get(path.len() - suffix.len()..).is_some_and(|end| end.eq_ignore_ascii_case(suffix))
    };
    ends_with(".m3u8") || ends_with(".m3u")
}

/// Why a path was refused: a short reason for the client and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    NotAbsolute,
    EncodedSeparator,
    NotUtf8,
    ControlCharacter,
    Backslash,
    DotSegment,
}

impl BadPath {
    /// A short reason, for the client and the log.
    pub fn reason(self) -> &'static str {
        match self {
            BadPath::NotAbsolute => "path must start with /",
            BadPath::EncodedSeparator => "encoded / or \\ in path",
            BadPath::NotUtf8 => "path is not UTF-8",
            BadPath::ControlCharacter => "control character in path",
            BadPath::Backslash => "backslash in path",
            BadPath::DotSegment => "dot segment in path",
        }
    }
}

impl fmt::Display for BadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Parses the raw (still percent-encoded) path of a request target.
pub fn parse(raw: &str) -> Result<StreamPath, BadPath> {
    if !raw.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    // Most paths escape nothing: they skip the escape scan and the decoder.
    let decoded = if raw.contains('%') {
        if has_encoded_separator(raw) {
            return Err(BadPath::EncodedSeparator);
        }
        percent_decode_str(raw).decode_utf8().map_err(|_| BadPath::NotUtf8)?.into_owned()
    } else {
        raw.to_owned()
    };
    check_characters(&decoded)?;
    // nginx merges slashes (`merge_slashes on`) and hashes the merged `$uri`: `/s//a.ts` is
    // `/s/a.ts`, for the token and for the file.
    let decoded = merge_slashes(decoded);
    check_segments(&decoded)?;
    let stream_end = decoded.get(1..).and_then(|rest| rest.find('/')).map_or(decoded.len(), |i| i + 1);
    Ok(StreamPath { decoded, stream_end })
}

/// `%2F` or `%5C` in any case, without allocating (this runs on every request).
fn has_encoded_separator(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| match w {
        [b'%', hex @ ..] => hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c"),
        _ => false,
    })
}

/// No control character (C0, DEL or C1) and no backslash, in one pass over the bytes; a
/// control character is reported before a backslash wherever each stands.
fn check_characters(decoded: &str) -> Result<(), BadPath> {
    let mut backslash = false;
    let mut bytes = decoded.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            0x00..=0x1F | 0x7F => return Err(BadPath::ControlCharacter),
            // U+0080..=U+009F are 0xC2 0x80..=0x9F in UTF-8.
            0xC2 if bytes.peek().is_some_and(|next| (0x80..=0x9F).contains(next)) => {
                return Err(BadPath::ControlCharacter)
            }
            b'\\' => backslash = true,
            _ => {}
        }
    }
    if backslash {
        return Err(BadPath::Backslash);
    }
    Ok(())
}

/// Runs of `/` as one.
fn merge_slashes(path: String) -> String {
    if !path.contains("//") {
        return path;
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    merged
}

/// No segment is `.` or `..`. A trailing `/` (a directory) is allowed.
fn check_segments(decoded: &str) -> Result<(), BadPath> {
    // A dot segment follows a `/`: most paths have no `/.` at all.
    if decoded.contains("/.") && decoded.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(BadPath::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stream_and_file() {
        let p = parse("/demo/720p/index.m3u8").unwrap();
        assert_eq!((p.stream(), p.file(), p.as_str()), ("demo", "720p/index.m3u8", "/demo/720p/index.m3u8"));
        assert!(p.is_playlist());
        let p = parse("/demo").unwrap();
        assert_eq!((p.stream(), p.file()), ("demo", ""));
        let p = parse("/demo/").unwrap();
        assert_eq!((p.stream(), p.file()), ("demo", ""));
    }

    #[test]
    fn decodes_percent_escapes() {
        let p = parse("/demo/seg%20one.ts").unwrap();
        assert_eq!(p.as_str(), "/demo/seg one.ts");
    }

    #[test]
    fn refuses_traversal_in_every_spelling() {
        let cases = [
            ("/demo/../etc/passwd", BadPath::DotSegment),
            ("/demo/./x.ts", BadPath::DotSegment),
            ("/demo/%2e%2e/x", BadPath::DotSegment),
            ("/demo/%2E./x", BadPath::DotSegment),
            ("/demo/..", BadPath::DotSegment),
            ("/..", BadPath::DotSegment),
            ("/demo/a%2fb", BadPath::EncodedSeparator),
            ("/demo/a%2F..%2Fb", BadPath::EncodedSeparator),
            ("/demo/a%5cb", BadPath::EncodedSeparator),
            ("/demo/a\\b", BadPath::Backslash),
            ("/demo/a%00.ts", BadPath::ControlCharacter),
            ("/demo/a%0a.ts", BadPath::ControlCharacter),
            ("/demo/%ff.ts", BadPath::NotUtf8),
            ("demo/x.ts", BadPath::NotAbsolute),
            ("*", BadPath::NotAbsolute),
        ];
        for (raw, why) in cases {
            assert_eq!(parse(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn playlist_names_in_any_case() {
        for name in ["/s/index.m3u8", "/s/INDEX.M3U8", "/s/a.M3u8", "/s/old.m3u", "/s/OLD.M3U", "x.m3u8"] {
            assert!(is_playlist(name), "{name}");
        }
        for name in ["/s/a.ts", "/s/a.m3u8.ts", "/s/m3u8", "/s/a.m3u88", "", "/s/é.m3u8x", "/s/é"] {
            assert!(!is_playlist(name), "{name}");
        }
    }

    #[test]
    fn every_unicode_control_character_is_refused() {
        for c in (0u32..0x110000).filter_map(char::from_u32).filter(|c| c.is_control()) {
            let mut buf = [0; 4];
            let encoded = percent_encoding::utf8_percent_encode(
                c.encode_utf8(&mut buf),
                percent_encoding::NON_ALPHANUMERIC,
            );
            assert_eq!(parse(&format!("/demo/a{encoded}b.ts")), Err(BadPath::ControlCharacter), "{c:?}");
        }
        assert!(parse("/demo/\u{a0}.ts").is_ok(), "U+00A0 is not a control character");
        assert_eq!(parse("/demo/%5Ca%00"), Err(BadPath::EncodedSeparator));
        assert_eq!(parse("/demo/\\a%00"), Err(BadPath::ControlCharacter));
    }

    #[test]
    fn slashes_are_merged_as_nginx_does() {
        assert_eq!(parse("/demo//x.ts").unwrap().as_str(), "/demo/x.ts");
        assert_eq!(parse("//demo///a//b.ts").unwrap().file(), "a/b.ts");
        assert_eq!(parse("/demo//").unwrap().as_str(), "/demo/");
        assert_eq!(parse("//etc/passwd").unwrap().stream(), "etc");
        assert_eq!(parse("/demo//..//x"), Err(BadPath::DotSegment));
    }

    #[test]
    fn double_encoding_stays_a_literal_name() {
        // `%252e%252e` decodes once to the file name "%2e%2e", which is not a dot segment.
        assert_eq!(parse("/demo/%252e%252e/x").unwrap().file(), "%2e%2e/x");
    }
}
