//! Rewrites an HLS playlist for one viewer: every URI that points into the stream gets its own
//! secure token bound to the viewer, and every other byte stays exactly as the origin wrote it.
//!
//! Pure: no I/O and no clock, callers pass `now`. m3u8-rs only vets the playlist and tells
//! master from media, live from VOD; the rewrite itself is line-level, because m3u8-rs cannot
//! write a playlist back unchanged (it drops comments, reorders attributes, loses CRLF).

mod attrs;
mod live;
mod ll;
mod sign;
mod skeleton;
mod vars;
mod vet;

use std::fmt;

use dashmap::DashMap;

use crate::token::{Key, ParamNames};
use sign::Signer;
use vars::Variables;

pub use attrs::AttrError;
pub use live::simulate_live;
pub use live::LiveLoop;
pub use ll::{blocking_ask, can_block_reload, position, BadBlockingAsk, BlockingAsk, Position};
pub use vet::{vet, Shape, Verdicts, Vetted};

/// How long media URIs of a live playlist stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentTtl {
    /// Three target durations, at least 6 s: a player that refreshes once per target duration
    /// always holds a playlist whose URIs still open.
    Auto,
    Seconds(u64),
}

impl SegmentTtl {
    /// The TTL in seconds for a media playlist with this `EXT-X-TARGETDURATION`.
    pub fn resolve(self, target_duration: u64) -> u64 {
        match self {
            SegmentTtl::Auto => target_duration.saturating_mul(3).max(6),
            SegmentTtl::Seconds(seconds) => seconds,
        }
    }
}

impl<'de> serde::Deserialize<'de> for SegmentTtl {
    /// Accepts `"auto"` or a non-negative integer, so `segment_ttl = "auto"` and
    /// `segment_ttl = 6` both read naturally in TOML; any other string is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SegmentTtlVisitor)
    }
}

struct SegmentTtlVisitor;

impl serde::de::Visitor<'_> for SegmentTtlVisitor {
    type Value = SegmentTtl;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#""auto" or a number of seconds"#)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<SegmentTtl, E> {
        match value {
            "auto" => Ok(SegmentTtl::Auto),
            other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<SegmentTtl, E> {
        Ok(SegmentTtl::Seconds(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<SegmentTtl, E> {
        // TOML integers arrive as i64.
        u64::try_from(value)
            .map(SegmentTtl::Seconds)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(value), &self))
    }
}

/// Where the playlist was requested.
#[derive(Debug, Clone, Copy)]
pub struct Location<'a> {
    /// The request path as the player sent it (still percent-encoded, slashes not merged), e.g.
    /// `/demo/720p/index.m3u8`: players resolve relative URIs against exactly that. Its first
    /// segment, as the gate reads it, is the stream.
    pub path: &'a str,
    /// The request's raw query: `EXT-X-DEFINE:QUERYPARAM` variables are read from it.
    pub query: &'a str,
    /// The stream's HTTP origin URLs (`http://host:port/path/`): absolute URIs under one of them
    /// point at the packager, and are rewritten to this stream's path on hlsgate and signed.
    pub origin_bases: &'a [String],
    /// The authorities (`host[:port]`) absolute URLs may name to be signed, from the config:
    /// never from the request, or a viewer's `Host` header would pick what gets signed.
    pub public_hosts: &'a [String],
}

/// What to put in each issued token.
#[derive(Debug, Clone, Copy)]
pub struct Issue<'a> {
    /// Signing key (the first key of the stream).
    pub key: &'a Key,
    /// Binding text of the viewer (already masked), or None for IP-less tokens.
    pub ip: Option<&'a str>,
    pub names: &'a ParamNames,
    /// Unix seconds.
    pub now: u64,
    pub session_ttl: u64,
    pub segment_ttl: SegmentTtl,
    /// Where LL-HLS part and preload-hint expiries are remembered (see [`StickyExpiries`]).
    pub sticky: Option<&'a StickyExpiries>,
}

/// The expiry each LL-HLS part and preload-hint path was first signed with, so a part keeps the
/// URI its hint had. Bounded: expired entries go when it grows.
#[derive(Debug, Default)]
pub struct StickyExpiries {
    by_path: DashMap<String, u64>,
}

impl StickyExpiries {
    const PRUNE_AT: usize = 16_384;

    /// The remembered expiry of `path` while it leaves at least half of `ttl` and is no later
    /// than `fresh` (what this playlist would issue now: another playlist with a longer TTL
    /// naming the same path must not lend it its expiry), else `fresh`.
    pub fn expires(&self, path: &str, fresh: u64, now: u64, ttl: u64) -> u64 {
        if let Some(known) = self.by_path.get(path) {
            if *known >= now.saturating_add(ttl / 2) && *known <= fresh {
                return *known;
            }
        }
        if self.by_path.len() >= Self::PRUNE_AT {
            self.by_path.retain(|_, expires| *expires > now);
        }
        self.by_path.insert(path.to_owned(), fresh);
        fresh
    }
}

/// Why a playlist could not be rewritten. Every variant means "answer 502": hlsgate never
/// passes on a playlist it could not sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaylistError {
    NotUtf8,
    /// Not an HLS playlist, or one the parser gave up on part way.
    Unparsable(String),
    /// A URI-carrying tag whose attribute list cannot be read, so its URI cannot be signed.
    BadAttributes {
        line: usize,
        reason: AttrError,
    },
    /// `simulate_live` was given a master playlist.
    NotMedia,
    /// `simulate_live` was given a playlist without segments, or whose segments last 0 s.
    NoSegments,
}

impl fmt::Display for PlaylistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaylistError::NotUtf8 => f.write_str("playlist is not UTF-8"),
            PlaylistError::Unparsable(why) => write!(f, "playlist unparsable: {why}"),
            PlaylistError::BadAttributes { line, reason } => {
                write!(f, "playlist line {line}: {reason}")
            }
            PlaylistError::NotMedia => f.write_str("expected a media playlist, got a master playlist"),
            PlaylistError::NoSegments => f.write_str("media playlist has no segments with a duration"),
        }
    }
}

impl std::error::Error for PlaylistError {}

/// Rewrites a playlist for one viewer. Returns the new text.
pub fn rewrite(text: &[u8], at: &Location, issue: &Issue) -> Result<String, PlaylistError> {
    rewrite_vetted(text, vet(text)?, at, issue)
}

/// [`rewrite`] for a text whose shape [`vet`] (or [`Verdicts`]) has already given.
pub fn rewrite_vetted(
    text: &[u8],
    shape: Shape,
    at: &Location,
    issue: &Issue,
) -> Result<String, PlaylistError> {
    let text = std::str::from_utf8(text).map_err(|_| PlaylistError::NotUtf8)?;
    let signer = Signer::new(at, issue, uri_ttl(shape, issue));
    rewrite_with(text, &signer, at).map(|(out, _)| out)
}

