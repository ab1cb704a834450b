//! Every real-world playlist we could find, through the real server, checked by a reader of our
//! own that shares no code with `src/playlist`.
//!
//! The fixtures are other projects' test playlists (hls.js, video.js, shaka-packager, m3u8-rs,
//! grafov/m3u8, globocom/m3u8, Eyevinn, …), collected in `<repo>/../shared/peer-playlists/fixtures`
//! (`SOURCES.tsv` names each one's origin; `EXPECT.tsv` lists the spec-invalid ones, which may be
//! refused with 502). They are read from there at test time and never committed; they are copied
//! into the test's temp streams dir. **Where that folder is absent** (a checkout without the
//! shared folder next to it) the test prints that it is absent and returns early: that is the one
//! skip in the suite. Where it is present, reading zero fixtures fails the test.
//!
//! Each fixture is served in three variants (as is, with CRLF line endings, without its final
//! newline) from one stream, fetched with an IP-less entry link from a viewer at 127.0.0.2, and:
//! - not listed in EXPECT.tsv: answered 200, and the answer minus the added token parameters is
//!   the fixture byte for byte;
//! - every URI a player fetches that the rules sign carries exactly one token and one expiry, the
//!   token is the viewer's for the path the player will request (resolved with the `url` crate, as
//!   a browser does, after our own variable substitution; then read as the gate reads a request:
//!   percent-decoded, slashes merged), computed here with `md-5` and `base64` directly, and its
//!   expiry has the playlist's TTL class (session for masters and VODs, 3 × target duration for
//!   live media);
//! - every URI the rules leave alone is byte-identical;
//! - the signed URIs, requested as a browser sends them, are not refused: each named file is
//!   created first (empty, or a tiny playlist), so the answer must be 200;
//! - listed in EXPECT.tsv (or in [`ALSO_INVALID`], for the ones it misses): 502, or all of the
//!   above.
//!
//! A second test runs the same checks on a few playlists written here, for the rules the corpus
//! never reaches (URIs left alone for each reason, odd characters, every kind of variable, every
//! URI-carrying tag); it needs no shared folder.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use md5::{Digest as _, Md5};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

use common::*;

const KEY: &str = "corpus-key-2026";
/// The one stream; its folder holds every project's fixtures, in one folder per project and variant.
const STREAM: &str = "c";
const VIEWER: &str = "127.0.0.2";
/// The default `session_ttl`.
const SESSION_TTL: u64 = 14_400;
/// Listed in `public_hosts`, so absolute URLs naming it are resolved rather than left alone
/// (the fixtures' `example.com` URLs all point outside the stream, which must stay untouched).
const PUBLIC_HOST: &str = "example.com";
/// The host of the base URL playlists are resolved against: a reference that still names it
/// after resolution was relative (no fixture names it).
const BASE_HOST: &str = "hlsgate.invalid";
/// Extra parameters on every entry link: values for the fixtures' `EXT-X-DEFINE:QUERYPARAM`s
/// (the gate ignores parameters it does not know). Read as `URLSearchParams` reads them.
const ENTRY_EXTRA: &str = "token=t0k&parent-token=p%20t+1&foo=f%2Fo";
/// Signed URIs requested per playlist at most (every one is still verified): one fixture has
/// 40 000 segments, and three variants of it would be 120 000 requests; the next largest has 522.
const FETCH_CAP: usize = 600;
/// Requests in flight at once.
const CONCURRENCY: usize = 8;
/// What a file named by a signed URI is created with when it is a playlist: a valid one, so
/// fetching it is a 200 and not a 502.
const TINY_PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nx.ts\n#EXT-X-ENDLIST\n";
/// What an unknown (`IMPORT`ed) variable is taken to be when a request is built, as the master
/// would have set it.
const IMPORTED: &str = "imported";

/// Characters of a fixture's file name escaped in the entry link.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'=');

// ---------------------------------------------------------------------------------------
// Fixtures and variants
// ---------------------------------------------------------------------------------------

/// `<repo>/../shared/peer-playlists/fixtures`, as CI clones the repo next to `shared`.
fn fixtures_dir() -> PathBuf {
    repo_root().join("../shared/peer-playlists/fixtures")
}

struct Fixture {
    /// `project/file.m3u8`, as SOURCES.tsv and EXPECT.tsv name it.
    rel: String,
    project: String,
    name: String,
    bytes: Vec<u8>,
    /// Listed in EXPECT.tsv: may be refused with 502.
    invalid: bool,
}

/// Spec-invalid fixtures EXPECT.tsv (shared, read-only here) does not list yet: the same
/// rule applies to them, 502 or served correctly.
const ALSO_INVALID: [(&str, &str); 1] = [(
    "sethdeckard/date_range_scte35.m3u8",
    "the RFC 8216 example as printed, wrapped at 64 columns: EXT-X-DATERANGE quoted strings run \
     over line ends, and the continuation lines read as URI lines",
)];

