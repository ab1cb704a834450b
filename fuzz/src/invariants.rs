//! What hlsgate's parsers and playlist rewriter must hold to, whatever they are given. The fuzz
//! targets and `tests/properties.rs` (which includes this file by path) run these same checks;
//! each `check_*` panics with the offending values when an invariant breaks.
//!
//! The rewriter is checked against an independent reading of the playlist: its own URI finder,
//! RFC 3986 resolution as a player does it, and `token::sign` — never the rewriter's helpers.

use std::net::IpAddr;

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hlsgate::client_ip::{client_ip, ForwardedHeader, Proxies};
use hlsgate::playlist::{self, Issue, Location, PlaylistError, Shape};
use hlsgate::request_path;
use hlsgate::token::{self, Accept, Denial, Key, ParamNames, Presented, Valid, TOKEN_LEN};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The largest expiry a query may carry: 19 decimal digits.
pub const MAX_EXPIRES: u64 = 9_999_999_999_999_999_999;

// ---------------------------------------------------------------------------------------------
// Token query
// ---------------------------------------------------------------------------------------------

/// What a site signs: the other half of a query check.
#[derive(Debug, Clone, Copy)]
pub struct Signing<'a> {
    pub path: &'a str,
    pub ip: Option<&'a str>,
    pub key: &'a Key,
    /// In `1..=MAX_EXPIRES`.
    pub expires: u64,
}

/// `token::parse_query` never panics; it reads a query that names each token parameter
/// exactly once, and what it reads has one spelling and checks as `sign` says; a signed URL
/// whose other parameters are `query` reads back as signed, unless they name ours too.
pub fn check_query(query: &str, names: &ParamNames, signing: &Signing) {
    let parsed = token::parse_query(query, names);
    let named = |name: &str| query.split('&').filter(|pair| decoded_name(pair) == name.as_bytes()).count();
    let (tokens, expiries) = (named(&names.token), named(&names.expires));
    match parsed {
        Ok(presented) => {
            assert_eq!((tokens, expiries), (1, 1), "{query:?} read as {presented:?}");
            check_presented(&presented, names, signing);
        }
        Err(Denial::Repeated) => assert!(tokens > 1 || expiries > 1, "{query:?}: nothing repeated"),
        Err(Denial::Missing) => {
            assert!((tokens == 0 || expiries == 0) && tokens < 2 && expiries < 2, "{query:?}: not missing")
        }
        Err(_) => assert!(tokens == 1 && expiries == 1, "{query:?}"),
    }
    check_signed_query(query, names, signing);
}

fn check_presented(presented: &Presented, names: &ParamNames, signing: &Signing) {
    assert!((1..=MAX_EXPIRES).contains(&presented.expires), "{presented:?}");
    // Re-spelling what was read the canonical way (and with nginx's padding) reads the same.
    let canonical = format!(
        "{}={}&{}={}",
        names.token,
        URL_SAFE_NO_PAD.encode(presented.digest),
        names.expires,
        presented.expires
    );
    assert_eq!(token::parse_query(&canonical, names), Ok(*presented), "{canonical}");
    let padded = canonical.replacen('&', "==&", 1);
    assert_eq!(token::parse_query(&padded, names), Ok(*presented), "{padded}");
    // `check` agrees with `digest`: signature first, then the clock.
    let genuine = token::digest(presented.expires, signing.path, signing.ip, signing.key) == presented.digest;
    let keys = [signing.key.clone()];
    let ips = [signing.ip];
    let accept = Accept { paths: &[signing.path], ips: &ips, keys: &keys, skew: 0 };
    let expected = if genuine { Ok(Valid { expires: presented.expires }) } else { Err(Denial::BadSignature) };
    assert_eq!(token::check(presented, &accept, 0), expected);
    let late = if genuine { Err(Denial::Expired) } else { Err(Denial::BadSignature) };
    assert_eq!(token::check(presented, &accept, presented.expires), late);
}

