//! Secure tokens in the Gcore CDN / nginx `secure_link` format: signing, checking, and the
//! text of the client address that a token is bound to.
//!
//! Pure: no I/O and no clock. Callers pass `now`, so every rule here is testable to the second.
//!
//! `token = base64url_nopad(MD5("{expires}{path}{ip} {secret}"))`; without an IP the hashed
//! string is `"{expires}{path} {secret}"`. A signed URL is `{path}?md5={token}&expires={expires}`.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use md5::{Digest, Md5};
use memchr::memchr;
use subtle::ConstantTimeEq;

/// Length of a token on the wire: 16 bytes of MD5 in unpadded base64.
pub const TOKEN_LEN: usize = 22;

/// A signing secret. Its `Debug` never shows the secret, so a key can sit in any struct that
/// gets logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn new(secret: impl Into<String>) -> Self {
        Key(secret.into())
    }

    fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a request's token was refused. The order of the checks is part of the contract: the
/// signature is checked before the expiry, so only the key holder can tell 403 from 410.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No token or no expiry parameter in the query.
    Missing,
    /// A token or expiry that cannot be a valid one (wrong length, alphabet, padding, number).
    Malformed,
    /// The token or the expiry appears twice. nginx reads the first and a proxy in front might
    /// check either, so a query that could mean two things is refused.
    Repeated,
    /// Well formed, but no key signs it for this path and address.
    BadSignature,
    /// Genuine, but `now >= expires + skew`.
    Expired,
}

