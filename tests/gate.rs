//! Issue 3 against the real `hlsgate serve` on loopback: every rule of the gatekeeper, one
//! server per test (ports 0, own temp dir), viewers told apart by the 127.0.0.x address their
//! socket is bound to.
//!
//! Tokens the server writes into playlists are never trusted as such: each one is recomputed
//! here from the URI's resolved path, the viewer's binding and the stream's key (and once with
//! `openssl md5`), then fetched from the viewer's address (200) and from another one (403).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hlsgate::token::{default_step, sign, signed_url, Key, ParamNames};

const VIEWER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const LOG_WAIT: Duration = Duration::from_secs(10);
/// Bigger than the origin's whole-file limit (16 MiB), so it takes the streamed path.
const BIG: usize = (16 << 20) + 123_457;

// ---------------------------------------------------------------------------------------
// Setup helpers
// ---------------------------------------------------------------------------------------

/// Writes `streams/<rel>` into a running server's dir.
fn put(server: &Server, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    server.dir().write(Path::new("streams").join(rel), contents)
}

/// A URL signed with the default parameter names.
fn url(path: &str, key: &str, ip: Option<&str>, expires: u64) -> String {
    signed(path, key, ip, expires)
}

/// A payload whose every byte depends on its offset, so a shifted or truncated body shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i % 251) as u8) ^ seed).collect()
}

fn count_lines(server: &Server, needle: &str) -> usize {
    server.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until at least `n` log lines contain `needle`.
fn wait_for_lines(server: &Server, needle: &str, n: usize) {
    let deadline = Instant::now() + LOG_WAIT;
    while count_lines(server, needle) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} log lines with {needle:?}; logs:\n{}",
            server.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Independent checking of rewritten playlists
// ---------------------------------------------------------------------------------------

/// The tags whose `URI` (or `SERVER-URI`) attribute the spec says is signed.
const URI_TAGS: [&str; 8] = [
    "#EXT-X-KEY:",
    "#EXT-X-MAP:",
    "#EXT-X-MEDIA:",
    "#EXT-X-I-FRAME-STREAM-INF:",
    "#EXT-X-SESSION-KEY:",
    "#EXT-X-SESSION-DATA:",
    "#EXT-X-PART:",
    "#EXT-X-PRELOAD-HINT:",
];

/// Every URI a player would read from this playlist text: URI lines, the quoted `URI` of the
/// URI-carrying tags, `SERVER-URI` of content steering, and rendition reports' `URI`.
fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_matches([' ', '\t', '\r']);
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_string());
            continue;
        }
        let attr =
            if URI_TAGS.iter().any(|t| line.starts_with(t)) || line.starts_with("#EXT-X-RENDITION-REPORT:") {
                ",URI=\""
            } else if line.starts_with("#EXT-X-CONTENT-STEERING:") {
                ",SERVER-URI=\""
            } else {
                continue;
            };
        // Prefix a comma so the first attribute matches like the others, and `SERVER-URI=`
        // never passes for `URI=`.
        let list = format!(",{}", line.split_once(':').unwrap().1);
        if let Some(at) = list.find(attr) {
            let value = &list[at + attr.len()..];
            out.push(value[..value.find('"').expect("closing quote")].to_string());
        }
    }
    out
}

/// One signed URI of a rewritten playlist, taken apart.
#[derive(Debug)]
struct SignedUri {
    uri: String,
    /// The decoded path a player requests, which the token must be over.
    path: String,
    /// What to send as the request target: path and the whole query.
    target: String,
    token: String,
    expires: u64,
}

/// Splits a signed URI as a player would resolve it against `base` (the playlist's path) on
/// `host`. None for URIs that carry no token.
fn signed_uri(uri: &str, base: &str, host: &str, names: &ParamNames) -> Option<SignedUri> {
    let (head, query) = uri.split_once('?')?;
    let query = query.split('#').next().unwrap();
    let param = |name: &str| {
        query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('=')).map(str::to_string)
    };
    let token = param(&names.token)?;
    let expires = param(&names.expires)?.parse().expect("numeric expiry");
    let path = resolve(base, head, host).unwrap_or_else(|| panic!("{uri} signed but not on this host"));
    let target = format!("{path}?{query}");
    Some(SignedUri { uri: uri.to_string(), path, target, token, expires })
}

/// RFC 3986 resolution, just enough for these playlists: same-host absolute URLs, absolute
/// paths, relative paths with `..`.
fn resolve(base: &str, head: &str, host: &str) -> Option<String> {
    let joined = if let Some(rest) = head.strip_prefix("http://").or_else(|| head.strip_prefix("https://")) {
        let (authority, path) = rest.split_at(rest.find('/')?);
        if authority != host {
            return None;
        }
        path.to_string()
    } else if head.starts_with('/') {
        head.to_string()
    } else {
        format!("{}{head}", &base[..=base.rfind('/').unwrap()])
    };
    let mut kept: Vec<&str> = Vec::new();
    for segment in joined.trim_start_matches('/').split('/') {
        match segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    Some(format!("/{}", kept.join("/")))
}

/// Removes every `?md5=…&expires=…` / `&md5=…&expires=…` the server added, giving back what
/// the origin wrote (the test playlists carry no token parameters of their own).
fn strip_tokens(text: &str, names: &ParamNames) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let found = ["?", "&"].iter().filter_map(|sep| rest.find(&format!("{sep}{}=", names.token))).min();
        let Some(at) = found else {
            out.push_str(rest);
            return out;
        };
        let after_token = at + 1 + names.token.len() + 1 + 22;
        let expires = format!("&{}=", names.expires);
        assert!(
            rest[after_token..].starts_with(&expires),
            "token not followed by its expiry at {:?}",
            &rest[at..]
        );
        let digits = rest[after_token + expires.len()..].bytes().take_while(u8::is_ascii_digit).count();
        out.push_str(&rest[..at]);
        rest = &rest[after_token + expires.len() + digits..];
    }
}

/// Everything a rewritten playlist must satisfy for one viewer; returns its signed URIs.
struct Rewritten<'a> {
    server: &'a Server,
    key: &'a str,
    names: ParamNames,
    viewer: &'a str,
    /// The address text tokens must be bound to (the viewer, masked by the stream's prefix).
    binding: String,
}

