//! Issue 3 against the real `hlsgate serve` on loopback: every rule of the gatekeeper, one
//! server per test (ports 0, own temp dir), viewers told apart by the 127.0.0.x address their
//! socket is bound to.
//!
//! Tokens the server writes into playlists are never trusted as such: each one is recomputed
//! here from the URI's resolved path, the viewer's binding and the stream's key (and once with
//! `openssl md5`), then fetched from the viewer's address (200) and from another one (403).
//!
//! This file holds what the sections share; each section is a module of its own.

#[path = "../common/mod.rs"]
mod common;

mod media;
mod ops;
mod paths;
mod playlists;
mod proxies;
mod sighup;
mod tokens;

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
    server: &'a dyn Serving,
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

/// The `public_hosts` entry of the playlist server: absolute URLs naming it are signed.
const PUBLIC_HOST: &str = "video.example.com";

/// A file of a running server's streams, as on disk.
fn disk(server: &Server, rel: &str) -> Vec<u8> {
    std::fs::read(server.dir().join("streams").join(rel)).unwrap()
}