impl Denial {
    /// A short reason, safe to return to the client: it names no key and no expected hash.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Missing => "token missing",
            Denial::Malformed => "token malformed",
            Denial::Repeated => "token parameter repeated",
            Denial::BadSignature => "token invalid for this path or address",
            Denial::Expired => "token expired",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The names of the two query parameters. nginx sites often use others (`st`, `e`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamNames {
    pub token: String,
    pub expires: String,
}

impl Default for ParamNames {
    fn default() -> Self {
        ParamNames { token: "md5".into(), expires: "expires".into() }
    }
}

/// The raw MD5 behind a token.
pub fn digest(expires: u64, path: &str, ip: Option<&str>, key: &Key) -> [u8; 16] {
    let mut number = itoa_buf();
    let parts = [
        format_u64(expires, &mut number),
        path.as_bytes(),
        ip.unwrap_or("").as_bytes(),
        b" ",
        key.as_bytes(),
    ];
    // One contiguous buffer and one call: feeding MD5 in five pieces costs a third more.
    let mut buf = [0u8; 192];
    let mut len = 0;
    for part in parts {
        match buf.get_mut(len..len + part.len()) {
            Some(slot) => slot.copy_from_slice(part),
            None => return digest_in_pieces(&parts),
        }
        len += part.len();
    }
    Md5::digest(buf.get(..len).unwrap_or_default()).into()
}

fn digest_in_pieces(parts: &[&[u8]]) -> [u8; 16] {
    let mut md5 = Md5::new();
    for part in parts {
        md5.update(part);
    }
    md5.finalize().into()
}

/// Signs `path` until `expires`, optionally bound to an address text (see [`ip_text`]).
pub fn sign(expires: u64, path: &str, ip: Option<&str>, key: &Key) -> String {
    let mut token = String::with_capacity(TOKEN_LEN);
    sign_into(expires, path, ip, key, &mut token);
    token
}

/// [`sign`], appending the token to `out`: a playlist rewrite writes every URI into one buffer.
pub fn sign_into(expires: u64, path: &str, ip: Option<&str>, key: &Key, out: &mut String) {
    push_token_text(&digest(expires, path, ip, key), out);
}

/// The base64url alphabet, in order.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A digest as its 22 unpadded base64url characters, by table: a playlist signs every URI, and
/// the general engine's bookkeeping cost half as much as the MD5 (the crate stays the oracle
/// in the tests).
fn push_token_text(digest: &[u8; 16], out: &mut String) {
    let bits = u128::from_be_bytes(*digest);
    let mut text = [b'A'; TOKEN_LEN];
    // 22 sextets carry 132 bits: the 128 of the digest and 4 zero bits at the end.
    for (i, slot) in text.iter_mut().enumerate() {
        let shift = 122 - 6 * i as i32;
        let sextet = if shift >= 0 { (bits >> shift) & 63 } else { (bits << -shift) & 63 };
        *slot = BASE64URL.get(sextet as usize).copied().unwrap_or(b'A');
    }
    // Every byte is from the alphabet, so this is always UTF-8.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// Appends `n` in decimal, without the formatting machinery.
pub fn push_decimal(n: u64, out: &mut String) {
    let mut buf = itoa_buf();
    let digits = format_u64(n, &mut buf);
    out.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

/// The token and expiry presented in a query string, decoded but not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    pub digest: [u8; 16],
    pub expires: u64,
}

/// Finds the token and expiry in a raw query string. Order-independent; other parameters
/// (`_HLS_msn`, `_HLS_part`, cache busters) are ignored; values are percent-decoded.
pub fn parse_query(query: &str, names: &ParamNames) -> Result<Presented, Denial> {
    // Nearly every query has nothing escaped; one scan for `%` lets the loop below compare
    // names as they stand instead of asking per parameter.
    let escaped = memchr(b'%', query.as_bytes()).is_some();
    let mut token = None;
    let mut expires = None;
    for (name, value) in query_pairs(query.as_bytes()) {
        let name = if escaped { percent_decoded(name) } else { Cow::Borrowed(name) };
        let slot = if *name == *names.token.as_bytes() {
            &mut token
        } else if *name == *names.expires.as_bytes() {
            &mut expires
        } else {
            continue;
        };
        if slot.replace(value).is_some() {
            return Err(Denial::Repeated);
        }
    }
    let (Some(token), Some(expires)) = (token, expires) else {
        return Err(Denial::Missing);
    };
    let (digest, expires) = if escaped {
        (decode_token(&percent_decoded(token))?, parse_expires(&percent_decoded(expires))?)
    } else {
        (decode_token(token)?, parse_expires(expires)?)
    };
    Ok(Presented { digest, expires })
}

/// Whether one raw `name=value` pair of a query is the token or the expiry, by decoded name
/// (as [`parse_query`] reads them).
pub fn is_token_param(pair: &str, names: &ParamNames) -> bool {
    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    name == names.token.as_str() || name == names.expires.as_str()
}

/// A raw query without the token and the expiry: what an origin is asked with (`_HLS_msn`,
/// `_HLS_part`, `_HLS_skip` and anything else pass on untouched, in order).
pub fn without_token_params(query: &str, names: &ParamNames) -> String {
    let kept: Vec<&str> =
        query.split('&').filter(|pair| !pair.is_empty() && !is_token_param(pair, names)).collect();
    kept.join("&")
}

/// The `name=value` pairs of a raw query; a pair without `=` has an empty value. `memchr`
/// rather than a byte-by-byte split: this runs on every request and the query is mostly
/// token.
fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = Some(query);
    std::iter::from_fn(move || {
        let query = rest?;
        let (pair, after) = split_at_byte(query, b'&');
        rest = after;
        // Names are short: a plain scan beats memchr's dispatch there.
        Some(match pair.iter().position(|&b| b == b'=') {
            Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..).unwrap_or_default()),
            None => (pair, &[][..]),
        })
    })
}

/// What comes before the first `byte`, and what comes after it if it occurs.
fn split_at_byte(text: &[u8], byte: u8) -> (&[u8], Option<&[u8]>) {
    match memchr(byte, text) {
        Some(i) => (text.get(..i).unwrap_or_default(), text.get(i + 1..)),
        None => (text, None),
    }
}

/// Percent-decodes a query component, borrowing when there is nothing to decode.
fn percent_decoded(text: &[u8]) -> Cow<'_, [u8]> {
    if text.contains(&b'%') {
        Cow::from(percent_encoding::percent_decode(text))
    } else {
        Cow::Borrowed(text)
    }
}

/// Decodes a 22-character base64url token; nginx's `==` padding is tolerated. `+`, `/`, any
/// other byte and non-zero trailing bits are refused, so every digest has one spelling.
fn decode_token(token: &[u8]) -> Result<[u8; 16], Denial> {
    let unpadded = match token {
        [unpadded @ .., b'=', b'='] => unpadded,
        _ => token,
    };
    let chars: &[u8; TOKEN_LEN] = unpadded.try_into().map_err(|_| Denial::Malformed)?;
    decode_22(chars).ok_or(Denial::Malformed)
}