/// [`rewrite_vetted`] for a playlist served as it was vetted: from the skeleton this text and
/// request path compile to, once (see `skeleton`). The same text as a rewrite, token for token.
pub fn rewrite_remembered(vetted: &Vetted, at: &Location, issue: &Issue) -> Result<String, PlaylistError> {
    let ttl = uri_ttl(vetted.shape(), issue);
    let skeleton = match vetted.skeletons().find(at, issue.names) {
        Some(skeleton) => skeleton,
        None => {
            let text = std::str::from_utf8(vetted.text()).map_err(|_| PlaylistError::NotUtf8)?;
            match skeleton::compile(text, at, issue, ttl)? {
                Some(compiled) => {
                    let compiled = std::sync::Arc::new(compiled);
                    vetted.skeletons().keep(std::sync::Arc::clone(&compiled));
                    compiled
                }
                None => return rewrite_vetted(vetted.text(), vetted.shape(), at, issue),
            }
        }
    };
    Ok(skeleton.fill(&sign::Tokens::new(issue, ttl)))
}

/// The rewrite, line by line, with whatever `signer` does at each URI; and whether the
/// playlist defined variables (its rewrite then depends on the request's query).
fn rewrite_with(text: &str, signer: &Signer, at: &Location) -> Result<(String, bool), PlaylistError> {
    let mut variables = Variables::new(at.query);
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    for (index, line) in text.split_inclusive('\n').enumerate() {
        // Each line keeps its own ending, and a missing final newline stays missing.
        let content = line.trim_end_matches(['\r', '\n']);
        let ending = line.get(content.len()..).unwrap_or_default();
        rewrite_line(content, signer, &mut variables, &mut out)
            .map_err(|reason| PlaylistError::BadAttributes { line: index + 1, reason })?;
        out.push_str(ending);
    }
    Ok((out, variables.any()))
}

/// The TTL of every URI in this playlist. A master playlist and a VOD are fetched once per
/// session; a live playlist is refetched every target duration, so its URIs can be short-lived.
fn uri_ttl(shape: Shape, issue: &Issue) -> u64 {
    match shape {
        Shape::Master | Shape::Media { vod: true, .. } => issue.session_ttl,
        Shape::Media { target_duration, vod: false } => issue.segment_ttl.resolve(target_duration),
    }
}

/// The attributes of a tag that hold a URI a player fetches. EXT-X-RENDITION-REPORT is left
/// out on purpose: a player never fetches it, it only matches it against the rendition URIs it
/// already has, so a token there would only break the match.
fn uri_attributes_of(tag: &str) -> &'static [&'static str] {
    match tag {
        "#EXT-X-KEY"
        | "#EXT-X-MAP"
        | "#EXT-X-MEDIA"
        | "#EXT-X-I-FRAME-STREAM-INF"
        | "#EXT-X-IMAGE-STREAM-INF"
        | "#EXT-X-SESSION-KEY"
        | "#EXT-X-SESSION-DATA"
        | "#EXT-X-PART"
        | "#EXT-X-PRELOAD-HINT" => &["URI"],
        "#EXT-X-CONTENT-STEERING" => &["SERVER-URI"],
        // HLS Interstitials: the asset playlist, or the JSON list of assets.
        "#EXT-X-DATERANGE" => &["X-ASSET-URI", "X-ASSET-LIST"],
        _ => &[],
    }
}

/// Rewrites one line, without its line ending. Blanks around a line are not valid HLS, but
/// players read through them, so a line is what it is without them (an indented tag is still
/// a tag), and they are kept as they were.
fn rewrite_line<'a>(
    line: &'a str,
    signer: &Signer,
    variables: &mut Variables<'a>,
    out: &mut String,
) -> Result<(), AttrError> {
    let body = line.trim_matches([' ', '\t']);
    let start = line.len() - line.trim_start_matches([' ', '\t']).len();
    out.push_str(line.get(..start).unwrap_or_default());
    if body.starts_with('#') {
        rewrite_tag_line(body, signer, variables, out)?;
    } else if !body.is_empty() {
        push_signed(body, signer, variables, false, out);
    }
    out.push_str(line.get(start + body.len()..).unwrap_or_default());
    Ok(())
}

/// Signs the URI attributes of a URI-carrying tag, learns variables from EXT-X-DEFINE, and
/// copies every other tag and comment as it is.
fn rewrite_tag_line<'a>(
    line: &'a str,
    signer: &Signer,
    variables: &mut Variables<'a>,
    out: &mut String,
) -> Result<(), AttrError> {
    let Some((tag, list)) = line.split_once(':') else {
        out.push_str(line);
        return Ok(());
    };
    if tag == "#EXT-X-DEFINE" {
        variables.define(list)?;
    }
    let wanted = uri_attributes_of(tag);
    if wanted.is_empty() {
        out.push_str(line);
        return Ok(());
    }
    let attributes = attrs::parse(list)?;
    let sticky = matches!(tag, "#EXT-X-PART" | "#EXT-X-PRELOAD-HINT");
    out.push_str(tag);
    out.push(':');
    let mut copied = 0;
    for attribute in attributes.into_iter().filter(|a| wanted.contains(&a.name)) {
        let (Some(before), Some(value)) =
            (list.get(copied..attribute.span.start), list.get(attribute.span.clone()))
        else {
            continue;
        };
        out.push_str(before);
        push_signed(value, signer, variables, sticky, out);
        copied = attribute.span.end;
    }
    out.push_str(list.get(copied..).unwrap_or_default());
    Ok(())
}

fn push_signed(uri: &str, signer: &Signer, variables: &Variables, sticky: bool, out: &mut String) {
    if !signer.push_signed(uri, variables, sticky, out) {
        out.push_str(uri);
    }
}

#[cfg(test)]
mod tests {
    use super::sign::remove_dot_segments;
    use super::*;
    use crate::token::{self, Accept, Valid};

