//! Who is asking: the viewer's address, from the socket peer and, only when that peer is a
//! trusted proxy, from the forwarding headers it added.
//!
//! Headers are read right to left because each proxy appends; everything left of the first
//! untrusted hop was written by the client and proves nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The viewer's address. Without trusted proxies this is simply the socket peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that is not an address (garbage, `unknown`, an obfuscated name) ends the chain:
        // the last address that could be believed is the answer.
        let Some(ip) = hop else { return client };
        client = ip.to_canonical();
        if !is_trusted(client, trusted) {
            return client;
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The hops named by `X-Forwarded-For`, or failing that by `Forwarded: for=`, left to right.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let xff: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(|item| parse_hop(item.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("for=\u{0}").split(','))
        .filter_map(forwarded_for)
        .map(parse_hop)
        .collect()
}

/// The `for=` parameter of one `Forwarded` element, without quotes.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
    })
}

/// An address, as proxies write it: bare, `[v6]`, `[v6]:port` or `v4:port`.
fn parse_hop(text: &str) -> Option<IpAddr> {
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(client_ip(ip("127.0.0.3"), &h, &nets(&["10.0.0.0/8"])), ip("127.0.0.3"));
        assert_eq!(client_ip(ip("127.0.0.3"), &h, &[]), ip("127.0.0.3"));
    }

    #[test]
    fn trusted_peer_yields_right_most_untrusted_hop() {
        let t = nets(&["10.0.0.0/8"]);
        // The client forged "6.6.6.6"; the proxy appended the real address it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.5"));
    }

    #[test]
    fn multiple_header_lines_are_one_list() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("203.0.113.5"));
    }

    #[test]
    fn all_trusted_hops_give_the_left_most() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.9.9.9"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_believable_hop() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.5, nonsense")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn no_header_from_a_trusted_peer_is_the_peer() {
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &nets(&["10.0.0.0/8"])), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_header_forms() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=6.6.6.6, For=\"[2001:db8:cafe::17]:4711\";proto=https")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "proto=http;for=198.51.100.7:80;by=10.0.0.1")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn x_forwarded_for_wins_over_forwarded() {
        let t = nets(&["10.0.0.0/8"]);
        let h = headers(&[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &t), ip("198.51.100.7"));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let t = nets(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &h, &t), ip("198.51.100.7"));
    }
}