/// Sextet of each base64url character; 0xFF for every other byte.
const SEXTETS: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Base64url for the one shape a token has (22 characters → 16 bytes), by table. On every
/// request, where the general engine's length and padding handling cost a quarter of the
/// parse; the `base64` crate stays the oracle in the tests and does all the encoding.
fn decode_22(chars: &[u8; TOKEN_LEN]) -> Option<[u8; 16]> {
    let sextets = chars.map(|c| SEXTETS[usize::from(c)]);
    if sextets.iter().fold(0, |acc, s| acc | s) > 63 || sextets[21] & 0x0F != 0 {
        return None;
    }
    // Five independent 24-bit groups and the last byte, joined in a register: writing the
    // bytes one by one and reading them back as a block stalls store forwarding.
    let group = |i: usize| -> u128 {
        sextets.get(i..i + 4).map_or(0, |quad| quad.iter().fold(0, |acc, &s| acc << 6 | u128::from(s)))
    };
    let bits = group(0) << 104
        | group(4) << 80
        | group(8) << 56
        | group(12) << 32
        | group(16) << 8
        | u128::from(sextets[20] << 2 | sextets[21] >> 4);
    Some(bits.to_be_bytes())
}

/// A positive decimal of at most 19 digits (so it cannot overflow a `u64`, and needs no
/// checked arithmetic per digit); no sign, no spaces, no leading `+`, no leading zero (the
/// number is hashed as it is written, so it has one spelling).
fn parse_expires(text: &[u8]) -> Result<u64, Denial> {
    if text.is_empty() || text.len() > 19 || text.first() == Some(&b'0') {
        return Err(Denial::Malformed);
    }
    let mut value = 0u64;
    for &b in text {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(Denial::Malformed);
        }
        value = value * 10 + u64::from(digit);
    }
    Ok(value)
}

/// What a token may be valid for: the paths, the address texts and the keys a check accepts.
/// One policy value, separate from the check that reads it.
#[derive(Debug, Clone, Copy)]
pub struct Accept<'a> {
    /// Paths the token may have been signed for: the request path, then its directory.
    pub paths: &'a [&'a str],
    /// Address texts the token may be bound to; `None` accepts an IP-less token.
    pub ips: &'a [Option<&'a str>],
    /// Every key that verifies (rotation: the first signs, all verify).
    pub keys: &'a [Key],
    /// Seconds of clock-skew tolerance after `expires`.
    pub skew: u64,
}

/// A token that passed: when it stops opening new requests, and whether it was signed with no
/// address bound (an IP-less link from the site, which leaked-link detection counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid {
    pub expires: u64,
    pub ip_less: bool,
}

/// Checks a presented token: signature first (every key × path × address), then the clock.
/// A token is expired when `now >= expires + skew`; with skew 0 that is Gcore's rule.
pub fn check(presented: &Presented, accept: &Accept<'_>, now: u64) -> Result<Valid, Denial> {
    let Some(bound_to) = matching_binding(presented, accept) else {
        return Err(Denial::BadSignature);
    };
    if now >= presented.expires.saturating_add(accept.skew) {
        return Err(Denial::Expired);
    }
    Ok(Valid { expires: presented.expires, ip_less: bound_to.is_none() })
}

/// The address candidate (of [`Accept::ips`]) the token was signed for, `Some(None)` for no
/// address; `None` when no candidate signs it.
fn matching_binding<'a>(presented: &Presented, accept: &Accept<'a>) -> Option<Option<&'a str>> {
    // Each comparison is constant-time, so a forger learns nothing about the expected hash.
    // Stopping at the first match is safe: which candidate a genuine token matched is no secret,
    // and a forged one is always compared against every candidate.
    accept.keys.iter().find_map(|key| {
        accept.paths.iter().find_map(|path| {
            accept.ips.iter().copied().find(|ip| {
                let expected = digest(presented.expires, path, *ip, key);
                digests_match(&expected, &presented.digest)
            })
        })
    })
}

/// Constant-time equality of two digests. As one `u128`: `subtle` compares a byte array byte
/// by byte behind an optimisation barrier each, which cost more than the rest of a check.
fn digests_match(a: &[u8; 16], b: &[u8; 16]) -> bool {
    u128::from_ne_bytes(*a).ct_eq(&u128::from_ne_bytes(*b)).into()
}

