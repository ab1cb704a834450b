//! What hlsgate's parsers and playlist rewriter must hold to, whatever they are given. The fuzz
//! targets and `tests/properties.rs` (which includes this file by path) run these same checks;
//! each `check_*` panics with the offending values when an invariant breaks.
//!
//! The rewriter is checked against an independent reading of the playlist: its own URI finder
//! and variable substitution, RFC 3986 resolution as a browser does it, the server's own path
//! and query parsing, and `token::sign`; never the rewriter's helpers.

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
    let valid = Valid { expires: presented.expires, ip_less: signing.ip.is_none() };
    let expected = if genuine { Ok(valid) } else { Err(Denial::BadSignature) };
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
    assert_eq!(token::check(&expected, &accept, expires - 1), Ok(Valid { expires, ip_less: ip.is_none() }));
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
/// an accepted path is decoded with its slashes merged (as nginx hashes `$uri`), is clean,
/// splits into stream and file that recombine, and reads the same when sent again.
pub fn check_request_path(raw: &str) {
    let parsed = request_path::parse(raw);
    assert_eq!(parsed.is_ok(), acceptable_path(raw), "{raw:?} gave {parsed:?}");
    let Ok(path) = parsed else { return };
    let decoded = path.as_str();
    let expected = percent_decode_str(raw).decode_utf8().map(|d| merge_slashes(&d));
    assert_eq!(Ok(decoded), expected.as_deref(), "{raw:?}");
    assert!(decoded.starts_with('/'), "{decoded:?}");
    assert!(!decoded.chars().any(|c| c.is_control() || c == '\\'), "{decoded:?}");
    assert!(!decoded.contains("//") && !has_dot_segment(decoded), "{decoded:?}");
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
/// control character or backslash; no `.` or `..` segment once slashes are merged.
fn acceptable_path(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase();
    if !raw.starts_with('/') || lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    let Ok(decoded) = percent_decode_str(raw).decode_utf8() else { return false };
    !decoded.chars().any(|c| c.is_control() || c == '\\') && !has_dot_segment(&merge_slashes(&decoded))
}

/// Runs of `/` as one (nginx's `merge_slashes`).
fn merge_slashes(path: &str) -> String {
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !merged.ends_with('/') {
            merged.push(c);
        }
    }
    merged
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

/// Where a playlist is requested and what the stream's config says about URLs.
#[derive(Debug, Clone, Copy)]
pub struct PlaylistAt<'a> {
    /// The path as the player sent it (percent-encoded, slashes unmerged).
    pub raw_path: &'a str,
    /// The playlist request's raw query (read by `EXT-X-DEFINE:QUERYPARAM`).
    pub query: &'a str,
    /// The stream's HTTP origins: absolute URIs under one are moved onto the stream's path.
    pub origin_bases: &'a [String],
    /// The authorities absolute URLs may name to be signed.
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
/// (a) keeps every byte outside its URIs; a changed URI is the original (moved onto the stream's
///     path when it named an origin), less its own token parameters and an empty `?`, plus one
///     token pair before its fragment;
/// (b) carries tokens that verify: after the player's variable substitution and RFC 3986
///     resolution against the playlist's URL (with a browser's `\\` and `%2e` habits), the
///     server's own path and query parsing accept the request, and the token is
///     `token::sign` over that path with the expiry the playlist's class gets;
/// (c) signs files of the playlist's stream only: never another stream, host or scheme, nor a
///     directory, except the directory directly holding a file whose name uses a variable
///     hlsgate cannot know (`IMPORT`), which is the one place a directory token is issued;
/// (d) signs every URI without variables that names a file of the stream (else a 403).
///
/// The raw path must be one `request_path::parse` accepts.
pub fn check_rewrite(text: &[u8], at: &PlaylistAt, issue: &Issue) -> Result<Rewritten, PlaylistError> {
    let path = request_path::parse(at.raw_path).expect("a playlist path the server accepts");
    let location = Location {
        path: at.raw_path,
        query: at.query,
        origin_bases: at.origin_bases,
        public_hosts: at.public_hosts,
    };
    let out = playlist::rewrite(text, &location, issue)?;
    let input = std::str::from_utf8(text).expect("rewritten, so UTF-8");
    let shape = playlist::vet(text).expect("rewritten, so it passes vetting");
    let mut reader = Reader {
        at,
        stream: path.stream(),
        issue,
        expires: issued_expiry(shape, issue),
        variables: Vec::new(),
        rewritten: Rewritten::default(),
    };
    let mut in_lines = input.split_inclusive('\n');
    let mut out_lines = out.split_inclusive('\n');
    loop {
        match (in_lines.next(), out_lines.next()) {
            (Some(before), Some(after)) => reader.compare_line(before, after),
            (None, None) => return Ok(reader.rewritten),
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

/// Reads one playlist's rewrite against its original, top to bottom as a player does.
struct Reader<'a> {
    at: &'a PlaylistAt<'a>,
    stream: &'a str,
    issue: &'a Issue<'a>,
    expires: u64,
    /// `EXT-X-DEFINE`s so far: name, and value when hlsgate can know it.
    variables: Vec<(String, Option<String>)>,
    rewritten: Rewritten,
}

impl Reader<'_> {
    /// (a) line by line: same ending, same bytes between URIs, each URI kept or signed.
    fn compare_line(&mut self, before: &str, after: &str) {
        let (content, ending) = split_ending(before);
        let (new_content, new_ending) = split_ending(after);
        assert_eq!(ending, new_ending, "line ending of {before:?}");
        self.learn_variables(content);
        let spans = uri_spans(content);
        let (mut old_at, mut new_at) = (0, 0);
        for (index, span) in spans.iter().enumerate() {
            let between = &content[old_at..span.start];
            let rest = new_content.get(new_at..).unwrap_or_default();
            assert!(rest.starts_with(between), "bytes before a URI changed: {before:?} -> {after:?}");
            new_at += between.len();
            let last = index + 1 == spans.len();
            let end = uri_end(new_content, new_at, content.len() - span.end, span.quoted, last, after);
            let (uri, new_uri) = (&content[span.start..span.end], &new_content[new_at..end]);
            if uri == new_uri {
                self.check_unsigned(uri);
                self.rewritten.unsigned += 1;
            } else {
                self.check_signed(uri, new_uri);
                self.rewritten.signed += 1;
            }
            (old_at, new_at) = (span.end, end);
        }
        assert_eq!(
            &content[old_at..],
            new_content.get(new_at..).unwrap_or_default(),
            "{before:?} -> {after:?}"
        );
    }

    /// RFC 8216bis §4.4.2.3: `NAME`+`VALUE`, `QUERYPARAM` (from the playlist's own query, as
    /// `URLSearchParams` reads it), `IMPORT` (from a master this rewrite never sees: unknown).
    fn learn_variables(&mut self, content: &str) {
        let body = content.trim_matches([' ', '\t']);
        let Some(list) = body.strip_prefix("#EXT-X-DEFINE:") else { return };
        let pairs =
            attribute_values(list).unwrap_or_else(|| panic!("rewritten, but {content:?} does not read"));
        let value_of =
            |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, span)| &list[span.start..span.end]);
        let definition =
            match (value_of("NAME"), value_of("VALUE"), value_of("QUERYPARAM"), value_of("IMPORT")) {
                (Some(name), Some(value), _, _) => Some((name, Some(value.to_owned()))),
                (_, _, Some(name), _) => Some((name, query_parameter(self.at.query, name))),
                (_, _, _, Some(name)) => Some((name, None)),
                _ => None,
            };
        if let Some((name, value)) = definition {
            self.variables.retain(|(known, _)| known != name);
            self.variables.push((name.to_owned(), value));
        }
    }

    /// `text` as a player reads it: every `{$name}` of a variable with a known value replaced.
    fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((before, name, after)) = next_reference(rest) {
            out.push_str(before);
            match self.variables.iter().find(|(known, _)| known == name).and_then(|(_, v)| v.as_deref()) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[before.len()..rest.len() - after.len()]),
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }

    /// (a), (b) and (c) for one URI that got a token.
    fn check_signed(&self, uri: &str, new_uri: &str) {
        let names = self.issue.names;
        let signed = SignedUri::read(new_uri, names).unwrap_or_else(|| panic!("{uri:?} became {new_uri:?}"));
        assert_eq!(split_fragment(new_uri).1, split_fragment(uri).1, "{uri:?} -> {new_uri:?}: fragment");
        assert_eq!(signed.expires, self.expires, "{new_uri:?}: expiry");
        let original = split_fragment(uri).0;
        let head = split_query(original).0;
        let variables = has_reference(uri);
        let moved = if variables { None } else { self.on_hlsgate(head) };
        let expected =
            without_token_parameters(moved.as_deref().unwrap_or(head), split_query(original).1, names);
        // With variables the separator depends on what the player's substitution makes of
        // the text before it, so it may also be nothing (a value ending in `?` or `&`).
        let kept_ok = if variables {
            let before_token = &new_uri[..signed.kept.len() + signed.separator.len()];
            before_token.strip_prefix(expected.as_str()).is_some_and(|sep| matches!(sep, "" | "?" | "&"))
        } else {
            signed.kept == expected && !signed.separator.is_empty()
        };
        assert!(kept_ok, "{uri:?} -> {new_uri:?}: kept {:?}, expected {expected:?}", signed.kept);
        self.check_request(uri, new_uri, &signed);
    }

    /// (b) and (c): the request the player sends for the signed URI.
    fn check_request(&self, uri: &str, new_uri: &str, signed: &SignedUri) {
        let sent = self.substitute(new_uri);
        let (head, query) = split_query(split_fragment(&sent).0);
        let query = query.unwrap_or_else(|| panic!("{new_uri:?} is sent as {sent:?}, without a query"));
        let presented = token::parse_query(query, self.issue.names).unwrap_or_else(|denial| {
            panic!("{new_uri:?} is sent as {sent:?}, whose query reads as {denial}")
        });
        let (hashed, requested) = if has_reference(head) {
            // A file name the player fills in from a variable we cannot know: the token is for
            // the directory directly holding it, and opens any file there.
            let slash = head.rfind('/');
            let directory = slash.map_or("./", |slash| &head[..=slash]);
            assert!(
                !has_reference(directory),
                "{uri:?} signed with an unknown variable outside its file name"
            );
            let path = self
                .requested(directory)
                .unwrap_or_else(|| panic!("{uri:?} signed, but its directory is not ours"));
            assert!(path.ends_with('/'), "{uri:?}: {path:?}");
            (path.clone(), format!("{path}x"))
        } else {
            let path = self
                .requested(head)
                .unwrap_or_else(|| panic!("{uri:?} signed, but {sent:?} names no file of ours"));
            assert!(!path.ends_with('/'), "{uri:?} signed for the directory {path:?}");
            (path.clone(), path)
        };
        assert_eq!(first_segment(&hashed), self.stream, "{uri:?} signed for {hashed:?}, outside the stream");
        let expected = token::sign(signed.expires, &hashed, self.issue.ip, self.issue.key);
        assert_eq!(signed.token, expected, "{uri:?} -> {new_uri:?}: token not over {hashed:?}");
        let keys = [self.issue.key.clone()];
        let ips = [self.issue.ip];
        let accept = Accept { paths: &token::covering_paths(&requested), ips: &ips, keys: &keys, skew: 0 };
        let checked = token::check(&presented, &accept, self.issue.now);
        let valid = Valid { expires: self.expires, ip_less: self.issue.ip.is_none() };
        assert_eq!(checked, Ok(valid), "{new_uri:?} sent as {sent:?}");
    }

    /// The path the server reads from the request a player sends for `head` (a reference
    /// without query or fragment): resolved against the playlist's URL, then as
    /// `request_path::parse` reads a request. None when that is not a request to us, or one
    /// the server refuses (400).
    fn requested(&self, head: &str) -> Option<String> {
        let raw = resolve(self.at.raw_path, head, self.at.public_hosts)?;
        request_path::parse(&raw).ok().map(|path| path.as_str().to_owned())
    }

    /// (d): a URI left as it was names nothing this stream serves.
    fn check_unsigned(&self, uri: &str) {
        let token_pair = format!("{}=", self.issue.names.token);
        if uri.is_empty() || has_reference(uri) || uri.contains(&token_pair) {
            // Nothing to fetch; the player's to fill in; or maybe a token identical to ours.
            return;
        }
        let head = split_query(split_fragment(uri).0).0;
        let head = self.on_hlsgate(head).unwrap_or_else(|| head.to_owned());
        let Some(path) = self.requested(&head) else { return };
        let file_here = !path.ends_with('/') && first_segment(&path) == self.stream;
        assert!(!file_here, "{uri:?} names {path:?} in the stream but got no token");
    }

    /// An absolute URL under one of the stream's origins, as hlsgate serves it.
    fn on_hlsgate(&self, head: &str) -> Option<String> {
        self.at.origin_bases.iter().find_map(|base| {
            let authority_end = base.find("://")? + 3;
            let path_start = authority_end + base[authority_end..].find('/')?;
            let origin =
                head.get(..path_start).filter(|origin| origin.eq_ignore_ascii_case(&base[..path_start]))?;
            let rest = head[origin.len()..].strip_prefix(&base[path_start..])?;
            Some(format!("/{}/{rest}", self.stream))
        })
    }
}