fn read_fixtures(dir: &Path) -> Vec<Fixture> {
    let expect = std::fs::read_to_string(dir.join("EXPECT.tsv")).unwrap_or_default();
    let mut invalid: BTreeSet<&str> = expect
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split('\t').next())
        .collect();
    invalid.extend(ALSO_INVALID.map(|(rel, _)| rel));
    let mut fixtures = Vec::new();
    let mut projects: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    projects.sort();
    for project in projects.iter().filter(|p| p.is_dir()) {
        let mut files: Vec<_> = std::fs::read_dir(project).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            let name = file.file_name().unwrap().to_str().expect("UTF-8 fixture name").to_string();
            let lower = name.to_ascii_lowercase();
            if !(lower.ends_with(".m3u8") || lower.ends_with(".m3u")) {
                continue;
            }
            let project = project.file_name().unwrap().to_str().unwrap().to_string();
            let rel = format!("{project}/{name}");
            fixtures.push(Fixture {
                invalid: invalid.contains(rel.as_str()),
                bytes: std::fs::read(file).unwrap(),
                rel,
                project,
                name,
            });
        }
    }
    for listed in &invalid {
        assert!(
            fixtures.iter().any(|f| f.rel == *listed),
            "{listed} is listed as invalid but is not a fixture"
        );
    }
    fixtures
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    AsIs,
    Crlf,
    NoFinalNewline,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::AsIs, Variant::Crlf, Variant::NoFinalNewline];

    /// The folder a project's fixtures are served from: the same depth for every variant, so
    /// relative URIs resolve alike.
    fn folder(self, project: &str) -> String {
        match self {
            Variant::AsIs => project.to_string(),
            Variant::Crlf => format!("{project}~crlf"),
            Variant::NoFinalNewline => format!("{project}~nonl"),
        }
    }

    fn apply(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Variant::AsIs => bytes.to_vec(),
            Variant::Crlf => {
                let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
                for (i, &b) in bytes.iter().enumerate() {
                    if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
                        out.push(b'\r');
                    }
                    out.push(b);
                }
                out
            }
            Variant::NoFinalNewline => {
                let cut = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                cut.strip_suffix(b"\r").unwrap_or(cut).to_vec()
            }
        }
    }
}

/// One fixture in one variant, as served.
struct Case<'a> {
    fixture: &'a Fixture,
    variant: Variant,
    /// The served bytes.
    bytes: Vec<u8>,
    /// Decoded request path: what the entry token is over.
    path: String,
    /// The entry link's target.
    target: String,
    /// The URL a player would have fetched the playlist at (on [`BASE_HOST`]).
    base: Url,
}

impl Case<'_> {
    fn label(&self) -> String {
        format!("{} [{:?}]", self.fixture.rel, self.variant)
    }
}

fn case(fixture: &Fixture, variant: Variant, entry_expires: u64) -> Case<'_> {
    let folder = variant.folder(&fixture.project);
    let path = format!("/{STREAM}/{folder}/{}", fixture.name);
    let encoded = format!(
        "/{STREAM}/{}/{}",
        utf8_percent_encode(&folder, SEGMENT),
        utf8_percent_encode(&fixture.name, SEGMENT)
    );
    let token = md5_token(&format!("{entry_expires}{path} {KEY}"));
    let target = format!("{encoded}?{ENTRY_EXTRA}&md5={token}&expires={entry_expires}");
    let base = Url::parse(&format!("http://{BASE_HOST}{target}")).unwrap();
    Case { fixture, variant, bytes: variant.apply(&fixture.bytes), path, target, base }
}

/// base64url without padding of the MD5 of `message`: the Gcore / nginx `secure_link` token.
fn md5_token(message: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Md5::digest(message.as_bytes()))
}

// ---------------------------------------------------------------------------------------
// Our own reading of a playlist
// ---------------------------------------------------------------------------------------

/// The attributes of a tag whose values a player fetches (RENDITION-REPORT's `URI` is not one:
/// a player only matches it).
fn fetched_attributes(tag: &str) -> &'static [&'static str] {
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
        "#EXT-X-DATERANGE" => &["X-ASSET-URI", "X-ASSET-LIST"],
        _ => &[],
    }
}

