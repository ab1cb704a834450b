//! `hlsgate keys …`: changes to the key source, made so that no viewer is refused on the way.
//! A new key verifies everywhere before anything is signed with it (the command waits for every
//! live instance's heartbeat to report the version holding it), and an old key verifies for a
//! grace period after the last instance stopped signing with it.

use std::io::Write;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands as _;

use super::source::{scan, within};
use super::{fingerprint, FleetError, Schema, StreamHash};
use crate::clock::unix_now;
use crate::config::is_stream_name;

/// How often a waiting command looks at the heartbeats.
const POLL: Duration = Duration::from_millis(200);

/// A connection to the key source, for one command.
pub struct Admin {
    conn: MultiplexedConnection,
    schema: Schema,
}

/// One live instance, as its heartbeat says.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub listen: String,
    pub applied: u64,
    pub grace: u64,
}

impl Admin {
    pub async fn connect(url: &str, prefix: &str) -> Result<Admin, FleetError> {
        let client = redis::Client::open(url)?;
        let conn = within(client.get_multiplexed_async_connection()).await?;
        Ok(Admin { conn, schema: Schema::new(prefix) })
    }

    /// Adds a key, verify-only (signing when the stream has none yet). Returns its ID.
    pub async fn add(
        &mut self,
        stream: &str,
        secret: &str,
        out: &mut impl Write,
    ) -> Result<String, FleetError> {
        check_stream_name(stream)?;
        if secret.is_empty() {
            return Err(FleetError::Refused("a key cannot be empty".into()));
        }
        let hash = self.hash(stream).await?;
        let id = fingerprint(secret);
        if hash.keys.get(&id).is_some_and(|held| held != secret) {
            return Err(FleetError::Refused(format!(
                "another key of {stream} has the fingerprint {id}: pick another"
            )));
        }
        let key = self.schema.stream(stream);
        within(self.conn.hset::<_, _, _, ()>(&key, format!("key:{id}"), secret)).await?;
        let signing = hash.signing.is_none();
        if signing {
            within(self.conn.hset::<_, _, _, ()>(&key, "signing", &id)).await?;
        }
        let version = self.announce(stream).await?;
        let role = if signing { "signing (the stream's first key)" } else { "verify-only" };
        say(out, &format!("{stream}: added key {id}, {role}; version {version}"));
        Ok(id)
    }

    /// Makes a key the signing key once every live instance holds it.
    pub async fn promote(
        &mut self,
        stream: &str,
        key: &str,
        timeout: Duration,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        let (hash, id) = self.existing_key(stream, key).await?;
        if hash.retire.contains_key(&id) {
            return Err(FleetError::Refused(format!(
                "{stream}: key {id} is retiring; add a new key instead"
            )));
        }
        let version: u64 = within(self.conn.get::<_, Option<u64>>(self.schema.version())).await?.unwrap_or(0);
        self.wait_for(version, timeout, out).await?;
        within(self.conn.hset::<_, _, _, ()>(self.schema.stream(stream), "signing", &id)).await?;
        let version = self.announce(stream).await?;
        say(out, &format!("{stream}: key {id} signs from version {version}"));
        Ok(())
    }

    /// Schedules a key to stop verifying after `grace` seconds (default: the longest session
    /// any live instance issues, plus its skew).
    pub async fn retire(
        &mut self,
        stream: &str,
        key: &str,
        grace: Option<u64>,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        let (hash, id) = self.existing_key(stream, key).await?;
        if hash.signing.as_deref() == Some(id.as_str()) {
            return Err(FleetError::Refused(format!(
                "{stream}: key {id} is the signing key; promote another first (or use rotate)"
            )));
        }
        let grace = self.grace_or_default(grace).await?;
        let at = unix_now() + grace;
        within(self.conn.hset::<_, _, _, ()>(self.schema.stream(stream), format!("retire:{id}"), at)).await?;
        self.forget_retired(stream, &hash).await?;
        let version = self.announce(stream).await?;
        say(out, &format!("{stream}: key {id} stops verifying at {at} (in {grace} s); version {version}"));
        Ok(())
    }

    /// add → wait until every instance holds it → promote → wait until every instance signs
    /// with it → retire every other key after the grace.
    pub async fn rotate(
        &mut self,
        stream: &str,
        secret: &str,
        grace: Option<u64>,
        timeout: Duration,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        let started = Instant::now();
        let stamp = |out: &mut dyn Write, what: &str| {
            let _ = writeln!(out, "[{:6.2} s] {what}", started.elapsed().as_secs_f64());
        };
        let grace = self.grace_or_default(grace).await?;
        let id = self.add(stream, secret, out).await?;
        stamp(out, "added; waiting for every instance to verify with it");
        self.promote(stream, &id, timeout, out).await?;
        stamp(out, "promoted; waiting for every instance to sign with it");
        let version: u64 = within(self.conn.get::<_, Option<u64>>(self.schema.version())).await?.unwrap_or(0);
        self.wait_for(version, timeout, out).await?;
        stamp(out, "every instance signs with the new key");
        let hash = self.existing(stream).await?;
        for old in hash.keys.keys().filter(|old| **old != id && !hash.retire.contains_key(*old)) {
            self.retire(stream, old, Some(grace), out).await?;
        }
        stamp(out, &format!("old keys retire in {grace} s; rotation done"));
        Ok(())
    }