/// A URL signed the way the README says, with `query` as its other parameters, checks for the
/// signed path, address and key, wherever ours stand; if the others name a token parameter
/// too, the query is refused as ambiguous.
fn check_signed_query(query: &str, names: &ParamNames, signing: &Signing) {
    let Signing { path, ip, key, expires } = *signing;
    let token = token::sign(expires, path, ip, key);
    assert_eq!(token.len(), TOKEN_LEN, "{token}");
    let url = token::signed_url(&format!("{path}?{query}"), &token, expires, names);
    let signed_query = url.get(path.len() + 1..).expect("signed_url keeps the path in front");
    let first = format!("{}={token}&{}={expires}&{query}", names.token, names.expires);
    if names_a_token_parameter(query, names) {
        assert_eq!(token::parse_query(signed_query, names), Err(Denial::Repeated), "{url}");
        assert_eq!(token::parse_query(&first, names), Err(Denial::Repeated), "{first}");
        return;
    }
    let expected = Presented { digest: token::digest(expires, path, ip, key), expires };
    assert_eq!(token::parse_query(signed_query, names), Ok(expected), "{url}");
    assert_eq!(token::parse_query(&first, names), Ok(expected), "{first}");
    let keys = [key.clone()];
    let ips = [ip];
    let accept = Accept { paths: &token::covering_paths(path), ips: &ips, keys: &keys, skew: 0 };
    assert_eq!(token::check(&expected, &accept, expires - 1), Ok(Valid { expires }));
    assert_eq!(token::check(&expected, &accept, expires), Err(Denial::Expired));
}

/// Whether any `name[=value]` pair of a query has one of the token parameters' names, decoded.
fn names_a_token_parameter(query: &str, names: &ParamNames) -> bool {
    query.split('&').any(|pair| is_token_pair(pair, names))
}

fn is_token_pair(pair: &str, names: &ParamNames) -> bool {
    let name = decoded_name(pair);
    name == names.token.as_bytes() || name == names.expires.as_bytes()
}

/// The name of a `name[=value]` pair, percent-decoded.
fn decoded_name(pair: &str) -> Vec<u8> {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    percent_decode_str(name).collect()
}

// ---------------------------------------------------------------------------------------------
// Request path
// ---------------------------------------------------------------------------------------------

/// What a player escapes when it sends a decoded path again.
const RESEND: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'?');

/// `request_path::parse` never panics and accepts exactly the paths the README's rules allow;
/// an accepted path is clean, splits into stream and file that recombine, and reads the same
/// when sent again.
pub fn check_request_path(raw: &str) {
    let parsed = request_path::parse(raw);
    assert_eq!(parsed.is_ok(), acceptable_path(raw), "{raw:?} gave {parsed:?}");
    let Ok(path) = parsed else { return };
    let decoded = path.as_str();
    assert_eq!(Ok(decoded), percent_decode_str(raw).decode_utf8().as_deref(), "{raw:?}");
    assert!(decoded.starts_with('/'), "{decoded:?}");
    assert!(!decoded.chars().any(|c| c.is_control() || c == '\\'), "{decoded:?}");
    assert!(clean_segments(decoded), "{decoded:?}");
    let (stream, file) = (path.stream(), path.file());
    assert!(!stream.contains('/') && !file.starts_with('/'), "{stream:?} {file:?}");
    let recombined = if file.is_empty() {
        decoded == format!("/{stream}") || decoded == format!("/{stream}/")
    } else {
        decoded == format!("/{stream}/{file}")
    };
    assert!(recombined, "{decoded:?} is not /{stream:?}/{file:?}");
    assert_eq!(path.origin_path(), &decoded[1..]);
    let lower = decoded.to_ascii_lowercase();
    assert_eq!(path.is_playlist(), lower.ends_with(".m3u8") || lower.ends_with(".m3u"), "{decoded:?}");
    let again = utf8_percent_encode(decoded, RESEND).to_string();
    assert_eq!(request_path::parse(&again).as_ref().map(|p| p.as_str()), Ok(decoded), "{again:?}");
}

