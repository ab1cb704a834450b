//! Who is asking: the viewer's address, from the socket peer and, only when that peer is a
//! trusted proxy, from the one forwarding header the config names.
//!
//! Headers are read right to left because each proxy appends; everything left of the first
//! untrusted hop was written by the client and proves nothing. Nothing a client writes may make
//! two clients share an identity: an unreadable hop where the trusted chain ends is refused, never
//! resolved to the proxy that forwarded it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which forwarding header the trusted proxies write. Only that one is read: a proxy that
/// writes `Forwarded` passes the client's own `X-Forwarded-For` through untouched, and the
/// other way round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum ForwardedHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub trusted: Vec<IpNet>,
    pub header: ForwardedHeader,
}

/// A trusted proxy forwarded a hop that is not an address (junk bytes, `unknown`, an obfuscated
/// name) where the client should be. Its sender cannot be told apart from anyone else who sends
/// the same junk, so the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

impl Unreadable {
    pub fn reason(self) -> &'static str {
        "unreadable forwarding header"
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The viewer's address. Without trusted proxies this is simply the socket peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &Proxies) -> Result<IpAddr, Unreadable> {
    let peer = peer.to_canonical();
    if !is_trusted(peer, &proxies.trusted) {
        return Ok(peer);
    }
    let mut client = peer;
    for hop in forwarded_hops(headers, proxies.header).into_iter().rev() {
        client = hop.ok_or(Unreadable)?.to_canonical();
        if !is_trusted(client, &proxies.trusted) {
            return Ok(client);
        }
    }
    // Every hop is a trusted proxy: the left-most is the closest to the viewer we can name.
    Ok(client)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The hops the header names, left to right, over all its lines; `None` for a hop that is not
/// an address. Each comma-separated element is read on its own, as bytes, so one bad byte
/// spoils only its own element. Empty elements are skipped (RFC 9110 §5.6.1).
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let elements = headers
        .get_all(name)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty());
    match header {
        ForwardedHeader::XForwardedFor => elements.map(parse_hop).collect(),
        // An element without `for=` says nothing about who is on the other side: unreadable.
        ForwardedHeader::Forwarded => elements.map(|e| forwarded_for(e).and_then(parse_hop)).collect(),
    }
}

/// The `for=` parameter of one `Forwarded` element, without quotes.
fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let name = pair.get(..4)?;
        let value = name.eq_ignore_ascii_case(b"for=").then(|| pair.get(4..))??;
        let value = value.trim_ascii();
        Some(value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value))
    })
}

/// An address, as proxies write it: bare, `[v6]`, `[v6]:port` or `v4:port`.
fn parse_hop(element: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(element).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(list: &[&str]) -> Proxies {
        Proxies {
            trusted: list.iter().map(|s| s.parse().unwrap()).collect(),
            header: ForwardedHeader::XForwardedFor,
        }
    }

    fn fwd(list: &[&str]) -> Proxies {
        Proxies { header: ForwardedHeader::Forwarded, ..xff(list) }
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", b"1.1.1.1"), ("forwarded", b"for=2.2.2.2")]);
        assert_eq!(client_ip(ip("127.0.0.3"), &h, &xff(&["10.0.0.0/8"])), Ok(ip("127.0.0.3")));
        assert_eq!(client_ip(ip("127.0.0.3"), &h, &xff(&[])), Ok(ip("127.0.0.3")));
        let junk = headers(&[("x-forwarded-for", b"\xff")]);
        assert_eq!(client_ip(ip("127.0.0.3"), &junk, &xff(&["10.0.0.0/8"])), Ok(ip("127.0.0.3")));
    }

    #[test]
    fn trusted_peer_yields_right_most_untrusted_hop() {
        let t = xff(&["10.0.0.0/8"]);
        // The client forged "6.6.6.6"; the proxy appended the real address it saw.
        let h = headers(&[("x-forwarded-for", b"6.6.6.6, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("203.0.113.5")));
    }

    #[test]
    fn multiple_header_lines_are_one_list() {
        let t = xff(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", b"6.6.6.6"), ("x-forwarded-for", b"203.0.113.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("203.0.113.5")));
    }

    #[test]
    fn all_trusted_hops_give_the_left_most() {
        let t = xff(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", b"10.9.9.9, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("10.9.9.9")));
    }

    /// The bypass: a client's junk made the whole line unreadable, so every such client was
    /// bound to the proxy's address and could replay each other's tokens.
    #[test]
    fn junk_written_by_the_client_spoils_only_its_own_element() {
        let t = xff(&["10.0.0.0/8"]);
        for junk in [&b"\xff"[..], b"\xff\xfe, 6.6.6.6", b"nonsense", b"unknown", b"\x80abc"] {
            let line = [junk, b", 203.0.113.5"].concat();
            let h = headers(&[("x-forwarded-for", &line)]);
            assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("203.0.113.5")), "{line:?}");
        }
    }

    #[test]
    fn an_unreadable_hop_where_the_trusted_chain_ends_is_refused() {
        let t = xff(&["10.0.0.0/8"]);
        for line in [&b"\xff"[..], b"203.0.113.5, nonsense", b"unknown, 10.0.0.2", b"_hidden"] {
            let h = headers(&[("x-forwarded-for", line)]);
            assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Err(Unreadable), "{line:?}");
        }
    }

    #[test]
    fn empty_elements_are_skipped() {
        let t = xff(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", b"203.0.113.5,, ,")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("203.0.113.5")));
        let h = headers(&[("x-forwarded-for", b"")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn no_header_from_a_trusted_peer_is_the_peer() {
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &xff(&["10.0.0.0/8"])), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_header_forms() {
        let t = fwd(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", b"for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("2001:db8:cafe::17")));
        let h = headers(&[("forwarded", b"proto=http;for=198.51.100.7:80;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("198.51.100.7")));
        let h = headers(&[("forwarded", b"for=\xff, for=198.51.100.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Ok(ip("198.51.100.7")));
        let h = headers(&[("forwarded", b"proto=https")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Err(Unreadable));
        let h = headers(&[("forwarded", b"for=unknown")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), Err(Unreadable));
    }

    /// A proxy that writes one header passes the client's copy of the other through.
    #[test]
    fn only_the_configured_header_is_read() {
        let h = headers(&[("forwarded", b"for=198.51.100.7"), ("x-forwarded-for", b"6.6.6.6")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &fwd(&["10.0.0.0/8"])), Ok(ip("198.51.100.7")));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &xff(&["10.0.0.0/8"])), Ok(ip("6.6.6.6")));
        let only_xff = headers(&[("x-forwarded-for", b"6.6.6.6")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &only_xff, &fwd(&["10.0.0.0/8"])), Ok(ip("10.0.0.1")));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = xff(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", b"::ffff:198.51.100.7")]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &h, &t), Ok(ip("198.51.100.7")));
    }
}
