//! Where keys live: the per-stream policy map (keys, TTLs, skew, address binding), built once
//! per config load and swapped whole on reload, so a request sees one consistent generation.
//!
//! Readers clone an `Arc` and drop the lock at once: no guard is ever held across an `.await`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};

use crate::client_ip::Proxies;
use crate::playlist::SegmentTtl;
use crate::token::{self, IpText, Key, ParamNames};

/// The most `max_ips_per_link` may be: it bounds the networks remembered per link.
pub const MAX_IPS_PER_LINK: u8 = 16;

/// Whether links from the broadcaster's site must be bound to the viewer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryIp {
    Optional,
    Required,
}

/// An HTTP origin: where one stream's files are, in order of preference, and what to send with
/// each request.
#[derive(Clone, PartialEq, Eq)]
pub struct OriginSpec {
    /// Base URLs, each ending in `/`.
    pub bases: Vec<String>,
    /// Sent on every origin request (an origin may refuse everyone but the gate). Secret.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl fmt::Debug for OriginSpec {
    /// Header names only: their values may be an origin's password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OriginSpec").field("bases", &self.bases).field("headers", &names).finish()
    }
}

/// Everything hlsgate needs to check and issue tokens for one stream.
#[derive(Debug, Clone)]
pub struct StreamPolicy {
    pub name: String,
    pub keys: KeyRing,
    pub segment_ttl: SegmentTtl,
    pub session_ttl: u64,
    pub skew: u64,
    pub entry_ip: EntryIp,
    pub ip_prefix_v4: u8,
    pub ip_prefix_v6: u8,
    /// Client networks one IP-less entry link may be opened from (`None`: not counted).
    pub max_ips_per_link: Option<u8>,
    pub token_params: ParamNames,
    /// Serve the stream's VOD playlists as an endless live window (the demo).
    pub simulate_live: bool,
    pub live_window: usize,
    /// An HTTP origin instead of the folder `streams_dir/<stream>/`.
    pub origin: Option<OriginSpec>,
    /// How long an HTTP origin's live playlist is served from memory (`None`: half its target
    /// duration).
    pub playlist_cache: Option<Duration>,
}

/// A stream's keys: the first signs, every one verifies, so keys rotate without dropping a
/// viewer. Never empty, by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    signing: Key,
    all: Vec<Key>,
}

impl KeyRing {
    /// None for an empty list: a stream nobody can open is a config mistake, not a policy.
    pub fn new(all: Vec<Key>) -> Option<Self> {
        Some(KeyRing { signing: all.first()?.clone(), all })
    }

    /// The key that signs what hlsgate issues.
    pub fn signing(&self) -> &Key {
        &self.signing
    }

    /// Every key that verifies, signing key first.
    pub fn all(&self) -> &[Key] {
        &self.all
    }
}

impl StreamPolicy {
    /// The address text hlsgate binds the tokens it issues to: the viewer's network under the
    /// stream's prefix settings.
    pub fn issue_binding(&self, client: IpAddr) -> String {
        token::ip_binding(client, self.ip_prefix_v4, self.ip_prefix_v6)
    }

    /// How long a token this stream issues can still open after it was signed: the session TTL
    /// (or a fixed segment TTL, if longer) rounded up by its step, plus the skew every check
    /// allows. A key must keep verifying this long after the last instance stopped signing
    /// with it.
    pub fn longest_issued_validity(&self) -> u64 {
        let ttl = match self.segment_ttl {
            SegmentTtl::Seconds(seconds) => seconds.max(self.session_ttl),
            SegmentTtl::Auto => self.session_ttl,
        };
        ttl.saturating_add(token::default_step(ttl)).saturating_add(self.skew)
    }

    /// Whether the prefix settings narrow this client's address to a network.
    fn masks(&self, client: IpAddr) -> bool {
        match client.to_canonical() {
            IpAddr::V4(_) => self.ip_prefix_v4 < 32,
            IpAddr::V6(_) => self.ip_prefix_v6 < 128,
        }
    }