/// The README's path rules, restated: absolute; no encoded `/` or `\`; UTF-8 once decoded; no
/// control character or backslash; no `.`, `..` or empty segment (a trailing `/` is allowed).
fn acceptable_path(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    if !raw.starts_with('/') || lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    let Ok(decoded) = percent_decode_str(raw).decode_utf8() else { return false };
    !decoded.chars().any(|c| c.is_control() || c == '\\') && clean_segments(&decoded)
}

fn clean_segments(decoded: &str) -> bool {
    if decoded == "/" {
        return true;
    }
    let inner = &decoded[1..];
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    inner.split('/').all(|segment| !matches!(segment, "" | "." | ".."))
}

// ---------------------------------------------------------------------------------------------
// Client address
// ---------------------------------------------------------------------------------------------

/// `client_ip` never panics; an untrusted peer is the client whatever the headers say; an
/// answer is the peer or an address written in the configured header; only that header is
/// read; and what a client writes left of the hop the walk stopped at changes nothing.
pub fn check_client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &Proxies) {
    let peer = peer.to_canonical();
    let found = client_ip(peer, headers, proxies);
    if !is_trusted(peer, proxies) {
        assert_eq!(found, Ok(peer), "untrusted peer {peer}");
        return;
    }
    if let Ok(ip) = found {
        assert_eq!(ip, ip.to_canonical(), "not canonical");
        assert!(
            ip == peer || written_in(ip, headers, proxies.header),
            "{ip} is neither {peer} nor in {headers:?}"
        );
    }
    let mut only_ours = headers.clone();
    only_ours.remove(header_name(other_header(proxies.header)));
    assert_eq!(client_ip(peer, &only_ours, proxies), found, "the other header changed the answer");
    let settled = match found {
        Ok(ip) => !is_trusted(ip, proxies),
        Err(_) => true,
    };
    if settled {
        for forged in [&b"6.6.6.6"[..], b"for=6.6.6.6", b"unknown", b"\xff"] {
            let forged_headers = with_element_in_front(headers, proxies.header, forged);
            assert_eq!(client_ip(peer, &forged_headers, proxies), found, "{forged_headers:?}");
        }
    }
}

fn is_trusted(ip: IpAddr, proxies: &Proxies) -> bool {
    proxies.trusted.iter().any(|net| net.contains(&ip))
}

fn header_name(header: ForwardedHeader) -> &'static str {
    match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    }
}

fn other_header(header: ForwardedHeader) -> ForwardedHeader {
    match header {
        ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
        ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
    }
}

/// Whether some run of address characters in the header's values reads as `ip` (bare, or
/// `v4:port`; `[v6]` brackets are not address characters, so they split runs by themselves).
fn written_in(ip: IpAddr, headers: &HeaderMap, header: ForwardedHeader) -> bool {
    headers.get_all(header_name(header)).iter().any(|value| {
        value.as_bytes().split(|b| !(b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))).any(|run| {
            let Ok(text) = std::str::from_utf8(run) else { return false };
            let bare = text.rsplit_once(':').map(|(host, _port)| host);
            [Some(text), bare]
                .into_iter()
                .flatten()
                .any(|t| t.parse::<IpAddr>().is_ok_and(|a| a.to_canonical() == ip))
        })
    })
}

/// The headers with one more element at the far left of the configured header, where only the
/// client writes.
fn with_element_in_front(headers: &HeaderMap, header: ForwardedHeader, element: &[u8]) -> HeaderMap {
    let name = header_name(header);
    let mut values: Vec<Vec<u8>> = headers.get_all(name).iter().map(|v| v.as_bytes().to_vec()).collect();
    match values.first_mut() {
        Some(first) => *first = [element, b", ", first].concat(),
        None => values.push(element.to_vec()),
    }
    let mut out = headers.clone();
    out.remove(name);
    for value in values {
        let value =
            axum::http::HeaderValue::from_bytes(&value).expect("a valid value with a valid element in front");
        out.append(name, value);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Playlist rewrite
// ---------------------------------------------------------------------------------------------

/// Where a playlist is requested: the path as the player sent it, and the hosts the config
/// lets absolute URLs name.
#[derive(Debug, Clone, Copy)]
pub struct PlaylistAt<'a> {
    pub raw_path: &'a str,
    pub public_hosts: &'a [String],
}

/// What one rewrite did: how many URIs it signed and how many it left as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub signed: usize,
    pub unsigned: usize,
}

