//! The gate: where every viewer request is checked. The path has already passed
//! `request_path` (400); here comes the token for this stream, this path and this address
//! (403 / 410). Nothing reaches the origin before it, and an unknown stream is refused exactly
//! as a known one without a valid token, so stream names cannot be listed by probing.

use std::net::IpAddr;
use std::sync::Arc;

use super::error::Refusal;
use crate::keys::StreamPolicy;
use crate::request_path::StreamPath;
use crate::token::{self, Accept, Denial, ParamNames};

/// A request that passed: which stream's policy applies and which file it may fetch.
pub struct Admitted {
    pub policy: Arc<StreamPolicy>,
    pub path: StreamPath,
}

/// Checks one request (its parsed path and raw query) against the policy of the stream it
/// names in the generation in force (`None`: no such stream).
pub fn admit(
    policy: Option<&Arc<StreamPolicy>>,
    path: StreamPath,
    query: &str,
    client: IpAddr,
    now: u64,
) -> Result<Admitted, Refusal> {
    let Some(policy) = policy else {
        return Err(Refusal::Token(unknown_stream(query)));
    };
    check_token(policy, &path, query, client, now)?;
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
fn check_token(
    policy: &StreamPolicy,
    path: &StreamPath,
    query: &str,
    client: IpAddr,
    now: u64,
) -> Result<(), Refusal> {
    let presented = token::parse_query(query, &policy.token_params).map_err(Refusal::Token)?;
    let bindings = policy.accepted_bindings(client);
    let (ips, n) = bindings.texts();
    let accept = Accept {
        paths: &token::covering_paths(path.as_str()),
        ips: ips.get(..n).unwrap_or_default(),
        keys: policy.keys.all(),
        skew: policy.skew,
    };
    token::check(&presented, &accept, now).map(|_| ()).map_err(Refusal::Token)
}
