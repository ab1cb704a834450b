//! A fleet of gatekeepers sharing one key store: every stream's keys and policy in Redis
//! (`[keys] source`), the schema below, and how a stream's hash becomes a [`StreamPolicy`].
//! `source` keeps an instance's map in step with Redis; `admin` is `hlsgate keys …`.
//!
//! The schema (`P` is the prefix, `hlsgate:` by default):
//! - `P stream:NAME` — a hash: `key:ID` = secret (ID = [`fingerprint`]), `signing` = the ID that
//!   signs, `retire:ID` = Unix time after which that key no longer verifies, and any policy field
//!   of `[streams.NAME]` but `keys` (each a TOML value; a bare word is a string).
//! - `P version` — incremented by every change; `P changes` — pub/sub, the changed stream's name.
//! - `P instance:ID` — a live instance's heartbeat: `applied` version, `listen`, `grace`.
//! - `P link:STREAM:HEX` — the networks that presented one IP-less entry token (`links`).

pub mod admin;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use md5::{Digest, Md5};

use crate::config::{Config, ConfigError};
use crate::keys::StreamPolicy;

pub use source::Fleet;

/// The Redis key names under one prefix.
#[derive(Debug, Clone)]
pub struct Schema {
    prefix: String,
}

impl Schema {
    pub fn new(prefix: &str) -> Self {
        Schema { prefix: prefix.to_string() }
    }
    pub fn stream(&self, name: &str) -> String {
        format!("{}stream:{name}", self.prefix)
    }
    /// The pattern every stream hash matches, for `SCAN`.
    pub fn streams_pattern(&self) -> String {
        format!("{}stream:*", self.prefix)
    }
    /// The stream name in a stream hash's key.
    pub fn stream_name<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(&self.prefix)?.strip_prefix("stream:")
    }
    pub fn version(&self) -> String {
        format!("{}version", self.prefix)
    }
    pub fn changes(&self) -> String {
        format!("{}changes", self.prefix)
    }
    pub fn instance(&self, id: &str) -> String {
        format!("{}instance:{id}", self.prefix)
    }
    pub fn instances_pattern(&self) -> String {
        format!("{}instance:*", self.prefix)
    }
    pub fn link(&self, stream: &str, digest_hex: &str) -> String {
        format!("{}link:{stream}:{digest_hex}", self.prefix)
    }
}

/// A key's name that does not show it: the first 8 hex characters of its MD5.
pub fn fingerprint(secret: &str) -> String {
    hex(&Md5::digest(secret.as_bytes())).chars().take(8).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One stream's hash, read into its parts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamHash {
    /// ID → secret.
    pub keys: BTreeMap<String, String>,
    pub signing: Option<String>,
    /// ID → Unix time it stops verifying.
    pub retire: BTreeMap<String, u64>,
    /// Policy fields, as written.
    pub fields: Vec<(String, String)>,
}

impl StreamHash {
    pub fn from_fields(fields: impl IntoIterator<Item = (String, String)>) -> Result<Self, FieldError> {
        let mut hash = StreamHash::default();
        for (field, value) in fields {
            if let Some(id) = field.strip_prefix("key:") {
                hash.keys.insert(id.to_string(), value);
            } else if let Some(id) = field.strip_prefix("retire:") {
                let at = value.trim().parse().map_err(|_| FieldError::new(&field, "not a Unix time"))?;
                hash.retire.insert(id.to_string(), at);
            } else if field == "signing" {
                hash.signing = Some(value);
            } else {
                hash.fields.push((field, value));
            }
        }
        Ok(hash)
    }

    /// The keys that verify at `now`, signing key first; an error names the field at fault.
    pub fn keys_in_force(&self, now: u64) -> Result<Vec<String>, FieldError> {
        let signing = self.signing.as_deref().ok_or_else(|| FieldError::new("signing", "missing"))?;
        let retired = |id: &str| self.retire.get(id).is_some_and(|at| *at <= now);
        let first = self
            .keys
            .get(signing)
            .ok_or_else(|| FieldError::new("signing", "names no key:ID field of this stream"))?;
        if retired(signing) {
            return Err(FieldError::new("signing", "the signing key is retired"));
        }
        let rest =
            self.keys.iter().filter(|(id, _)| *id != signing && !retired(id)).map(|(_, key)| key.clone());
        Ok(std::iter::once(first.clone()).chain(rest).collect())
    }

    /// The next moment a key of this stream retires, after `now`.
    pub fn next_retirement(&self, now: u64) -> Option<u64> {
        self.retire.values().copied().filter(|at| *at > now).min()
    }
}

/// A stream hash field that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    fn new(field: &str, problem: &str) -> Self {
        FieldError { field: field.to_string(), problem: problem.to_string() }
    }
}

/// Everything the key source holds: stream name → its hash.
pub type Snapshot = BTreeMap<String, StreamHash>;