/// The value of the first `name` parameter of a query, as `URLSearchParams` decodes it.
fn query_parameter(query: &str, name: &str) -> Option<String> {
    let decode = |text: &str| percent_decode_str(&text.replace('+', " ")).decode_utf8_lossy().into_owned();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// The first `{$name}` reference (name: letters, digits, `-`, `_`): text before, name, after.
fn next_reference(text: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(start) = text[from..].find("{$").map(|i| from + i) {
        let rest = &text[start + 2..];
        let len =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap_or(rest.len());
        if len > 0 && rest[len..].starts_with('}') {
            return Some((&text[..start], &rest[..len], &rest[len + 1..]));
        }
        from = start + 2;
    }
    None
}

fn has_reference(text: &str) -> bool {
    next_reference(text).is_some()
}

/// A line's content and its line ending (`\n`, `\r\n`, or none on a last line).
fn split_ending(line: &str) -> (&str, &str) {
    let content = line.trim_end_matches(['\r', '\n']);
    (content, &line[content.len()..])
}

/// Where a URI ends in the rewritten line: the last one is followed by exactly the bytes that
/// followed it before; a quoted one ends at its quote; an unquoted one at its comma.
fn uri_end(line: &str, from: usize, tail: usize, quoted: bool, last: bool, after: &str) -> usize {
    let end = if last {
        line.len().checked_sub(tail)
    } else {
        let stop = if quoted { '"' } else { ',' };
        line.get(from..).and_then(|rest| rest.find(stop)).map(|i| from + i)
    };
    end.filter(|&end| end >= from && line.is_char_boundary(end))
        .unwrap_or_else(|| panic!("cannot find the URI's end in {after:?}"))
}

/// Where a URI sits in a line's content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    quoted: bool,
}

