//! Keeps one instance's stream map in step with the key source: a full read at start (no Redis,
//! no start: an instance with no keys would refuse everyone), a full re-read on every change
//! published and every `resync_interval`, a heartbeat the rotation command waits on, and the
//! cached map kept in force, never emptied, while Redis is away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands as _;

use super::{build_streams, FleetError, Schema, Snapshot, StreamHash};
use crate::clock::{unix_now, unix_now_ms};
use crate::config::{Config, KeySource};
use crate::keys::{Generation, KeyStore, StreamPolicy};
use crate::links::Admission;

/// Every Redis call gets this long before the source counts as lost.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// A viewer's entry request waits this long for the fleet's link count, then counts locally.
const LINK_TIMEOUT: Duration = Duration::from_millis(250);

/// The leaked-link count, atomically: a network already in the link's set is admitted again;
/// else it joins while the set has fewer than the limit. The set expires with the token.
/// KEYS[1] the link's set; ARGV: network, limit, Unix time the token stops opening anything.
static ADMIT_LINK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
        if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
        redis.call('SADD', KEYS[1], ARGV[1])
        redis.call('EXPIREAT', KEYS[1], ARGV[3])
        return 1
        ",
    )
});
/// How often an instance says which version it holds; its heartbeat lives five times as long.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL_S: u64 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One instance's view of the key source.
pub struct Fleet {
    client: redis::Client,
    schema: Schema,
    settings: KeySource,
    /// This instance's name in the heartbeats.
    instance: String,
    listen: String,
    /// The file config in force (`[defaults]`, proxies, TLS): replaced on SIGHUP.
    file: RwLock<Arc<Config>>,
    snapshot: Mutex<Snapshot>,
    /// The key-source version whose changes this instance has all loaded.
    applied: AtomicU64,
    /// Unix milliseconds of the last successful read of the key source.
    last_ok_ms: AtomicU64,
    up: AtomicBool,
    /// The earliest future `retire:ID` time in the snapshot (0: none).
    next_retirement: AtomicU64,
    /// For the leaked-link count: the connection the sync loop holds, when it holds one.
    commands: Mutex<Option<MultiplexedConnection>>,
}

impl Fleet {
    /// Connects and reads every stream. Fails when the key source cannot be read: there is no
    /// cache to start from.
    pub async fn start(config: Config, listen: &str) -> Result<(Arc<Fleet>, Generation), FleetError> {
        let settings = config
            .key_source
            .clone()
            .ok_or_else(|| FleetError::Refused("no [keys] source in the config".into()))?;
        let client = redis::Client::open(settings.url.as_str())?;
        let fleet = Arc::new(Fleet {
            client,
            schema: Schema::new(&settings.prefix),
            instance: instance_name(),
            listen: listen.to_string(),
            settings,
            file: RwLock::new(Arc::new(config)),
            snapshot: Mutex::new(Snapshot::new()),
            applied: AtomicU64::new(0),
            last_ok_ms: AtomicU64::new(0),
            up: AtomicBool::new(false),
            next_retirement: AtomicU64::new(0),
            commands: Mutex::new(None),
        });
        let mut conn = within(fleet.client.get_multiplexed_async_connection()).await?;
        fleet.read_all(&mut conn).await?;
        fleet.set_commands(Some(conn));
        let generation = fleet.generation(&HashMap::new());
        Ok((fleet, generation))
    }

