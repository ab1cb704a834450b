//! An HTTP origin: a packager (SRS, MediaMTX, Wowza, an nginx in front of ffmpeg's folder) on
//! another machine. One pooled keep-alive client for all streams; per origin URL, a health
//! record that moves requests to the next URL when one fails and back when it answers again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::flight::Head;
use super::OriginError;
use crate::clock::unix_now_ms;
use crate::keys::OriginSpec;

/// Path characters sent as they are; everything else is escaped again (the gate decoded it).
const PATH_KEEP: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Kernel receive buffer of an origin connection.
const RECV_BUFFER: usize = 128 << 10;
/// Backoff after a failure: doubles per failure in a row, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// One request to an origin.
pub struct Ask<'a> {
    pub spec: &'a OriginSpec,
    /// The file inside the stream, decoded (`720p/seg_001.ts`).
    pub file: &'a str,
    /// The viewer's query without hlsgate's token parameters (`_HLS_msn=…` and the like).
    pub query: &'a str,
    pub range: Option<&'a HeaderValue>,
}

/// An origin's answer, head read, body still coming.
pub struct Answer {
    pub head: Head,
    /// 206 to a range request.
    pub partial: Option<HeaderValue>,
    /// What the origin's `Cache-Control: max-age` allows, if it says.
    pub max_age: Option<Duration>,
    pub body: Incoming,
}

#[derive(Debug, Default)]
struct Health {
    failures: AtomicU32,
    /// Unix ms before which this URL is not tried first.
    down_until_ms: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub ok: AtomicU64,
    pub not_found: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub failovers: AtomicU64,
    pub latency_us_sum: AtomicU64,
    pub latency_count: AtomicU64,
}