    /// Sets one policy field of a stream (a `[streams.NAME]` field but `keys`), checked as an
    /// instance will read it (under empty `[defaults]`) before it is written.
    pub async fn set(
        &mut self,
        stream: &str,
        field: &str,
        value: &str,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        check_stream_name(stream)?;
        check_policy_field(field)?;
        let mut hash = self.hash(stream).await?;
        hash.fields.retain(|(name, _)| name != field);
        hash.fields.push((field.to_string(), value.to_string()));
        check_fields(stream, &hash.fields)?;
        within(self.conn.hset::<_, _, _, ()>(self.schema.stream(stream), field, value)).await?;
        let version = self.announce(stream).await?;
        say(out, &format!("{stream}: {field} set; version {version}"));
        Ok(())
    }

    /// Removes a policy field: the stream takes `[defaults]`'s value again.
    pub async fn unset(&mut self, stream: &str, field: &str, out: &mut impl Write) -> Result<(), FleetError> {
        check_stream_name(stream)?;
        check_policy_field(field)?;
        within(self.conn.hdel::<_, _, ()>(self.schema.stream(stream), field)).await?;
        let version = self.announce(stream).await?;
        say(out, &format!("{stream}: {field} unset; version {version}"));
        Ok(())
    }

    /// Every stream: its key count and signing key.
    pub async fn list(&mut self, out: &mut impl Write) -> Result<(), FleetError> {
        for key in within(scan(&mut self.conn, &self.schema.streams_pattern())).await? {
            let Some(stream) = self.schema.stream_name(&key) else { continue };
            let hash = self.hash(stream).await?;
            say(
                out,
                &format!(
                    "{stream}\tkeys {}\tsigning {}",
                    hash.keys.len(),
                    hash.signing.as_deref().unwrap_or("(none)")
                ),
            );
        }
        for instance in self.instances().await? {
            say(
                out,
                &format!(
                    "instance {}\tlisten {}\tversion {}",
                    instance.name, instance.listen, instance.applied
                ),
            );
        }
        Ok(())
    }

    /// One stream's policy fields and keys (ID, role, retirement), never a secret.
    pub async fn show(&mut self, stream: &str, out: &mut impl Write) -> Result<(), FleetError> {
        let hash = self.existing(stream).await?;
        say(out, &format!("stream {stream}"));
        for (field, value) in &hash.fields {
            let shown = if field.starts_with("origin_headers") { "(not shown)" } else { value.as_str() };
            say(out, &format!("  {field} = {shown}"));
        }
        let now = unix_now();
        for id in hash.keys.keys() {
            let role = match (hash.signing.as_deref() == Some(id.as_str()), hash.retire.get(id)) {
                (true, _) => "signing".to_string(),
                (false, Some(at)) if *at <= now => format!("retired at {at}"),
                (false, Some(at)) => format!("verify-only, retires at {at} (in {} s)", at - now),
                (false, None) => "verify-only".to_string(),
            };
            say(out, &format!("  key {id}  {role}"));
        }
        Ok(())
    }

    /// The live instances, by their heartbeats.
    pub async fn instances(&mut self) -> Result<Vec<Instance>, FleetError> {
        let mut found = Vec::new();
        for key in within(scan(&mut self.conn, &self.schema.instances_pattern())).await? {
            let fields: std::collections::HashMap<String, String> = within(self.conn.hgetall(&key)).await?;
            let number = |f: &str| fields.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
            if fields.is_empty() {
                continue; // expired between the scan and the read
            }
            found.push(Instance {
                name: key.rsplit_once("instance:").map_or(key.as_str(), |(_, n)| n).to_string(),
                listen: fields.get("listen").cloned().unwrap_or_default(),
                applied: number("applied"),
                grace: number("grace"),
            });
        }
        Ok(found)
    }