/// The tags whose attributes a player fetches. Not EXT-X-RENDITION-REPORT: a player only
/// matches that URI against the ones it has.
const URI_TAGS: [(&str, &[&str]); 11] = [
    ("#EXT-X-KEY", &["URI"]),
    ("#EXT-X-MAP", &["URI"]),
    ("#EXT-X-MEDIA", &["URI"]),
    ("#EXT-X-I-FRAME-STREAM-INF", &["URI"]),
    ("#EXT-X-IMAGE-STREAM-INF", &["URI"]),
    ("#EXT-X-SESSION-KEY", &["URI"]),
    ("#EXT-X-SESSION-DATA", &["URI"]),
    ("#EXT-X-PART", &["URI"]),
    ("#EXT-X-PRELOAD-HINT", &["URI"]),
    ("#EXT-X-CONTENT-STEERING", &["SERVER-URI"]),
    ("#EXT-X-DATERANGE", &["X-ASSET-URI", "X-ASSET-LIST"]),
];

/// The URIs of one line. Blanks around a line are not HLS but players read through them: the
/// line without them is a URI when it is not a tag or comment, else the URI attributes of a
/// URI-carrying tag are.
fn uri_spans(content: &str) -> Vec<Span> {
    let body = content.trim_matches([' ', '\t']);
    let lead = content.len() - content.trim_start_matches([' ', '\t']).len();
    if body.is_empty() {
        return Vec::new();
    }
    if !body.starts_with('#') {
        return vec![Span { start: lead, end: lead + body.len(), quoted: false }];
    }
    let Some((tag, list)) = body.split_once(':') else { return Vec::new() };
    let Some(&(_, wanted)) = URI_TAGS.iter().find(|(name, _)| *name == tag) else { return Vec::new() };
    let offset = lead + tag.len() + 1;
    attribute_values(list)
        .unwrap_or_else(|| panic!("rewritten, but {content:?} has an attribute list that does not read"))
        .into_iter()
        .filter(|(name, _)| wanted.contains(name))
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

/// A URI the rewriter signed, read back from its end: `kept` then `?` or `&` (or nothing), the
/// token pair, and the fragment.
struct SignedUri<'a> {
    /// Everything before the token pair and its separator.
    kept: &'a str,
    /// `?`, `&`, or nothing (only after a variable whose value ends the way a separator does).
    separator: &'a str,
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
        // `?` exactly when nothing else is left of the query.
        let (kept, separator) = match rest.strip_suffix('?') {
            Some(kept) if !kept.contains('?') => (kept, "?"),
            Some(_) => return None,
            None => match rest.strip_suffix('&').filter(|kept| kept.contains('?')) {
                Some(kept) => (kept, "&"),
                None => (rest, ""),
            },
        };
        Some(SignedUri { kept, separator, token, expires })
    }
}