/// `playlist::rewrite` never panics, and a playlist it rewrites:
///
/// (a) keeps every byte outside its URIs; a changed URI is the original, less any token
///     parameters (and empty `?`) of its own, plus one token pair before its fragment;
/// (b) carries tokens that verify: `token::sign` over the path a player requests (RFC 3986
///     resolution against the playlist's URL, then percent-decoding) gives each token, and
///     the server's own path and query parsing accept the request;
/// (c) signs files inside the playlist's stream only: never a directory, another stream,
///     another host or scheme, a dot segment;
/// (d) signs every URI that names such a file (else the player gets a 403).
///
/// The raw path must be one `request_path::parse` accepts.
pub fn check_rewrite(text: &[u8], at: &PlaylistAt, issue: &Issue) -> Result<Rewritten, PlaylistError> {
    let path = request_path::parse(at.raw_path).expect("a playlist path the server accepts");
    let location = Location { path: path.as_str(), public_hosts: at.public_hosts };
    let out = playlist::rewrite(text, &location, issue)?;
    let input = std::str::from_utf8(text).expect("rewritten, so UTF-8");
    let shape = playlist::vet(text).expect("rewritten, so it passes vetting");
    let reader = Reader { at, stream: path.stream(), issue, expires: issued_expiry(shape, issue) };
    let mut in_lines = input.split_inclusive('\n');
    let mut out_lines = out.split_inclusive('\n');
    let mut rewritten = Rewritten::default();
    loop {
        match (in_lines.next(), out_lines.next()) {
            (Some(before), Some(after)) => reader.compare_line(before, after, &mut rewritten),
            (None, None) => return Ok(rewritten),
            (before, after) => panic!("line counts differ: {before:?} against {after:?}"),
        }
    }
}

/// The expiry every URI of this playlist gets: master and VOD for the session, live media for
/// the segment TTL, rounded up to a quarter of the TTL.
fn issued_expiry(shape: Shape, issue: &Issue) -> u64 {
    let ttl = match shape {
        Shape::Master | Shape::Media { vod: true, .. } => issue.session_ttl,
        Shape::Media { target_duration, vod: false } => issue.segment_ttl.resolve(target_duration),
    };
    token::issue_expiry(issue.now, ttl, token::default_step(ttl))
}

/// Reads one playlist's rewrite against its original.
struct Reader<'a> {
    at: &'a PlaylistAt<'a>,
    stream: &'a str,
    issue: &'a Issue<'a>,
    expires: u64,
}

