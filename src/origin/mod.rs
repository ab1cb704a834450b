//! Where bytes come from: a folder the packager writes into (`dir.rs`) or a packager's HTTP
//! server (`http.rs`), behind one bounded live cache (`cache.rs`) and request collapsing
//! (`flight.rs`) shared by both; `watch.rs` wakes held LL-HLS reloads when a playlist changes.
//!
//! [`Origins::fetch`] is the one entry: the gate has already admitted the request, so every
//! call here is for a viewer with a valid token.

mod cache;
mod dir;
mod flight;
mod http;
mod watch;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderValue;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;

pub use cache::CacheStats;
pub use dir::FileStream;
pub use http::UpstreamStats;

use crate::keys::OriginSpec;

use cache::{Cached, LiveCache, Validity};
use flight::{Flight, Flights, Head, Joined};

/// Files up to this size are read whole, collapsed and cached; larger ones are streamed to
/// each viewer on their own. Lower with a small cache: a sixteenth of `cache_bytes`, so a
/// whole file always fits the cache and a few slow viewers of evicted files cannot hold more
/// than the cache itself.
pub const WHOLE_FILE_MAX: u64 = 16 << 20;
/// How long an HTTP origin's segment, part, key or init map is served from the cache when the
/// origin does not say (`Cache-Control: max-age`). Live files are fetched by every viewer within
/// seconds of each other; a packager restarted with the same names is seen within this.
const MEDIA_FRESH: Duration = Duration::from_secs(30);

/// A file's bytes, whole or streamed, with what a response needs to describe it.
pub struct Fetched {
    /// `None` when an origin answered without a length.
    pub len: Option<u64>,
    pub modified: Option<SystemTime>,
    /// An origin's `Content-Range`, when it answered a range request with 206.
    pub content_range: Option<HeaderValue>,
    pub body: Body,
}

pub enum Body {
    /// Small files (segments, playlists, keys), usually from the cache.
    Whole(Bytes),
    /// A large folder file, read on demand, any range of it.
    File(FileStream),
    /// Bytes as they arrive: a collapsed read, or an origin's answer passed through.
    Stream(BoxStream<'static, io::Result<Bytes>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginError {
    NotFound,
    /// Could not be read or reached (a disk error, a refused connection, an origin's 5xx).
    Failed(String),
    /// The origin answered hlsgate itself with an unexpected status (401, 403, a redirect).
    Refused(u16),
    /// No answer within `origin_timeout`.
    Timeout,
    /// The answer broke off before its end: never cached, never served as complete.
    Truncated,
    /// More than a whole-file read allows, where a whole file is needed (a playlist).
    TooLarge,
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::NotFound => f.write_str("not found"),
            OriginError::Failed(why) => write!(f, "failed: {why}"),
            OriginError::Refused(status) => write!(f, "origin answered {status}"),
            OriginError::Timeout => f.write_str("timed out"),
            OriginError::Truncated => f.write_str("answer cut short"),
            OriginError::TooLarge => f.write_str("too large"),
        }
    }
}

/// What one viewer request asks of its stream's origin.
pub struct Request<'a> {
    pub stream: &'a str,
    /// The file inside the stream, decoded (`720p/seg_001.ts`).
    pub file: &'a str,
    /// `None` for the folder origin (`streams_dir/<stream>/`).
    pub origin: Option<&'a OriginSpec>,
    /// The viewer's query without hlsgate's token parameters.
    pub query: &'a str,
    pub range: Option<&'a HeaderValue>,
    pub playlist: bool,
    /// How long an HTTP origin's live playlist may be served from memory; `None`: half its
    /// target duration.
    pub playlist_cache: Option<Duration>,
}

impl Request<'_> {
    /// LL-HLS blocking reloads are held by the origin until their answer exists: collapsed per
    /// distinct query, never answered from (or stored in) the cache.
    fn is_blocking_reload(&self) -> bool {
        self.query.split('&').any(|pair| pair.starts_with("_HLS_msn=") || pair.starts_with("_HLS_part="))
    }
}

/// Every origin, their cache and their flights. Cheap to clone.
#[derive(Clone)]
pub struct Origins(Arc<Shared>);

struct Shared {
    streams_dir: PathBuf,
    cache: LiveCache,
    flights: Flights,
    upstreams: http::Upstreams,
    /// Bytes buffered by flights in the air, against `inflight_budget`.
    inflight: AtomicU64,
    inflight_budget: u64,
    /// The largest file read whole: [`WHOLE_FILE_MAX`], or a sixteenth of the cache.
    whole_max: u64,
    collapsed: AtomicU64,
    watchers: watch::Watchers,
}

