//! Counters and a latency histogram, written as Prometheus text for the admin port.
//!
//! Hand-rolled because the label set is tiny and fixed; the stream label only ever takes a
//! configured stream's name (or `unknown`), so a scanner cannot grow the series without bound.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use crate::origin::OriginStats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Playlist,
    Media,
}

/// How a request ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    Forbidden,
    Expired,
    NotFound,
    BadRequest,
    OriginError,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Playlist, Kind::Media];

    fn label(self) -> &'static str {
        match self {
            Kind::Playlist => "playlist",
            Kind::Media => "media",
        }
    }
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Forbidden,
        Outcome::Expired,
        Outcome::NotFound,
        Outcome::BadRequest,
        Outcome::OriginError,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Forbidden => "forbidden",
            Outcome::Expired => "expired",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::OriginError => "origin_error",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
pub struct Metrics {
    /// Per stream, a counter for every (kind, outcome) pair.
    requests: DashMap<String, [[AtomicU64; Outcome::ALL.len()]; Kind::ALL.len()]>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    suppressed_refusal_lines: AtomicU64,
    /// Per stream, the 403 `shared link` refusals.
    shared_link_refusals: DashMap<String, AtomicU64>,
}

impl Metrics {
    pub fn record(&self, stream: &str, kind: Kind, outcome: Outcome, elapsed: Duration) {
        // The common case takes a shared lock and an atomic add, with no allocation.
        match self.requests.get(stream) {
            Some(counters) => counters[kind as usize][outcome as usize].fetch_add(1, Ordering::Relaxed),
            None => self.requests.entry(stream.to_string()).or_default()[kind as usize][outcome as usize]
                .fetch_add(1, Ordering::Relaxed),
        };
        let seconds = elapsed.as_secs_f64();
        if let Some((_, bucket)) = BUCKETS.iter().zip(&self.buckets).find(|(upper, _)| seconds <= **upper) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn record_reload(&self, ok: bool) {
        let counter = if ok { &self.reloads_ok } else { &self.reloads_failed };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_suppressed_refusal_line(&self) {
        self.suppressed_refusal_lines.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_shared_link_refusal(&self, stream: &str) {
        match self.shared_link_refusals.get(stream) {
            Some(counter) => counter.fetch_add(1, Ordering::Relaxed),
            None => self
                .shared_link_refusals
                .entry(stream.to_string())
                .or_default()
                .fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP hlsgate_requests_total Viewer requests by stream, kind and outcome.\n");
        out.push_str("# TYPE hlsgate_requests_total counter\n");
        let mut rows = Vec::new();
        for entry in self.requests.iter() {
            for kind in Kind::ALL {
                for outcome in Outcome::ALL {
                    let n = entry.value()[kind as usize][outcome as usize].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = format!(
                            "stream=\"{}\",kind=\"{}\",outcome=\"{}\"",
                            escape(entry.key()),
                            kind.label(),
                            outcome.label()
                        );
                        rows.push((labels, n));
                    }
                }
            }
        }
        rows.sort();
        for (labels, n) in rows {
            let _ = writeln!(out, "hlsgate_requests_total{{{labels}}} {n}");
        }

        out.push_str("# HELP hlsgate_request_duration_seconds Time from request to response head.\n");
        out.push_str("# TYPE hlsgate_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (upper, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "hlsgate_request_duration_seconds_bucket{{le=\"{upper}\"}} {cumulative}");
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "hlsgate_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "hlsgate_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "hlsgate_request_duration_seconds_count {count}");

        out.push_str("# HELP hlsgate_config_reloads_total Config reloads (SIGHUP) by result.\n");
        out.push_str("# TYPE hlsgate_config_reloads_total counter\n");
        let _ = writeln!(
            out,
            "hlsgate_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "hlsgate_config_reloads_total{{result=\"error\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );

        out.push_str(
            "# HELP hlsgate_refusal_log_lines_suppressed_total Refusals not logged: one line per client and reason per window.\n",
        );
        out.push_str("# TYPE hlsgate_refusal_log_lines_suppressed_total counter\n");
        let _ = writeln!(
            out,
            "hlsgate_refusal_log_lines_suppressed_total {}",
            self.suppressed_refusal_lines.load(Ordering::Relaxed)
        );

        out.push_str(
            "# HELP hlsgate_shared_link_refusals_total Entry links refused to one network more than max_ips_per_link.\n",
        );
        out.push_str("# TYPE hlsgate_shared_link_refusals_total counter\n");
        let mut rows: Vec<(String, u64)> = self
            .shared_link_refusals
            .iter()
            .map(|entry| (escape(entry.key()), entry.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for (stream, n) in rows {
            let _ = writeln!(out, "hlsgate_shared_link_refusals_total{{stream=\"{stream}\"}} {n}");
        }
        out
    }
}

/// The in-process link ledger's counter (see `links`).
pub fn render_link_ledger(evictions: u64) -> String {
    format!(
        "# HELP hlsgate_link_ledger_evictions_total Entry links forgotten before they expired, to keep the ledger within its bound (each then counts its networks anew).\n\
         # TYPE hlsgate_link_ledger_evictions_total counter\n\
         hlsgate_link_ledger_evictions_total {evictions}\n"
    )
}

/// The origins' counters: requests by result, failovers, collapsing, the live cache.
pub fn render_origins(stats: &OriginStats) -> String {
    let up = stats.upstream;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, rows: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    counter(
        "hlsgate_origin_requests_total",
        "Requests to HTTP origins by result.",
        &[
            ("{result=\"ok\"}", load(&up.ok)),
            ("{result=\"not_found\"}", load(&up.not_found)),
            ("{result=\"error\"}", load(&up.errors)),
            ("{result=\"timeout\"}", load(&up.timeouts)),
        ],
    );
    counter(
        "hlsgate_origin_failovers_total",
        "Requests moved on to the next origin URL.",
        &[("", load(&up.failovers))],
    );
    counter(
        "hlsgate_origin_collapsed_total",
        "Viewer requests that joined a read already in flight instead of starting one.",
        &[("", stats.collapsed)],
    );
    counter("hlsgate_cache_hits_total", "Live cache hits.", &[("", stats.cache.hits)]);
    counter("hlsgate_cache_misses_total", "Live cache misses.", &[("", stats.cache.misses)]);
    counter(
        "hlsgate_cache_evictions_total",
        "Files evicted from the live cache.",
        &[("", stats.cache.evictions)],
    );
    let gauges = [
        ("hlsgate_cache_bytes", "Bytes held by the live cache.", stats.cache.bytes),
        ("hlsgate_cache_capacity_bytes", "The live cache's bound (cache_bytes).", stats.cache.capacity),
        ("hlsgate_origin_inflight_bytes", "Bytes reserved by origin reads in flight.", stats.inflight_bytes),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    let sum = load(&up.latency_us_sum) as f64 / 1e6;
    let _ = writeln!(
        out,
        "# HELP hlsgate_origin_latency_seconds Time to an origin's response head.\n\
         # TYPE hlsgate_origin_latency_seconds summary\n\
         hlsgate_origin_latency_seconds_sum {sum}\nhlsgate_origin_latency_seconds_count {}",
        load(&up.latency_count)
    );
    out
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record("demo", Kind::Media, Outcome::Ok, Duration::from_micros(300));
        m.record("demo", Kind::Media, Outcome::Ok, Duration::from_millis(3));
        m.record("demo", Kind::Playlist, Outcome::Forbidden, Duration::from_secs(10));
        m.record_reload(false);
        let text = m.render();
        assert!(
            text.contains("hlsgate_requests_total{stream=\"demo\",kind=\"media\",outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text
            .contains("hlsgate_requests_total{stream=\"demo\",kind=\"playlist\",outcome=\"forbidden\"} 1\n"));
        assert!(text.contains("hlsgate_request_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("hlsgate_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("hlsgate_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("hlsgate_config_reloads_total{result=\"error\"} 1\n"));
        assert!(text.contains("hlsgate_config_reloads_total{result=\"ok\"} 0\n"));
        assert!(text.contains("# TYPE hlsgate_shared_link_refusals_total counter\n"));
        assert!(!text.contains("hlsgate_shared_link_refusals_total{"), "no series before a refusal");
        m.record_shared_link_refusal("demo");
        m.record_shared_link_refusal("demo");
        assert!(m.render().contains("hlsgate_shared_link_refusals_total{stream=\"demo\"} 2\n"));
        assert!(render_link_ledger(7).contains("\nhlsgate_link_ledger_evictions_total 7\n"));
    }
}