impl Reader<'_> {
    /// (a) line by line: same ending, same bytes between URIs, each URI kept or signed.
    fn compare_line(&self, before: &str, after: &str, rewritten: &mut Rewritten) {
        let (content, ending) = split_ending(before);
        let (new_content, new_ending) = split_ending(after);
        assert_eq!(ending, new_ending, "line ending of {before:?}");
        let spans = uri_spans(content);
        let (mut old_at, mut new_at) = (0, 0);
        for (index, span) in spans.iter().enumerate() {
            let between = &content[old_at..span.start];
            let rest = new_content.get(new_at..).unwrap_or_default();
            assert!(rest.starts_with(between), "bytes before a URI changed: {before:?} -> {after:?}");
            new_at += between.len();
            let last = index + 1 == spans.len();
            let end = self.uri_end(new_content, new_at, content.len() - span.end, span.quoted, last, after);
            let (uri, new_uri) = (&content[span.start..span.end], &new_content[new_at..end]);
            if uri == new_uri {
                self.check_unsigned(uri);
                rewritten.unsigned += 1;
            } else {
                self.check_signed(uri, new_uri);
                rewritten.signed += 1;
            }
            (old_at, new_at) = (span.end, end);
        }
        assert_eq!(
            &content[old_at..],
            new_content.get(new_at..).unwrap_or_default(),
            "{before:?} -> {after:?}"
        );
    }

    /// Where a URI ends in the rewritten line: the last one is followed by exactly the bytes
    /// that followed it before; a quoted one ends at its quote; an unquoted one at its comma.
    fn uri_end(&self, line: &str, from: usize, tail: usize, quoted: bool, last: bool, after: &str) -> usize {
        let end = if last {
            line.len().checked_sub(tail)
        } else {
            let stop = if quoted { '"' } else { ',' };
            line.get(from..).and_then(|rest| rest.find(stop)).map(|i| from + i)
        };
        end.filter(|&end| end >= from && line.is_char_boundary(end))
            .unwrap_or_else(|| panic!("cannot find the URI's end in {after:?}"))
    }

    /// (a), (b) and (c) for one URI that got a token.
    fn check_signed(&self, uri: &str, new_uri: &str) {
        let names = self.issue.names;
        let signed = SignedUri::read(new_uri, names).unwrap_or_else(|| panic!("{uri:?} became {new_uri:?}"));
        let (fragment, old_fragment) = (split_fragment(new_uri).1, split_fragment(uri).1);
        assert_eq!(fragment, old_fragment, "{uri:?} -> {new_uri:?}: fragment");
        assert_eq!(
            signed.kept,
            without_token_parameters(split_fragment(uri).0, names),
            "{uri:?} -> {new_uri:?}"
        );
        assert_eq!(signed.expires, self.expires, "{new_uri:?}: expiry");
        let head = split_query(split_fragment(uri).0).0;
        let raw = resolve(self.at.raw_path, head, self.at.public_hosts)
            .unwrap_or_else(|| panic!("{uri:?} signed, but names no path on a public host"));
        let decoded = percent_decode_str(&raw)
            .decode_utf8()
            .unwrap_or_else(|_| panic!("{uri:?} signed, but {raw:?} is not UTF-8 decoded"));
        // (c): a file inside this stream.
        assert!(!decoded.ends_with('/'), "{uri:?} signed for the directory {decoded:?}");
        assert!(!has_dot_segment(&decoded), "{uri:?} signed for {decoded:?}");
        assert_eq!(
            first_segment(&decoded),
            self.stream,
            "{uri:?} signed for {decoded:?}, outside the stream"
        );
        // (b): the token is over that path.
        let expected = token::sign(signed.expires, &decoded, self.issue.ip, self.issue.key);
        assert_eq!(signed.token, expected, "{uri:?} -> {new_uri:?}: token not over {decoded:?}");
        self.check_request(&raw, &decoded, signed.query, new_uri);
    }

    /// (b) end to end: the request the player sends passes the server's path and token checks.
    fn check_request(&self, raw: &str, decoded: &str, query: &str, new_uri: &str) {
        // A path the server refuses (400: control character, backslash…) opens nothing; that
        // is the path rules' business, not the rewriter's.
        let Ok(path) = request_path::parse(raw) else { return };
        assert_eq!(path.as_str(), decoded);
        let presented = token::parse_query(query, self.issue.names)
            .unwrap_or_else(|denial| panic!("{new_uri:?}: the server reads its query as {denial}"));
        let keys = [self.issue.key.clone()];
        let ips = [self.issue.ip];
        let accept = Accept { paths: &token::covering_paths(decoded), ips: &ips, keys: &keys, skew: 0 };
        assert_eq!(
            token::check(&presented, &accept, self.issue.now),
            Ok(Valid { expires: self.expires }),
            "{new_uri:?}"
        );
    }

    /// (d): a URI left as it was names nothing this stream serves.
    fn check_unsigned(&self, uri: &str) {
        if uri.is_empty() || uri.contains(&format!("{}=", self.issue.names.token)) {
            // Empty: nothing to fetch. With a token already: it may be one identical to ours.
            return;
        }
        let head = split_query(split_fragment(uri).0).0;
        let Some(raw) = resolve(self.at.raw_path, head, self.at.public_hosts) else { return };
        let Ok(decoded) = percent_decode_str(&raw).decode_utf8() else { return };
        let file_here =
            !decoded.ends_with('/') && !has_dot_segment(&decoded) && first_segment(&decoded) == self.stream;
        assert!(!file_here, "{uri:?} names {decoded:?} in the stream but got no token");
    }
}