    const NOW: u64 = 1_700_000_000;
    const SESSION_TTL: u64 = 14_400;
    const VIEWER: &str = "203.0.113.7";
    /// The config's `public_hosts`.
    static PUBLIC_HOSTS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["example.com:8080".into(), "video.example.org".into()]);

    /// Which TTL a URI's token must carry.
    #[derive(Debug, Clone, Copy)]
    enum Class {
        Session,
        Segment(u64),
    }

    impl Class {
        fn expires(self, now: u64) -> u64 {
            let ttl = match self {
                Class::Session => SESSION_TTL,
                Class::Segment(ttl) => ttl,
            };
            token::issue_expiry(now, ttl, token::default_step(ttl))
        }
    }

    fn key() -> Key {
        Key::new("s3cret")
    }

    fn issue<'a>(key: &'a Key, names: &'a ParamNames, now: u64) -> Issue<'a> {
        Issue {
            key,
            ip: Some(VIEWER),
            names,
            now,
            session_ttl: SESSION_TTL,
            segment_ttl: SegmentTtl::Auto,
            sticky: None,
        }
    }

    fn rewrite_at(text: &str, path: &str, now: u64) -> String {
        let (key, names) = (key(), ParamNames::default());
        rewrite(text.as_bytes(), &here(path), &issue(&key, &names, now)).unwrap()
    }

    /// Rewrites one URI line in a minimal live playlist and returns the new line.
    fn rewrite_uri(uri: &str, at: &Location) -> String {
        let (key, names) = (key(), ParamNames::default());
        let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n{uri}\n");
        let out = rewrite(text.as_bytes(), at, &issue(&key, &names, NOW)).unwrap();
        out.lines().nth(3).unwrap().to_owned()
    }

    fn here(path: &str) -> Location<'_> {
        Location { path, query: "", origin_bases: &[], public_hosts: &PUBLIC_HOSTS }
    }

    /// Removes what `rewrite` appends: `?md5=…&expires=…` or `&md5=…&expires=…`.
    fn strip_tokens(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("md5=") {
            let (before, after) = rest.split_at(at);
            let sep_ok = before.ends_with('?') || before.ends_with('&');
            let tail = &after[4..];
            let expires_tail = tail.get(token::TOKEN_LEN..).and_then(|t| t.strip_prefix("&expires="));
            match (sep_ok, expires_tail) {
                (true, Some(digits)) => {
                    out.push_str(&before[..before.len() - 1]);
                    rest = digits.trim_start_matches(|c: char| c.is_ascii_digit());
                }
                _ => {
                    out.push_str(&rest[..at + 4]);
                    rest = tail;
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Every URI in the text that carries a token, in order.
    fn signed_uris(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                if let Some((_, list)) = line.split_once(':') {
                    for a in attrs::parse(list).unwrap_or_default() {
                        found.push(list[a.span].to_owned());
                    }
                }
            } else if !line.trim().is_empty() {
                found.push(line.trim().to_owned());
            }
        }
        found.retain(|uri| uri.contains("md5="));
        found
    }

    /// Every token in `out` verifies for the expected path, the viewer and the expiry class,
    /// and there is exactly one token per expected path.
    fn assert_tokens(out: &str, expected: &[(&str, Class)], now: u64) {
        let uris = signed_uris(out);
        assert_eq!(uris.len(), expected.len(), "signed URIs: {uris:#?}");
        let keys = [key()];
        for (uri, (path, class)) in uris.iter().zip(expected) {
            let query = uri.split_once('?').unwrap().1;
            let query = query.split_once('#').map_or(query, |(q, _)| q);
            let presented = token::parse_query(query, &ParamNames::default()).unwrap();
            let accept = Accept { paths: &[path], ips: &[Some(VIEWER)], keys: &keys, skew: 0 };
            assert_eq!(
                token::check(&presented, &accept, now),
                Ok(Valid { expires: class.expires(now), ip_less: false }),
                "{uri} for {path}"
            );
        }
    }

    const MASTER: &str = r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
# a comment, with commas, URI="not/a/uri.m3u8"

#EXT-X-CONTENT-STEERING:SERVER-URI="steering.json?v=1",PATHWAY-ID="CDN-A"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",URI="meta/title.json"
#EXT-X-SESSION-DATA:DATA-ID="com.example.note",VALUE="a,URI=b.m3u8"
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key-id-1",KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"
#EXT-X-SESSION-KEY:METHOD=AES-128,URI="keys/session.key"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="English, main",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,URI="audio/en/index.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="Deutsch",LANGUAGE="de",URI="../demo/subs/de.m3u8"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="CC1",INSTREAM-ID="CC1"
#EXT-X-VENDOR-THING:FOO="bar",URI="vendor/ignored.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AVERAGE-BANDWIDTH=1000000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,AUDIO="aac",SUBTITLES="subs"
720p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=640000,CODECS="avc1.42e01e,mp4a.40.2",RESOLUTION=640x360,AUDIO="aac"
/demo/360p/index.m3u8?quality=low

#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,CODECS="avc1.4d401f",URI="720p/iframes.m3u8"
"#;

    #[test]
    fn master_playlist_keeps_every_byte_and_signs_every_uri_for_the_session() {
        let out = rewrite_at(MASTER, "/demo/master.m3u8", NOW);
        assert_eq!(strip_tokens(&out), MASTER);
        use Class::Session as S;
        assert_tokens(
            &out,
            &[
                ("/demo/steering.json", S),
                ("/demo/meta/title.json", S),
                ("/demo/keys/session.key", S),
                ("/demo/audio/en/index.m3u8", S),
                ("/demo/subs/de.m3u8", S),
                ("/demo/720p/index.m3u8", S),
                ("/demo/360p/index.m3u8", S),
                ("/demo/720p/iframes.m3u8", S),
            ],
            NOW,
        );
        assert!(out.contains(r#"URI="skd://key-id-1""#));
        assert!(out.contains(r#"URI="vendor/ignored.m3u8""#));
        assert!(out.contains(r#"VALUE="a,URI=b.m3u8""#));
        assert!(out.contains(r#"# a comment, with commas, URI="not/a/uri.m3u8""#));
        assert!(out.contains("/demo/360p/index.m3u8?quality=low&md5="));
    }

    const VOD: &str = r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="init.mp4",BYTERANGE="720@0"
#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://asset-42",KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"
#EXT-X-KEY:METHOD=AES-128,URI="keys/k1.key",IV=0x0123456789abcdef0123456789ABCDEF
#EXTINF:6.000,
#EXT-X-BYTERANGE:75232@720
main.mp4
#EXTINF:6.000,title
#EXT-X-BYTERANGE:82112
main.mp4
#EXT-X-KEY:METHOD=AES-128,URI="../720p/keys/k2.key?rotation=2"
#EXTINF:5.005,
#EXT-X-BYTERANGE:69864
main.mp4
#EXT-X-ENDLIST
"#;

    #[test]
    fn vod_media_playlist_keeps_every_byte_and_signs_for_the_session() {
        let out = rewrite_at(VOD, "/demo/720p/main.m3u8", NOW);
        assert_eq!(strip_tokens(&out), VOD);
        use Class::Session as S;
        assert_tokens(
            &out,
            &[
                ("/demo/720p/init.mp4", S),
                ("/demo/720p/keys/k1.key", S),
                ("/demo/720p/main.mp4", S),
                ("/demo/720p/main.mp4", S),
                ("/demo/720p/keys/k2.key", S),
                ("/demo/720p/main.mp4", S),
            ],
            NOW,
        );
        assert!(out.contains(r#"#EXT-X-MAP:URI="init.mp4?md5="#));
        assert!(out.contains(r#"&expires=1700017200",BYTERANGE="720@0""#));
        assert!(out.contains(r#"URI="skd://asset-42""#));
        assert!(out.contains(r#"URI="../720p/keys/k2.key?rotation=2&md5="#));
    }

    /// Apple's LL-HLS example shape, ending without a final newline.
    const LL_HLS: &str = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0,CAN-SKIP-UNTIL=24.0
#EXT-X-PART-INF:PART-TARGET=1.0
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00.000Z
#EXTINF:4.00008,
fileSequence266.mp4
#EXT-X-PART:DURATION=1.0,URI="filePart267.0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.0,URI="filePart267.1.mp4"
#EXT-X-PART:DURATION=1.0,URI="filePart267.2.mp4"
#EXT-X-PART:DURATION=1.0,URI="filePart267.3.mp4"
#EXTINF:4.00008,
fileSequence267.mp4
#EXT-X-PART:DURATION=1.0,URI="filePart268.0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.0,URI="filePart268.1.mp4",BYTERANGE="2000@0"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart268.2.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/waitForMe.php",LAST-MSN=273,LAST-PART=2
#EXT-X-RENDITION-REPORT:URI="../4M/waitForMe.php",LAST-MSN=273,LAST-PART=1"#;

    #[test]
    fn m3u8_rs_reads_ll_hls_to_the_end() {
        let Ok((rest, m3u8_rs::Playlist::MediaPlaylist(media))) = m3u8_rs::parse_playlist(LL_HLS.as_bytes())
        else {
            panic!("LL-HLS refused");
        };
        assert!(rest.is_empty());
        assert_eq!(media.target_duration, 4);
        assert!(!media.end_list);
        // LL-HLS tags come through as unknown tags of the segment that follows them.
        assert!(media.segments[1].unknown_tags.iter().any(|t| t.tag == "X-PART"));
        // A quirk: a tag on a last line without newline is taken for a segment URI. Harmless
        // here, since the rewrite reads lines itself and only asks m3u8-rs master/media/live.
        assert_eq!(media.segments.len(), 3);
        assert!(media.segments[2].uri.starts_with("#EXT-X-RENDITION-REPORT"));
    }

    #[test]
    fn ll_hls_playlist_signs_parts_and_hints_for_the_segment_ttl() {
        let out = rewrite_at(LL_HLS, "/demo/2M/live.m3u8", NOW);
        assert_eq!(strip_tokens(&out), LL_HLS);
        assert!(!out.ends_with('\n'));
        let seg = Class::Segment(12);
        let expected: Vec<(String, Class)> = [
            "init.mp4",
            "fileSequence266.mp4",
            "filePart267.0.mp4",
            "filePart267.1.mp4",
            "filePart267.2.mp4",
            "filePart267.3.mp4",
            "fileSequence267.mp4",
            "filePart268.0.mp4",
            "filePart268.1.mp4",
            "filePart268.2.mp4",
        ]
        .iter()
        .map(|name| (format!("/demo/2M/{name}"), seg))
        .collect();
        let expected: Vec<(&str, Class)> = expected.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        assert_tokens(&out, &expected, NOW);
        assert!(out.contains(r#"#EXT-X-RENDITION-REPORT:URI="../1M/waitForMe.php",LAST-MSN=273,LAST-PART=2"#));
        assert!(
            out.ends_with(r#"#EXT-X-RENDITION-REPORT:URI="../4M/waitForMe.php",LAST-MSN=273,LAST-PART=1"#)
        );
    }

    const CRLF: &str = "#EXTM3U\r\n#EXT-X-TARGETDURATION:10\r\n#EXT-X-PLAYLIST-TYPE:EVENT\r\n\r\n\
                        #EXTINF:10.0,\r\nseg0.ts\r\n#EXTINF:10.0,\nseg1.ts\r\n  seg2.ts \r\n";

    #[test]
    fn crlf_playlist_keeps_each_line_ending() {
        let out = rewrite_at(CRLF, "/demo/event.m3u8", NOW);
        assert_eq!(strip_tokens(&out), CRLF);
        let seg = Class::Segment(30);
        assert_tokens(&out, &[("/demo/seg0.ts", seg), ("/demo/seg1.ts", seg), ("/demo/seg2.ts", seg)], NOW);
        assert!(out.contains("  seg2.ts?md5="));
    }

    #[test]
    fn live_ttl_follows_the_configured_segment_ttl() {
        let (key, names) = (key(), ParamNames::default());
        let issue = Issue { segment_ttl: SegmentTtl::Seconds(20), ..issue(&key, &names, NOW) };
        let out = rewrite(CRLF.as_bytes(), &here("/demo/e.m3u8"), &issue).unwrap();
        let seg = Class::Segment(20);
        assert_tokens(&out, &[("/demo/seg0.ts", seg), ("/demo/seg1.ts", seg), ("/demo/seg2.ts", seg)], NOW);
    }

    #[test]
    fn playlist_type_vod_without_endlist_is_not_live() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:4,\na.ts\n";
        let out = rewrite_at(text, "/demo/v.m3u8", NOW);
        assert_tokens(&out, &[("/demo/a.ts", Class::Session)], NOW);
    }

    #[test]
    fn relative_references_resolve_like_a_player() {
        let at = here("/demo/720p/index.m3u8");
        let signed_for = |uri: &str, path: &str| {
            let line = rewrite_uri(uri, &at);
            assert!(line.starts_with(uri), "{line}");
            assert_tokens(&line, &[(path, Class::Segment(12))], NOW);
        };
        signed_for("../audio/a.ts", "/demo/audio/a.ts");
        signed_for("./x/./y/../s.ts", "/demo/720p/x/s.ts");
        signed_for("../../../demo/a.ts", "/demo/a.ts");
        signed_for("/demo/abs.ts", "/demo/abs.ts");
        signed_for("my%20seg.ts", "/demo/720p/my seg.ts");
        assert_eq!(rewrite_uri("../../other/x.ts", &at), "../../other/x.ts");
        assert_eq!(rewrite_uri("/other/x.ts", &at), "/other/x.ts");
        assert_eq!(rewrite_uri("%2E%2E/%2E%2E/other/x.ts", &at), "%2E%2E/%2E%2E/other/x.ts");
        assert_eq!(rewrite_uri("..%2F..%2Fother/x.ts", &at), "..%2F..%2Fother/x.ts");
    }

    #[test]
    fn decoded_request_path_is_not_decoded_twice() {
        let at = here("/demo/100%2541%20dir/index.m3u8");
        let line = rewrite_uri("a.ts", &at);
        assert_tokens(&line, &[("/demo/100%41 dir/a.ts", Class::Segment(12))], NOW);
    }

    /// A browser resolves against the URL it used: `..` across a doubled slash climbs out of
    /// the empty segment, not out of `sub`.
    #[test]
    fn references_resolve_against_the_path_as_the_player_sent_it() {
        let at = here("/demo/sub//p.m3u8");
        assert_tokens(&rewrite_uri("../x.ts", &at), &[("/demo/sub/x.ts", Class::Segment(12))], NOW);
        assert_tokens(&rewrite_uri("x.ts", &at), &[("/demo/sub/x.ts", Class::Segment(12))], NOW);
    }

    /// What a browser's URL parser makes of a URI is what it requests.
    #[test]
    fn backslashes_and_encoded_dots_resolve_as_a_browser_resolves_them() {
        let at = here("/demo/v/index.m3u8");
        assert_tokens(&rewrite_uri("a\\b.ts", &at), &[("/demo/v/a/b.ts", Class::Segment(12))], NOW);
        assert_tokens(&rewrite_uri("%2e%2e/x.ts", &at), &[("/demo/x.ts", Class::Segment(12))], NOW);
        assert_tokens(&rewrite_uri("sub/%2E/y.ts", &at), &[("/demo/v/sub/y.ts", Class::Segment(12))], NOW);
    }

    #[test]
    fn a_public_host_matches_with_or_without_the_default_port() {
        let at = Location {
            path: "/demo/index.m3u8",
            query: "",
            origin_bases: &[],
            public_hosts: &["example.com".into(), "alt.example:8443".into()],
        };
        for uri in [
            "http://example.com:80/demo/a.ts",
            "https://EXAMPLE.com:443/demo/a.ts",
            "http://example.com/demo/a.ts",
            "https://alt.example:8443/demo/a.ts",
        ] {
            assert_tokens(&rewrite_uri(uri, &at), &[("/demo/a.ts", Class::Segment(12))], NOW);
        }
        for untouched in [
            "http://example.com:8080/demo/a.ts",
            "https://example.com:80/demo/a.ts",
            "https://alt.example/demo/a.ts",
        ] {
            assert_eq!(rewrite_uri(untouched, &at), untouched);
        }
    }

    #[test]
    fn old_token_parameters_go_from_uris_with_variables_too() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-DEFINE:NAME=\"p\",VALUE=\"x\"\n#EXT-X-DEFINE:NAME=\"q\",VALUE=\"a=1\"\n\
                    #EXTINF:4,\n{$p}.ts?md5=OLD&expires=1\n#EXTINF:4,\n{$p}.ts?{$q}&md5=OLD\n#EXTINF:4,\n{$p}.ts?\n";
        let out = rewrite_at(text, "/demo/index.m3u8", NOW);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[5].starts_with("{$p}.ts?md5=") && lines[5].matches("md5=").count() == 1,
            "{}",
            lines[5]
        );
        assert!(lines[7].starts_with("{$p}.ts?{$q}&md5="), "{}", lines[7]);
        assert!(lines[9].starts_with("{$p}.ts?md5="), "{}", lines[9]);
        let seg = Class::Segment(12);
        assert_tokens(&out, &[("/demo/x.ts", seg), ("/demo/x.ts", seg), ("/demo/x.ts", seg)], NOW);
    }

    #[test]
    fn absolute_urls_are_signed_only_for_this_host_and_stream() {
        let at = here("/demo/720p/index.m3u8");
        let line = rewrite_uri("https://Example.COM:8080/demo/720p/s.ts", &at);
        assert!(line.starts_with("https://Example.COM:8080/demo/720p/s.ts?md5="));
        assert_tokens(&line, &[("/demo/720p/s.ts", Class::Segment(12))], NOW);
        let line = rewrite_uri("//example.com:8080/demo/x/../s.ts", &at);
        assert!(line.starts_with("//example.com:8080/demo/x/../s.ts?md5="));
        assert_tokens(&line, &[("/demo/s.ts", Class::Segment(12))], NOW);
        for untouched in [
            "https://cdn.example.net/demo/720p/s.ts",
            "http://example.com/demo/720p/s.ts",
            "//example.com/demo/s.ts",
            "http://example.com:8080/other/s.ts",
            "skd://demo/key",
            "data:text/plain;base64,AAAA",
            "ftp://example.com:8080/demo/s.ts",
        ] {
            assert_eq!(rewrite_uri(untouched, &at), untouched);
        }
        let line = rewrite_uri("http://VIDEO.example.org/demo/720p/s.ts", &at);
        assert_tokens(&line, &[("/demo/720p/s.ts", Class::Segment(12))], NOW);
        let nowhere = Location { path: "/demo/index.m3u8", query: "", origin_bases: &[], public_hosts: &[] };
        assert_eq!(
            rewrite_uri("https://example.com:8080/demo/s.ts", &nowhere),
            "https://example.com:8080/demo/s.ts"
        );
    }

    /// The player substitutes before it requests: sign what it will request, keep what was
    /// written, and put the token where the player sends it.
    #[test]
    fn variables_are_signed_for_the_path_the_player_requests() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-DEFINE:NAME=\"p\",VALUE=\"part-\"\n\
                    #EXT-X-DEFINE:QUERYPARAM=\"q\"\n#EXT-X-DEFINE:NAME=\"dir\",VALUE=\"sub/x\"\n\
                    #EXT-X-MAP:URI=\"{$p}init.mp4\"\n#EXTINF:4,\n{$p}1.ts\n#EXTINF:4,\n{$q}/2.ts?a={$p}\n\
                    #EXTINF:4,\n{$dir}/3.ts#frag\n#EXTINF:4,\n4.ts?v={$undefined}\n";
        let (key, names) = (key(), ParamNames::default());
        let at = Location {
            path: "/demo/v/index.m3u8",
            query: "md5=x&q=720p&expires=1",
            origin_bases: &[],
            public_hosts: &[],
        };
        let out = rewrite(text.as_bytes(), &at, &issue(&key, &names, NOW)).unwrap();
        assert_eq!(strip_tokens(&out), text, "the written text stays: the player substitutes");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[5].starts_with("#EXT-X-MAP:URI=\"{$p}init.mp4?md5="), "{out}");
        assert!(lines[7].starts_with("{$p}1.ts?md5="));
        assert!(lines[9].starts_with("{$q}/2.ts?a={$p}&md5="));
        assert!(lines[11].starts_with("{$dir}/3.ts?md5=") && lines[11].ends_with("#frag"));
        let seg = Class::Segment(12);
        assert_tokens(
            &out,
            &[
                ("/demo/v/part-init.mp4", seg),
                ("/demo/v/part-1.ts", seg),
                ("/demo/v/720p/2.ts", seg),
                ("/demo/v/sub/x/3.ts", seg),
                ("/demo/v/4.ts", seg),
            ],
            NOW,
        );
    }

    /// An IMPORT comes from the master, which this rewrite does not see.
    #[test]
    fn an_unknown_variable_in_the_file_name_gets_a_directory_token_and_nowhere_else_a_token() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-DEFINE:IMPORT=\"v\"\n#EXTINF:4,\na{$v}.ts\n\
                    #EXTINF:4,\nsub/{$v}.ts\n#EXTINF:4,\n{$v}/a.ts\n#EXTINF:4,\nx/{$v}/a.ts\n#EXTINF:4,\nb{$nothing}.ts\n";
        let out = rewrite_at(text, "/demo/v/index.m3u8", NOW);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!((lines[8], lines[10]), ("{$v}/a.ts", "x/{$v}/a.ts"), "never signed as written");
        assert_tokens(
            &out,
            &[
                ("/demo/v/", Class::Segment(12)),
                ("/demo/v/sub/", Class::Segment(12)),
                ("/demo/v/", Class::Segment(12)),
            ],
            NOW,
        );
    }

    /// Found by fuzzing: the player sends `x?y=1&?md5=…`, and `?md5` is not `md5`.
    #[test]
    fn a_question_mark_inside_the_query_is_not_its_start() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-DEFINE:NAME=\"q\",VALUE=\"x?y=1&\"\n#EXTINF:4,\n{$q}?\n";
        let out = rewrite_at(text, "/demo/index.m3u8", NOW);
        let line = out.lines().nth(4).unwrap();
        // The empty query goes, as it does without variables; the value's `&` joins ours.
        assert!(line.starts_with("{$q}md5="), "{line}");
        let as_sent = line.replace("{$q}", "x?y=1&");
        assert_tokens(&as_sent, &[("/demo/x", Class::Segment(12))], NOW);
    }

    #[test]
    fn a_value_that_brings_a_fragment_leaves_the_uri_unsigned() {
        let text =
            "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-DEFINE:NAME=\"h\",VALUE=\"x#y\"\n#EXTINF:4,\n{$h}.ts\n";
        let out = rewrite_at(text, "/demo/index.m3u8", NOW);
        assert_eq!(out, text);
    }

    /// HLS Interstitials and trick-play images are fetched by players like every other URI.
    #[test]
    fn interstitial_assets_and_image_streams_are_signed() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n\
            #EXT-X-DATERANGE:ID=\"ad1\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"2024-01-01T00:00:00Z\",X-ASSET-URI=\"ad/ad.m3u8\"\n\
            #EXT-X-DATERANGE:ID=\"ad2\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"2024-01-01T00:00:20Z\",X-ASSET-LIST=\"ads.json\",X-OTHER=\"x.json\"\n\
            #EXT-X-DATERANGE:ID=\"ad3\",START-DATE=\"2024-01-01T00:00:40Z\",X-ASSET-URI=\"https://ads.example/ad.m3u8\"\n\
            #EXTINF:4,\na.ts\n";
        let out = rewrite_at(text, "/demo/v/index.m3u8", NOW);
        assert_eq!(strip_tokens(&out), text);
        let seg = Class::Segment(12);
        assert_tokens(
            &out,
            &[("/demo/v/ad/ad.m3u8", seg), ("/demo/v/ads.json", seg), ("/demo/v/a.ts", seg)],
            NOW,
        );

        let master = "#EXTM3U\n#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=12000,RESOLUTION=320x180,CODECS=\"jpeg\",URI=\"thumbs/320x180.m3u8\"\n\
                      #EXT-X-STREAM-INF:BANDWIDTH=800000\nv.m3u8\n";
        let out = rewrite_at(master, "/demo/master.m3u8", NOW);
        assert_tokens(
            &out,
            &[("/demo/thumbs/320x180.m3u8", Class::Session), ("/demo/v.m3u8", Class::Session)],
            NOW,
        );
    }

    /// The gate merges slashes as nginx does; the rewriter signs the merged path.
    #[test]
    fn empty_path_segments_are_signed_merged() {
        let at = here("/demo/v/index.m3u8");
        assert_tokens(&rewrite_uri(".//a.ts", &at), &[("/demo/v/a.ts", Class::Segment(12))], NOW);
        assert_tokens(&rewrite_uri("b//c.ts", &at), &[("/demo/v/b/c.ts", Class::Segment(12))], NOW);
        assert_tokens(&rewrite_uri("/demo///x.ts", &at), &[("/demo/x.ts", Class::Segment(12))], NOW);
        // What the gate refuses is never signed.
        for refused in ["a%2Fb.ts", "a%5Cb.ts", "a%00.ts"] {
            assert_eq!(rewrite_uri(refused, &at), refused);
        }
    }

    /// One rule for blanks around a line: a line is what it is without them, and they stay.
    #[test]
    fn indented_tags_are_signed_like_indented_uris() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n  #EXT-X-KEY:METHOD=AES-128,URI=\"k.key\"\n\t#EXTINF:4,\n  a.ts \n";
        let out = rewrite_at(text, "/demo/index.m3u8", NOW);
        assert_eq!(strip_tokens(&out), text);
        assert!(out.contains("  #EXT-X-KEY:METHOD=AES-128,URI=\"k.key?md5="), "{out}");
        assert!(out.contains("\n  a.ts?md5=") && out.ends_with(" \n"), "{out}");
    }

    /// A packager that writes absolute URLs names itself: the player must come to hlsgate.
    #[test]
    fn absolute_uris_under_the_origin_are_mapped_to_the_stream_and_signed() {
        let bases = ["http://packager:8080/live/".to_string()];
        let at = Location { path: "/demo/v/index.m3u8", query: "", origin_bases: &bases, public_hosts: &[] };
        let line = rewrite_uri("http://PACKAGER:8080/live/v/seg1.ts?x=1", &at);
        assert!(line.starts_with("/demo/v/seg1.ts?x=1&md5="), "{line}");
        assert_tokens(&line, &[("/demo/v/seg1.ts", Class::Segment(12))], NOW);
        for untouched in [
            "http://packager:8080/other/seg1.ts",
            "http://packager:8081/live/seg1.ts",
            "https://cdn.example/live/a.ts",
        ] {
            assert_eq!(rewrite_uri(untouched, &at), untouched);
        }
    }

    /// A player preloads the hint's URI and then expects the part under that same URI.
    #[test]
    fn a_part_keeps_the_uri_its_preload_hint_had() {
        let (key, names) = (key(), ParamNames::default());
        let memory = StickyExpiries::default();
        let at = here("/demo/ll/index.m3u8");
        let hinted = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1\n#EXTINF:4,\ns1.mp4\n\
                      #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s2.0.mp4\"\n";
        let listed = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1\n#EXTINF:4,\ns1.mp4\n\
                      #EXT-X-PART:DURATION=1,URI=\"s2.0.mp4\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s2.1.mp4\"\n";
        let uri_of = |text: &str, tag: &str| {
            let line = text.lines().find(|l| l.starts_with(tag)).unwrap().to_owned();
            line.split("URI=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
        };
        let sign = |text: &str, now: u64, sticky| {
            let issue = Issue { sticky, ..issue(&key, &names, now) };
            rewrite(text.as_bytes(), &at, &issue).unwrap()
        };
        // A rounding step (a quarter of the 12 s TTL) passes between the two playlists.
        let later = NOW + 3;
        let hint = uri_of(&sign(hinted, NOW, Some(&memory)), "#EXT-X-PRELOAD-HINT");
        let part = uri_of(&sign(listed, later, Some(&memory)), "#EXT-X-PART:");
        assert_eq!(hint, part);
        let without = uri_of(&sign(listed, later, None), "#EXT-X-PART:");
        assert_ne!(hint, without, "without the memory the step would have changed the URI");
        // Segments are not sticky: they follow the clock.
        let segment = |now| sign(listed, now, Some(&memory)).lines().nth(4).unwrap().to_owned();
        assert_ne!(segment(NOW), segment(later));
    }

    /// A directory token opens every file in its directory: the rewriter never issues one.
    #[test]
    fn uris_that_resolve_to_a_directory_stay_unsigned() {
        let at = here("/demo/720p/index.m3u8");
        for directory in [
            ".",
            "./",
            "..",
            "../",
            "../720p/",
            "sub/",
            "sub/..",
            "/demo/",
            "http://example.com:8080",
            "?x=1/",
        ] {
            let line = rewrite_uri(directory, &at);
            if directory == "?x=1/" {
                // A query-only reference is the playlist itself, a file.
                assert_tokens(&line, &[("/demo/720p/index.m3u8", Class::Segment(12))], NOW);
            } else {
                assert_eq!(line, directory, "{directory} was signed");
            }
        }
    }

    #[test]
    fn other_query_parameters_stay_in_order_and_old_tokens_go() {
        let at = here("/demo/index.m3u8");
        let line = rewrite_uri("s.ts?a=1&md5=OLD&b=2&expires=1&c", &at);
        let expires = Class::Segment(12).expires(NOW);
        assert!(line.starts_with("s.ts?a=1&b=2&c&md5="), "{line}");
        assert!(line.ends_with(&format!("&expires={expires}")), "{line}");
        assert_tokens(&line, &[("/demo/s.ts", Class::Segment(12))], NOW);
        let line = rewrite_uri("s.ts?md5=OLD&expires=1", &at);
        assert!(line.starts_with("s.ts?md5=") && line.matches("md5=").count() == 1, "{line}");
        // Odd queries keep their odd shape: an empty one, and empty pairs.
        assert!(rewrite_uri("s.ts?", &at).starts_with("s.ts?md5="));
        let line = rewrite_uri("s.ts?a=1&&b&", &at);
        assert!(line.starts_with("s.ts?a=1&&b&&md5="), "{line}");
    }

    #[test]
    fn custom_parameter_names() {
        let (key, names) = (key(), ParamNames { token: "st".into(), expires: "e".into() });
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\ns.ts?st=old&x=1\n#EXT-X-ENDLIST\n";
        let out = rewrite(text.as_bytes(), &here("/demo/i.m3u8"), &issue(&key, &names, NOW)).unwrap();
        let line = out.lines().nth(3).unwrap();
        assert!(line.starts_with("s.ts?x=1&st="), "{line}");
        let presented = token::parse_query(line.split_once('?').unwrap().1, &names).unwrap();
        let accept = Accept {
            paths: &["/demo/s.ts"],
            ips: &[Some(VIEWER)],
            keys: std::slice::from_ref(&key),
            skew: 0,
        };
        assert!(token::check(&presented, &accept, NOW).is_ok());
    }

    #[test]
    fn fragments_stay_last() {
        let at = here("/demo/index.m3u8");
        let line = rewrite_uri("s.ts?a=1#t=10", &at);
        assert!(line.starts_with("s.ts?a=1&md5=") && line.ends_with("#t=10"), "{line}");
        let line = rewrite_uri("s.ts#frag", &at);
        assert!(line.starts_with("s.ts?md5=") && line.ends_with("#frag"), "{line}");
        assert_tokens(&line, &[("/demo/s.ts", Class::Segment(12))], NOW);
    }

    #[test]
    fn server_uri_is_not_uri_and_empty_uris_stay() {
        let text = "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"s.json\",PATHWAY-ID=\"A\"\n\
                    #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"n\",X-URI=\"no.m3u8\",URI=\"yes.m3u8\"\n\
                    #EXT-X-SESSION-DATA:DATA-ID=\"d\",URI=\"\"\n";
        let out = rewrite_at(text, "/demo/m.m3u8", NOW);
        assert_eq!(strip_tokens(&out), text);
        assert!(out.contains("SERVER-URI=\"s.json?md5="));
        assert!(out.contains("X-URI=\"no.m3u8\",URI=\"yes.m3u8?md5="));
        assert!(out.contains("URI=\"\"\n"));
        assert_tokens(&out, &[("/demo/s.json", Class::Session), ("/demo/yes.m3u8", Class::Session)], NOW);
    }

    #[test]
    fn viewer_without_ip_binding() {
        let (key, names) = (key(), ParamNames::default());
        let issue = Issue { ip: None, ..issue(&key, &names, NOW) };
        let out = rewrite(VOD.as_bytes(), &here("/demo/720p/main.m3u8"), &issue).unwrap();
        let uri = signed_uris(&out).pop().unwrap();
        let presented = token::parse_query(uri.split_once('?').unwrap().1, &names).unwrap();
        let accept = Accept {
            paths: &["/demo/720p/main.mp4"],
            ips: &[None],
            keys: std::slice::from_ref(&key),
            skew: 0,
        };
        assert!(token::check(&presented, &accept, NOW).is_ok());
    }

    #[test]
    fn same_output_within_one_step_and_new_tokens_after() {
        let first = rewrite_at(MASTER, "/demo/master.m3u8", NOW);
        assert_eq!(rewrite_at(MASTER, "/demo/master.m3u8", NOW + 1), first);
        assert_ne!(rewrite_at(MASTER, "/demo/master.m3u8", NOW + token::default_step(SESSION_TTL)), first);
        let live = rewrite_at(LL_HLS, "/demo/2M/live.m3u8", NOW);
        assert_eq!(rewrite_at(LL_HLS, "/demo/2M/live.m3u8", NOW + 1), live);
        assert_ne!(rewrite_at(LL_HLS, "/demo/2M/live.m3u8", NOW + 3), live);
    }

    #[test]
    fn broken_playlists_are_errors() {
        let (key, names) = (key(), ParamNames::default());
        let at = here("/demo/i.m3u8");
        let run = |text: &[u8]| rewrite(text, &at, &issue(&key, &names, NOW));
        assert!(matches!(run(b"<html>502</html>"), Err(PlaylistError::Unparsable(_))));
        assert!(matches!(run(b""), Err(PlaylistError::Unparsable(_))));
        assert!(matches!(run(b"#EXTM3Ux\na.ts\n"), Err(PlaylistError::Unparsable(_))));
        assert_eq!(run(b"#EXTM3U\n\xff.ts\n"), Err(PlaylistError::NotUtf8));
        assert_eq!(
            run(b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.key\n"),
            Err(PlaylistError::BadAttributes { line: 3, reason: AttrError::Unterminated })
        );
    }

    #[test]
    fn a_skeleton_is_kept_per_spelling_and_skipped_with_variables() {
        let (key, names) = (key(), ParamNames::default());
        let verdicts = Verdicts::default();
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART:DURATION=0.5,URI=\"p.0.mp4\"\n\
                    #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p.1.mp4\"\n#EXTINF:4,\nhttp://example.com:8080/demo/a.ts?x=1#t\n";
        let vetted = verdicts.vet("/demo/i.m3u8", text.as_bytes()).unwrap();
        for path in ["/demo/i.m3u8", "/demo//i.m3u8", "/demo/i.m3u8"] {
            let memory = StickyExpiries::default();
            let issue = Issue { sticky: Some(&memory), ..issue(&key, &names, NOW) };
            let direct = rewrite(text.as_bytes(), &here(path), &issue).unwrap();
            let memory = StickyExpiries::default();
            let issue = Issue { sticky: Some(&memory), ..issue };
            assert_eq!(rewrite_remembered(&vetted, &here(path), &issue).unwrap(), direct, "{path}");
        }
        assert_eq!(vetted.skeletons().find(&here("/demo//i.m3u8"), &names).map(|_| ()), Some(()));
        // Variables: QUERYPARAM values come from the request, so no skeleton is kept.
        let defined =
            "#EXTM3U\n#EXT-X-DEFINE:QUERYPARAM=\"v\"\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n{$v}.ts\n";
        let vetted = verdicts.vet("/demo/d.m3u8", defined.as_bytes()).unwrap();
        for query in ["v=a", "v=b"] {
            let at = Location { query, ..here("/demo/d.m3u8") };
            let issue = issue(&key, &names, NOW);
            assert_eq!(
                rewrite_remembered(&vetted, &at, &issue).unwrap(),
                rewrite(defined.as_bytes(), &at, &issue).unwrap(),
                "{query}"
            );
        }
        assert!(vetted.skeletons().find(&here("/demo/d.m3u8"), &names).is_none());
    }

    #[test]
    fn segment_ttl_resolves() {
        assert_eq!(SegmentTtl::Auto.resolve(1), 6);
        assert_eq!(SegmentTtl::Auto.resolve(4), 12);
        assert_eq!(SegmentTtl::Auto.resolve(u64::MAX), u64::MAX);
        assert_eq!(SegmentTtl::Seconds(5).resolve(10), 5);
    }

    #[test]
    fn segment_ttl_reads_from_toml_and_json() {
        #[derive(serde::Deserialize)]
        struct Config {
            segment_ttl: SegmentTtl,
        }
        let read = |text: &str| toml::from_str::<Config>(text).map(|c| c.segment_ttl);
        assert_eq!(read(r#"segment_ttl = "auto""#).unwrap(), SegmentTtl::Auto);
        assert_eq!(read("segment_ttl = 6").unwrap(), SegmentTtl::Seconds(6));
        assert!(read(r#"segment_ttl = "often""#).is_err());
        assert!(read("segment_ttl = -1").is_err());
        assert!(read("segment_ttl = 1.5").is_err());
        assert_eq!(serde_json::from_str::<SegmentTtl>(r#""auto""#).unwrap(), SegmentTtl::Auto);
        assert_eq!(serde_json::from_str::<SegmentTtl>("8").unwrap(), SegmentTtl::Seconds(8));
    }

    #[test]
    fn dot_segments() {
        for (input, output) in [
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/../../a", "/a"),
            ("/a//../b", "/a/b"),
            ("/a/b/", "/a/b/"),
        ] {
            assert_eq!(remove_dot_segments(input.to_owned()), output, "{input}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Lines a packager might write, and some it should not.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                // URIs with queries and fragments; an empty `?` or an old token would be
                // (rightly) rewritten, so they are left to the unit tests.
                "[a-z0-9_./%-]{1,14}(\\?[a-z_]{1,4}=[0-9]{0,3}(&[a-z]=[a-z]{0,2})?)?(#[a-z]{0,3})?",
                "#EXTINF:[0-9]{1,2}\\.[0-9]{3},[a-z ]{0,6}",
                "#EXT-X-KEY:METHOD=AES-128,URI=\"[a-z0-9./-]{0,10}\"(,IV=0x[0-9A-F]{4})?",
                "#EXT-X-MAP:URI=\"[a-z./]{1,8}\"(,BYTERANGE=\"[0-9]{1,3}@[0-9]{1,3}\")?",
                "#EXT-X-PART:DURATION=0\\.5,URI=\"[a-z0-9.]{1,8}\"(,INDEPENDENT=YES)?",
                "#EXT-X-[A-Z-]{1,10}(:[A-Z0-9=,\"./-]{0,16})?",
                "# [ -~]{0,12}",
                Just(String::new()),
            ]
        }

        proptest! {
            /// Whatever bytes come from an origin: an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), now in 1u64..4_000_000_000_000) {
                let (key, names) = (key(), ParamNames::default());
                let _ = rewrite(&bytes, &here("/s/a/index.m3u8"), &issue(&key, &names, NOW));
                let _ = simulate_live(&bytes, 3, now);
                let mut playlist = b"#EXTM3U\n".to_vec();
                playlist.extend_from_slice(&bytes);
                let _ = rewrite(&playlist, &here("/s/a/index.m3u8"), &issue(&key, &names, NOW));
                let _ = simulate_live(&playlist, 3, now);
            }

            /// A playlist either refuses to rewrite, or comes back identical once the tokens are
            /// taken out: nothing but URIs ever changes. (These generated playlists all rewrite.)
            #[test]
            fn only_uris_change(lines in proptest::collection::vec(line(), 0..16), crlf in any::<bool>()) {
                let ending = if crlf { "\r\n" } else { "\n" };
                let text = format!("#EXTM3U{ending}#EXT-X-TARGETDURATION:4{ending}{}", lines.join(ending));
                let (key, names) = (key(), ParamNames::default());
                let out = rewrite(text.as_bytes(), &here("/s/a/index.m3u8"), &issue(&key, &names, NOW));
                prop_assert!(out.is_ok(), "{:?}", out);
                prop_assert_eq!(strip_tokens(&out.unwrap_or_default()), text);
            }

            /// A skeleton filled for a viewer is the rewrite for that viewer, byte for byte,
            /// whichever request path spelling and LL-HLS sticky memory, on the first call (which
            /// compiles it) and on the next ones (which fill the kept one).
            #[test]
            fn a_skeleton_fills_to_the_rewrite(
                lines in proptest::collection::vec(line(), 0..16),
                path in prop_oneof![Just("/s/a/index.m3u8"), Just("/s//a/./index.m3u8"), Just("/s/a/b/../index.m3u8")],
                now in 1_600_000_000u64..1_900_000_000,
            ) {
                let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:4\n{}", lines.join("\n"));
                let Ok(shape) = vet(text.as_bytes()) else { return Ok(()) };
                let verdicts = Verdicts::default();
                let vetted = verdicts.vet(path, text.as_bytes()).unwrap();
                let (key, names) = (key(), ParamNames::default());
                let (memory_a, memory_b) = (StickyExpiries::default(), StickyExpiries::default());
                for (round, now) in [now, now + 1, now + 7].into_iter().enumerate() {
                    let issue_a = Issue { sticky: Some(&memory_a), ..issue(&key, &names, now) };
                    let issue_b = Issue { sticky: Some(&memory_b), ..issue(&key, &names, now) };
                    let direct = rewrite_vetted(text.as_bytes(), shape, &here(path), &issue_a);
                    let filled = rewrite_remembered(&vetted, &here(path), &issue_b);
                    prop_assert_eq!(&direct, &filled, "round {}", round);
                }
            }
        }
    }
}