    /// The address texts a presented token may be bound to: the exact address, the masked
    /// network, and (only when the stream allows it) no address at all.
    pub fn accepted_bindings(&self, client: IpAddr) -> Bindings {
        Bindings {
            exact: IpText::of(client),
            network: self
                .masks(client)
                .then(|| IpText::binding(client, self.ip_prefix_v4, self.ip_prefix_v6)),
            ip_less: self.entry_ip == EntryIp::Optional,
        }
    }
}

/// What a token presented by one client may be bound to, formatted on the stack.
pub struct Bindings {
    exact: IpText,
    network: Option<IpText>,
    ip_less: bool,
}

impl Bindings {
    /// The texts in the order they are tried (`None`: bound to no address), for
    /// [`token::Accept::ips`].
    pub fn texts(&self) -> ([Option<&str>; 3], usize) {
        match (&self.network, self.ip_less) {
            (None, false) => ([Some(self.exact.as_str()), None, None], 1),
            (None, true) => ([Some(self.exact.as_str()), None, None], 2),
            (Some(network), false) => ([Some(self.exact.as_str()), Some(network.as_str()), None], 2),
            (Some(network), true) => ([Some(self.exact.as_str()), Some(network.as_str()), None], 3),
        }
    }
}

/// One generation of the settings that a reload may change.
#[derive(Debug, Default)]
pub struct Generation {
    pub streams: HashMap<String, Arc<StreamPolicy>>,
    /// Proxies whose forwarding header is believed, and which header that is.
    pub proxies: Proxies,
    /// Authorities whose absolute URLs in a playlist are this server's, and so signed.
    pub public_hosts: Vec<String>,
    /// The viewer port's certificate: re-read on reload, used by every new connection.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// The swappable store. Cheap to read on every request; a reload replaces the whole map.
#[derive(Debug, Default)]
pub struct KeyStore {
    current: RwLock<Arc<Generation>>,
}

impl KeyStore {
    pub fn new(generation: Generation) -> Self {
        KeyStore { current: RwLock::new(Arc::new(generation)) }
    }

    /// The generation in force now. Hold the `Arc`, not the lock.
    pub fn current(&self) -> Arc<Generation> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A panic while swapping cannot leave a half-written Arc behind, so the value is good.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts a new, already validated generation in force.
    pub fn replace(&self, generation: Generation) {
        let new = Arc::new(generation);
        match self.current.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entry_ip: EntryIp, v4: u8) -> StreamPolicy {
        StreamPolicy {
            name: "s".into(),
            keys: KeyRing::new(vec![Key::new("a"), Key::new("b")]).unwrap(),
            segment_ttl: SegmentTtl::Auto,
            session_ttl: 100,
            skew: 5,
            entry_ip,
            ip_prefix_v4: v4,
            ip_prefix_v6: 128,
            max_ips_per_link: None,
            token_params: ParamNames::default(),
            simulate_live: false,
            live_window: 6,
            origin: None,
            playlist_cache: None,
        }
    }

    #[test]
    fn bindings_follow_policy() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let texts = |p: StreamPolicy| {
            let bindings = p.accepted_bindings(ip);
            let (texts, n) = bindings.texts();
            texts[..n].iter().map(|t| t.map(str::to_owned)).collect::<Vec<_>>()
        };
        assert_eq!(texts(policy(EntryIp::Required, 32)), vec![Some("203.0.113.9".to_string())]);
        assert_eq!(
            texts(policy(EntryIp::Optional, 24)),
            vec![Some("203.0.113.9".to_string()), Some("203.0.113.0/24".to_string()), None]
        );
        assert_eq!(policy(EntryIp::Optional, 24).issue_binding(ip), "203.0.113.0/24");
    }

    #[test]
    fn replace_swaps_the_whole_generation() {
        let store = KeyStore::default();
        let before = store.current();
        let mut g = Generation::default();
        g.streams.insert("s".into(), Arc::new(policy(EntryIp::Optional, 32)));
        store.replace(g);
        assert!(before.streams.is_empty(), "a reader keeps the generation it started with");
        assert!(store.current().streams.contains_key("s"));
        assert_eq!(store.current().streams["s"].keys.signing(), &Key::new("a"));
    }
}