/// A line's content and its line ending (`\n`, `\r\n`, or none on a last line).
fn split_ending(line: &str) -> (&str, &str) {
    let content = line.trim_end_matches(['\r', '\n']);
    (content, &line[content.len()..])
}

/// Where a URI sits in a line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    quoted: bool,
}

/// The tags whose attribute (URI, or SERVER-URI for steering) a player fetches. Not
/// EXT-X-RENDITION-REPORT: a player only matches that URI against the ones it has.
const URI_TAGS: [(&str, &str); 9] = [
    ("#EXT-X-KEY", "URI"),
    ("#EXT-X-MAP", "URI"),
    ("#EXT-X-MEDIA", "URI"),
    ("#EXT-X-I-FRAME-STREAM-INF", "URI"),
    ("#EXT-X-SESSION-KEY", "URI"),
    ("#EXT-X-SESSION-DATA", "URI"),
    ("#EXT-X-PART", "URI"),
    ("#EXT-X-PRELOAD-HINT", "URI"),
    ("#EXT-X-CONTENT-STEERING", "SERVER-URI"),
];

/// The URIs of one line: the line itself (blanks around it aside) when it is not a tag or a
/// comment, else the URI attributes of a URI-carrying tag.
fn uri_spans(content: &str) -> Vec<Span> {
    let body = content.trim_matches([' ', '\t']);
    if body.is_empty() {
        return Vec::new();
    }
    if !body.starts_with('#') {
        let start = content.len() - content.trim_start_matches([' ', '\t']).len();
        return vec![Span { start, end: start + body.len(), quoted: false }];
    }
    let Some((tag, list)) = content.split_once(':') else { return Vec::new() };
    let Some(&(_, wanted)) = URI_TAGS.iter().find(|(name, _)| *name == tag) else { return Vec::new() };
    let offset = tag.len() + 1;
    attribute_values(list)
        .unwrap_or_else(|| panic!("rewritten, but {content:?} has an attribute list that does not read"))
        .into_iter()
        .filter(|(name, _)| *name == wanted)
        .map(|(_, span)| Span { start: span.start + offset, end: span.end + offset, quoted: span.quoted })
        .collect()
}

/// RFC 8216 §4.2 attribute lists, with the blanks packagers put around commas: `(name, value
/// span)` pairs, a quoted value's span without its quotes. None for a list that does not read.
fn attribute_values(list: &str) -> Option<Vec<(&str, Span)>> {
    let mut pairs = Vec::new();
    let mut at = skip_blanks(list, 0);
    while at < list.len() {
        let eq = at + list[at..].find('=')?;
        let name = &list[at..eq];
        if name.is_empty() || name.contains([',', '"']) {
            return None;
        }
        if list[eq + 1..].starts_with('"') {
            let start = eq + 2;
            let end = start + list[start..].find('"')?;
            pairs.push((name, Span { start, end, quoted: true }));
            at = skip_blanks(list, end + 1);
            if at < list.len() {
                at = skip_blanks(list, at + list[at..].strip_prefix(',').map(|_| 1)?);
            }
        } else {
            let start = eq + 1;
            let end = list[start..].find(',').map_or(list.len(), |i| start + i);
            pairs.push((name, Span { start, end, quoted: false }));
            at = skip_blanks(list, (end + 1).min(list.len()));
        }
    }
    Some(pairs)
}

fn skip_blanks(text: &str, from: usize) -> usize {
    from + text[from..].len() - text[from..].trim_start_matches([' ', '\t']).len()
}