/// How the origins are set up (global settings).
#[derive(Debug, Clone)]
pub struct Settings {
    pub streams_dir: PathBuf,
    pub cache_bytes: u64,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// Counters for `/metrics`.
pub struct OriginStats<'a> {
    pub cache: CacheStats,
    pub upstream: &'a UpstreamStats,
    pub collapsed: u64,
    pub inflight_bytes: u64,
}

impl Origins {
    pub fn new(settings: &Settings) -> Self {
        Origins(Arc::new(Shared {
            streams_dir: settings.streams_dir.clone(),
            cache: LiveCache::new(settings.cache_bytes),
            flights: Flights::default(),
            upstreams: http::Upstreams::new(settings.connect_timeout, settings.timeout),
            inflight: AtomicU64::new(0),
            // Buffers in flight are bounded apart from the cache: a quarter of it.
            inflight_budget: settings.cache_bytes / 4,
            whole_max: WHOLE_FILE_MAX.min(settings.cache_bytes / 16),
            collapsed: AtomicU64::new(0),
            watchers: watch::Watchers::default(),
        }))
    }

    pub fn stats(&self) -> OriginStats<'_> {
        OriginStats {
            cache: self.0.cache.stats(),
            upstream: &self.0.upstreams.stats,
            collapsed: self.0.collapsed.load(Ordering::Relaxed),
            inflight_bytes: self.0.inflight.load(Ordering::Relaxed),
        }
    }

    /// Changes each time a folder stream's file does: what a held blocking reload waits on.
    pub fn folder_changes(&self, stream: &str, file: &str) -> tokio::sync::watch::Receiver<u64> {
        self.0.watchers.subscribe(&self.0.streams_dir.join(stream).join(file))
    }

    pub async fn fetch(&self, req: &Request<'_>) -> Result<Fetched, OriginError> {
        match req.origin {
            None => self.fetch_from_folder(req).await,
            Some(spec) => self.fetch_over_http(req, spec).await,
        }
    }

    /// A playlist, whole (it is rewritten whole).
    pub async fn fetch_whole(&self, req: &Request<'_>) -> Result<Bytes, OriginError> {
        let fetched = self.fetch(req).await?;
        match fetched.body {
            Body::Whole(bytes) => Ok(bytes),
            Body::File(_) => Err(OriginError::TooLarge),
            Body::Stream(mut stream) => {
                let mut all = bytes::BytesMut::new();
                while let Some(chunk) = stream.next().await {
                    all.extend_from_slice(&chunk.map_err(|_| OriginError::Truncated)?);
                    if all.len() as u64 > self.0.whole_max {
                        return Err(OriginError::TooLarge);
                    }
                }
                Ok(all.freeze())
            }
        }
    }

    async fn fetch_from_folder(&self, req: &Request<'_>) -> Result<Fetched, OriginError> {
        // One string for the path and the cache key: a hit allocates nothing else.
        let root = self.0.streams_dir.as_os_str().to_string_lossy();
        let mut key = String::with_capacity(root.len() + req.stream.len() + req.file.len() + 2);
        key.push_str(&root);
        key.push('/');
        key.push_str(req.stream);
        key.push('/');
        key.push_str(req.file);
        let path = PathBuf::from(&key);
        let (meta, stamp) = match dir::stat(&path) {
            Ok(found) => found,
            Err(e) => {
                self.0.cache.forget(&key);
                return Err(e);
            }
        };
        if meta.len() > self.0.whole_max {
            let modified = meta.modified().ok();
            let file = FileStream::new(path, meta.len());
            return Ok(Fetched {
                len: Some(meta.len()),
                modified,
                content_range: None,
                body: Body::File(file),
            });
        }
        if let Some(hit) = self.0.cache.get(&key, Some(stamp), Instant::now()) {
            return Ok(whole(hit));
        }
        // A new version of the file is a new flight: nobody joins a read of the old one.
        let flight_key = format!("{key}\0{}:{}:{}", stamp.ino, stamp.len, stamp.mtime_ns);
        let flight = match self.0.flights.join(&flight_key) {
            Joined::Joined(flight) => {
                self.0.collapsed.fetch_add(1, Ordering::Relaxed);
                flight
            }
            Joined::Started(flight) => {
                let (shared, run) = (Arc::clone(&self.0), Arc::clone(&flight));
                tokio::spawn(async move {
                    let read = tokio::task::spawn_blocking(move || dir::read_whole(&path)).await;
                    match read.unwrap_or_else(|e| Err(OriginError::Failed(e.to_string()))) {
                        Ok((bytes, modified, stamp)) => {
                            // Cached before a byte goes out: a viewer who has the whole file
                            // and asks again at once finds it in the cache.
                            let cached =
                                Cached { bytes: bytes.clone(), modified, valid: Validity::Stamp(stamp) };
                            shared.cache.insert(key, cached);
                            run.set_head(Ok(Head { len: Some(bytes.len() as u64), modified }));
                            run.push(bytes);
                            run.finish(Ok(()));
                        }
                        Err(e) => run.set_head(Err(e)),
                    }
                    shared.flights.land(&flight_key, &run);
                });
                flight
            }
        };
        let head = flight.head().await?;
        let bytes = flight.whole().await?;
        Ok(Fetched {
            len: Some(bytes.len() as u64),
            modified: head.modified,
            content_range: None,
            body: Body::Whole(bytes),
        })
    }

    async fn fetch_over_http(&self, req: &Request<'_>, spec: &OriginSpec) -> Result<Fetched, OriginError> {
        let key = format!("{}/{}?{}", req.stream, req.file, req.query);
        let blocking = req.is_blocking_reload();
        if !blocking {
            if let Some(hit) = self.0.cache.get(&key, None, Instant::now()) {
                return Ok(whole(hit));
            }
        }
        // A range is cut from the whole file (collapsed and cached like any other read, as
        // players such as ffmpeg ask `bytes=0-` every time); a playlist is never asked for in
        // part, it is rewritten whole.
        let ranged = req.range.is_some() && !req.playlist;
        let flight = match self.0.flights.join(&key) {
            Joined::Joined(flight) => {
                self.0.collapsed.fetch_add(1, Ordering::Relaxed);
                flight
            }
            Joined::Started(flight) => {
                let run = FlightRun {
                    shared: Arc::clone(&self.0),
                    flight: Arc::clone(&flight),
                    key,
                    spec: spec.clone(),
                    file: req.file.to_owned(),
                    query: req.query.to_owned(),
                    cache_for: (!blocking)
                        .then_some(())
                        .map(|()| CacheFor { playlist: req.playlist, playlist_cache: req.playlist_cache }),
                };
                tokio::spawn(run.run());
                flight
            }
        };
        let head = match flight.head().await {
            // Too big to share: this viewer reads it on its own (a playlist never is).
            Err(OriginError::TooLarge) if !req.playlist => return self.pass_through(req, spec).await,
            other => other?,
        };
        if req.playlist || ranged {
            let bytes = flight.whole().await?;
            return Ok(Fetched {
                len: Some(bytes.len() as u64),
                modified: head.modified,
                content_range: None,
                body: Body::Whole(bytes),
            });
        }
        Ok(Fetched {
            len: head.len,
            modified: head.modified,
            content_range: None,
            body: Body::Stream(flight.body().boxed()),
        })
    }

    /// One viewer's own request to the origin, streamed back with the origin's backpressure.
    async fn pass_through(&self, req: &Request<'_>, spec: &OriginSpec) -> Result<Fetched, OriginError> {
        let ask = http::Ask { spec, file: req.file, query: req.query, range: req.range };
        let answer = self.0.upstreams.get(&ask).await?;
        let idle = self.0.upstreams.timeout();
        Ok(Fetched {
            len: answer.head.len,
            modified: answer.head.modified,
            content_range: answer.partial,
            body: Body::Stream(chunks(answer.body, idle).boxed()),
        })
    }
}