pub struct Upstreams {
    client: Client<HttpConnector, Empty<Bytes>>,
    health: DashMap<String, Health>,
    first_byte: Duration,
    pub stats: UpstreamStats,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration, first_byte: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        // A viewer reading slowly through a pass-through stream leaves the origin's bytes in
        // this socket: keep what the kernel holds per connection small, or six hundred slow
        // viewers exhaust its TCP memory and new connections are reset.
        connector.set_recv_buffer_size(Some(RECV_BUFFER));
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Upstreams { client, health: DashMap::new(), first_byte, stats: UpstreamStats::default() }
    }

    /// The first byte deadline, which also bounds every wait for the next body chunk.
    pub fn timeout(&self) -> Duration {
        self.first_byte
    }

    /// Asks the stream's origins in order of preference: a connect error, a timeout or a 5xx
    /// moves on to the next; a URL that failed is tried again first once its backoff is over.
    pub async fn get(&self, ask: &Ask<'_>) -> Result<Answer, OriginError> {
        let mut last = OriginError::Failed("no origin configured".into());
        for (attempt, base) in self.preference(&ask.spec.bases).into_iter().enumerate() {
            if attempt > 0 {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            }
            let started = Instant::now();
            let outcome = self.try_one(base, ask).await;
            self.record_latency(started);
            match outcome {
                Ok(answer) => {
                    self.mark_up(base);
                    self.stats.ok.fetch_add(1, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(OriginError::NotFound) => {
                    self.mark_up(base);
                    self.stats.not_found.fetch_add(1, Ordering::Relaxed);
                    return Err(OriginError::NotFound);
                }
                Err(e @ OriginError::Refused(_)) => {
                    self.mark_up(base);
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) => {
                    let counter =
                        if e == OriginError::Timeout { &self.stats.timeouts } else { &self.stats.errors };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.mark_down(base, &e);
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn try_one(&self, base: &str, ask: &Ask<'_>) -> Result<Answer, OriginError> {
        let uri = origin_uri(base, ask.file, ask.query)?;
        let mut request = axum::http::Request::builder().method(Method::GET).uri(uri);
        for (name, value) in &ask.spec.headers {
            request = request.header(name, value);
        }
        if let Some(range) = ask.range {
            request = request.header(header::RANGE, range);
        }
        let request = request.body(Empty::new()).map_err(|e| OriginError::Failed(format!("request: {e}")))?;
        let response = match tokio::time::timeout(self.first_byte, self.client.request(request)).await {
            Err(_) => return Err(OriginError::Timeout),
            Ok(Err(e)) => return Err(OriginError::Failed(connect_error_text(&e))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        match status {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(OriginError::NotFound),
            s if s.is_server_error() => return Err(OriginError::Failed(format!("origin answered {s}"))),
            s => return Err(OriginError::Refused(s.as_u16())),
        }
        let headers = response.headers();
        let head = Head {
            len: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            modified: headers
                .get(header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        };
        let partial = (status == StatusCode::PARTIAL_CONTENT)
            .then(|| headers.get(header::CONTENT_RANGE).cloned())
            .flatten();
        let max_age = headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        Ok(Answer { head, partial, max_age, body: response.into_body() })
    }

    /// The URLs in the order to try them: those not backing off, in configured order, then the
    /// rest (better a URL that failed a moment ago than no answer).
    fn preference<'a>(&self, bases: &'a [String]) -> Vec<&'a String> {
        let now = unix_now_ms();
        let down = |base: &String| {
            self.health.get(base).is_some_and(|h| h.down_until_ms.load(Ordering::Relaxed) > now)
        };
        let (mut order, backing_off): (Vec<&String>, Vec<&String>) = bases.iter().partition(|b| !down(b));
        order.extend(backing_off);
        order
    }

    fn mark_up(&self, base: &str) {
        if let Some(health) = self.health.get(base) {
            if health.failures.swap(0, Ordering::Relaxed) > 0 {
                health.down_until_ms.store(0, Ordering::Relaxed);
                tracing::info!(origin = %base, "origin answers again");
            }
        }
    }

    /// One log line when an origin goes down, not one per viewer: collapsing means one request
    /// per file, and only the first failure in a row is logged.
    fn mark_down(&self, base: &str, e: &OriginError) {
        let health = self.health.entry(base.to_owned()).or_default();
        let failures = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let backoff = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(5)).min(BACKOFF_CAP);
        health
            .down_until_ms
            .store(unix_now_ms().saturating_add(backoff.as_millis() as u64), Ordering::Relaxed);
        if failures == 1 {
            tracing::warn!(origin = %base, error = %e, retry_after_s = backoff.as_secs(), "origin failed; trying the next one");
        }
    }

    fn record_latency(&self, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.stats.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// `base` + the file, escaped again, + the query hlsgate passes on.
fn origin_uri(base: &str, file: &str, query: &str) -> Result<Uri, OriginError> {
    let mut text = String::with_capacity(base.len() + file.len() + query.len() + 1);
    text.push_str(base);
    text.extend(utf8_percent_encode(file, PATH_KEEP));
    if !query.is_empty() {
        text.push('?');
        text.push_str(query);
    }
    text.parse().map_err(|_| OriginError::Failed("origin URL does not parse".into()))
}

/// A connect error, without the URL (which `tracing` prints beside it anyway).
fn connect_error_text(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        let (name, value) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().parse().ok().map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_the_decoded_file_again_and_keep_the_query() {
        let uri = origin_uri("http://o:8/live/", "720p/seg 1%.ts", "_HLS_msn=5&_HLS_part=1").unwrap();
        assert_eq!(uri.to_string(), "http://o:8/live/720p/seg%201%25.ts?_HLS_msn=5&_HLS_part=1");
        assert_eq!(origin_uri("http://o/", "a.ts", "").unwrap().to_string(), "http://o/a.ts");
    }

    #[test]
    fn cache_control() {
        assert_eq!(max_age("public, max-age=5"), Some(Duration::from_secs(5)));
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=x"), None);
    }
}