impl Rewritten<'_> {
    /// Fetches `path` (with a fresh entry token), checks headers, bytes and every token.
    async fn check(&self, path: &str, disk: &[u8], ttl: u64, unsigned: &[&str]) -> Vec<SignedUri> {
        let t0 = now();
        let target = self.entry(path);
        let resp = get(self.server, &target, self.viewer).await;
        let t1 = now();
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some(PLAYLIST_TYPE), "{path}");
        assert_eq!(resp.header("cache-control"), Some("private, no-cache"), "{path}");
        let text = resp.text();
        assert_eq!(
            strip_tokens(&text, &self.names).as_bytes(),
            disk,
            "{path}: everything but the tokens must be the origin's bytes\n--- served:\n{text}"
        );
        let mut signed = Vec::new();
        for uri in uris(&text) {
            match signed_uri(&uri, path, PUBLIC_HOST, &self.names) {
                Some(s) => signed.push(s),
                None => assert!(unsigned.contains(&uri.as_str()), "{path}: {uri} left unsigned"),
            }
        }
        for expected in unsigned {
            assert!(uris(&text).iter().any(|u| u == expected), "{path}: {expected} missing or signed");
        }
        let step = default_step(ttl);
        for s in &signed {
            let want = sign(s.expires, &s.path, Some(&self.binding), &Key::new(self.key));
            assert_eq!(s.token, want, "{path}: token of {} is not ours for {}", s.uri, s.path);
            assert!(
                s.expires >= t0 + ttl && s.expires <= t1 + ttl + step + 2,
                "{path}: {} expires {} outside [{}, {}] (ttl {ttl}, step {step})",
                s.uri,
                s.expires,
                t0 + ttl,
                t1 + ttl + step + 2
            );
        }
        signed
    }

    /// An IP-less entry link to a playlist, as a site would hand out.
    fn entry(&self, path: &str) -> String {
        let expires = now() + 600;
        signed_url(path, &sign(expires, path, None, &Key::new(self.key)), expires, &self.names)
    }

    /// Each signed URI opens from the viewer's address and nowhere else.
    async fn fetch_all(&self, signed: &[SignedUri], elsewhere: &str) {
        for s in signed {
            let resp = get(self.server, &s.target, self.viewer).await;
            assert_eq!(resp.status, 200, "{} from {}: {}", s.target, self.viewer, resp.text());
            let resp = get(self.server, &s.target, elsewhere).await;
            assert_eq!(resp.status, 403, "{} from {elsewhere}: {}", s.target, resp.text());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Token rules
// ---------------------------------------------------------------------------------------

const TOKEN_STREAMS: &str = r#"
[streams.s]
keys = ["key-new", "key-old"]

[streams.req]
keys = ["key-req"]
entry_ip = "required"

[streams.pfx]
keys = ["key-pfx"]
ip_prefix_v4 = 24

[streams.skew0]
keys = ["key-skew"]
skew = 0

[streams.skew60]
keys = ["key-skew"]
skew = 60

[streams.custom]
keys = ["key-custom"]
token_params = ["st", "e"]
"#;

fn token_setup() -> Server {
    let setup = Setup::new("tokens");
    for stream in ["s", "req", "pfx", "skew0", "skew60", "custom"] {
        setup.file(&format!("{stream}/a.ts"), pattern(1000, 1));
    }
    setup.file("s/dir/a.ts", "dir-a").file("s/dir/sub/b.ts", "dir-sub-b");
    setup.file("pfx/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("custom/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.start("", TOKEN_STREAMS)
}

#[tokio::test]
async fn missing_malformed_and_wrong_key_tokens_are_403_with_a_short_reason() {
    let server = token_setup();
    let exp = now() + 300;
    let good = sign(exp, "/s/a.ts", Some(VIEWER), &Key::new("key-new"));
    let cases = [
        "/s/a.ts".to_string(),
        format!("/s/a.ts?expires={exp}"),
        format!("/s/a.ts?md5={good}"),
        format!("/s/a.ts?md5=short&expires={exp}"),
        format!("/s/a.ts?md5={good}xx&expires={exp}"),
        format!("/s/a.ts?md5={}&expires={exp}", good.replace(|c: char| c.is_ascii_alphanumeric(), "+")),
        format!("/s/a.ts?md5={good}&expires=soon"),
        format!("/s/a.ts?md5={good}&expires=-{exp}"),
        format!("/s/a.ts?md5={good}&expires={}", exp + 1),
        url("/s/a.ts", "key-wrong", Some(VIEWER), exp),
        url("/s/a.ts", "key-new ", Some(VIEWER), exp),
        // Genuine, but for another path.
        url("/s/a.ts", "key-new", Some(VIEWER), exp).replacen("/s/a.ts", "/s/dir/a.ts", 1),
    ];
    for target in &cases {
        let resp = get(&server, target, VIEWER).await;
        assert_eq!(resp.status, 403, "{target}: {}", resp.text());
        assert_short_reason(&resp, &["key-new", "key-old", &good]);
    }
    // The genuine one, for contrast.
    let resp = get(&server, &format!("/s/a.ts?md5={good}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, pattern(1000, 1));
}

#[tokio::test]
async fn expired_token_is_410_with_a_short_reason() {
    let server = token_setup();
    let exp = now() - 120;
    let target = url("/s/a.ts", "key-new", Some(VIEWER), exp);
    let resp = get(&server, &target, VIEWER).await;
    assert_eq!(resp.status, 410, "{}", resp.text());
    let expected_now = sign(now() + 300, "/s/a.ts", Some(VIEWER), &Key::new("key-new"));
    assert_short_reason(&resp, &["key-new", "key-old", &expected_now]);
    assert!(resp.text().contains("expired"), "{}", resp.text());
    // Signature before clock: an expired forgery is a 403, so only the key holder learns expiry.
    let forged = url("/s/a.ts", "not-the-key", Some(VIEWER), exp);
    assert_eq!(get(&server, &forged, VIEWER).await.status, 403);
}

#[tokio::test]
async fn every_key_verifies_and_tokens_bind_to_the_address() {
    let server = token_setup();
    let exp = now() + 300;
    for key in ["key-new", "key-old"] {
        let resp = get(&server, &url("/s/a.ts", key, Some(VIEWER), exp), VIEWER).await;
        assert_eq!(resp.status, 200, "{key}: {}", resp.text());
    }
    // Bound to 127.0.0.2, used from 127.0.0.3.
    let resp = get(&server, &url("/s/a.ts", "key-new", Some(VIEWER), exp), OTHER).await;
    assert_eq!(resp.status, 403);
    // A key of another stream opens nothing here.
    assert_eq!(get(&server, &url("/s/a.ts", "key-req", Some(VIEWER), exp), VIEWER).await.status, 403);
}

#[tokio::test]
async fn ip_less_tokens_only_where_entry_ip_is_optional() {
    let server = token_setup();
    let exp = now() + 300;
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", None, exp), VIEWER).await.status, 200);
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", None, exp), OTHER).await.status, 200);
    let resp = get(&server, &url("/req/a.ts", "key-req", None, exp), VIEWER).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(get(&server, &url("/req/a.ts", "key-req", Some(VIEWER), exp), VIEWER).await.status, 200);
}

#[tokio::test]
async fn prefix_binding_lets_a_neighbour_in_the_network_use_issued_tokens() {
    let server = token_setup();
    let exp = now() + 300;
    // A link bound to the /24 works from any address in it, and only there.
    let net = url("/pfx/a.ts", "key-pfx", Some("127.0.0.0/24"), exp);
    assert_eq!(get(&server, &net, VIEWER).await.status, 200);
    assert_eq!(get(&server, &net, OTHER).await.status, 200);
    assert_eq!(get(&server, &net, "127.0.1.2").await.status, 403);
    // An exact-address link stays exact.
    let exact = url("/pfx/a.ts", "key-pfx", Some(VIEWER), exp);
    assert_eq!(get(&server, &exact, VIEWER).await.status, 200);
    assert_eq!(get(&server, &exact, OTHER).await.status, 403);

    // What hlsgate issues to 127.0.0.2 is bound to 127.0.0.0/24: it opens from 127.0.0.3.
    let check = Rewritten {
        server: &server,
        key: "key-pfx",
        names: ParamNames::default(),
        viewer: VIEWER,
        binding: "127.0.0.0/24".into(),
    };
    let disk = std::fs::read(server.dir().join("streams/pfx/index.m3u8")).unwrap();
    let signed = check.check("/pfx/index.m3u8", &disk, 14400, &[]).await;
    assert_eq!(signed.len(), 1);
    for from in [VIEWER, OTHER] {
        assert_eq!(get(&server, &signed[0].target, from).await.status, 200, "from {from}");
    }
    assert_eq!(get(&server, &signed[0].target, "127.0.1.2").await.status, 403);
}

#[tokio::test]
async fn ipv6_viewers_are_bound_in_rfc5952_text_and_by_prefix() {
    let setup = Setup::new("ipv6");
    setup
        .file("v/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n")
        .file("v/a.ts", "six");
    let config = format!(
        "listen = \"[::1]:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n\
         [streams.v]\nkeys = [\"v6-key\"]\nentry_ip = \"required\"\nip_prefix_v6 = 64\n",
        toml_path(&setup.streams())
    );
    let server = Server::start_in(setup.dir, &config, &[]);
    assert!(server.viewer_addr().is_ipv6(), "{}", server.viewer_addr());
    let exp = now() + 300;

    // A link bound to the viewer's address as RFC 5952 text opens; one for another address not.
    let entry = url("/v/index.m3u8", "v6-key", Some("::1"), exp);
    let resp = get(&server, &entry, "::1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let spelled_long = url("/v/a.ts", "v6-key", Some("0:0:0:0:0:0:0:1"), exp);
    assert_eq!(get(&server, &spelled_long, "::1").await.status, 403, "only the canonical text is hashed");
    assert_eq!(get(&server, &url("/v/a.ts", "v6-key", Some("2001:db8::1"), exp), "::1").await.status, 403);

    // What hlsgate issues is bound to the viewer's /64, written `::/64`.
    let uri = uris(&resp.text()).pop().expect("one segment URI");
    let signed = signed_uri(&uri, "/v/index.m3u8", "", &ParamNames::default()).expect("signed");
    assert_eq!(signed.token, sign(signed.expires, "/v/a.ts", Some("::/64"), &Key::new("v6-key")));
    let media = get(&server, &signed.target, "::1").await;
    assert_eq!((media.status, media.body.as_slice()), (200, &b"six"[..]));
}

#[tokio::test]
async fn skew_is_tolerance_after_expiry() {
    let server = token_setup();
    // Margins of 30 s either side: no clock tick can flip these.
    let past = now() - 30;
    let future = now() + 30;
    let at = |stream: &str, exp: u64| url(&format!("/{stream}/a.ts"), "key-skew", Some(VIEWER), exp);
    assert_eq!(get(&server, &at("skew60", past), VIEWER).await.status, 200);
    assert_eq!(get(&server, &at("skew0", past), VIEWER).await.status, 410);
    assert_eq!(get(&server, &at("skew0", future), VIEWER).await.status, 200);
    assert_eq!(get(&server, &at("skew60", now() - 120), VIEWER).await.status, 410);
    // The default skew (5 s) does not cover 30 s.
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", Some(VIEWER), past), VIEWER).await.status, 410);
}

#[tokio::test]
async fn directory_tokens_open_direct_children_only() {
    let server = token_setup();
    let exp = now() + 300;
    let token = sign(exp, "/s/dir/", Some(VIEWER), &Key::new("key-new"));
    let query = format!("md5={token}&expires={exp}");
    let resp = get(&server, &format!("/s/dir/a.ts?{query}"), VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "dir-a"));
    assert_eq!(get(&server, &format!("/s/dir/sub/b.ts?{query}"), VIEWER).await.status, 403);
    assert_eq!(get(&server, &format!("/s/a.ts?{query}"), VIEWER).await.status, 403);
    // A directory token without its trailing slash is a token for a file named `dir`.
    let no_slash = sign(exp, "/s/dir", Some(VIEWER), &Key::new("key-new"));
    let resp = get(&server, &format!("/s/dir/a.ts?md5={no_slash}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn custom_token_parameter_names() {
    let server = token_setup();
    let exp = now() + 300;
    let names = ParamNames { token: "st".into(), expires: "e".into() };
    let token = sign(exp, "/custom/a.ts", Some(VIEWER), &Key::new("key-custom"));
    let resp = get(&server, &format!("/custom/a.ts?e={exp}&foo=1&st={token}"), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(&server, &format!("/custom/a.ts?md5={token}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 403);

    // What it issues uses the same names.
    let check =
        Rewritten { server: &server, key: "key-custom", names, viewer: VIEWER, binding: VIEWER.into() };
    let disk = std::fs::read(server.dir().join("streams/custom/index.m3u8")).unwrap();
    let signed = check.check("/custom/index.m3u8", &disk, 14400, &[]).await;
    assert_eq!(signed.len(), 1);
    assert!(signed[0].uri.starts_with("a.ts?st=") && !signed[0].uri.contains("md5="), "{}", signed[0].uri);
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn missing_files_and_unknown_streams() {
    let server = token_setup();
    let exp = now() + 300;
    let resp = get(&server, &url("/s/nope.ts", "key-new", Some(VIEWER), exp), VIEWER).await;
    assert_eq!(resp.status, 404, "a valid token may learn the file is missing");
    assert_eq!(get(&server, "/s/nope.ts", VIEWER).await.status, 403, "without one it learns nothing");
    assert_eq!(get(&server, &url("/s/dir", "key-new", Some(VIEWER), exp), VIEWER).await.status, 404);
    assert_eq!(get(&server, &url("/s/dir/", "key-new", Some(VIEWER), exp), VIEWER).await.status, 404);
    // Unknown streams are refused as a known stream without a valid token (tests/security.rs).
    assert_eq!(get(&server, "/nosuch/a.ts", VIEWER).await.status, 403);
    assert_eq!(get(&server, &url("/nosuch/a.ts", "key-new", Some(VIEWER), exp), VIEWER).await.status, 403);
    assert_eq!(get(&server, "/", VIEWER).await.status, 403);
    // Other methods: nothing without a token, 405 with one.
    let target = url("/s/a.ts", "key-new", Some(VIEWER), exp);
    let post = |t: &str| Request::new("POST", server.viewer_addr(), t).from(VIEWER);
    assert_eq!(post("/s/a.ts").send().await.status, 403);
    let resp = post(&target).send().await;
    assert_eq!(resp.status, 405);
    assert!(resp.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", resp.headers);
}

// ---------------------------------------------------------------------------------------
// 2. Playlist rewriting
// ---------------------------------------------------------------------------------------

const PL_KEY: &str = "pl-key-1";
const PL_STREAMS: &str = r#"
[streams.s]
keys = ["pl-key-1", "pl-key-0"]
session_ttl = 3000

[streams.det]
keys = ["pl-key-1"]
segment_ttl = 400
"#;
const SESSION: u64 = 3000;

const CHILD_VOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n";

/// The `public_hosts` entry of the playlist server: absolute URLs naming it are signed.
const PUBLIC_HOST: &str = "video.example.com";

fn master_text(host: &str) -> String {
    format!(
        "#EXTM3U\n\
         #EXT-X-VERSION:7\n\
         ## a comment that looks like a tag: URI=\"not/a/uri.m3u8\"\n\
         #EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-CONTENT-STEERING:SERVER-URI=\"steering.json\",PATHWAY-ID=\"CDN-A\"\n\
         #EXT-X-SESSION-DATA:DATA-ID=\"com.example.title\",URI=\"meta/title.json\"\n\
         #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"keys/session.key\"\n\
         #EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-id-1\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
         #X-VENDOR-TAG:FOO=bar,URI=\"vendor/tag.m3u8\"\n\
         \n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
         #EXT-X-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.4d400c,mp4a.40.2\",AUDIO=\"aud\",RESOLUTION=320x180\n\
         low/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=400000,AUDIO=\"aud\"\n\
         /s/mid/index.m3u8?quality=mid\n\
         \n\
         #EXT-X-STREAM-INF:BANDWIDTH=800000\n\
         http://{host}/s/high/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=900000\n\
         https://cdn.other.example/s/high/index.m3u8\n\
         #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"low/iframes.m3u8\"\n"
    )
}

const KEYS_LIVE: &str = "#EXTM3U\n\
#EXT-X-VERSION:6\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-MEDIA-SEQUENCE:100\n\
#EXT-X-MAP:BYTERANGE=\"720@0\",URI=\"init.mp4\"\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"keys/k1.key\",IV=0x00000000000000000000000000000001\n\
#EXTINF:4.000,\n\
#EXT-X-BYTERANGE:1000@720\n\
main.mp4\n\
#EXTINF:4.000,\n\
#EXT-X-BYTERANGE:1000\n\
main.mp4\n\
#EXT-X-KEY:METHOD=AES-128,IV=0x00000000000000000000000000000002,URI=\"../shared/k2.key\",KEYFORMAT=\"identity\"\n\
#EXTINF:4.000,title with, a comma\n\
seg102.m4s?cache=1\n\
#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://live-key\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
#EXTINF:4.000,\n\
/s/live/seg103.m4s\n\
#EXT-X-KEY:METHOD=NONE\n\
#EXT-X-DISCONTINUITY\n\
#EXTINF:4.0,\n\
seg104.m4s\n";

const LL_HLS: &str = "#EXTM3U\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-VERSION:9\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0,CAN-SKIP-UNTIL=24.0\n\
#EXT-X-PART-INF:PART-TARGET=1.0\n\
#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T18:00:00.000Z\n\
#EXTINF:4.0,\n\
seg10.m4s\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg11.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg11.1.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg11.2.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=11,LAST-PART=1\n\
#EXT-X-RENDITION-REPORT:URI=\"/s/1080p/index.m3u8\",LAST-MSN=11,LAST-PART=1\n";

const CRLF_VOD: &str = "#EXTM3U\r\n\
#EXT-X-VERSION:3\r\n\
#EXT-X-TARGETDURATION:2\r\n\
#EXT-X-PLAYLIST-TYPE:VOD\r\n\
\r\n\
# made on Windows\r\n\
#EXTINF:2.000,\r\n\
seg_000.ts\r\n\
#EXTINF:2.000,\r\n\
seg_001.ts\r\n\
#EXT-X-ENDLIST\r\n";

/// The playlist stream, its files, and a viewer-side checker.
fn playlist_server() -> Server {
    let setup = Setup::new("playlists");
    for rel in ["audio/en.m3u8", "low/index.m3u8", "mid/index.m3u8", "high/index.m3u8", "low/iframes.m3u8"] {
        setup.file(&format!("s/{rel}"), CHILD_VOD);
    }
    setup
        .file("s/steering.json", "{\"VERSION\":1}")
        .file("s/meta/title.json", "{\"title\":\"t\"}")
        .file("s/keys/session.key", [7u8; 16])
        .file("s/live/keys.m3u8", KEYS_LIVE)
        .file("s/live/init.mp4", pattern(720, 2))
        .file("s/live/main.mp4", pattern(2720, 3))
        .file("s/live/keys/k1.key", [1u8; 16])
        .file("s/shared/k2.key", [2u8; 16])
        .file("s/live/seg102.m4s", "102")
        .file("s/live/seg103.m4s", "103")
        .file("s/live/seg104.m4s", "104")
        .file("s/ll/index.m3u8", LL_HLS)
        .file("s/ll/init.mp4", "init")
        .file("s/crlf/index.m3u8", CRLF_VOD)
        .file("s/crlf/seg_000.ts", "0")
        .file("s/crlf/seg_001.ts", "1")
        .file("det/live.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n")
        .file("det/a.ts", "a")
        .file("s/bad.m3u8", "this is not a playlist\nsecret-segment.ts\n")
        .file(
            "s/badattr.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"unterminated\n#EXTINF:2.0,\nsecret-segment.ts\n",
        );
    for name in ["seg10.m4s", "seg11.0.m4s", "seg11.1.m4s", "seg11.2.m4s"] {
        setup.file(&format!("s/ll/{name}"), name);
    }
    setup.file("s/master.m3u8", master_text(PUBLIC_HOST));
    setup.start(&format!("public_hosts = [\"{PUBLIC_HOST}\"]"), PL_STREAMS)
}

fn viewer_check(server: &Server) -> Rewritten<'_> {
    Rewritten { server, key: PL_KEY, names: ParamNames::default(), viewer: VIEWER, binding: VIEWER.into() }
}

fn disk(server: &Server, rel: &str) -> Vec<u8> {
    std::fs::read(server.dir().join("streams").join(rel)).unwrap()
}

#[tokio::test]
async fn master_playlist_is_signed_uri_by_uri_and_otherwise_byte_identical() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let unsigned = ["skd://key-id-1", "https://cdn.other.example/s/high/index.m3u8"];
    let signed = check.check("/s/master.m3u8", &disk(&server, "s/master.m3u8"), SESSION, &unsigned).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/s/audio/en.m3u8",
            "/s/high/index.m3u8",
            "/s/keys/session.key",
            "/s/low/iframes.m3u8",
            "/s/low/index.m3u8",
            "/s/meta/title.json",
            "/s/mid/index.m3u8",
            "/s/steering.json",
        ]
    );
    // The form of each URI is kept: relative stays relative, other parameters stay.
    let uri_of = |path: &str| &signed.iter().find(|s| s.path == path).unwrap().uri;
    assert!(uri_of("/s/low/index.m3u8").starts_with("low/index.m3u8?md5="));
    assert!(uri_of("/s/mid/index.m3u8").starts_with("/s/mid/index.m3u8?quality=mid&md5="));
    assert!(uri_of("/s/high/index.m3u8").starts_with(&format!("http://{PUBLIC_HOST}/s/high/index.m3u8?md5=")));

    // The recipe nginx documents, computed without any of our code.
    let first = &signed[0];
    assert_eq!(first.token, openssl_token(first.expires, &first.path, VIEWER, PL_KEY));

    check.fetch_all(&signed, OTHER).await;

    // The request's Host picks nothing: a URL naming the server's own address is not a public
    // host, and stays as written whatever the viewer sends (more in tests/security.rs).
    let resp = Request::get(server.viewer_addr(), &check.entry("/s/master.m3u8"))
        .from(VIEWER)
        .header("Host", "cdn.other.example")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("\nhttps://cdn.other.example/s/high/index.m3u8\n"), "{}", resp.text());
}

#[tokio::test]
async fn live_media_playlist_with_keys_maps_and_byteranges() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let ttl = 12; // auto: 3 x TARGETDURATION 4
    let signed =
        check.check("/s/live/keys.m3u8", &disk(&server, "s/live/keys.m3u8"), ttl, &["skd://live-key"]).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/s/live/init.mp4",
            "/s/live/keys/k1.key",
            "/s/live/main.mp4",
            "/s/live/main.mp4",
            "/s/live/seg102.m4s",
            "/s/live/seg103.m4s",
            "/s/live/seg104.m4s",
            "/s/shared/k2.key",
        ]
    );
    assert!(signed.iter().any(|s| s.uri.starts_with("seg102.m4s?cache=1&md5=")));
    assert!(signed.iter().any(|s| s.uri.starts_with("../shared/k2.key?md5=")));
    check.fetch_all(&signed, OTHER).await;
    // The byte ranges a player asks for are served from the signed URI.
    let main = signed.iter().find(|s| s.path == "/s/live/main.mp4").unwrap();
    let resp = Request::get(server.viewer_addr(), &main.target)
        .from(VIEWER)
        .header("Range", "bytes=720-1719")
        .send()
        .await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.body, pattern(2720, 3)[720..1720]);
}

#[tokio::test]
async fn ll_hls_parts_and_preload_hints_signed_rendition_reports_untouched() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let untouched = ["../720p/index.m3u8", "/s/1080p/index.m3u8"];
    let signed = check.check("/s/ll/index.m3u8", &disk(&server, "s/ll/index.m3u8"), 12, &untouched).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["/s/ll/init.mp4", "/s/ll/seg10.m4s", "/s/ll/seg11.0.m4s", "/s/ll/seg11.1.m4s", "/s/ll/seg11.2.m4s"]
    );
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn crlf_vod_playlist_keeps_its_line_endings_and_gets_session_ttl() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let signed = check.check("/s/crlf/index.m3u8", CRLF_VOD.as_bytes(), SESSION, &[]).await;
    assert_eq!(signed.len(), 2);
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn two_fetches_in_a_row_are_byte_identical() {
    let server = playlist_server();
    let check = viewer_check(&server);
    for path in ["/s/master.m3u8", "/det/live.m3u8"] {
        let target = check.entry(path);
        let mut identical = false;
        // A step boundary may fall between two fetches once (steps are 750 s and 100 s here);
        // it cannot fall between both pairs.
        for _ in 0..2 {
            let a = get(&server, &target, VIEWER).await;
            let b = get(&server, &target, VIEWER).await;
            assert_eq!((a.status, b.status), (200, 200));
            if a.body == b.body {
                identical = true;
                break;
            }
        }
        assert!(identical, "{path}: two fetches differ twice in a row");
    }
    // The live one really is live: segment_ttl (400, step 100), not session_ttl.
    let disk = disk(&server, "det/live.m3u8");
    let signed = check.check("/det/live.m3u8", &disk, 400, &[]).await;
    assert_eq!(signed.len(), 1);
}

#[tokio::test]
async fn a_playlist_that_does_not_parse_is_502_never_unsigned() {
    let server = playlist_server();
    let check = viewer_check(&server);
    for (n, (path, rel)) in
        [("/s/bad.m3u8", "s/bad.m3u8"), ("/s/badattr.m3u8", "s/badattr.m3u8")].into_iter().enumerate()
    {
        let resp = get(&server, &check.entry(path), VIEWER).await;
        assert_eq!(resp.status, 502, "{path}: {}", resp.text());
        assert!(!resp.text().contains("secret-segment"), "{path} leaked: {}", resp.text());
        assert_short_reason(&resp, &[PL_KEY]);
        // The line is written after the response: wait for this playlist's, not the one before.
        wait_for_lines(&server, "does not parse", n + 1);
        let logged = server.logs().into_iter().any(|l| l.contains("does not parse") && l.contains(rel));
        assert!(logged, "no log line for {rel}:\n{}", server.logs().join("\n"));
    }
}

// ---------------------------------------------------------------------------------------
// 3. Media
// ---------------------------------------------------------------------------------------

const MEDIA_KEY: &str = "media-key";
const MEDIA_STREAMS: &str = r#"
[streams.m]
keys = ["media-key"]
skew = 0
"#;

fn media_server() -> Server {
    let setup = Setup::new("media");
    for ext in ["ts", "m4s", "mp4", "m4a", "aac", "vtt", "key"] {
        setup.file(&format!("m/a.{ext}"), pattern(1000, 5));
    }
    setup.file("m/big.mp4", pattern(BIG, 9));
    setup.start("", MEDIA_STREAMS)
}

fn media_url(path: &str, exp: u64) -> String {
    url(path, MEDIA_KEY, Some(VIEWER), exp)
}

/// An origin read that fails for another reason than a missing file is 502, after the token
/// and never before, and is logged. As root no file can be made unreadable, so a symlink loop
/// (ELOOP) stands in for the failing disk.
#[tokio::test]
async fn an_origin_read_error_is_502_after_the_token() {
    let setup = Setup::new("origin-error");
    setup.file("m/a.ts", "a");
    std::os::unix::fs::symlink("loop.ts", setup.streams().join("m/loop.ts")).unwrap();
    let server = setup.start("", MEDIA_STREAMS);
    let unsigned = get(&server, "/m/loop.ts", VIEWER).await;
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    let resp = get(&server, &media_url("/m/loop.ts", now() + 300), VIEWER).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.text(), "origin unavailable\n");
    server.wait_for_log("origin read failed", LOG_WAIT);
    let metrics = admin(&server, "/metrics").await.text();
    let series = "hlsgate_requests_total{stream=\"m\",kind=\"media\",outcome=\"origin_error\"}";
    assert_eq!(metric(&metrics, series), Some(1), "{metrics}");
}

#[tokio::test]
async fn content_types_ranges_and_head() {
    let server = media_server();
    let exp = now() + 300;
    for (ext, want) in [
        ("ts", "video/mp2t"),
        ("m4s", "video/iso.segment"),
        ("mp4", "video/mp4"),
        ("m4a", "audio/mp4"),
        ("aac", "audio/aac"),
        ("vtt", "text/vtt"),
        ("key", "application/octet-stream"),
    ] {
        let resp = get(&server, &media_url(&format!("/m/a.{ext}"), exp), VIEWER).await;
        assert_eq!(resp.status, 200, "{ext}");
        assert_eq!(resp.header("content-type"), Some(want), "{ext}");
        assert_eq!(resp.body, pattern(1000, 5), "{ext}");
    }
    let target = media_url("/m/a.ts", exp);
    let ranged =
        |range: &str| Request::get(server.viewer_addr(), &target).from(VIEWER).header("Range", range);
    let resp = ranged("bytes=10-109").send().await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("content-range"), Some("bytes 10-109/1000"));
    assert_eq!(resp.header("content-length"), Some("100"));
    assert_eq!(resp.body, pattern(1000, 5)[10..110]);
    let resp = ranged("bytes=-5").send().await;
    assert_eq!((resp.status, resp.header("content-range")), (206, Some("bytes 995-999/1000")));
    assert_eq!(resp.body, pattern(1000, 5)[995..]);
    let resp = ranged("bytes=1000-").send().await;
    assert_eq!(resp.status, 416);
    assert_eq!(resp.header("content-range"), Some("bytes */1000"));

    let resp = Request::head(server.viewer_addr(), &target).from(VIEWER).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1000"));
    assert_eq!(resp.header("content-type"), Some("video/mp2t"));
    assert!(resp.body.is_empty());
    // HEAD reveals no more than GET: it needs the token too.
    let resp = Request::head(server.viewer_addr(), "/m/a.ts").from(VIEWER).send().await;
    assert_eq!(resp.status, 403);

    // The streamed path honours ranges too.
    let big = media_url("/m/big.mp4", exp);
    let resp = Request::get(server.viewer_addr(), &big)
        .from(VIEWER)
        .header("Range", "bytes=16777200-16777299")
        .send()
        .await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("content-range"), Some(format!("bytes 16777200-16777299/{BIG}").as_str()));
    assert_eq!(resp.body, pattern(BIG, 9)[16777200..16777300]);
    let resp = Request::head(server.viewer_addr(), &big).from(VIEWER).send().await;
    assert_eq!(resp.header("content-length"), Some(BIG.to_string().as_str()));
}