    /// Waits until every live instance has loaded `version`, saying whom it waits for.
    async fn wait_for(
        &mut self,
        version: u64,
        timeout: Duration,
        out: &mut impl Write,
    ) -> Result<(), FleetError> {
        let deadline = Instant::now() + timeout;
        let mut last_said = None::<Instant>;
        loop {
            let instances = self.instances().await?;
            let behind: Vec<&Instance> = instances.iter().filter(|i| i.applied < version).collect();
            if behind.is_empty() {
                if instances.is_empty() {
                    say(out, "no live instance reports a heartbeat: nothing to wait for");
                } else {
                    say(out, &format!("all {} live instance(s) hold version {version}", instances.len()));
                }
                return Ok(());
            }
            let names: Vec<String> =
                behind.iter().map(|i| format!("{} ({}, version {})", i.name, i.listen, i.applied)).collect();
            if Instant::now() >= deadline {
                return Err(FleetError::Refused(format!(
                    "gave up after {} s: not at version {version}: {}",
                    timeout.as_secs(),
                    names.join(", ")
                )));
            }
            if last_said.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                say(out, &format!("waiting for version {version} on: {}", names.join(", ")));
                last_said = Some(Instant::now());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `grace`, or the longest any live instance reports.
    async fn grace_or_default(&mut self, grace: Option<u64>) -> Result<u64, FleetError> {
        if let Some(grace) = grace {
            return Ok(grace);
        }
        self.instances().await?.iter().map(|i| i.grace).max().filter(|g| *g > 0).ok_or_else(|| {
            FleetError::Refused("no live instance reports its session length: give --grace SECONDS".into())
        })
    }

    /// Drops the fields of keys retired a day ago or more: they verify nowhere.
    async fn forget_retired(&mut self, stream: &str, hash: &StreamHash) -> Result<(), FleetError> {
        let long_ago = unix_now().saturating_sub(86_400);
        for (id, _) in hash.retire.iter().filter(|(_, at)| **at <= long_ago) {
            within(self.conn.hdel::<_, _, ()>(
                self.schema.stream(stream),
                &[format!("key:{id}"), format!("retire:{id}")],
            ))
            .await?;
        }
        Ok(())
    }

    /// Counts the change and tells every instance.
    async fn announce(&mut self, stream: &str) -> Result<u64, FleetError> {
        let version: u64 = within(self.conn.incr(self.schema.version(), 1)).await?;
        within(self.conn.publish::<_, _, ()>(self.schema.changes(), stream)).await?;
        Ok(version)
    }

    async fn hash(&mut self, stream: &str) -> Result<StreamHash, FleetError> {
        let fields: Vec<(String, String)> = within(self.conn.hgetall(self.schema.stream(stream))).await?;
        StreamHash::from_fields(fields)
            .map_err(|e| FleetError::Refused(format!("streams.{stream}.{}: {}", e.field, e.problem)))
    }

    /// An existing stream and one of its keys, named by ID or given as the secret.
    async fn existing_key(&mut self, stream: &str, key: &str) -> Result<(StreamHash, String), FleetError> {
        let hash = self.existing(stream).await?;
        let id =
            key_id(&hash, key).ok_or_else(|| FleetError::Refused(format!("{stream} has no key {key}")))?;
        Ok((hash, id))
    }

    async fn existing(&mut self, stream: &str) -> Result<StreamHash, FleetError> {
        check_stream_name(stream)?;
        let hash = self.hash(stream).await?;
        if hash.keys.is_empty() {
            return Err(FleetError::Refused(format!("no stream {stream} in the key source")));
        }
        Ok(hash)
    }
}

/// A key named by its ID or given as the secret itself.
fn key_id(hash: &StreamHash, key: &str) -> Option<String> {
    if hash.keys.contains_key(key) {
        return Some(key.to_string());
    }
    let id = fingerprint(key);
    hash.keys.contains_key(&id).then_some(id)
}

/// A field `set` may write: not one the key commands own.
fn check_policy_field(field: &str) -> Result<(), FleetError> {
    let owned =
        field == "keys" || field == "signing" || field.starts_with("key:") || field.starts_with("retire:");
    match owned {
        true => {
            Err(FleetError::Refused(format!("`{field}` belongs to the key commands (add, promote, retire)")))
        }
        false => Ok(()),
    }
}

/// The fields as an instance will read them, under empty `[defaults]` and a stand-in key: a
/// typo or a wrong type is refused here, naming the field, rather than logged by every instance.
fn check_fields(stream: &str, fields: &[(String, String)]) -> Result<(), FleetError> {
    let config = crate::config::parse("[keys]\nsource = \"redis://check\"\n", std::path::Path::new("/"))
        .map_err(|e| FleetError::Refused(e.to_string()))?;
    config
        .stream_from_fields(stream, vec!["stand-in".into()], fields)
        .map(|_| ())
        .map_err(|e| FleetError::Refused(e.to_string()))
}

fn check_stream_name(stream: &str) -> Result<(), FleetError> {
    if is_stream_name(stream) {
        Ok(())
    } else {
        Err(FleetError::Refused(format!("`{stream}`: a stream name is letters, digits, '-' and '_'")))
    }
}

fn say(out: &mut impl Write, line: &str) {
    let _ = writeln!(out, "{line}");
}