/// The stream map a snapshot gives under this file's `[defaults]`. A stream whose hash does not
/// validate keeps its `previous` policy (if it had one) and is reported; a stream with no key
/// does not exist.
pub fn build_streams(
    config: &Config,
    snapshot: &Snapshot,
    previous: &HashMap<String, Arc<StreamPolicy>>,
    now: u64,
) -> (HashMap<String, Arc<StreamPolicy>>, Vec<ConfigError>) {
    let mut streams = HashMap::new();
    let mut errors = Vec::new();
    for (name, hash) in snapshot {
        if hash.keys.is_empty() {
            continue;
        }
        let built = hash
            .keys_in_force(now)
            .map_err(|e| ConfigError { field: format!("streams.{name}.{}", e.field), problem: e.problem })
            .and_then(|keys| config.stream_from_fields(name, keys, &hash.fields));
        match built {
            Ok(policy) => {
                streams.insert(name.clone(), Arc::new(policy));
            }
            Err(error) => {
                if let Some(old) = previous.get(name) {
                    streams.insert(name.clone(), Arc::clone(old));
                }
                errors.push(error);
            }
        }
    }
    (streams, errors)
}

/// What can go wrong talking to the key source.
#[derive(Debug)]
pub enum FleetError {
    Redis(redis::RedisError),
    TimedOut,
    /// A command's own refusal (unknown stream, key, …), for the operator.
    Refused(String),
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FleetError::Redis(e) => write!(f, "redis: {e}"),
            FleetError::TimedOut => f.write_str("redis did not answer in time"),
            FleetError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FleetError {}

impl From<redis::RedisError> for FleetError {
    fn from(e: redis::RedisError) -> Self {
        FleetError::Redis(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(fields: &[(&str, &str)]) -> StreamHash {
        StreamHash::from_fields(fields.iter().map(|(f, v)| (f.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn signing_key_first_and_retired_keys_gone() {
        let h = hash(&[
            ("key:aa", "old"),
            ("key:bb", "new"),
            ("key:cc", "gone"),
            ("signing", "bb"),
            ("retire:cc", "100"),
            ("retire:aa", "300"),
            ("session_ttl", "60"),
        ]);
        assert_eq!(h.keys_in_force(200).unwrap(), vec!["new", "old"]);
        assert_eq!(h.keys_in_force(300).unwrap(), vec!["new"]);
        assert_eq!(h.next_retirement(200), Some(300));
        assert_eq!(h.fields, vec![("session_ttl".to_string(), "60".to_string())]);
    }

    #[test]
    fn a_signing_key_that_is_missing_or_retired_is_named() {
        assert_eq!(hash(&[("key:aa", "k")]).keys_in_force(0).unwrap_err().field, "signing");
        assert_eq!(
            hash(&[("key:aa", "k"), ("signing", "zz")]).keys_in_force(0).unwrap_err().field,
            "signing"
        );
        let retired = hash(&[("key:aa", "k"), ("signing", "aa"), ("retire:aa", "5")]);
        assert!(retired.keys_in_force(4).is_ok());
        assert_eq!(retired.keys_in_force(5).unwrap_err().field, "signing");
        let bad = StreamHash::from_fields([("retire:aa".to_string(), "soon".to_string())]);
        assert_eq!(bad.unwrap_err().field, "retire:aa");
    }

    #[test]
    fn a_bad_stream_keeps_its_previous_policy_and_others_update() {
        let config =
            crate::config::parse("[keys]\nsource = \"redis://127.0.0.1:1/0\"\n", std::path::Path::new("/"))
                .unwrap();
        let mut snapshot = Snapshot::new();
        snapshot.insert("a".into(), hash(&[("key:x", "k1"), ("signing", "x"), ("entry_ip", "required")]));
        snapshot.insert("b".into(), hash(&[("key:y", "k2"), ("signing", "y"), ("session_ttl", "60")]));
        snapshot.insert("empty".into(), hash(&[("session_ttl", "60")]));
        let (first, errors) = build_streams(&config, &snapshot, &HashMap::new(), 0);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(first.len(), 2, "a stream with no key does not exist");
        assert_eq!(first["b"].session_ttl, 60);
        assert_eq!(first["a"].entry_ip, crate::keys::EntryIp::Required);

        snapshot.insert("a".into(), hash(&[("key:x", "k1"), ("signing", "x"), ("session_ttl", "soon-ish")]));
        snapshot.insert("b".into(), hash(&[("key:y", "k2"), ("signing", "y"), ("session_ttl", "90")]));
        let (second, errors) = build_streams(&config, &snapshot, &first, 0);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "streams.a.session_ttl");
        assert!(!errors[0].problem.contains("soon-ish"), "{}", errors[0].problem);
        assert!(Arc::ptr_eq(&second["a"], &first["a"]), "the bad stream keeps its policy");
        assert_eq!(second["b"].session_ttl, 90);
    }

    #[test]
    fn fingerprints_name_a_key_without_showing_it() {
        let id = fingerprint("a-long-secret");
        assert_eq!(id.len(), 8);
        assert!(!"a-long-secret".contains(&id));
        assert_eq!(id, fingerprint("a-long-secret"));
    }
}