/// The paths a request path can be authorised by: itself, and (Gcore's directory tokens) the
/// directory that directly holds it, with its trailing `/`.
pub fn covering_paths(path: &str) -> [&str; 2] {
    let dir = match path.rfind('/') {
        Some(i) => path.get(..=i).unwrap_or(path),
        None => path,
    };
    [path, dir]
}

/// The text an address is hashed as: dotted IPv4, RFC 5952 IPv6, and an IPv4-mapped IPv6
/// address as the IPv4 address it carries.
pub fn ip_text(ip: IpAddr) -> String {
    IpText::of(ip).as_str().to_owned()
}

/// hlsgate's own extension for mobile carriers: with a prefix shorter than the address, the
/// hashed text is the network in CIDR form (`203.0.113.0/24`, `2001:db8:1:2::/64`).
pub fn ip_binding(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> String {
    IpText::binding(ip, prefix_v4, prefix_v6).as_str().to_owned()
}

/// An address's hashed text ([`ip_text`], [`ip_binding`]) on the stack: the check path needs
/// one or two per request, and formatting them into `String`s cost more than the rest of the
/// check bar the MD5s.
#[derive(Clone, Copy)]
pub struct IpText {
    // The longest text is an IPv6 network: 39 characters, `/`, 3 digits.
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::dotted(v4.octets()),
            IpAddr::V6(v6) => Self::display(v6),
        }
    }

    /// The network under the prefixes when they are shorter than the address, else the address.
    pub fn binding(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) if prefix_v4 < 32 => {
                ipnet::Ipv4Net::new(v4, prefix_v4).map_or_else(|_| Self::of(ip), |n| Self::display(n.trunc()))
            }
            IpAddr::V6(v6) if prefix_v6 < 128 => {
                ipnet::Ipv6Net::new(v6, prefix_v6).map_or_else(|_| Self::of(ip), |n| Self::display(n.trunc()))
            }
            _ => Self::of(ip),
        }
    }

    pub fn as_str(&self) -> &str {
        self.buf.get(..self.len).and_then(|text| std::str::from_utf8(text).ok()).unwrap_or_default()
    }

    /// Dotted decimal by hand: the common case, and `Display` for `Ipv4Addr` pads and copies.
    fn dotted(octets: [u8; 4]) -> Self {
        let mut text = IpText { buf: [0; 48], len: 0 };
        for (i, octet) in octets.into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            if octet >= 100 {
                text.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                text.push(b'0' + octet / 10 % 10);
            }
            text.push(b'0' + octet % 10);
        }
        text
    }

    fn display(value: impl fmt::Display) -> Self {
        let mut text = IpText { buf: [0; 48], len: 0 };
        // Every value written here fits: it is an address or a network.
        let _ = fmt::Write::write_fmt(&mut text, format_args!("{value}"));
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }
}

impl fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The default rounding step for issued expiries: a quarter of the TTL, at least one second.
pub fn default_step(ttl: u64) -> u64 {
    (ttl / 4).max(1)
}

/// Expiry for a token hlsgate issues: `now + ttl` rounded up to a multiple of `step`, so the
/// same URI signed twice within one step is byte-identical (players and LL-HLS preload hints
/// need stable URIs). Always in `[now + ttl, now + ttl + step]`.
pub fn issue_expiry(now: u64, ttl: u64, step: u64) -> u64 {
    let step = step.max(1);
    now.saturating_add(ttl).div_ceil(step).saturating_mul(step).min(MAX_EXPIRES)
}

/// The latest expiry a token can carry: 19 digits, the most [`parse_query`] reads. A TTL from a
/// hostile playlist (`#EXT-X-TARGETDURATION:4000000000000000000`) must not issue tokens that
/// no check can read.
pub const MAX_EXPIRES: u64 = 9_999_999_999_999_999_999;

/// Appends the token parameters to a path or URI that has no query yet, or has one.
pub fn signed_url(path: &str, token: &str, expires: u64, names: &ParamNames) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}={token}&{}={expires}", names.token, names.expires)
}

type ItoaBuf = [u8; 20];

fn itoa_buf() -> ItoaBuf {
    [0; 20]
}