/// A URI the rewriter signed, read back from its end: `kept` then `?` or `&`, the token
/// pair, and the fragment.
struct SignedUri<'a> {
    /// Everything before the separator of the token pair.
    kept: &'a str,
    /// The whole query, as the server will read it.
    query: &'a str,
    token: &'a str,
    expires: u64,
}

impl<'a> SignedUri<'a> {
    fn read(uri: &'a str, names: &ParamNames) -> Option<Self> {
        let before_fragment = split_fragment(uri).0;
        let (rest, digits) = before_fragment.rsplit_once(&format!("&{}=", names.expires))?;
        let expires = digits.parse().ok().filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
        let (rest, token) = rest.split_at_checked(rest.len().checked_sub(TOKEN_LEN)?)?;
        let token_chars = token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let rest = rest.strip_suffix(&format!("{}=", names.token)).filter(|_| token_chars)?;
        let kept = rest.strip_suffix('?').or_else(|| rest.strip_suffix('&'))?;
        // `?` exactly when nothing else is left of the query.
        if rest.ends_with('?') == kept.contains('?') {
            return None;
        }
        let query = split_query(before_fragment).1?;
        Some(SignedUri { kept, query, token, expires })
    }
}

/// What a signed URI keeps of the original before its fragment: the head, and the query's
/// pairs other than token parameters, if any are left.
fn without_token_parameters(uri: &str, names: &ParamNames) -> String {
    let (head, query) = split_query(uri);
    let kept: Vec<&str> = query
        .filter(|query| !query.is_empty())
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|pair| !is_token_pair(pair, names))
        .collect();
    if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

/// RFC 3986 §3: the fragment starts at the first `#`…
fn split_fragment(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (uri, None),
    }
}

/// …and the query at the first `?` before it.
fn split_query(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (uri, None),
    }
}

/// The raw absolute path a player requests for a reference (without query or fragment) in a
/// playlist at `base`, or None when it is not on one of the public hosts over http(s).
fn resolve(base: &str, head: &str, public_hosts: &[String]) -> Option<String> {
    if let Some((scheme, rest)) = scheme_of(head) {
        let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        return if web { path_on_public_host(rest.strip_prefix("//")?, public_hosts) } else { None };
    }
    if let Some(network) = head.strip_prefix("//") {
        return path_on_public_host(network, public_hosts);
    }
    if head.is_empty() {
        return Some(base.to_owned());
    }
    if head.starts_with('/') {
        return Some(remove_dot_segments(head));
    }
    let directory = &base[..=base.rfind('/')?];
    Some(remove_dot_segments(&format!("{directory}{head}")))
}

/// RFC 3986 §3.1: `scheme ":"` where a scheme is a letter, then letters, digits, `+-.`.
fn scheme_of(head: &str) -> Option<(&str, &str)> {
    let colon = head.find(':')?;
    let scheme = &head[..colon];
    let mut bytes = scheme.bytes();
    let first = bytes.next()?.is_ascii_alphabetic();
    (first && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
        .then(|| (scheme, &head[colon + 1..]))
}

fn path_on_public_host(network: &str, public_hosts: &[String]) -> Option<String> {
    let (authority, path) = network.find('/').map_or((network, "/"), |slash| network.split_at(slash));
    let public = public_hosts.iter().any(|host| host.eq_ignore_ascii_case(authority));
    public.then(|| remove_dot_segments(path))
}

/// RFC 3986 §5.2.4, step by step as the RFC writes it (input buffer to output buffer).
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::with_capacity(path.len());
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest;
        } else if input.starts_with("/./") || input == "/." {
            input = if input == "/." { "/" } else { &input[2..] };
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            output.truncate(output.rfind('/').unwrap_or(0));
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let end = input.get(1..).and_then(|rest| rest.find('/')).map_or(input.len(), |i| i + 1);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| segment == "." || segment == "..")
}

fn first_segment(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path).split('/').next().unwrap_or_default()
}
