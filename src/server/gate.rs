//! The gate: where every viewer request is checked. The path has already passed
//! `request_path` (400); here comes the token for this stream, this path and this address
//! (403 / 410), then, for an IP-less entry link, how many networks have opened it (403). Nothing
//! reaches the origin before it, and an unknown stream is refused exactly as a known one without
//! a valid token, so stream names cannot be listed by probing.

use std::net::IpAddr;
use std::sync::Arc;

use super::error::Refusal;
use crate::keys::StreamPolicy;
use crate::links::{Admission, LinkId, Links, Network};
use crate::request_path::StreamPath;
use crate::token::{self, Accept, Denial, ParamNames};

/// A request that passed: which stream's policy applies and which file it may fetch.
pub struct Admitted {
    pub policy: Arc<StreamPolicy>,
    pub path: StreamPath,
}

/// An IP-less token that passed: what the link ledger counts.
struct Entry {
    digest: [u8; 16],
    /// When it stops opening anything: its expiry plus the stream's skew.
    until: u64,
}

/// Checks one request (its parsed path and raw query) against the policy of the stream it
/// names in the generation in force (`None`: no such stream).
pub async fn admit(
    policy: Option<&Arc<StreamPolicy>>,
    links: &Links,
    path: StreamPath,
    query: &str,
    client: IpAddr,
    now: u64,
) -> Result<Admitted, Refusal> {
    let Some(policy) = policy else {
        return Err(Refusal::Token(unknown_stream(query)));
    };
    let entry = check_token(policy, &path, query, client, now)?;
    if let (Some(entry), Some(limit)) = (entry, policy.max_ips_per_link) {
        check_link(links, policy, &entry, client, limit, now).await?;
    }
    Ok(Admitted { policy: Arc::clone(policy), path })
}

/// What a known stream would answer to a token no key of it signed: the same parse errors
/// (with the default parameter names), else a bad signature, never a 404.
fn unknown_stream(query: &str) -> Denial {
    match token::parse_query(query, &ParamNames::default()) {
        Err(denial) => denial,
        Ok(_) => Denial::BadSignature,
    }
}

/// A token signed by any of the stream's keys, for this path or its directory, bound to this
/// client (exactly, or by network under the stream's prefixes, or not at all where allowed).
/// An IP-less one is handed back for the link ledger.
fn check_token(
    policy: &StreamPolicy,
    path: &StreamPath,
    query: &str,
    client: IpAddr,
    now: u64,
) -> Result<Option<Entry>, Refusal> {
    let presented = token::parse_query(query, &policy.token_params).map_err(Refusal::Token)?;
    let bindings = policy.accepted_bindings(client);
    let (ips, n) = bindings.texts();
    let accept = Accept {
        paths: &token::covering_paths(path.as_str()),
        ips: ips.get(..n).unwrap_or_default(),
        keys: policy.keys.all(),
        skew: policy.skew,
    };
    let valid = token::check(&presented, &accept, now).map_err(Refusal::Token)?;
    Ok(valid
        .ip_less
        .then(|| Entry { digest: presented.digest, until: valid.expires.saturating_add(policy.skew) }))
}

/// An entry link opened from more networks (under the stream's prefixes) than the stream allows
/// is refused to the next one. Tokens hlsgate issues are bound, so they never get here: an
/// admitted viewer plays on.
async fn check_link(
    links: &Links,
    policy: &StreamPolicy,
    entry: &Entry,
    client: IpAddr,
    limit: u8,
    now: u64,
) -> Result<(), Refusal> {
    let network = Network::of(client, policy.ip_prefix_v4, policy.ip_prefix_v6);
    match links.admit(&policy.name, entry.digest, entry.until, network, limit, now).await {
        Admission::Admitted => Ok(()),
        Admission::Shared => Err(Refusal::SharedLink(LinkId::of(&entry.digest))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{sign, Key};

    const NOW: u64 = 1_700_000_000;
    const EXPIRES: u64 = NOW + 600;
    const PATH: &str = "/x/index.m3u8";

    fn policy(table: &str) -> Arc<StreamPolicy> {
        let text = format!("[streams.x]\nkeys = [\"k\"]\n{table}\n");
        let config = crate::config::parse(&text, std::path::Path::new("/")).unwrap();
        Arc::new(config.streams["x"].clone())
    }

    /// The gate's answer to the playlist signed with `key` for `bound_to`, asked from `client`.
    async fn ask(
        policy: &Arc<StreamPolicy>,
        links: &Links,
        key: &str,
        bound_to: Option<&str>,
        client: &str,
    ) -> Result<(), Refusal> {
        let query = format!("md5={}&expires={EXPIRES}", sign(EXPIRES, PATH, bound_to, &Key::new(key)));
        let path = crate::request_path::parse(PATH).unwrap();
        admit(Some(policy), links, path, &query, client.parse().unwrap(), NOW).await.map(|_| ())
    }

    #[tokio::test]
    async fn only_ip_less_tokens_are_counted() {
        let policy = policy("max_ips_per_link = 1\nip_prefix_v4 = 24");
        let links = Links::default();
        assert!(ask(&policy, &links, "k", Some("203.0.113.7"), "203.0.113.7").await.is_ok());
        assert!(ask(&policy, &links, "k", Some("203.0.113.0/24"), "203.0.113.8").await.is_ok());
        assert_eq!(links.remembered(), 0, "a bound token is never counted");
        assert!(ask(&policy, &links, "k", None, "203.0.113.7").await.is_ok());
        assert!(ask(&policy, &links, "k", None, "203.0.113.9").await.is_ok(), "the same /24");
        assert_eq!(links.remembered(), 1);
        let shared = ask(&policy, &links, "k", None, "198.51.100.1").await.unwrap_err();
        let digest = token::digest(EXPIRES, PATH, None, &Key::new("k"));
        assert!(matches!(shared, Refusal::SharedLink(id) if id == LinkId::of(&digest)), "{shared:?}");
        assert_eq!((shared.status().as_u16(), shared.reason()), (403, "shared link"));
        // The refused sharer's own bound token (issued to them by hlsgate) still opens.
        assert!(ask(&policy, &links, "k", Some("198.51.100.1"), "198.51.100.1").await.is_ok());
    }

    #[tokio::test]
    async fn without_the_setting_nothing_is_counted() {
        let policy = policy("");
        let links = Links::default();
        for client in ["203.0.113.7", "198.51.100.1", "2001:db8::1"] {
            assert!(ask(&policy, &links, "k", None, client).await.is_ok(), "{client}");
        }
        assert_eq!(links.remembered(), 0);
    }

    #[tokio::test]
    async fn a_refused_token_never_reaches_the_ledger() {
        let policy = policy("max_ips_per_link = 1");
        let links = Links::default();
        let forged = ask(&policy, &links, "other", None, "203.0.113.7").await;
        assert!(matches!(forged, Err(Refusal::Token(Denial::BadSignature))), "{forged:?}");
        assert_eq!(links.remembered(), 0);
    }
}