/// `u64` to decimal without allocating: this sits on every check.
fn format_u64(mut n: u64, buf: &mut ItoaBuf) -> &[u8] {
    // 20 digits hold any u64, so every slot below exists.
    let mut i = buf.len();
    while i > 0 {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn key(s: &str) -> Key {
        Key::new(s)
    }

    fn presented(url_query: &str) -> Result<Presented, Denial> {
        parse_query(url_query, &ParamNames::default())
    }

    fn accept<'a>(
        paths: &'a [&'a str],
        ips: &'a [Option<&'a str>],
        keys: &'a [Key],
        skew: u64,
    ) -> Accept<'a> {
        Accept { paths, ips, keys, skew }
    }

    #[test]
    fn nginx_documented_value() {
        // From nginx's secure_link documentation.
        assert_eq!(sign(2147483647, "/s/link", Some("127.0.0.1"), &key("secret")), "_e4Nc3iduzkWRm01TBBNYw");
    }

    #[test]
    fn format_u64_writes_decimal() {
        for n in [0u64, 7, 10, 2147483647, u64::MAX] {
            let mut b = itoa_buf();
            assert_eq!(format_u64(n, &mut b), n.to_string().as_bytes());
        }
    }

    #[test]
    fn tokens_are_22_url_safe_chars() {
        for i in 0..200u64 {
            let t = sign(1_700_000_000 + i, "/a/b.ts", None, &key("k"));
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t}");
        }
    }

    #[test]
    fn query_is_order_independent_and_ignores_other_params() {
        let t = sign(2000000000, "/p", None, &key("k"));
        let a = presented(&format!("md5={t}&expires=2000000000")).unwrap();
        let b = presented(&format!("_HLS_msn=5&expires=2000000000&x=&_HLS_part=1&md5={t}")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expires, 2000000000);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let t = sign(2000000000, "/p", None, &key("k"));
        let enc = t.replace('-', "%2D").replace('_', "%5f");
        let p = presented(&format!("md5={enc}&expires=%32000000000")).unwrap();
        assert_eq!(p.expires, 2000000000);
        assert_eq!(p.digest, digest(2000000000, "/p", None, &key("k")));
    }

    #[test]
    fn custom_param_names() {
        let names = ParamNames { token: "st".into(), expires: "e".into() };
        let t = sign(2000000000, "/p", None, &key("k"));
        assert!(parse_query(&format!("st={t}&e=2000000000"), &names).is_ok());
        assert_eq!(parse_query(&format!("md5={t}&expires=2000000000"), &names), Err(Denial::Missing));
    }

    #[test]
    fn missing_parts() {
        let t = sign(2000000000, "/p", None, &key("k"));
        assert_eq!(presented(""), Err(Denial::Missing));
        assert_eq!(presented(&format!("md5={t}")), Err(Denial::Missing));
        assert_eq!(presented("expires=2000000000"), Err(Denial::Missing));
    }

    #[test]
    fn padding_is_accepted_other_shapes_are_malformed() {
        let t = sign(2000000000, "/p", None, &key("k"));
        assert!(presented(&format!("md5={t}==&expires=2000000000")).is_ok());
        assert!(presented(&format!("md5={t}%3D%3D&expires=2000000000")).is_ok());
        for bad in [
            format!("{t}="),
            format!("{t}==="),
            t[..21].to_string(),
            format!("{t}A"),
            format!("+{}", &t[1..]),
            format!("/{}", &t[1..]),
            format!("{}%2B", &t[..21]),
            String::new(),
        ] {
            assert_eq!(presented(&format!("md5={bad}&expires=2000000000")), Err(Denial::Malformed), "{bad}");
        }
    }

    #[test]
    fn expires_must_be_a_positive_decimal() {
        let t = sign(2000000000, "/p", None, &key("k"));
        for bad in [
            "",
            "0",
            "-1",
            "+5",
            "12a",
            "1e9",
            " 5",
            "10000000000000000000",
            "99999999999999999999999",
            "0042",
            "00",
        ] {
            assert_eq!(presented(&format!("md5={t}&expires={bad}")), Err(Denial::Malformed), "{bad:?}");
        }
        // 19 digits is the most (year 300 billion). A leading zero would be a second spelling of
        // the same expiry, hashed differently by nginx (which hashes the text as sent).
        assert_eq!(
            presented(&format!("md5={t}&expires=9999999999999999999")).unwrap().expires,
            9999999999999999999
        );
    }

    #[test]
    fn origins_get_every_parameter_but_the_token() {
        let names = ParamNames::default();
        assert_eq!(
            without_token_params("_HLS_msn=5&md5=x&_HLS_part=1&%65xpires=9&a&_HLS_skip=YES", &names),
            "_HLS_msn=5&_HLS_part=1&a&_HLS_skip=YES"
        );
        assert_eq!(without_token_params("md5=x&expires=1", &names), "");
        assert_eq!(without_token_params("", &names), "");
    }

    proptest::proptest! {
        #[test]
        fn token_text_agrees_with_the_base64_crate(digest: [u8; 16]) {
            let mut ours = String::new();
            push_token_text(&digest, &mut ours);
            proptest::prop_assert_eq!(ours, URL_SAFE_NO_PAD.encode(digest));
        }

        #[test]
        fn decimals_agree_with_display(n: u64) {
            let mut ours = String::new();
            push_decimal(n, &mut ours);
            proptest::prop_assert_eq!(ours, n.to_string());
        }
    }

    #[test]
    fn issued_expiries_always_parse() {
        for (now, ttl, step) in
            [(1_700_000_000, u64::MAX, 1), (u64::MAX, 10, 3), (1, 4_000_000_000_003_454_249 * 3, 1 << 62)]
        {
            let expires = issue_expiry(now, ttl, step);
            let query = format!("md5={}&expires={expires}", sign(expires, "/p", None, &key("k")));
            assert!(parse_query(&query, &ParamNames::default()).is_ok(), "{expires}");
        }
    }

    #[test]
    fn address_texts_on_the_stack_match_display() {
        for text in
            ["0.0.0.0", "1.2.3.4", "10.100.255.9", "255.255.255.255", "::1", "2001:db8::1", "::ffff:1.2.3.4"]
        {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(IpText::of(ip).as_str(), ip.to_canonical().to_string(), "{text}");
        }
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(IpText::binding(ip, 32, 64).as_str(), "2001:db8:1:2::/64");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(IpText::binding(longest, 32, 127).as_str(), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
    }

    /// nginx takes the first of a repeated parameter and hlsgate took the last: behind a proxy
    /// that checks one, the other could be smuggled through.
    #[test]
    fn a_repeated_token_or_expiry_is_refused() {
        let t = sign(2000000000, "/p", None, &key("k"));
        for query in [
            format!("md5={t}&expires=2000000000&md5={t}"),
            format!("md5={t}&expires=2000000000&expires=2000000000"),
            format!("md5={t}&expires=2000000000&%6Dd5={t}"),
            format!("md5=&md5={t}&expires=2000000000"),
        ] {
            assert_eq!(presented(&query), Err(Denial::Repeated), "{query}");
        }
        assert!(presented(&format!("md5={t}&expires=2000000000&md55=x&xexpires=1")).is_ok());
    }

    #[test]
    fn signature_is_checked_before_expiry() {
        let k = [key("k")];
        let p = presented(&format!("md5={}&expires=100", sign(100, "/p", None, &key("other")))).unwrap();
        assert_eq!(check(&p, &accept(&["/p"], &[None], &k, 0), 1000), Err(Denial::BadSignature));
        let p = presented(&format!("md5={}&expires=100", sign(100, "/p", None, &k[0]))).unwrap();
        assert_eq!(check(&p, &accept(&["/p"], &[None], &k, 0), 1000), Err(Denial::Expired));
    }

    #[test]
    fn skew_boundaries() {
        let k = [key("k")];
        let p = presented(&format!("md5={}&expires=1000", sign(1000, "/p", None, &k[0]))).unwrap();
        let a0 = accept(&["/p"], &[None], &k, 0);
        assert_eq!(check(&p, &a0, 999), Ok(Valid { expires: 1000, ip_less: true }));
        assert_eq!(check(&p, &a0, 1000), Err(Denial::Expired));
        let a5 = accept(&["/p"], &[None], &k, 5);
        assert!(check(&p, &a5, 1004).is_ok());
        assert_eq!(check(&p, &a5, 1005), Err(Denial::Expired));
    }

    #[test]
    fn every_listed_key_verifies() {
        let keys = [key("new"), key("old")];
        for k in &keys {
            let p = presented(&format!("md5={}&expires=5000", sign(5000, "/p", None, k))).unwrap();
            assert!(check(&p, &accept(&["/p"], &[None], &keys, 0), 1).is_ok());
        }
        let p = presented(&format!("md5={}&expires=5000", sign(5000, "/p", None, &key("gone")))).unwrap();
        assert_eq!(check(&p, &accept(&["/p"], &[None], &keys, 0), 1), Err(Denial::BadSignature));
    }

    #[test]
    fn ip_binding_is_exact() {
        let k = [key("k")];
        let p =
            presented(&format!("md5={}&expires=5000", sign(5000, "/p", Some("10.0.0.1"), &k[0]))).unwrap();
        assert!(check(&p, &accept(&["/p"], &[Some("10.0.0.1")], &k, 0), 1).is_ok());
        assert_eq!(
            check(&p, &accept(&["/p"], &[Some("10.0.0.2"), None], &k, 0), 1),
            Err(Denial::BadSignature)
        );
        // An IP-less token is only good where an IP-less binding is accepted.
        let p = presented(&format!("md5={}&expires=5000", sign(5000, "/p", None, &k[0]))).unwrap();
        assert_eq!(check(&p, &accept(&["/p"], &[Some("10.0.0.1")], &k, 0), 1), Err(Denial::BadSignature));
    }

    /// Leaked-link detection counts the tokens that matched the IP-less candidate, and only them.
    #[test]
    fn check_tells_an_ip_less_token_from_a_bound_one() {
        let k = [key("k")];
        let ips = [Some("10.0.0.1"), Some("10.0.0.0/24"), None];
        for (signed_for, ip_less) in [(Some("10.0.0.1"), false), (Some("10.0.0.0/24"), false), (None, true)] {
            let p = presented(&format!("md5={}&expires=5000", sign(5000, "/d/", signed_for, &k[0]))).unwrap();
            let valid = check(&p, &accept(&covering_paths("/d/a.ts"), &ips, &k, 0), 1);
            assert_eq!(valid, Ok(Valid { expires: 5000, ip_less }), "{signed_for:?}");
        }
    }

    #[test]
    fn directory_tokens_cover_direct_children_only() {
        assert_eq!(covering_paths("/videos/video-1/seg.ts"), ["/videos/video-1/seg.ts", "/videos/video-1/"]);
        let k = [key("secret_key")];
        let p =
            presented(&format!("md5={}&expires=5000", sign(5000, "/videos/video-1/", None, &k[0]))).unwrap();
        let direct = covering_paths("/videos/video-1/seg.ts");
        assert!(check(&p, &accept(&direct, &[None], &k, 0), 1).is_ok());
        let below = covering_paths("/videos/video-1/720p/seg.ts");
        assert_eq!(check(&p, &accept(&below, &[None], &k, 0), 1), Err(Denial::BadSignature));
        let sibling = covering_paths("/videos/video-10/seg.ts");
        assert_eq!(check(&p, &accept(&sibling, &[None], &k, 0), 1), Err(Denial::BadSignature));
    }

    #[test]
    fn ip_text_forms() {
        assert_eq!(ip_text("1.2.3.4".parse().unwrap()), "1.2.3.4");
        assert_eq!(ip_text("::FFFF:1.2.3.4".parse().unwrap()), "1.2.3.4");
        assert_eq!(ip_text("2001:DB8:0:0:0:0:0:1".parse().unwrap()), "2001:db8::1");
        assert_eq!(ip_text("2001:db8:0:0:1:0:0:1".parse().unwrap()), "2001:db8::1:0:0:1");
        assert_eq!(ip_text(IpAddr::V6(Ipv6Addr::LOCALHOST)), "::1");
    }

    #[test]
    fn prefix_binding_uses_network_text() {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77));
        assert_eq!(ip_binding(v4, 24, 64), "203.0.113.0/24");
        assert_eq!(ip_binding(v4, 32, 64), "203.0.113.77");
        let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
        assert_eq!(ip_binding(mapped, 24, 128), "203.0.113.0/24");
        let v6: IpAddr = "2001:db8:1:2:aa:bb:cc:dd".parse().unwrap();
        assert_eq!(ip_binding(v6, 32, 64), "2001:db8:1:2::/64");
        assert_eq!(ip_binding(v6, 32, 128), "2001:db8:1:2:aa:bb:cc:dd");
    }

    #[test]
    fn issued_expiry_is_stepped_and_bounded() {
        assert_eq!(default_step(14400), 3600);
        assert_eq!(default_step(2), 1);
        assert_eq!(default_step(0), 1);
        assert_eq!(issue_expiry(1000, 12, 4), 1012);
        assert_eq!(issue_expiry(1001, 12, 4), 1016);
        assert_eq!(issue_expiry(1004, 12, 4), 1016);
        assert_eq!(issue_expiry(1005, 12, 4), 1020);
        for now in 1_700_000_000..1_700_000_050u64 {
            let e = issue_expiry(now, 12, 3);
            assert!(e >= now + 12 && e <= now + 15, "{now} -> {e}");
            assert_eq!(e % 3, 0);
        }
    }

    #[test]
    fn signed_url_appends() {
        let n = ParamNames::default();
        assert_eq!(signed_url("/a.ts", "T", 5, &n), "/a.ts?md5=T&expires=5");
        assert_eq!(signed_url("/a.ts?x=1", "T", 5, &n), "/a.ts?x=1&md5=T&expires=5");
    }

    #[test]
    fn key_debug_is_redacted() {
        assert!(!format!("{:?}", key("hunter2")).contains("hunter2"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn path() -> impl Strategy<Value = String> {
            "(/[A-Za-z0-9._~-]{1,12}){1,4}/?"
        }

        fn ip() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                Just(None),
                any::<[u8; 4]>().prop_map(|o| Some(ip_text(IpAddr::from(o)))),
                any::<[u8; 16]>().prop_map(|o| Some(ip_text(IpAddr::from(o)))),
            ]
        }

        proptest! {
            #[test]
            fn sign_then_check_round_trips(path in path(), ip in ip(), secret in "[ -~]{1,40}", expires in 1u64..4_000_000_000, ago in 1u64..1000) {
                let keys = [Key::new(secret)];
                let token = sign(expires, &path, ip.as_deref(), &keys[0]);
                let url = signed_url(&path, &token, expires, &ParamNames::default());
                let query = url.split_once('?').unwrap().1;
                let p = parse_query(query, &ParamNames::default()).unwrap();
                let ips = [ip.as_deref()];
                let a = Accept { paths: &[&path], ips: &ips, keys: &keys, skew: 0 };
                prop_assert_eq!(check(&p, &a, expires.saturating_sub(ago)), Ok(Valid { expires, ip_less: ip.is_none() }));
            }

            #[test]
            fn any_single_character_change_is_refused(path in path(), secret in "[a-z0-9]{1,20}", pos in 0usize..TOKEN_LEN, repl in "[A-Za-z0-9_+/=.-]") {
                let keys = [Key::new(secret)];
                let token = sign(4_000_000_000, &path, None, &keys[0]);
                let mut changed = token.clone().into_bytes();
                prop_assume!(changed[pos] != repl.as_bytes()[0]);
                changed[pos] = repl.as_bytes()[0];
                let changed = String::from_utf8(changed).unwrap();
                let a = Accept { paths: &[&path], ips: &[None], keys: &keys, skew: 0 };
                let outcome = parse_query(&format!("md5={changed}&expires=4000000000"), &ParamNames::default())
                    .and_then(|p| check(&p, &a, 1));
                prop_assert!(matches!(outcome, Err(Denial::Malformed) | Err(Denial::BadSignature)), "{:?}", outcome);
            }

            // The table decoder against the `base64` crate: same bytes for every 22-character
            // text, valid or not (wrong alphabet, `=`, non-zero trailing bits).
            #[test]
            fn token_decoding_agrees_with_the_base64_crate(
                alphabet in "[A-Za-z0-9_-]{22}",
                any in "[A-Za-z0-9_+/=.%-]{22}",
                raw in proptest::array::uniform16(0u8..),
            ) {
                for candidate in [alphabet.into_bytes(), any.into_bytes(), URL_SAFE_NO_PAD.encode(raw).into_bytes()] {
                    let mut out = [0u8; 16];
                    let oracle = match URL_SAFE_NO_PAD.decode_slice(&candidate, &mut out) {
                        Ok(16) => Some(out),
                        _ => None,
                    };
                    let chars: &[u8; TOKEN_LEN] = candidate.as_slice().try_into().unwrap();
                    prop_assert_eq!(decode_22(chars), oracle, "{:?}", String::from_utf8_lossy(&candidate));
                }
            }
        }
    }
}