#[tokio::test]
async fn a_live_playlist_replaced_by_rename_is_served_fresh() {
    let server = media_server();
    let playlist = |seg: &str| format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{seg}\n");
    put(&server, "m/live.m3u8", playlist("seg_1.ts"));
    let target = media_url("/m/live.m3u8", now() + 300);
    let first = get(&server, &target, VIEWER).await;
    assert_eq!(first.status, 200);
    assert!(first.text().contains("seg_1.ts?"), "{}", first.text());
    // ffmpeg's temp_file: write next to it, rename over it (same size, maybe the same mtime).
    let tmp = put(&server, "m/live.m3u8.tmp", playlist("seg_2.ts"));
    std::fs::rename(&tmp, server.dir().join("streams/m/live.m3u8")).unwrap();
    let second = get(&server, &target, VIEWER).await;
    assert_eq!(second.status, 200);
    assert!(second.text().contains("seg_2.ts?") && !second.text().contains("seg_1"), "{}", second.text());
    // And an in-place rewrite of the same size.
    std::fs::write(server.dir().join("streams/m/live.m3u8"), playlist("seg_3.ts")).unwrap();
    let third = get(&server, &target, VIEWER).await;
    assert!(third.text().contains("seg_3.ts?"), "{}", third.text());
}

#[tokio::test]
async fn a_big_file_downloads_completely() {
    let server = media_server();
    let resp = get(&server, &media_url("/m/big.mp4", now() + 300), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(resp.body == pattern(BIG, 9), "body differs ({} bytes)", resp.body.len());
}

#[tokio::test]
async fn a_download_started_before_expiry_finishes() {
    let server = media_server();
    let exp = now() + 4;
    let target = media_url("/m/big.mp4", exp);
    let mut download =
        Streaming::open(&Request::get(server.viewer_addr(), &target).from(VIEWER)).await.unwrap();
    assert_eq!(download.status, 200);
    download.read_at_least(1 << 20).await.unwrap();
    // Hold the download until the token is dead by the server's clock (skew 0), bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while now() <= exp {
        assert!(Instant::now() < deadline, "clock did not pass {exp}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = get(&server, &target, VIEWER).await;
    assert_eq!(fresh.status, 410, "a new request with the same token is refused");
    download.read_to_end().await.unwrap();
    assert_eq!(download.body.len(), BIG);
    assert!(download.body == pattern(BIG, 9), "body differs");
}

// ---------------------------------------------------------------------------------------
// 4. Client IP and trusted proxies
// ---------------------------------------------------------------------------------------

const XKEY: &str = "xff-key";

fn proxy_server(trusted: &str) -> Server {
    let setup = Setup::new("proxies");
    setup
        .file("x/a.ts", "a")
        .file("x/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.start(
        &format!("trusted_proxies = {trusted}"),
        "[streams.x]\nkeys = [\"xff-key\"]\nentry_ip = \"required\"\n",
    )
}

/// GET /x/a.ts with a token bound to `bound_to`, from socket `from`, with extra headers.
async fn via(server: &Server, from: &str, bound_to: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req =
        Request::get(server.viewer_addr(), &url("/x/a.ts", XKEY, Some(bound_to), now() + 300)).from(from);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.send().await.status
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let server = proxy_server("[]");
    for headers in
        [[("X-Forwarded-For", "127.0.0.9")], [("Forwarded", "for=127.0.0.9")], [("X-Real-IP", "127.0.0.9")]]
    {
        assert_eq!(via(&server, VIEWER, "127.0.0.9", &headers).await, 403, "{headers:?}");
        assert_eq!(via(&server, VIEWER, VIEWER, &headers).await, 200, "{headers:?}");
    }
    // Trusted proxies elsewhere do not make 127.0.0.1 trusted either.
    let server = proxy_server("[\"10.0.0.0/8\"]");
    let spoof = [("X-Forwarded-For", "127.0.0.9")];
    assert_eq!(via(&server, "127.0.0.1", "127.0.0.9", &spoof).await, 403);
    assert_eq!(via(&server, "127.0.0.1", "127.0.0.1", &spoof).await, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
    let server = proxy_server("[\"127.0.0.1/32\", \"10.0.0.0/8\"]");
    let proxy = "127.0.0.1";
    // The client forged 6.6.6.6; the proxy appended the address it saw, 127.0.0.9.
    let xff = [("X-Forwarded-For", "6.6.6.6, 127.0.0.9")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &xff).await, 200);
    assert_eq!(via(&server, proxy, "6.6.6.6", &xff).await, 403, "a forged left entry does not help");
    assert_eq!(via(&server, proxy, proxy, &xff).await, 403, "the proxy is not the viewer");
    // Trusted hops on the right are skipped.
    let chain = [("X-Forwarded-For", "6.6.6.6, 127.0.0.9, 10.1.2.3")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &chain).await, 200);
    assert_eq!(via(&server, proxy, "10.1.2.3", &chain).await, 403);
    // Two header lines are one list.
    let lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "127.0.0.9")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &lines).await, 200);
    assert_eq!(via(&server, proxy, "6.6.6.6", &lines).await, 403);
    // Only X-Forwarded-For is read by default: a client's own `Forwarded` changes nothing.
    let fwd = [("Forwarded", "for=6.6.6.6, for=\"127.0.0.9:4711\";proto=http")];
    assert_eq!(via(&server, proxy, proxy, &fwd).await, 200);
    assert_eq!(via(&server, proxy, "127.0.0.9", &fwd).await, 403);
    // No header: the proxy itself is the client.
    assert_eq!(via(&server, proxy, proxy, &[]).await, 200);
    // A trusted peer outside the list of the request's own addresses changes nothing for others.
    assert_eq!(via(&server, VIEWER, "127.0.0.9", &xff).await, 403);

    // The refusal log names the client as resolved through the proxy.
    assert!(server.logs().iter().any(|l| l.contains("refused") && l.contains("127.0.0.9")));

    // A playlist fetched through the proxy is bound to the viewer behind it.
    let entry = url("/x/index.m3u8", XKEY, Some("127.0.0.9"), now() + 300);
    let resp = Request::get(server.viewer_addr(), &entry).from(proxy).header(xff[0].0, xff[0].1).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let host = server.viewer_addr().to_string();
    let seg = uris(&resp.text())
        .iter()
        .find_map(|u| signed_uri(u, "/x/index.m3u8", &host, &ParamNames::default()))
        .unwrap();
    assert_eq!(seg.token, sign(seg.expires, "/x/a.ts", Some("127.0.0.9"), &Key::new(XKEY)));
    assert_eq!(get(&server, &seg.target, "127.0.0.9").await.status, 200);
    assert_eq!(get(&server, &seg.target, VIEWER).await.status, 403);
}

