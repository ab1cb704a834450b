//! Leaked-link detection: which client networks opened each IP-less entry link, so that a link
//! posted on a forum opens for the first `max_ips_per_link` networks and is refused to the next.
//!
//! [`Links`] is what the gate asks. With a key source the count is the fleet's, in Redis
//! ([`crate::fleet::Fleet::admit_link`]); without one, or while Redis is away, it lives in a
//! bounded [`LocalLedger`] in this process.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fleet::Fleet;
use crate::keys::MAX_IPS_PER_LINK;

/// Links the in-process ledger remembers at once; past it, the oldest is forgotten.
pub const CAPACITY: usize = 65_536;

/// Whether a network may open an entry link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Among the first `max_ips_per_link` networks to open it, or one of them again.
    Admitted,
    /// One network too many: the link has been shared.
    Shared,
}

/// A client network as a link remembers it: the address under the stream's prefix, and that
/// prefix. 18 bytes, no allocation; shown as the text issued tokens are bound to
/// (`203.0.113.0/24`, `2001:db8::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// The client's network under the stream's `ip_prefix_v4`/`ip_prefix_v6`, as
    /// [`crate::keys::StreamPolicy::issue_binding`] reads it (an IPv4-mapped address is IPv4).
    pub fn of(client: IpAddr, prefix_v4: u8, prefix_v6: u8) -> Network {
        match client.to_canonical() {
            IpAddr::V4(v4) => match ipnet::Ipv4Net::new(v4, prefix_v4) {
                Ok(net) => Network { addr: IpAddr::V4(net.network()), prefix: prefix_v4 },
                Err(_) => Network { addr: IpAddr::V4(v4), prefix: 32 },
            },
            IpAddr::V6(v6) => match ipnet::Ipv6Net::new(v6, prefix_v6) {
                Ok(net) => Network { addr: IpAddr::V6(net.network()), prefix: prefix_v6 },
                Err(_) => Network { addr: IpAddr::V6(v6), prefix: 128 },
            },
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = if self.addr.is_ipv4() { 32 } else { 128 };
        match self.prefix < whole {
            true => write!(f, "{}/{}", self.addr, self.prefix),
            false => write!(f, "{}", self.addr),
        }
    }
}

/// A link as logs name it: the first 4 bytes of its token's digest, as 8 hex characters. Enough
/// to tell links apart and to find one again; nowhere near enough to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId([u8; 4]);

impl LinkId {
    pub fn of(digest: &[u8; 16]) -> LinkId {
        let [a, b, c, d, ..] = *digest;
        LinkId([a, b, c, d])
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Where entry links are counted. One machine counts in `local`; a fleet (`[keys] source`)
/// counts in Redis, asked first, so N is N whichever instance each viewer reaches.
pub struct Links {
    local: Mutex<LocalLedger>,
    shared: Option<Arc<Fleet>>,
}

impl Default for Links {
    fn default() -> Self {
        Links { local: Mutex::new(LocalLedger::new(CAPACITY)), shared: None }
    }
}

impl Links {
    /// Whether `network` may open the entry link of `stream` whose token has this `digest` and
    /// stops opening anything at `until` (its expiry plus the stream's skew). The first `limit`
    /// networks are admitted and always admitted again; the next is [`Admission::Shared`].
    pub async fn admit(
        &self,
        stream: &str,
        digest: [u8; 16],
        until: u64,
        network: Network,
        limit: u8,
        now: u64,
    ) -> Admission {
        if let Some(fleet) = &self.shared {
            // A network the fleet admitted here before needs no round trip: a site that links
            // straight to a media playlist sends its entry token on every reload.
            if self.local().holds(stream, digest, until, network, now) {
                return Admission::Admitted;
            }
            // Redis away: each instance counts on its own until it is back (a leak is then
            // caught per instance, never every viewer refused).
            if let Some(admission) =
                fleet.admit_link(stream, &digest, until, &network.to_string(), limit).await
            {
                if admission == Admission::Admitted {
                    self.local().admit(stream, digest, until, network, limit, now);
                }
                return admission;
            }
        }
        self.local().admit(stream, digest, until, network, limit, now)
    }

    /// Counts in the fleet's key source first.
    pub fn shared_by(fleet: Arc<Fleet>) -> Self {
        Links { shared: Some(fleet), ..Links::default() }
    }

    /// Live links the in-process ledger forgot to stay within its bound.
    pub fn evictions(&self) -> u64 {
        self.local().evictions()
    }

    /// Links the in-process ledger holds now: what the gate's tests count.
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.local().len()
    }

    fn local(&self) -> MutexGuard<'_, LocalLedger> {
        // A panic inside `admit` can at worst leave one link's count short: keep counting.
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Which link: the stream, the token's digest and when it stops opening anything. The digest
/// already covers the expiry and the path (and so the stream), so the stream is kept as a hash
/// of its name: a key of fixed size, with no allocation per link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkKey {
    stream: u64,
    digest: [u8; 16],
    until: u64,
}

impl LinkKey {
    /// 64 bits that tell links apart: a digest is 128 bits nobody without the stream's key can
    /// choose, so two live links share a fingerprint about never (and when they do, see
    /// [`LocalLedger::index`]).
    fn fingerprint(&self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.digest;
        u64::from_le_bytes([a, b, c, d, e, f, g, h]) ^ self.stream ^ self.until.rotate_left(32)
    }
}

/// One remembered link and the networks that opened it (at most [`MAX_IPS_PER_LINK`]).
struct Slot {
    key: LinkKey,
    networks: Vec<Network>,
}

/// The networks of at most `capacity` links, the oldest forgotten first (FIFO): a ring of slots
/// and an index into it. A full ledger reuses the oldest slot, allocation included, so memory
/// stops growing at the capacity whatever the traffic: about 230 bytes a link of 3 networks
/// (15 MiB for 65 536), at most about 430 with 16.
pub struct LocalLedger {
    capacity: usize,
    /// Each link's slot, by its key's fingerprint: 16 bytes an entry rather than 40, in a map
    /// that the churn of evictions leaves a quarter full (its tombstones make it grow once). The slot's key is compared on every
    /// lookup; should two links ever share a fingerprint, the newer takes the entry and the
    /// older counts anew, as if evicted.
    index: HashMap<u64, u32>,
    slots: Vec<Slot>,
    /// The slot the next new link takes once `slots` is full: the oldest.
    oldest: usize,
    evictions: u64,
}

impl LocalLedger {
    /// A ledger of at most `capacity` links (at least one, at most `u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        LocalLedger { capacity, index: HashMap::new(), slots: Vec::new(), oldest: 0, evictions: 0 }
    }