fn whole(cached: Cached) -> Fetched {
    Fetched {
        len: Some(cached.bytes.len() as u64),
        modified: cached.modified,
        content_range: None,
        body: Body::Whole(cached.bytes),
    }
}

/// An origin body as chunks, each within `idle` of the last: a stalled origin ends the body
/// with an error instead of holding the viewer forever.
fn chunks(
    body: hyper::body::Incoming,
    idle: Duration,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send {
    futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => {
                    return Some((Err(io::Error::new(io::ErrorKind::TimedOut, "origin stalled")), None))
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some((Err(io::Error::other(e)), None)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
}

/// Whether, and for how long, a flight's answer is kept.
struct CacheFor {
    playlist: bool,
    playlist_cache: Option<Duration>,
}

/// One collapsed read from an HTTP origin, run in its own task.
struct FlightRun {
    shared: Arc<Shared>,
    flight: Arc<Flight>,
    key: String,
    spec: OriginSpec,
    file: String,
    query: String,
    cache_for: Option<CacheFor>,
}

impl FlightRun {
    async fn run(self) {
        let outcome = self.read().await;
        if let Err(e) = &outcome {
            tracing::debug!(file = %self.file, error = %e, "origin read failed");
        }
        self.shared.flights.land(&self.key, &self.flight);
    }

    async fn read(&self) -> Result<(), OriginError> {
        let ask = http::Ask { spec: &self.spec, file: &self.file, query: &self.query, range: None };
        let answer = match self.shared.upstreams.get(&ask).await {
            Ok(answer) => answer,
            Err(e) => {
                self.flight.set_head(Err(e.clone()));
                return Err(e);
            }
        };
        let Some(reserved) = self.reserve(answer.head.len) else {
            self.flight.set_head(Err(OriginError::TooLarge));
            return Err(OriginError::TooLarge);
        };
        self.flight.set_head(Ok(answer.head.clone()));
        let result = self.pump(answer.body, &answer.head, answer.max_age).await;
        self.shared.inflight.fetch_sub(reserved, Ordering::Relaxed);
        self.flight.finish(result.clone());
        result
    }

    /// Reserves room for the body in the in-flight budget (the whole file when its length is
    /// known, a whole-file maximum when not); None when it does not fit.
    fn reserve(&self, len: Option<u64>) -> Option<u64> {
        let want = len.unwrap_or(self.shared.whole_max);
        if want > self.shared.whole_max {
            return None;
        }
        let budget = self.shared.inflight_budget;
        self.shared
            .inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(want).filter(|n| *n <= budget)
            })
            .ok()
            .map(|_| want)
    }

    /// Passes the body into the flight as it arrives (one copy, shared by every reader) and
    /// stores it in the cache once whole, checked against the length the origin announced.
    /// The cache gets it before its last byte goes out: a viewer who has the whole file and asks
    /// again at once finds it there.
    async fn pump(
        &self,
        body: hyper::body::Incoming,
        head: &Head,
        max_age: Option<Duration>,
    ) -> Result<(), OriginError> {
        let mut chunks = std::pin::pin!(chunks(body, self.shared.upstreams.timeout()));
        let mut received = 0u64;
        let mut stored = false;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    OriginError::Timeout
                } else {
                    OriginError::Truncated
                }
            })?;
            received += chunk.len() as u64;
            if received > head.len.unwrap_or(self.shared.whole_max) {
                return Err(OriginError::TooLarge);
            }
            if head.len == Some(received) {
                self.store(self.flight.received_with(&chunk), head, max_age);
                stored = true;
            }
            self.flight.push(chunk);
        }
        match head.len {
            Some(len) if len != received => Err(OriginError::Truncated),
            _ => {
                if !stored {
                    self.store(self.flight.received_with(&Bytes::new()), head, max_age);
                }
                Ok(())
            }
        }
    }

    fn store(&self, bytes: Bytes, head: &Head, max_age: Option<Duration>) {
        if let Some(fresh) = self.freshness(&bytes, max_age) {
            let valid = Validity::Until(Instant::now() + fresh);
            self.shared.cache.insert(self.key.clone(), Cached { bytes, modified: head.modified, valid });
        }
    }

    /// How long this answer may be served from memory: a live playlist half its target
    /// duration (or `playlist_cache`), other files [`MEDIA_FRESH`]; never longer than the
    /// origin's own `max-age`.
    fn freshness(&self, bytes: &Bytes, max_age: Option<Duration>) -> Option<Duration> {
        let cache_for = self.cache_for.as_ref()?;
        let ours = if cache_for.playlist {
            cache_for.playlist_cache.unwrap_or_else(|| half_target_duration(bytes))
        } else {
            MEDIA_FRESH
        };
        let fresh = max_age.map_or(ours, |theirs| theirs.min(ours));
        (!fresh.is_zero()).then_some(fresh)
    }
}

/// Half of `#EXT-X-TARGETDURATION`, or half a second for a playlist without one (a master).
fn half_target_duration(playlist: &[u8]) -> Duration {
    let target = playlist
        .split(|&b| b == b'\n')
        .find_map(|line| line.trim_ascii().strip_prefix(b"#EXT-X-TARGETDURATION:"))
        .and_then(|n| std::str::from_utf8(n).ok()?.trim().parse::<u64>().ok());
    target.map_or(Duration::from_millis(500), |seconds| Duration::from_millis(seconds.saturating_mul(500)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_are_fresh_for_half_their_target_duration() {
        assert_eq!(half_target_duration(b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n"), Duration::from_secs(2));
        assert_eq!(
            half_target_duration(b"#EXTM3U\r\n#EXT-X-TARGETDURATION:1\r\n"),
            Duration::from_millis(500)
        );
        assert_eq!(
            half_target_duration(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n"),
            Duration::from_millis(500)
        );
    }
}