// ---------------------------------------------------------------------------------------
// 5. SIGHUP
// ---------------------------------------------------------------------------------------

fn reload_config(server: &Server, streams: &str) -> String {
    config_text(&server.dir().join("streams"), "", streams)
}

async fn status_with(server: &Server, key: &str) -> u16 {
    get(server, &url("/r/a.ts", key, Some(VIEWER), now() + 300), VIEWER).await.status
}

#[tokio::test]
async fn sighup_rotates_keys_and_refuses_a_broken_config() {
    let setup = Setup::new("reload");
    setup.file("r/a.ts", "a");
    let server = setup.start("", "[streams.r]\nkeys = [\"key-one\"]\n");
    assert_eq!(status_with(&server, "key-one").await, 200);
    assert_eq!(status_with(&server, "key-two").await, 403);

    // Rotation: the new key signs, the old one still verifies.
    server.rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-two\", \"key-one\"]\n"));
    server.reload();
    wait_for_lines(&server, "config reloaded", 1);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-one").await, 200);

    // Removal.
    server.rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-two\"]\n"));
    server.reload();
    wait_for_lines(&server, "config reloaded", 2);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-one").await, 403);

    // Broken TOML: nothing changes.
    server.rewrite_config("this is [[[ not toml\n[streams.r]\nkeys = [\"key-three\"]\n");
    server.reload();
    wait_for_lines(&server, "config reload refused", 1);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-three").await, 403);

    // A field error: nothing changes, and the log names the field.
    server
        .rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-three\"]\nip_prefix_v4 = 99\n"));
    server.reload();
    wait_for_lines(&server, "config reload refused", 2);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-three").await, 403);
    let refusals: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("config reload refused")).collect();
    assert!(refusals[1].contains("streams.r.ip_prefix_v4"), "{}", refusals[1]);
    for line in server.logs() {
        assert!(!line.contains("key-three") && !line.contains("key-two"), "a key in the log: {line}");
    }

    let metrics = admin(&server, "/metrics").await.text();
    assert_eq!(metric(&metrics, "hlsgate_config_reloads_total{result=\"ok\"}"), Some(2), "{metrics}");
    assert_eq!(metric(&metrics, "hlsgate_config_reloads_total{result=\"error\"}"), Some(2), "{metrics}");
}

