//! Turns a fuzzer's bytes into the invariants' inputs. Settings come from up to two leading bytes
//! below 0x20 (five bits each; no query, path or playlist worth seeding starts with one), so a
//! seed can be a plain file and the fuzzer can still flip every setting.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use hlsgate::client_ip::{ForwardedHeader, Proxies};
use hlsgate::playlist::{Issue, SegmentTtl};
use hlsgate::token::{Key, ParamNames};

use crate::invariants::{PlaylistAt, Signing, MAX_EXPIRES};

/// The settings (0 without a header) and the rest.
pub fn split_settings(data: &[u8]) -> (u16, &[u8]) {
    let header = data.iter().take(2).take_while(|&&b| b < 0x20).count();
    let settings = data[..header].iter().rev().fold(0, |acc, &b| acc << 5 | u16::from(b));
    (settings, &data[header..])
}

/// `width` bits of the settings from bit `at`.
fn bits(settings: u16, at: u32, width: u32) -> usize {
    usize::from(settings >> at & ((1 << width) - 1))
}

pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Parameter names a config accepts: the default pair, nginx's usual, and two one-letter
/// names a query's other parameters easily collide with.
pub fn names(settings: u16) -> ParamNames {
    let (token, expires) = match bits(settings, 0, 2) {
        0 => ("md5", "expires"),
        1 => ("st", "e"),
        2 => ("a", "b"),
        _ => ("token-1", "exp_1"),
    };
    ParamNames { token: token.into(), expires: expires.into() }
}

/// Address texts a token is bound to: none, IPv4, IPv6, a network (prefix binding).
pub fn ip(settings: u16) -> Option<&'static str> {
    [None, Some("203.0.113.7"), Some("2001:db8::1"), Some("203.0.113.0/24")][bits(settings, 2, 2)]
}

pub fn key() -> Key {
    Key::new("demo-key-2026-11")
}

/// A signing for the token target: nginx's documented path, and an expiry from the settings
/// spread over the whole range (1 and the 19-digit maximum included).
pub fn signing(settings: u16, key: &Key) -> Signing<'_> {
    let expires = match bits(settings, 4, 4) {
        0 => 1,
        1 => MAX_EXPIRES,
        n => 2_147_483_647 + n as u64,
    };
    Signing { path: "/s/link", ip: ip(settings), key, expires }
}

/// Playlist URLs as a player sends them: nested, at the stream's top, escaped, non-ASCII.
pub const PLAYLIST_PATHS: [&str; 8] = [
    "/demo/index.m3u8",
    "/demo/720p/index.m3u8",
    "/demo/a/b/c/live.m3u8",
    "/live-1/master.m3u8",
    "/demo/100%2541%20dir/x%3Fy%23z.m3u8",
    "/demo/%C3%A9t%C3%A9/p.m3u8",
    "/demo",
    "/s//a//index.m3u8",
];

/// What a stream's config says about URLs: public hosts, and (bit 9) an HTTP origin.
pub struct Urls {
    pub public_hosts: Vec<String>,
    pub origin_bases: Vec<String>,
}

pub fn urls(settings: u16) -> Urls {
    let origin_bases = if bits(settings, 9, 1) == 1 { vec![ORIGIN.to_owned()] } else { Vec::new() };
    Urls { public_hosts: public_hosts(), origin_bases }
}

/// The HTTP origin of the stream when the settings give it one.
pub const ORIGIN: &str = "http://packager:8081/live/";

/// The playlist request: its URL from bits 4-6; with bit 9, a query for `QUERYPARAM` too.
pub fn playlist_at(settings: u16, urls: &Urls) -> PlaylistAt<'_> {
    let query = if bits(settings, 9, 1) == 1 { "base=720p%2Fx&v=%7B%24v%7D+1&md5=x" } else { "" };
    PlaylistAt {
        raw_path: PLAYLIST_PATHS[bits(settings, 4, 3)],
        query,
        origin_bases: &urls.origin_bases,
        public_hosts: &urls.public_hosts,
    }
}

/// The config's `public_hosts`: absolute URLs naming these are signed.
pub fn public_hosts() -> Vec<String> {
    vec!["example.com:8080".into(), "video.example.org".into()]
}

/// The viewer's issue: binding from the settings as for the token target, the segment TTL from
/// bits 7-8, a fixed clock.
pub fn issue<'a>(settings: u16, key: &'a Key, names: &'a ParamNames) -> Issue<'a> {
    let segment_ttl = [SegmentTtl::Auto, SegmentTtl::Seconds(1), SegmentTtl::Seconds(6), SegmentTtl::Auto]
        [bits(settings, 7, 2)];
    Issue { key, ip: ip(settings), names, now: 1_700_000_000, session_ttl: 14_400, segment_ttl, sticky: None }
}

/// Socket peers: inside and outside the trusted networks, IPv4-mapped, IPv6.
pub const PEERS: [&str; 8] = [
    "10.0.0.1",
    "::ffff:10.0.0.1",
    "203.0.113.9",
    "2001:db8::5",
    "127.0.0.1",
    "::1",
    "198.51.100.7",
    "::ffff:203.0.113.9",
];

/// Trusted networks: none, one, a mix of families, everything.
pub const TRUSTED: [&[&str]; 4] = [
    &[],
    &["10.0.0.0/8"],
    &["10.0.0.0/8", "2001:db8::/32", "198.51.100.0/24", "127.0.0.1/32"],
    &["0.0.0.0/0", "::/0"],
];

/// The peer from bits 0-2, trusted networks from bits 3-4, the header from bit 5.
pub fn peer_and_proxies(settings: u16) -> (IpAddr, Proxies) {
    let peer = PEERS[bits(settings, 0, 3)].parse().expect("a listed address");
    let trusted =
        TRUSTED[bits(settings, 3, 2)].iter().map(|net| net.parse().expect("a listed network")).collect();
    let header =
        if bits(settings, 5, 1) == 0 { ForwardedHeader::XForwardedFor } else { ForwardedHeader::Forwarded };
    (peer, Proxies { trusted, header })
}

/// Header lines, one per `\n`-separated line of the input: `X value` is an X-Forwarded-For
/// line, `F value` a Forwarded line, anything else an X-Real-IP line (read by nobody). Values
/// that are not valid header values (control bytes) are left out, as hyper would refuse them.
pub fn headers(bytes: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        let (name, value) = match line {
            [b'X' | b'x', rest @ ..] => ("x-forwarded-for", rest),
            [b'F' | b'f', rest @ ..] => ("forwarded", rest),
            _ => ("x-real-ip", line),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    headers
}