    /// As [`Links::admit`]. A link whose `until` has passed is forgotten: it counts anew.
    pub fn admit(
        &mut self,
        stream: &str,
        digest: [u8; 16],
        until: u64,
        network: Network,
        limit: u8,
        now: u64,
    ) -> Admission {
        let key = LinkKey { stream: stream_id(stream), digest, until };
        let limit = usize::from(limit.clamp(1, MAX_IPS_PER_LINK));
        let known = self
            .index
            .get(&key.fingerprint())
            .and_then(|&at| self.slots.get_mut(at as usize))
            .filter(|slot| slot.key == key);
        match known {
            Some(slot) => {
                if now >= slot.key.until {
                    slot.networks.clear();
                }
                admit_to(&mut slot.networks, network, limit)
            }
            None => {
                self.remember(key, network, limit, now);
                Admission::Admitted
            }
        }
    }

    /// Whether `network` already opened this link, before `until`.
    pub fn holds(&self, stream: &str, digest: [u8; 16], until: u64, network: Network, now: u64) -> bool {
        let key = LinkKey { stream: stream_id(stream), digest, until };
        now < until
            && self
                .index
                .get(&key.fingerprint())
                .and_then(|&at| self.slots.get(at as usize))
                .is_some_and(|slot| slot.key == key && slot.networks.contains(&network))
    }

    /// Links remembered now (expired ones included, until their slot is reused).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Links forgotten before they expired, to stay within the capacity.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// A new link, opened by `network`: in a new slot while there is room, else in the oldest.
    fn remember(&mut self, key: LinkKey, network: Network, limit: usize, now: u64) {
        if self.slots.len() < self.capacity {
            let mut networks = Vec::with_capacity(limit);
            networks.push(network);
            self.index.insert(key.fingerprint(), self.slots.len() as u32);
            self.slots.push(Slot { key, networks });
            return;
        }
        let at = self.oldest;
        self.oldest = if at + 1 == self.capacity { 0 } else { at + 1 };
        let Some(slot) = self.slots.get_mut(at) else { return };
        let old = slot.key.fingerprint();
        // Unless a newer link with the same fingerprint took the entry over.
        if self.index.get(&old) == Some(&(at as u32)) {
            self.index.remove(&old);
        }
        if now < slot.key.until {
            self.evictions += 1;
        }
        slot.key = key;
        slot.networks.clear();
        slot.networks.push(network);
        self.index.insert(key.fingerprint(), at as u32);
    }
}

fn admit_to(networks: &mut Vec<Network>, network: Network, limit: usize) -> Admission {
    if networks.contains(&network) {
        Admission::Admitted
    } else if networks.len() < limit {
        networks.push(network);
        Admission::Admitted
    } else {
        Admission::Shared
    }
}