#[tokio::test]
async fn sighup_applies_new_policies_to_issued_playlists() {
    let setup = Setup::new("reload-pl");
    setup.file("r/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("r/a.ts", "a");
    let server = setup.start("", "[streams.r]\nkeys = [\"key-one\"]\n");
    server.rewrite_config(&reload_config(
        &server,
        "[streams.r]\nkeys = [\"key-two\", \"key-one\"]\nsession_ttl = 100\ntoken_params = [\"st\", \"e\"]\n",
    ));
    server.reload();
    wait_for_lines(&server, "config reloaded", 1);
    let check = Rewritten {
        server: &server,
        key: "key-two",
        names: ParamNames { token: "st".into(), expires: "e".into() },
        viewer: VIEWER,
        binding: VIEWER.into(),
    };
    let disk = disk(&server, "r/index.m3u8");
    let signed = check.check("/r/index.m3u8", &disk, 100, &[]).await;
    check.fetch_all(&signed, OTHER).await;

    // trusted_proxies is reloadable too.
    let behind = |server: &Server| {
        let target = url("/r/a.ts", "key-two", Some("127.0.0.9"), now() + 300);
        Request::get(server.viewer_addr(), &target).from("127.0.0.1").header("X-Forwarded-For", "127.0.0.9")
    };
    assert_eq!(behind(&server).send().await.status, 403);
    let streams = "[streams.r]\nkeys = [\"key-two\"]\n";
    let trusting = config_text(&server.dir().join("streams"), "trusted_proxies = [\"127.0.0.1\"]", streams);
    server.rewrite_config(&trusting);
    server.reload();
    wait_for_lines(&server, "config reloaded", 2);
    assert_eq!(behind(&server).send().await.status, 200);
}

// ---------------------------------------------------------------------------------------
// 6. Paths
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn traversal_in_every_spelling_is_400_before_the_token_and_never_leaks() {
    let dir = TempDir::new("paths");
    let streams = copy_demo(&dir);
    dir.write("secret.txt", "TOPSECRET next to the streams dir\n");
    dir.write("streams/loose.txt", "TOPSECRET in streams_dir itself\n");
    let key = "path-key-secret";
    let config = config_text(&streams, "", &format!("[streams.demo]\nkeys = [\"{key}\"]\n"));
    let server = Server::start_in(dir, &config, &[]);

    let bad = [
        "/demo/../secret.txt",
        "/demo/../../secret.txt",
        "/demo/../../hlsgate.toml",
        "/demo/../hlsgate.toml",
        "/demo/%2e%2e/%2e%2e/secret.txt",
        "/demo/%2E%2E/%2E%2E/hlsgate.toml",
        "/demo/.%2e/.%2e/secret.txt",
        "/demo/180p/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/demo/..%2f..%2fsecret.txt",
        "/demo/..%2F..%2Fhlsgate.toml",
        "/demo%2F..%2F..%2Fsecret.txt",
        "/demo/..%5c..%5csecret.txt",
        "/demo/..%5C..%5Chlsgate.toml",
        "/demo/..\\..\\secret.txt",
        "/demo\\..\\..\\hlsgate.toml",
        "/demo/%00",
        "/demo/master.m3u8%00.ts",
        "/demo/master.m3u8%00",
        "/demo/./master.m3u8",
        "/demo//../secret.txt",
        "/demo/180p/.",
        "/demo/..",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/./demo/master.m3u8",
        "http://127.0.0.1/demo/../../secret.txt",
    ];
    let exp = now() + 300;
    for target in bad {
        // With no token, and with a token genuinely signed for the very path sent.
        let path = target.strip_prefix("http://127.0.0.1").unwrap_or(target);
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned();
        let with_token = url(&decoded, key, Some(VIEWER), exp);
        let with_token = with_token.replacen(&decoded, target, 1);
        for attempt in [target.to_string(), with_token] {
            let resp = get(&server, &attempt, VIEWER).await;
            assert_eq!(resp.status, 400, "{attempt}: {}", resp.text());
            assert!(!resp.text().contains("TOPSECRET") && !resp.text().contains(key), "{attempt} leaked");
        }
    }
    // Doubled slashes are merged, as nginx's `merge_slashes` does: the token is for the merged
    // path, and nothing outside the streams dir is reachable that way either.
    for (target, merged) in
        [("//demo/master.m3u8", "/demo/master.m3u8"), ("/demo//master.m3u8", "/demo/master.m3u8")]
    {
        let signed = url(merged, key, Some(VIEWER), exp).replacen(merged, target, 1);
        assert_eq!(get(&server, &signed, VIEWER).await.status, 200, "{signed}");
        let literal = url(target, key, Some(VIEWER), exp);
        assert_eq!(get(&server, &literal, VIEWER).await.status, 403, "{literal}");
    }
    let resp =
        get(&server, &url("/secret.txt", key, Some(VIEWER), exp).replacen("/secret", "//secret", 1), VIEWER)
            .await;
    assert_eq!(resp.status, 403);
    assert!(!resp.text().contains("TOPSECRET"));
    // Spellings that are not traversal are plain names: refused without a token, absent with.
    for target in
        ["/demo/%252e%252e/%252e%252e/secret.txt", "/secret.txt", "/loose.txt", "/streams/loose.txt"]
    {
        let resp = get(&server, target, VIEWER).await;
        assert!([403, 404].contains(&resp.status), "{target}: {}", resp.status);
        assert!(!resp.text().contains("TOPSECRET"));
        let decoded = percent_encoding::percent_decode_str(target).decode_utf8_lossy().into_owned();
        let signed = url(&decoded, key, Some(VIEWER), exp).replacen(&decoded, target, 1);
        let resp = get(&server, &signed, VIEWER).await;
        // 404 in the demo stream; outside any stream, the refusal every unknown stream gets.
        let expected = if target.starts_with("/demo/") { 404 } else { 403 };
        assert_eq!(resp.status, expected, "{signed}");
        assert!(!resp.text().contains("TOPSECRET"));
    }
    // Bad paths are counted as such and logged with their reason.
    assert!(server.logs().iter().any(|l| l.contains("refused") && l.contains("dot segment")));
    for line in server.logs() {
        assert!(!line.contains(key), "key in log: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Ops
// ---------------------------------------------------------------------------------------

const OPS_KEYS: [&str; 2] = ["ops-secret-key-1", "ops-secret-key-0"];

fn ops_server(env: &[(&str, &str)], top: &str) -> Server {
    let setup = Setup::new("ops");
    setup
        .file("o/a.ts", "a")
        .file("o/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("o/big.mp4", pattern(BIG, 4));
    setup.start_env(top, "[streams.o]\nkeys = [\"ops-secret-key-1\", \"ops-secret-key-0\"]\n", env)
}

#[tokio::test]
async fn metrics_count_requests_by_stream_kind_and_outcome() {
    let server = ops_server(&[], "");
    let exp = now() + 300;
    let ok = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp);
    for target in [
        ok.clone(),
        ok.clone(),
        url("/o/index.m3u8", OPS_KEYS[1], Some(VIEWER), exp),
        "/o/a.ts".to_string(),
        "/o/index.m3u8".to_string(),
        url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100),
        url("/o/missing.ts", OPS_KEYS[0], Some(VIEWER), exp),
        "/o/../a.ts".to_string(),
        "/elsewhere/a.ts".to_string(),
        // `%2E` spells the same playlist, and it is served (rewritten) as one.
        url("/o/index.m3u8", OPS_KEYS[0], Some(VIEWER), exp).replacen("index.m3u8", "index%2Em3u8", 1),
        // And `%6F` spells stream `o`.
        url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp).replacen("/o/", "/%6F/", 1),
    ] {
        get(&server, &target, VIEWER).await;
    }
    let resp = admin(&server, "/metrics").await;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    let series = |stream: &str, kind: &str, outcome: &str| {
        metric(
            &text,
            &format!("hlsgate_requests_total{{stream=\"{stream}\",kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(series("o", "media", "ok"), Some(3), "{text}");
    assert_eq!(series("o", "playlist", "ok"), Some(2), "{text}");
    assert_eq!(series("o", "media", "forbidden"), Some(1), "{text}");
    assert_eq!(series("o", "playlist", "forbidden"), Some(1), "{text}");
    assert_eq!(series("o", "media", "expired"), Some(1), "{text}");
    assert_eq!(series("o", "media", "not_found"), Some(1), "{text}");
    assert_eq!(series("o", "media", "bad_request"), Some(1), "{text}");
    assert_eq!(series("unknown", "media", "forbidden"), Some(1), "{text}");
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("hlsgate_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 11, "{text}");
    assert!(text.contains("# TYPE hlsgate_request_duration_seconds histogram"), "{text}");
    assert_eq!(metric(&text, "hlsgate_request_duration_seconds_count"), Some(11), "{text}");
    assert_eq!(metric(&text, "hlsgate_request_duration_seconds_bucket{le=\"+Inf\"}"), Some(11), "{text}");
    assert!(metric(&text, "hlsgate_request_duration_seconds_bucket{le=\"0.0005\"}").is_some(), "{text}");
    assert_eq!(metric(&text, "hlsgate_config_reloads_total{result=\"ok\"}"), Some(0), "{text}");
    assert_eq!(metric(&text, "hlsgate_config_reloads_total{result=\"error\"}"), Some(0), "{text}");

    let health = admin(&server, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(admin(&server, "/readyz").await.status, 200);

    // Nothing of this on the viewer port.
    for target in ["/metrics", "/healthz", "/readyz"] {
        let resp = get(&server, target, VIEWER).await;
        assert_ne!(resp.status, 200, "{target} on the viewer port");
        assert!(!resp.text().contains("hlsgate_"), "{target}: {}", resp.text());
    }
    // And no viewer files on the admin port.
    let resp = Request::get(server.admin_addr(), &ok).from(VIEWER).send().await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn one_log_line_per_refusal_with_reason_and_client_and_never_a_key() {
    let server = ops_server(&[("RUST_LOG", "debug")], "");
    let exp = now() + 300;
    let forged = url("/o/a.ts", "not-a-key", Some(VIEWER), exp);
    let expected_token = sign(exp, "/o/a.ts", Some(VIEWER), &Key::new(OPS_KEYS[0]));
    let refused = [
        ("/o/a.ts".to_string(), VIEWER, "token missing"),
        (forged, OTHER, "token invalid"),
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100), VIEWER, "token expired"),
        ("/o/%2e%2e/x".to_string(), OTHER, "dot segment"),
    ];
    for (target, from, _) in &refused {
        get(&server, target, from).await;
    }
    // A successful request, whose token must not be logged either.
    let good = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp);
    assert_eq!(get(&server, &good, VIEWER).await.status, 200);

    wait_for_lines(&server, "refused", refused.len());
    let lines: Vec<String> = server.logs().into_iter().filter(|l| l.contains("refused")).collect();
    assert_eq!(lines.len(), refused.len(), "{lines:#?}");
    for ((_, from, reason), line) in refused.iter().zip(&lines) {
        assert!(line.contains(reason) && line.contains(from), "{line} should name {reason} and {from}");
    }
    for line in server.logs() {
        for secret in OPS_KEYS.iter().copied().chain([expected_token.as_str()]) {
            assert!(!line.contains(secret), "log line holds a secret: {line}");
        }
    }
}

#[tokio::test]
async fn cors_headers_on_every_outcome_and_preflight() {
    let server = ops_server(&[], "");
    let exp = now() + 300;
    let origin = "https://player.example";
    for (target, status) in [
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp), 200),
        (url("/o/index.m3u8", OPS_KEYS[0], Some(VIEWER), exp), 200),
        ("/o/a.ts".to_string(), 403),
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100), 410),
        (url("/o/none.ts", OPS_KEYS[0], Some(VIEWER), exp), 404),
        ("/o/../x".to_string(), 400),
    ] {
        let resp =
            Request::get(server.viewer_addr(), &target).from(VIEWER).header("Origin", origin).send().await;
        assert_eq!(resp.status, status, "{target}");
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"), "{target} ({status})");
    }
    let resp = Request::options(server.viewer_addr(), "/o/a.ts")
        .from(VIEWER)
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await;
    assert!((200..300).contains(&resp.status), "preflight: {}", resp.status);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp.header("access-control-allow-methods").unwrap_or("").to_ascii_uppercase();
    assert!(methods.contains("GET") && methods.contains("HEAD"), "{methods}");
    let headers = resp.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
    assert!(headers.contains("range"), "{headers}");
}

#[tokio::test]
async fn cors_origin_list_is_honoured() {
    let server = ops_server(&[], "cors_origins = [\"https://good.example\"]");
    let target = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() + 300);
    let with_origin =
        |origin: &str| Request::get(server.viewer_addr(), &target).from(VIEWER).header("Origin", origin);
    let good = with_origin("https://good.example").send().await;
    assert_eq!(good.header("access-control-allow-origin"), Some("https://good.example"));
    let evil = with_origin("https://evil.example").send().await;
    assert_eq!(evil.header("access-control-allow-origin"), None);
    let refused = Request::get(server.viewer_addr(), "/o/a.ts")
        .from(VIEWER)
        .header("Origin", "https://good.example")
        .send()
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), Some("https://good.example"));
}