    pub fn settings(&self) -> &KeySource {
        &self.settings
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// A new file config (SIGHUP): its `[defaults]` apply to the streams from now on.
    pub fn set_file(&self, config: Config) {
        match self.file.write() {
            Ok(mut file) => *file = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
    }

    /// The generation the file and the last snapshot make; a stream that does not validate keeps
    /// its `previous` policy, and the error is logged naming the field.
    pub fn generation(&self, previous: &HashMap<String, Arc<StreamPolicy>>) -> Generation {
        let file = match self.file.read() {
            Ok(file) => Arc::clone(&file),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let now = unix_now();
        let snapshot = lock(&self.snapshot);
        let (streams, errors) = build_streams(&file, &snapshot, previous, now);
        let next = snapshot.values().filter_map(|hash| hash.next_retirement(now)).min().unwrap_or(0);
        self.next_retirement.store(next, Ordering::Relaxed);
        drop(snapshot);
        for error in errors {
            tracing::error!(field = %error.field, problem = %error.problem, "stream in the key source refused; its previous policy stays in force");
        }
        let mut generation = file.generation();
        generation.streams = streams;
        generation
    }

    /// Seconds since the key source was last read, once past `stale_after`.
    pub fn stale_for(&self) -> Option<u64> {
        let age_ms = unix_now_ms().saturating_sub(self.last_ok_ms.load(Ordering::Relaxed));
        (Duration::from_millis(age_ms) > self.settings.stale_after).then_some(age_ms / 1000)
    }

    /// A connection for one-off commands (the leaked-link count), while the source is up.
    pub fn commands(&self) -> Option<MultiplexedConnection> {
        lock(&self.commands).clone()
    }

    /// The fleet-wide leaked-link count (see [`crate::links`]); `None` when the key source
    /// cannot answer now, and the caller counts on its own.
    pub async fn admit_link(
        &self,
        stream: &str,
        digest: &[u8; 16],
        until: u64,
        network: &str,
        limit: u8,
    ) -> Option<Admission> {
        let mut conn = self.commands()?;
        let key = self.schema.link(stream, &super::hex(digest));
        let mut call = ADMIT_LINK.key(key);
        call.arg(network).arg(limit).arg(until);
        match tokio::time::timeout(LINK_TIMEOUT, call.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(1)) => Some(Admission::Admitted),
            Ok(Ok(_)) => Some(Admission::Shared),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "leaked-link count in the key source failed; counting here");
                None
            }
            Err(_) => None,
        }
    }

    /// The Prometheus lines for the key source.
    pub fn render_metrics(&self) -> String {
        let age = unix_now_ms().saturating_sub(self.last_ok_ms.load(Ordering::Relaxed)) as f64 / 1000.0;
        format!(
            "# HELP hlsgate_keys_source_up Whether the key source (Redis) is reachable.\n\
             # TYPE hlsgate_keys_source_up gauge\nhlsgate_keys_source_up {}\n\
             # HELP hlsgate_keys_source_age_seconds Seconds since the key source was last read.\n\
             # TYPE hlsgate_keys_source_age_seconds gauge\nhlsgate_keys_source_age_seconds {age:.3}\n\
             # HELP hlsgate_keys_version_applied The key-source version this instance has loaded.\n\
             # TYPE hlsgate_keys_version_applied gauge\nhlsgate_keys_version_applied {}\n",
            u8::from(self.up.load(Ordering::Relaxed)),
            self.applied.load(Ordering::Relaxed),
        )
    }