/// An attribute list (RFC 8216 §4.2) as (name, value range): for a quoted string the range is
/// inside the quotes. Blanks before a name and around a comma are tolerated.
fn attributes(list: &str) -> Result<Vec<(&str, Range<usize>)>, String> {
    let bytes = list.as_bytes();
    let blanks = |mut i: usize| {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = blanks(0);
    while i < bytes.len() {
        let eq = list[i..].find('=').ok_or_else(|| format!("no '=' in {:?}", &list[i..]))? + i;
        let name = &list[i..eq];
        if name.is_empty() || name.contains([',', '"']) {
            return Err(format!("bad attribute name {name:?}"));
        }
        if bytes.get(eq + 1) == Some(&b'"') {
            let close = list[eq + 2..].find('"').ok_or("unterminated quoted string")? + eq + 2;
            out.push((name, eq + 2..close));
            i = blanks(close + 1);
            if i < bytes.len() {
                if bytes[i] != b',' {
                    return Err(format!("text after a quoted string: {:?}", &list[i..]));
                }
                i = blanks(i + 1);
            }
        } else {
            let end = list[eq + 1..].find(',').map_or(list.len(), |c| c + eq + 1);
            out.push((name, eq + 1..end));
            i = blanks((end + 1).min(list.len()));
        }
    }
    Ok(out)
}

/// `{$name}` references: (start, end, name) of each, in order.
fn references(text: &str) -> Vec<(usize, usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{$").map(|i| i + from) {
        let name_len = text[start + 2..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .count();
        let end = start + 2 + name_len;
        if name_len > 0 && text.as_bytes().get(end) == Some(&b'}') {
            out.push((start, end + 1, &text[start + 2..end]));
            from = end + 1;
        } else {
            from = start + 2;
        }
    }
    out
}

/// The variables a player knows at each line (RFC 8216bis §4.3): `NAME`/`VALUE`, `QUERYPARAM`
/// from the playlist URL's query; `IMPORT` comes from a master we do not have: unknown.
struct Variables {
    query: Vec<(String, String)>,
    defined: Vec<(String, Option<String>)>,
}

impl Variables {
    fn new(base: &Url) -> Self {
        Variables {
            query: base.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
            defined: vec![],
        }
    }

    fn define(&mut self, list: &str) -> Result<(), String> {
        let attrs = attributes(list)?;
        let get =
            |name: &str| attrs.iter().find(|(n, _)| *n == name).map(|(_, r)| list[r.clone()].to_string());
        let definition = if let (Some(name), Some(value)) = (get("NAME"), get("VALUE")) {
            Some((name, Some(value)))
        } else if let Some(name) = get("QUERYPARAM") {
            let value = self.query.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
            Some((name, value))
        } else {
            get("IMPORT").map(|name| (name, None))
        };
        if let Some((name, value)) = definition {
            self.defined.retain(|(known, _)| *known != name);
            self.defined.push((name, value));
        }
        Ok(())
    }

    /// `text` with known references replaced; unknown ones stay, or become `unknown`.
    fn substitute(&self, text: &str, unknown: Option<&str>) -> String {
        let mut out = String::new();
        let mut at = 0;
        for (start, end, name) in references(text) {
            out.push_str(&text[at..start]);
            let known = self.defined.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref());
            out.push_str(known.or(unknown).unwrap_or(&text[start..end]));
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// Which TTL the URIs of a playlist must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TtlClass {
    Session,
    /// Live media: 3 × target duration, at least 6 s.
    Segment(u64),
    /// Master and media tags both, or PLAYLIST-TYPE both VOD and EVENT (not valid HLS): either
    /// TTL is accepted.
    Either(u64),
}

impl TtlClass {
    fn of(text: &str) -> TtlClass {
        const MASTER: [&str; 7] = [
            "#EXT-X-STREAM-INF",
            "#EXT-X-I-FRAME-STREAM-INF",
            "#EXT-X-IMAGE-STREAM-INF",
            "#EXT-X-MEDIA",
            "#EXT-X-SESSION-DATA",
            "#EXT-X-SESSION-KEY",
            "#EXT-X-CONTENT-STEERING",
        ];
        const MEDIA: [&str; 14] = [
            "#EXTINF",
            "#EXT-X-TARGETDURATION",
            "#EXT-X-MEDIA-SEQUENCE",
            "#EXT-X-DISCONTINUITY-SEQUENCE",
            "#EXT-X-ENDLIST",
            "#EXT-X-PLAYLIST-TYPE",
            "#EXT-X-I-FRAMES-ONLY",
            "#EXT-X-BYTERANGE",
            "#EXT-X-DISCONTINUITY",
            "#EXT-X-KEY",
            "#EXT-X-MAP",
            "#EXT-X-PART",
            "#EXT-X-PRELOAD-HINT",
            "#EXT-X-PROGRAM-DATE-TIME",
        ];
        let (mut master, mut media, mut endlist, mut target) = (false, false, false, 0);
        let mut types = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim_matches([' ', '\t', '\r']);
            let (tag, value) = line.split_once(':').unwrap_or((line, ""));
            master |= MASTER.contains(&tag);
            media |= MEDIA.contains(&tag);
            endlist |= tag == "#EXT-X-ENDLIST";
            if tag == "#EXT-X-PLAYLIST-TYPE" {
                types.insert(value);
            }
            if tag == "#EXT-X-TARGETDURATION" {
                target = value.trim().parse().unwrap_or(0);
            }
        }
        let segment = (3 * target).max(6);
        // VOD: ENDLIST, or PLAYLIST-TYPE:VOD. A playlist typed both VOD and EVENT is either.
        let vod = endlist || types == BTreeSet::from(["VOD"]);
        let unsure = !endlist && types.len() > 1 && types.contains("VOD");
        match (master, media) {
            (true, false) => TtlClass::Session,
            (_, _) if vod => TtlClass::Session,
            (true, true) => TtlClass::Either(segment),
            (false, _) if unsure => TtlClass::Either(segment),
            (false, _) => TtlClass::Segment(segment),
        }
    }

    /// Issued expiries are `now + ttl` rounded up to a quarter of the TTL.
    fn admits(self, expires: u64, t0: u64, t1: u64) -> bool {
        let fits = |ttl: u64| {
            let step = (ttl / 4).max(1);
            expires >= t0 + ttl && expires <= t1 + ttl + step && expires.is_multiple_of(step)
        };
        match self {
            TtlClass::Session => fits(SESSION_TTL),
            TtlClass::Segment(ttl) => fits(ttl),
            TtlClass::Either(ttl) => fits(ttl) || fits(SESSION_TTL),
        }
    }
}

/// A request path as the gate reads it: refused (`Err`) for `%2F`/`%5C`, invalid UTF-8,
/// control characters, backslashes and dot segments; else percent-decoded, slashes merged.
fn gate_reading(raw: &str) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err("encoded separator");
    }
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| "not UTF-8")?;
    if decoded.chars().any(char::is_control) {
        return Err("control character");
    }
    if decoded.contains('\\') {
        return Err("backslash");
    }
    let mut merged = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    if merged.split('/').any(|s| s == "." || s == "..") {
        return Err("dot segment");
    }
    Ok(merged)
}