/// Connects, sends `bytes`, and reports whether the server closed the connection within
/// `limit` (true) or kept it open (false).
async fn closed_within(to: SocketAddr, bytes: &[u8], limit: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    // EOF or a reset both mean the server let go.
    tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await.is_ok()
}

#[tokio::test]
async fn header_read_timeout_closes_slow_clients() {
    let server = ops_server(&[], "header_read_timeout = 1");
    let generous = Duration::from_secs(10);
    assert!(
        closed_within(server.viewer_addr(), b"GET /o/a.ts HT", generous).await,
        "a partial request line was held open"
    );
    assert!(
        closed_within(server.viewer_addr(), b"GET /o/a.ts HTTP/1.1\r\nHost: x\r\n", generous).await,
        "partial headers were held open"
    );
    assert!(closed_within(server.viewer_addr(), b"", generous).await, "a silent connection was held open");
    // The server still answers afterwards.
    assert_eq!(get(&server, "/o/a.ts", VIEWER).await.status, 403);
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_download_and_exits_0() {
    let server = ops_server(&[], "");
    let target = url("/o/big.mp4", OPS_KEYS[0], Some(VIEWER), now() + 300);
    let mut download =
        Streaming::open(&Request::get(server.viewer_addr(), &target).from(VIEWER)).await.unwrap();
    assert_eq!(download.status, 200);
    download.read_at_least(1 << 20).await.unwrap();

    server.signal("TERM");
    server.wait_for_log("shutting down", LOG_WAIT);
    // No new viewers once draining (bounded wait for the listener to close).
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            http(&Request::get(server.viewer_addr(), "/o/a.ts").from(VIEWER)),
        )
        .await;
        if !matches!(attempt, Ok(Ok(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The admin port stays up for the drain: the load balancer sees not-ready, Prometheus
    // still scrapes.
    let ready = admin(&server, "/readyz").await;
    assert_eq!((ready.status, ready.text().as_str()), (503, "draining\n"));
    assert_eq!(admin(&server, "/healthz").await.status, 200);
    assert_eq!(admin(&server, "/metrics").await.status, 200);

    download.read_to_end().await.unwrap();
    assert_eq!(download.body.len(), BIG, "the in-flight download was cut");
    assert!(download.body == pattern(BIG, 4));
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn relative_streams_dir_is_relative_to_the_config_file() {
    let setup = Setup::new("relative");
    setup.file("rel/a.ts", "relative");
    let config = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = \"streams\"\n\
                  [streams.rel]\nkeys = [\"rel-key\"]\n";
    // The test's working directory is the package root, not the config's folder.
    let server = Server::start_in(setup.dir, config, &[]);
    let resp = get(&server, &url("/rel/a.ts", "rel-key", Some(VIEWER), now() + 300), VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "relative"));
}

#[test]
fn the_default_config_is_hlsgate_toml_in_the_working_directory() {
    let dir = TempDir::new("default-config");
    dir.write("hlsgate.toml", "[streams.s]\nkeys = [\"k\"]\nip_prefix_v6 = 129\n");
    let out = Command::new(env!("CARGO_BIN_EXE_hlsgate"))
        .arg("serve")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("streams.s.ip_prefix_v6"), "{stderr}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = TempDir::new("jsonlog");
    let path = dir.write(
        "hlsgate.toml",
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[streams.s]\nkeys = [\"json-secret\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hlsgate"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = collect_lines(child.stderr.take().unwrap(), move |line| {
        if line.contains("hlsgate ready") {
            let _ = tx.send(line.to_string());
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(20));
    let status = terminate(&mut child);
    let ready =
        ready.unwrap_or_else(|e| panic!("no ready line ({e}); {status:?}: {:?}", lines.lock().unwrap()));
    let json: serde_json::Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready}"));
    assert_eq!(json["level"], "INFO", "{ready}");
    assert_eq!(json["fields"]["message"], "hlsgate ready", "{ready}");
    let viewers: SocketAddr = json["fields"]["viewers"].as_str().unwrap().parse().unwrap();
    assert_eq!(viewers.ip().to_string(), "127.0.0.1");
    for line in lines.lock().unwrap().iter() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(!line.contains("json-secret"), "a key in the log: {line}");
    }
}

#[test]
fn a_bad_config_exits_2_naming_the_field() {
    let base = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
    for (config, field) in [
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nip_prefix_v4 = 99\n"), "streams.s.ip_prefix_v4"),
        (format!("{base}[streams.s]\nkeys = []\n"), "streams.s.keys"),
        (format!("{base}trusted_proxies = [\"nonsense\"]\n"), "trusted_proxies[0]"),
        (format!("{base}header_read_timeout = 0\n"), "header_read_timeout"),
        (format!("{base}[defaults]\nsession_ttl = 0\n[streams.s]\nkeys = [\"k\"]\n"), "defaults.session_ttl"),
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nsegment_ttl = \"often\"\n"), "streams.s.segment_ttl"),
        ("listen = \"nowhere\"\n".to_string(), "listen"),
        (format!("{base}bogus_field = 1\n"), "bogus_field"),
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nentry_ip = \"sometimes\"\n"), "streams.s.entry_ip"),
        (format!("{base}[defaults]\nskew = \"5\"\n"), "defaults.skew"),
        (format!("{base}cors_origins = [\"example.com\"]\n"), "cors_origins[0]"),
    ] {
        let (code, stderr) = serve_once(&config);
        assert_eq!(code, Some(2), "{config}\n{stderr}");
        assert!(stderr.contains(field), "{field} not named:\n{stderr}");
        assert!(!stderr.contains("hlsgate ready"));
    }
    let (code, _) = serve_once("this is [[[ not toml");
    assert_eq!(code, Some(2));
    // A mistyped key list names the field, never the key.
    let (code, stderr) = serve_once(&format!("{base}[streams.s]\nkeys = \"topsecret-key\"\n"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("streams.s.keys") && !stderr.contains("topsecret"), "{stderr}");
}