/// What a signed URI keeps of the original before its fragment: its head, and the query's
/// pairs other than token parameters, if any are left.
fn without_token_parameters(head: &str, query: Option<&str>, names: &ParamNames) -> String {
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

/// The raw absolute path a browser requests for a reference (without query or fragment) in a
/// playlist at `base`, or None when it does not go to one of the public hosts over http(s).
/// RFC 3986 §5, with the WHATWG URL parser's habits for http(s): `\` is `/`, and `%2e` in a
/// dot segment is `.`.
fn resolve(base: &str, head: &str, public_hosts: &[String]) -> Option<String> {
    let head = head.replace('\\', "/");
    if let Some((scheme, rest)) = scheme_of(&head) {
        let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        return if web {
            path_on_public_host(rest.strip_prefix("//")?, Some(scheme), public_hosts)
        } else {
            None
        };
    }
    if let Some(network) = head.strip_prefix("//") {
        return path_on_public_host(network, None, public_hosts);
    }
    if head.is_empty() {
        return Some(remove_dot_segments(base));
    }
    if head.starts_with('/') {
        return Some(remove_dot_segments(&head));
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

/// The path of `authority/path` when the authority is a public host: host without regard to
/// case, a missing port meaning the scheme's default.
fn path_on_public_host(network: &str, scheme: Option<&str>, public_hosts: &[String]) -> Option<String> {
    let (authority, path) = network.find('/').map_or((network, "/"), |slash| network.split_at(slash));
    let default = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Some("80"),
        Some("https") => Some("443"),
        _ => None,
    };
    let host_port = |authority: &'_ str| -> (String, Option<String>) {
        match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
                (host.to_ascii_lowercase(), Some(port.to_owned()).or(default.map(str::to_owned)))
            }
            _ => (authority.to_ascii_lowercase(), default.map(str::to_owned)),
        }
    };
    let ours = host_port(authority);
    public_hosts.iter().any(|host| host_port(host) == ours).then(|| remove_dot_segments(path))
}

/// RFC 3986 §5.2.4, step by step as the RFC writes it (input buffer to output buffer), after
/// reading `%2e` in a segment of dots as `.` as a browser does.
fn remove_dot_segments(path: &str) -> String {
    let dotted: Vec<&str> = path
        .split('/')
        .map(|segment| match segment.to_ascii_lowercase().as_str() {
            "%2e" => ".",
            ".%2e" | "%2e." | "%2e%2e" => "..",
            _ => segment,
        })
        .collect();
    let dotted = dotted.join("/");
    let mut input = dotted.as_str();
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