/// What the rules make of one URI as written.
#[derive(Debug)]
enum Verdict {
    Untouched(&'static str),
    /// Signed for `path`: a file, or (an unknown variable in the file name) its directory.
    Signed {
        path: String,
        directory: bool,
    },
}

fn verdict(written: &str, vars: &Variables, base: &Url) -> Verdict {
    if written.is_empty() {
        return Verdict::Untouched("empty");
    }
    let substituted = vars.substitute(written, None);
    if substituted.matches('#').count() != written.matches('#').count() {
        return Verdict::Untouched("a variable brings a '#'");
    }
    let Ok(url) = base.join(&substituted) else {
        return Verdict::Untouched("not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Verdict::Untouched("another scheme");
    }
    let authority = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => String::new(),
    };
    if authority != BASE_HOST && !authority.eq_ignore_ascii_case(PUBLIC_HOST) {
        return Verdict::Untouched("another host");
    }
    let Ok(path) = gate_reading(url.path()) else {
        return Verdict::Untouched("a path the gate refuses");
    };
    if path.split('/').nth(1) != Some(STREAM) {
        return Verdict::Untouched("outside the stream");
    }
    let slash = path.rfind('/').unwrap();
    if !references(&path[..slash]).is_empty() {
        return Verdict::Untouched("unknown variable in a directory");
    }
    if !references(&path[slash..]).is_empty() {
        return Verdict::Signed { path: path[..=slash].to_string(), directory: true };
    }
    if path.ends_with('/') {
        return Verdict::Untouched("a directory");
    }
    Verdict::Signed { path, directory: false }
}

/// A signed URI to request as a browser would.
#[derive(Debug, Clone)]
struct Fetch {
    target: String,
    /// The decoded path requested: the file to create.
    file: String,
    what: String,
}

/// What one playlist's check found.
#[derive(Default)]
struct Tally {
    signed: usize,
    directory_tokens: usize,
    untouched: BTreeMap<&'static str, usize>,
    fetches: Vec<Fetch>,
}

/// Checks a served playlist against the fixture bytes it was made from; returns the problems.
fn check_playlist(case: &Case, served: &[u8], t0: u64, t1: u64, tally: &mut Tally) -> Vec<String> {
    let label = case.label();
    let mut problems = Vec::new();
    let (Ok(written), Ok(served)) = (std::str::from_utf8(&case.bytes), std::str::from_utf8(served)) else {
        return vec![format!("{label}: served 200 but fixture or answer is not UTF-8")];
    };
    let class = TtlClass::of(written);
    let written_lines: Vec<&str> = written.split_inclusive('\n').collect();
    let served_lines: Vec<&str> = served.split_inclusive('\n').collect();
    if written_lines.len() != served_lines.len() {
        return vec![format!(
            "{label}: {} lines served for {} written\n--- served:\n{served}",
            served_lines.len(),
            written_lines.len()
        )];
    }
    let mut vars = Variables::new(&case.base);
    let mut uri = UriCheck { case, class, t0, t1, tally, problems: &mut problems, line: 0 };
    for (n, (w, s)) in written_lines.iter().zip(&served_lines).enumerate() {
        uri.line = n + 1;
        let (w_content, w_end) = split_ending(w);
        let (s_content, s_end) = split_ending(s);
        let (w_lead, w_body, w_trail) = split_blanks(w_content);
        let (s_lead, s_body, s_trail) = split_blanks(s_content);
        if (w_end, w_lead, w_trail) != (s_end, s_lead, s_trail) {
            uri.problem(format!("blanks or line ending changed: {w:?} served as {s:?}"));
            continue;
        }
        if !w_body.starts_with('#') {
            if !w_body.is_empty() {
                uri.check(w_body, s_body, &vars);
            } else if !s_body.is_empty() {
                uri.problem(format!("blank line served as {s:?}"));
            }
            continue;
        }
        let (tag, list) = w_body.split_once(':').unwrap_or((w_body, ""));
        if tag == "#EXT-X-DEFINE" {
            if let Err(why) = vars.define(list) {
                uri.problem(format!("EXT-X-DEFINE we cannot read ({why}) was served"));
            }
        }
        let wanted = fetched_attributes(tag);
        if wanted.is_empty() || !w_body.contains(':') {
            if s_body != w_body {
                uri.problem(format!("{w_body:?} served as {s_body:?}"));
            }
            continue;
        }
        let s_list = s_body.strip_prefix(tag).and_then(|r| r.strip_prefix(':'));
        let (Ok(w_attrs), Some(Ok(s_attrs))) = (attributes(list), s_list.map(attributes)) else {
            uri.problem(format!("served 200 with an attribute list we cannot read: {w_body:?} → {s_body:?}"));
            continue;
        };
        let s_list = s_list.unwrap();
        let names = |a: &[(&str, Range<usize>)]| a.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        if names(&w_attrs) != names(&s_attrs) {
            uri.problem(format!("attributes changed: {w_body:?} served as {s_body:?}"));
            continue;
        }
        // The served list with each fetched value put back as written must be the written list.
        let mut rebuilt = String::new();
        let mut copied = 0;
        for ((name, w_range), (_, s_range)) in w_attrs.iter().zip(&s_attrs) {
            if wanted.contains(name) {
                rebuilt.push_str(&s_list[copied..s_range.start]);
                rebuilt.push_str(&list[w_range.clone()]);
                copied = s_range.end;
                uri.check(&list[w_range.clone()], &s_list[s_range.clone()], &vars);
            }
        }
        rebuilt.push_str(&s_list[copied..]);
        if rebuilt != list {
            uri.problem(format!("more than the URIs changed: {w_body:?} served as {s_body:?}"));
        }
    }
    problems
}

/// A line without its ending (`\n`, `\r\n`, or nothing on the last line).
fn split_ending(line: &str) -> (&str, &str) {
    let content = line.strip_suffix('\n').unwrap_or(line);
    let content = content.strip_suffix('\r').unwrap_or(content);
    (content, &line[content.len()..])
}

/// Leading blanks, the body, trailing blanks.
fn split_blanks(content: &str) -> (&str, &str, &str) {
    let body = content.trim_start_matches([' ', '\t']);
    let lead = &content[..content.len() - body.len()];
    let trimmed = body.trim_end_matches([' ', '\t']);
    (lead, trimmed, &body[trimmed.len()..])
}

struct UriCheck<'a, 'c> {
    case: &'a Case<'c>,
    class: TtlClass,
    t0: u64,
    t1: u64,
    tally: &'a mut Tally,
    problems: &'a mut Vec<String>,
    line: usize,
}

impl UriCheck<'_, '_> {
    fn problem(&mut self, what: String) {
        self.problems.push(format!("{} line {}: {what}", self.case.label(), self.line));
    }