    /// Follows the key source until the process ends: reconnects with backoff when it is lost,
    /// and swaps a new generation into `keys` on every change.
    pub async fn run(self: Arc<Self>, keys: &KeyStore) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = self.follow(keys).await;
            self.set_commands(None);
            if self.up.swap(false, Ordering::Relaxed) {
                backoff = Duration::from_secs(1);
                tracing::error!(source = %self.settings.url_for_log(), error = %describe(&outcome), "key source lost; serving on the cached keys, reconnecting");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connected session: returns when the connection fails.
    async fn follow(&self, keys: &KeyStore) -> Result<(), FleetError> {
        let mut conn = within(self.client.get_multiplexed_async_connection()).await?;
        let mut pubsub = within(self.client.get_async_pubsub()).await?;
        within(pubsub.subscribe(self.schema.changes())).await?;
        // Subscribed first, then read: a change between the two is read now or announced later.
        self.sync(&mut conn, keys).await?;
        self.set_commands(Some(conn.clone()));
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(source = %self.settings.url_for_log(), version = self.applied.load(Ordering::Relaxed), "key source connected");
        }
        let mut changes = pubsub.into_on_message();
        let mut resync = tokio::time::interval(self.settings.resync_interval);
        resync.tick().await;
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                message = changes.next() => {
                    if message.is_none() {
                        return Err(FleetError::Refused("the change subscription closed".into()));
                    }
                    self.sync(&mut conn, keys).await?;
                    // At once, not at the next beat: a rotation is waiting on it.
                    self.heartbeat(&mut conn, keys).await?;
                }
                _ = resync.tick() => self.sync(&mut conn, keys).await?,
                _ = beat.tick() => {
                    self.heartbeat(&mut conn, keys).await?;
                    self.retire_due(keys);
                }
            }
        }
    }

    /// Reads everything and puts it in force. The version is read first, so every change it
    /// counts is in what follows.
    async fn sync(&self, conn: &mut MultiplexedConnection, keys: &KeyStore) -> Result<(), FleetError> {
        let version = self.read_all(conn).await?;
        let generation = self.generation(&keys.current().streams);
        keys.replace(generation);
        tracing::debug!(version, "key source read");
        Ok(())
    }

    async fn read_all(&self, conn: &mut MultiplexedConnection) -> Result<u64, FleetError> {
        let version: Option<u64> = within(conn.get(self.schema.version())).await?;
        let mut snapshot = Snapshot::new();
        for key in within(scan(conn, &self.schema.streams_pattern())).await? {
            let Some(name) = self.schema.stream_name(&key) else { continue };
            let fields: Vec<(String, String)> = within(conn.hgetall(&key)).await?;
            match StreamHash::from_fields(fields) {
                Ok(hash) => {
                    snapshot.insert(name.to_string(), hash);
                }
                Err(e) => {
                    tracing::error!(field = %format!("streams.{name}.{}", e.field), problem = %e.problem, "stream in the key source refused; its previous policy stays in force");
                    if let Some(old) = lock(&self.snapshot).get(name) {
                        snapshot.insert(name.to_string(), old.clone());
                    }
                }
            }
        }
        let keyed = |snapshot: &Snapshot| snapshot.values().any(|hash| !hash.keys.is_empty());
        if !keyed(&snapshot) && keyed(&lock(&self.snapshot)) {
            // A Redis restarted without its data, or flushed: taking every stream offline on
            // that would turn a lost store into an outage.
            return Err(FleetError::Refused(
                "the key source holds no stream now (emptied, or restarted without its data?); keeping the cached keys".into(),
            ));
        }
        *lock(&self.snapshot) = snapshot;
        let version = version.unwrap_or(0);
        self.applied.store(version, Ordering::Relaxed);
        self.last_ok_ms.store(unix_now_ms(), Ordering::Relaxed);
        Ok(version)
    }

    /// Tells the fleet which version this instance holds, and how long its issued tokens live.
    async fn heartbeat(&self, conn: &mut MultiplexedConnection, keys: &KeyStore) -> Result<(), FleetError> {
        let grace = keys.current().streams.values().map(|p| p.longest_issued_validity()).max().unwrap_or(0);
        let key = self.schema.instance(&self.instance);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "applied", self.applied.load(Ordering::Relaxed))
            .ignore()
            .hset(&key, "listen", &self.listen)
            .ignore()
            .hset(&key, "grace", grace)
            .ignore()
            .expire(&key, HEARTBEAT_TTL_S as i64)
            .ignore();
        within(pipe.query_async::<()>(conn)).await?;
        self.last_ok_ms.store(unix_now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// A key whose `retire:ID` time has come stops verifying now, not at the next read.
    fn retire_due(&self, keys: &KeyStore) {
        let next = self.next_retirement.load(Ordering::Relaxed);
        if next != 0 && unix_now() >= next {
            keys.replace(self.generation(&keys.current().streams));
        }
    }

    fn set_commands(&self, conn: Option<MultiplexedConnection>) {
        *lock(&self.commands) = conn;
    }
}

/// Every key matching `pattern`, by `SCAN` (never `KEYS`, which blocks a busy Redis).
pub async fn scan(conn: &mut MultiplexedConnection, pattern: &str) -> redis::RedisResult<Vec<String>> {
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        found.extend(keys);
        if next == 0 {
            found.sort_unstable();
            found.dedup();
            return Ok(found);
        }
        cursor = next;
    }
}

/// A Redis call, bounded in time.
pub async fn within<T, E: Into<FleetError>>(
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(FleetError::TimedOut),
    }
}

fn describe(outcome: &Result<(), FleetError>) -> String {
    match outcome {
        Ok(()) => "closed".into(),
        Err(e) => e.to_string(),
    }
}

/// `host-pid-nanos`: unique among instances even when every pod's process is PID 1.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos:08x}", host.trim(), std::process::id())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