/// A stream name as a fixed-size key: SipHash with fixed keys, the same for every link.
fn stream_id(stream: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    stream.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const UNTIL: u64 = NOW + 3600;

    fn net(last: u8) -> Network {
        Network::of(IpAddr::from([198, 51, 100, last]), 32, 128)
    }

    fn digest(n: u64) -> [u8; 16] {
        let mut digest = [0xA5; 16];
        digest[..8].copy_from_slice(&n.to_le_bytes());
        digest
    }

    #[test]
    fn the_first_n_networks_are_admitted_and_the_next_is_refused() {
        for limit in [1u8, 3, 16] {
            let mut ledger = LocalLedger::new(8);
            for i in 0..limit {
                let admission = ledger.admit("s", digest(1), UNTIL, net(i), limit, NOW);
                assert_eq!(admission, Admission::Admitted, "network {i} of {limit}");
            }
            assert_eq!(ledger.admit("s", digest(1), UNTIL, net(limit), limit, NOW), Admission::Shared);
            // Another link, another stream, another expiry: counted apart.
            assert_eq!(ledger.admit("s", digest(2), UNTIL, net(limit), limit, NOW), Admission::Admitted);
            assert_eq!(ledger.admit("t", digest(1), UNTIL, net(limit), limit, NOW), Admission::Admitted);
            assert_eq!(ledger.admit("s", digest(1), UNTIL + 1, net(limit), limit, NOW), Admission::Admitted);
        }
    }

    #[test]
    fn an_admitted_network_is_always_admitted_again() {
        let mut ledger = LocalLedger::new(8);
        for i in 0..3 {
            ledger.admit("s", digest(1), UNTIL, net(i), 3, NOW);
        }
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(9), 3, NOW), Admission::Shared);
        for i in 0..3 {
            for _ in 0..5 {
                assert_eq!(ledger.admit("s", digest(1), UNTIL, net(i), 3, NOW + 10), Admission::Admitted);
            }
        }
        // Even once a reload lowered the limit below what the link already holds.
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(2), 1, NOW), Admission::Admitted);
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(9), 1, NOW), Admission::Shared);
    }

    #[test]
    fn a_network_is_the_address_under_the_stream_prefix() {
        let mut ledger = LocalLedger::new(8);
        let v4 = |last: u8| Network::of(IpAddr::from([203, 0, 113, last]), 24, 64);
        assert_eq!(ledger.admit("s", digest(1), UNTIL, v4(1), 1, NOW), Admission::Admitted);
        assert_eq!(ledger.admit("s", digest(1), UNTIL, v4(200), 1, NOW), Admission::Admitted);
        let other = Network::of(IpAddr::from([203, 0, 114, 1]), 24, 64);
        assert_eq!(ledger.admit("s", digest(1), UNTIL, other, 1, NOW), Admission::Shared);
    }

    #[test]
    fn networks_read_as_issued_bindings() {
        for (text, v4, v6) in [
            ("203.0.113.77", 32, 128),
            ("203.0.113.77", 24, 128),
            ("203.0.113.77", 1, 128),
            ("::ffff:203.0.113.77", 16, 64),
            ("2001:db8:1:2:aa:bb:cc:dd", 32, 64),
            ("2001:db8:1:2:aa:bb:cc:dd", 32, 128),
            ("2001:db8:1:2:aa:bb:cc:dd", 32, 1),
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(Network::of(ip, v4, v6).to_string(), crate::token::ip_binding(ip, v4, v6), "{text}");
        }
        assert_eq!(std::mem::size_of::<Network>(), 18);
    }

    #[test]
    fn holds_only_a_network_that_opened_the_live_link() {
        let mut ledger = LocalLedger::new(8);
        assert_eq!(ledger.admit("s", digest(1), 100, net(1), 3, 0), Admission::Admitted);
        assert!(ledger.holds("s", digest(1), 100, net(1), 50));
        assert!(!ledger.holds("s", digest(1), 100, net(2), 50), "another network");
        assert!(!ledger.holds("t", digest(1), 100, net(1), 50), "another stream");
        assert!(!ledger.holds("s", digest(2), 100, net(1), 50), "another link");
        assert!(!ledger.holds("s", digest(1), 100, net(1), 100), "expired");
    }

    #[test]
    fn an_expired_link_is_forgotten() {
        let mut ledger = LocalLedger::new(8);
        for i in 0..3 {
            ledger.admit("s", digest(1), UNTIL, net(i), 3, NOW);
        }
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(3), 3, UNTIL - 1), Admission::Shared);
        // The gate never asks about an expired token; the ledger alone still does not hold it.
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(3), 3, UNTIL), Admission::Admitted);
        assert_eq!(ledger.admit("s", digest(1), UNTIL, net(4), 3, UNTIL + 100), Admission::Admitted);
        assert_eq!((ledger.len(), ledger.evictions()), (1, 0));
    }

    #[test]
    fn the_oldest_link_is_forgotten_first_and_live_ones_are_counted() {
        let mut ledger = LocalLedger::new(3);
        ledger.admit("s", digest(1), NOW + 1, net(1), 1, NOW);
        ledger.admit("s", digest(2), UNTIL, net(1), 1, NOW);
        ledger.admit("s", digest(3), UNTIL, net(1), 1, NOW);
        assert_eq!(ledger.admit("s", digest(2), UNTIL, net(2), 1, NOW), Admission::Shared);
        // Link 1 has expired by now: reusing its slot loses nothing.
        ledger.admit("s", digest(4), UNTIL, net(1), 1, NOW + 5);
        assert_eq!((ledger.len(), ledger.evictions()), (3, 0));
        // Link 2 is the oldest now, and still live.
        ledger.admit("s", digest(5), UNTIL, net(1), 1, NOW + 5);
        assert_eq!((ledger.len(), ledger.evictions()), (3, 1));
        assert_eq!(ledger.admit("s", digest(3), UNTIL, net(2), 1, NOW + 5), Admission::Shared);
        assert_eq!(ledger.admit("s", digest(2), UNTIL, net(2), 1, NOW + 5), Admission::Admitted, "forgotten");
    }

    /// Two links whose fingerprints collide stay two links: the index gives way to the newer,
    /// the older counts anew, and eviction never drops the newer's entry.
    #[test]
    fn links_that_share_a_fingerprint_are_told_apart() {
        let twin = |last: u8| {
            let mut digest = digest(7);
            digest[15] = last;
            digest
        };
        let mut ledger = LocalLedger::new(2);
        assert_eq!(ledger.admit("s", twin(1), UNTIL, net(1), 1, NOW), Admission::Admitted);
        assert_eq!(ledger.admit("s", twin(2), UNTIL, net(2), 1, NOW), Admission::Admitted, "another link");
        assert_eq!(ledger.admit("s", twin(2), UNTIL, net(3), 1, NOW), Admission::Shared);
        assert_eq!(ledger.len(), 1);
        // The next link reuses twin 1's slot, whose entry twin 2 holds: twin 2 stays found.
        assert_eq!(ledger.admit("s", digest(8), UNTIL, net(1), 1, NOW), Admission::Admitted);
        assert_eq!(ledger.admit("s", twin(2), UNTIL, net(3), 1, NOW), Admission::Shared);
        assert_eq!((ledger.len(), ledger.evictions()), (2, 1));
    }

    #[test]
    fn link_ids_are_the_first_8_hex_characters_of_the_digest() {
        let digest = [0x0f, 0xa0, 0x12, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(LinkId::of(&digest).to_string(), "0fa012ff");
    }

    /// The bound holds under a flood of distinct links: a million tokens leave the ledger at
    /// its capacity, every one past it counted, and the process a few MiB larger.
    #[test]
    fn a_million_links_stay_within_the_capacity() {
        let rss_kib = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
            line.split_whitespace().next().unwrap().parse().unwrap()
        };
        let before = rss_kib();
        let mut ledger = LocalLedger::new(CAPACITY);
        let total = 1_000_000u64;
        for n in 0..total {
            let client = Network::of(IpAddr::from((n as u32).to_be_bytes()), 32, 128);
            ledger.admit("s", digest(n), UNTIL, client, 3, NOW);
        }
        let after = rss_kib();
        let grown = after.saturating_sub(before);
        println!(
            "{total} links: len {} evictions {} VmRSS {before} -> {after} KiB (+{grown} KiB, {} B a link)",
            ledger.len(),
            ledger.evictions(),
            grown * 1024 / CAPACITY as u64
        );
        assert_eq!(ledger.len(), CAPACITY);
        assert_eq!(ledger.evictions(), total - CAPACITY as u64);
        assert!(grown < 64 * 1024, "VmRSS grew by {grown} KiB");
    }

    #[tokio::test]
    async fn links_count_in_the_local_ledger() {
        let links = Links::default();
        assert_eq!(links.admit("s", digest(1), UNTIL, net(1), 1, NOW).await, Admission::Admitted);
        assert_eq!(links.admit("s", digest(1), UNTIL, net(2), 1, NOW).await, Admission::Shared);
        assert_eq!(links.evictions(), 0);
    }
}