    /// One URI: as written in the fixture, and as served.
    fn check(&mut self, written: &str, served: &str, vars: &Variables) {
        let (path, directory) = match verdict(written, vars, &self.case.base) {
            Verdict::Untouched(why) => {
                if served == written {
                    *self.tally.untouched.entry(why).or_default() += 1;
                } else {
                    self.problem(format!("{written:?} must stay as written ({why}); served {served:?}"));
                }
                return;
            }
            Verdict::Signed { path, directory } => (path, directory),
        };
        // The token goes at the end, before a fragment, after `?` or `&` as the substituted URI
        // needs; nothing else changes.
        let (head, fragment) = written.split_at(written.find('#').unwrap_or(written.len()));
        let Some(added) = served.strip_prefix(head).and_then(|rest| rest.strip_suffix(fragment)) else {
            self.problem(format!("{written:?} (to sign for {path}) served as {served:?}"));
            return;
        };
        let separators: &[&str] = match vars.substitute(head, None).split_once('?') {
            None => &["?"],
            Some((_, query)) if query.is_empty() || query.ends_with('&') => &["", "&"],
            Some(_) => &["&"],
        };
        let Some((token, expires)) = added_token(added, separators) else {
            self.problem(format!(
                "{written:?} (to sign for {path}) served as {served:?}: not one token added"
            ));
            return;
        };
        // What the player sends: its own substitution, resolution, serialisation.
        let Ok(sent) = self.case.base.join(&vars.substitute(served, Some(IMPORTED))) else {
            self.problem(format!("{served:?} does not resolve"));
            return;
        };
        let pairs: Vec<(String, String)> = sent.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let values =
            |name: &str| pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        if values("md5") != [token.as_str()] || values("expires") != [expires.to_string().as_str()] {
            self.problem(format!(
                "{served:?} is sent as {sent} with md5 {:?}, expires {:?}",
                values("md5"),
                values("expires")
            ));
            return;
        }
        let Ok(file) = gate_reading(sent.path()) else {
            self.problem(format!("{served:?} is sent as {sent}, a path the gate refuses"));
            return;
        };
        let covered = if directory { file[..=file.rfind('/').unwrap()].to_string() } else { file.clone() };
        if covered != path {
            self.problem(format!("{served:?} is sent for {file}, but {written:?} resolves to {path}"));
        }
        let want = md5_token(&format!("{expires}{path}{VIEWER} {KEY}"));
        if token != want {
            self.problem(format!(
                "{served:?}: token {token} is not the viewer's for {path} at {expires} ({want})"
            ));
        }
        if !self.class.admits(expires, self.t0, self.t1) {
            self.problem(format!(
                "{served:?}: expires {expires} is not {:?} for a fetch in [{}, {}]",
                self.class, self.t0, self.t1
            ));
        }
        self.tally.signed += 1;
        self.tally.directory_tokens += usize::from(directory);
        let target = format!("{}?{}", sent.path(), sent.query().unwrap_or(""));
        self.tally.fetches.push(Fetch {
            target,
            file,
            what: format!("{} line {}: {served}", self.case.label(), self.line),
        });
    }
}

/// `added` is `{sep}md5={22 base64url}&expires={decimal}` with one of `separators`.
fn added_token(added: &str, separators: &[&str]) -> Option<(String, u64)> {
    separators.iter().find_map(|sep| {
        let rest = added.strip_prefix(sep)?.strip_prefix("md5=")?;
        let (token, expires) = rest.split_once("&expires=")?;
        let token_ok =
            token.len() == 22 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let expires_ok =
            !expires.is_empty() && !expires.starts_with('0') && expires.bytes().all(|b| b.is_ascii_digit());
        if !(token_ok && expires_ok) {
            return None;
        }
        Some((token.to_string(), expires.parse().ok()?))
    })
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

/// Sends every target from the viewer, `CONCURRENCY` at a time; answers in order, each with
/// the Unix seconds before and after it.
async fn fetch_all(to: SocketAddr, targets: Vec<String>) -> Vec<(Response, u64, u64)> {
    let targets = Arc::new(targets);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (targets, next) = (Arc::clone(&targets), Arc::clone(&next));
        workers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(target) = targets.get(i) else { return got };
                let t0 = now();
                let response = Request::get(to, target).from(VIEWER).send().await;
                got.push((i, response, t0, now()));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(got) = workers.join_next().await {
        all.extend(got.expect("a request failed"));
    }
    all.sort_by_key(|(i, ..)| *i);
    all.into_iter().map(|(_, r, t0, t1)| (r, t0, t1)).collect()
}

/// Up to `cap` of `items`, spread evenly, first and last included.
fn spread<T: Clone>(items: &[T], cap: usize) -> Vec<T> {
    if items.len() <= cap {
        return items.to_vec();
    }
    (0..cap).map(|i| items[i * (items.len() - 1) / (cap - 1)].clone()).collect()
}

/// Creates the file a signed URI names, unless something is there: a tiny playlist for a
/// playlist name, else empty. False when it cannot be created (a file in the way, a name too
/// long for the file system).
fn create(streams: &Path, file: &str) -> bool {
    let path = streams.join(file.trim_start_matches('/'));
    if path.exists() {
        return path.is_file();
    }
    let lower = file.to_ascii_lowercase();
    let contents = if lower.ends_with(".m3u8") || lower.ends_with(".m3u") { TINY_PLAYLIST } else { "" };
    path.parent().is_some_and(|dir| std::fs::create_dir_all(dir).is_ok())
        && std::fs::write(&path, contents).is_ok()
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

/// The corpus, three variants each, through one server. Skips itself (saying so) only where
/// the shared fixtures folder is absent; see the module comment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_playlist_is_served_signed_and_otherwise_byte_identical() {
    let dir = fixtures_dir();
    if !dir.is_dir() {
        eprintln!("SKIPPED: the peer playlist fixtures are absent ({} does not exist)", dir.display());
        return;
    }
    let fixtures = read_fixtures(&dir);
    assert!(!fixtures.is_empty(), "read zero fixtures from {}", dir.display());
    serve_and_check(&fixtures, &dir.display().to_string()).await;
}

/// Serves every fixture in every variant from one server, checks each answer and requests its
/// signed URIs; prints a summary and fails with every problem found. Returns what was counted.
async fn serve_and_check(fixtures: &[Fixture], source: &str) -> Tally {
    let started = Instant::now();
    let entry_expires = now() + 3600;
    let cases: Vec<Case> =
        fixtures.iter().flat_map(|f| Variant::ALL.map(|v| case(f, v, entry_expires))).collect();
    let setup = Setup::new("corpus");
    for case in &cases {
        setup.file(case.path.trim_start_matches('/'), &case.bytes);
    }
    // A long skew: the signed URIs are requested after every playlist was checked, and a
    // loaded machine may take longer than a live playlist's 6-second segment TTL for that. Skew
    // only widens the check; issued expiries are what they always are.
    let server = setup.start(
        &format!("public_hosts = [\"{PUBLIC_HOST}\"]"),
        &format!("[streams.{STREAM}]\nkeys = [\"{KEY}\"]\nskew = 3600\n"),
    );
    let streams = server.dir().join("streams");

    // 1. Every playlist, checked line by line and URI by URI.
    let answers = fetch_all(server.viewer_addr(), cases.iter().map(|c| c.target.clone()).collect()).await;
    let mut problems = Vec::new();
    let mut tally = Tally::default();
    let (mut ok, mut refused) = (0, BTreeSet::new());
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut either = BTreeSet::new();
    let mut fetches = Vec::new();
    for (case, (response, t0, t1)) in cases.iter().zip(&answers) {
        match response.status {
            200 => {
                ok += 1;
                if response.header("content-type") != Some("application/vnd.apple.mpegurl") {
                    problems.push(format!(
                        "{}: Content-Type {:?}",
                        case.label(),
                        response.header("content-type")
                    ));
                }
                let mut one = Tally::default();
                problems.extend(check_playlist(case, &response.body, *t0, *t1, &mut one));
                let class = TtlClass::of(&String::from_utf8_lossy(&case.bytes));
                let class = match class {
                    TtlClass::Session => "session",
                    TtlClass::Segment(_) => "segment",
                    TtlClass::Either(_) => {
                        either.insert(case.fixture.rel.as_str());
                        "either"
                    }
                };
                *classes.entry(class).or_default() += 1;
                tally.signed += one.signed;
                tally.directory_tokens += one.directory_tokens;
                for (why, n) in one.untouched {
                    *tally.untouched.entry(why).or_default() += n;
                }
                // Distinct targets, spread over the playlist.
                let mut seen = HashSet::new();
                one.fetches.retain(|f| seen.insert(f.target.clone()));
                fetches.extend(spread(&one.fetches, FETCH_CAP));
            }
            502 if case.fixture.invalid => {
                refused.insert((case.fixture.rel.clone(), case.variant));
            }
            status => problems.push(format!(
                "{}: {status} {}{}",
                case.label(),
                response.text().trim_end(),
                if case.fixture.invalid { "" } else { " (not listed in EXPECT.tsv: must be 200)" }
            )),
        }
    }
    let playlists_checked = started.elapsed();

    // 2. The signed URIs, requested as a browser would, each naming a file that exists.
    let mut absent = HashSet::new();
    for fetch in &fetches {
        if !create(&streams, &fetch.file) {
            absent.insert(fetch.file.clone());
        }
    }
    let answers = fetch_all(server.viewer_addr(), fetches.iter().map(|f| f.target.clone()).collect()).await;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (fetch, (response, ..)) in fetches.iter().zip(&answers) {
        *statuses.entry(response.status).or_default() += 1;
        let want: &[u16] = if absent.contains(&fetch.file) { &[404] } else { &[200] };
        if !want.contains(&response.status) {
            problems.push(format!(
                "{}: GET {} answered {} {} (wanted {want:?})",
                fetch.what,
                fetch.target,
                response.status,
                response.text().trim_end()
            ));
        }
    }

    let invalid_fixtures = fixtures.iter().filter(|f| f.invalid).count();
    let refused_fixtures: BTreeSet<&str> = refused.iter().map(|(rel, _)| rel.as_str()).collect();
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "corpus: {} fixtures × {} variants = {} playlists from {source}",
        fixtures.len(),
        Variant::ALL.len(),
        cases.len(),
    );
    let _ = writeln!(
        summary,
        "  200: {ok}; 502: {} ({} fixtures, all among the {invalid_fixtures} listed as invalid)",
        refused.len(),
        refused_fixtures.len()
    );
    let _ = writeln!(summary, "  TTL classes of the 200s: {classes:?}; either: {either:?}");
    let untouched: usize = tally.untouched.values().sum();
    let _ = writeln!(
        summary,
        "  URIs signed: {} ({} with a directory token); untouched: {untouched} {:?}",
        tally.signed, tally.directory_tokens, tally.untouched
    );
    let _ = writeln!(
        summary,
        "  signed URIs requested (≤ {FETCH_CAP} distinct per playlist): {}, answers {statuses:?}; {} files absent",
        fetches.len(),
        absent.len()
    );
    let _ = writeln!(
        summary,
        "  time: playlists {:.1} s, all {:.1} s; fixtures refused with 502: {refused_fixtures:?}",
        playlists_checked.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    eprint!("{summary}");
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n{summary}",
        problems.len(),
        problems.iter().take(80).cloned().collect::<Vec<_>>().join("\n")
    );
    tally
}

// ---------------------------------------------------------------------------------------
// Edge cases the corpus does not reach
// ---------------------------------------------------------------------------------------

/// A media playlist line for each URI, after an EXTINF.
fn segments(uris: &[&str]) -> String {
    uris.iter().map(|uri| format!("#EXTINF:4,\n{uri}\n")).collect()
}

/// Playlists written here for the rules the real-world corpus never exercises: URIs that must
/// stay untouched for each reason, odd characters, variables of every kind, every URI-carrying
/// tag, blanks, and playlist names that need escaping.
fn edge_fixtures() -> Vec<Fixture> {
    let media = format!(
        "#EXTM3U\n#EXT-X-VERSION:11\n#EXT-X-TARGETDURATION:4\n\
         #EXT-X-DEFINE:NAME=\"p\",VALUE=\"part-\"\n#EXT-X-DEFINE:NAME=\"q\",VALUE=\"q.ts?a=1\"\n\
         #EXT-X-DEFINE:NAME=\"e\",VALUE=\"e.ts?\"\n#EXT-X-DEFINE:NAME=\"h\",VALUE=\"x#y\"\n\
         #EXT-X-DEFINE:NAME=\"d\",VALUE=\"sub/x\"\n#EXT-X-DEFINE:NAME=\"pct\",VALUE=\"%41\"\n\
         #EXT-X-DEFINE:IMPORT=\"imp\"\n#EXT-X-DEFINE:QUERYPARAM=\"token\"\n\
         #EXT-X-KEY:METHOD=AES-128,URI=\"k{{$imp}}.key\"\n\
         #EXT-X-MAP:URI=\"{{$p}}init.mp4\"\n\
         {}\
           #EXT-X-MAP:URI=\"indented-init.mp4\"\n\
         #EXT-X-KEY:METHOD=AES-128, URI=\"spaced.key\" , IV=0x1\n\
         #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://k\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
         {}\
         #EXT-X-DATERANGE:ID=\"ad\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"2024-01-01T00:00:00Z\",\
         X-ASSET-URI=\"ad/{{$p}}ad.m3u8\",X-ASSET-LIST=\"ads.json\",X-OTHER=\"no.json\"\n\
         #EXT-X-PART:DURATION=1.0,URI=\"{{$p}}5.1.mp4\"\n#EXT-X-PART:DURATION=1.0,URI=\"#frag\"\n\
         #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{{$p}}5.2.mp4\"\n\
         #EXT-X-RENDITION-REPORT:URI=\"../other/live.m3u8\",LAST-MSN=4\n",
        segments(&[
            ".//a.ts",
            "b//c.ts",
            "a|b.ts",
            "a^b.ts",
            "a[1].ts",
            "seg one.ts",
            "%41.ts",
            "é.ts",
            "a;b=c.ts",
            "a%25b.ts",
            "a%2Fb.ts",
            "a%5cb.ts",
            "a%00.ts",
            "%ff.ts",
            "a%0Ab.ts",
            ".",
            "./",
            "..",
            "sub/",
            "sub/..",
            "?x=1",
            "s.ts?",
            "s.ts?a=1&&b&",
            "s.ts?a=1#t=10",
            "s.ts#a#b",
            "{$p}1.ts",
            "{$q}",
            "{$q}&b=2",
            "{$e}",
            "{$h}.ts",
            "{$d}/3.ts",
            "{$pct}.ts",
            "t-{$token}.ts",
            "a{$imp}.ts",
            "{$imp}.ts",
            "{$imp}/a.ts",
            "x/{$imp}/a.ts",
            "a.ts?v={$imp}",
            "b{$nothing}.ts",
            "../up.ts",
            "../../other/x.ts",
            "/c/abs.ts",
            "/other/abs.ts",
            "/c//edge///abs2.ts",
            "//example.com/c/net.ts",
            "https://EXAMPLE.com/c/host.ts",
            "http://example.com/c/edge/../x.ts",
            "https://example.org/c/x.ts",
            "http://example.com:8080/c/x.ts",
            "skd://x",
            "data:text/plain,x",
            "  indented.ts",
            "\tindented2.ts  ",
        ]),
        segments(&["after-keys.ts"]),
    );
    let master = "#EXTM3U\n#EXT-X-VERSION:11\n\
        #EXT-X-DEFINE:QUERYPARAM=\"foo\"\n#EXT-X-DEFINE:QUERYPARAM=\"parent-token\"\n\
        #EXT-X-DEFINE:NAME=\"v\",VALUE=\"variant\"\n\
        #EXT-X-CONTENT-STEERING:SERVER-URI=\"steer.json?x={$v}\",PATHWAY-ID=\"A\"\n\
        #EXT-X-SESSION-DATA:DATA-ID=\"d\",URI=\"meta/{$v}.json\"\n\
        #EXT-X-SESSION-DATA:DATA-ID=\"e\",VALUE=\"URI=no.json\"\n
        #EXT-X-SESSION-DATA:DATA-ID=\"f\",URI=\"\"\n\
        #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"keys/s.key\"\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"A, b\",URI=\"audio/{$parent-token}.m3u8\"\n\
        #EXT-X-IMAGE-STREAM-INF:BANDWIDTH=1,URI=\"thumbs/t.m3u8\"\n\
        #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"{$foo}/if.m3u8\"\n\
        #EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\n{$v}/index.m3u8\n\
        #EXT-X-STREAM-INF:BANDWIDTH=2\nHTTPS://example.com/c/edge/upper.m3u8\n";
    let vod = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n{}",
        segments(&["?x=1", "a.ts", "../edge/b.ts", "c d.ts"])
    );
    let fixture = |name: &str, text: String| Fixture {
        rel: format!("edge/{name}"),
        project: "edge".into(),
        name: name.into(),
        bytes: text.into_bytes(),
        invalid: false,
    };
    vec![
        fixture("media.m3u8", media),
        fixture("master.m3u8", master.to_string()),
        fixture("100%.m3u8", vod.clone()),
        fixture("play list.M3U8", format!("{vod}#EXT-X-ENDLIST\n")),
    ]
}

/// Runs without the shared folder: the same checks on the edge cases above, and every reason
/// to leave a URI alone is met at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_case_playlists_written_here_pass_the_same_checks() {
    let tally = serve_and_check(&edge_fixtures(), "tests/corpus.rs").await;
    let reasons: BTreeSet<&str> = tally.untouched.keys().copied().collect();
    let all = BTreeSet::from([
        "empty",
        "a variable brings a '#'",
        "another scheme",
        "another host",
        "a path the gate refuses",
        "outside the stream",
        "unknown variable in a directory",
        "a directory",
    ]);
    assert_eq!(reasons, all, "not every reason to leave a URI alone was exercised");
    assert!(tally.directory_tokens >= 3 * 4, "{} directory tokens", tally.directory_tokens);
}
