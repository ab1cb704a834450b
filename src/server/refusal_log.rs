//! Refusal logging that a flood cannot turn into a disk filler: within each window, one line
//! per client and reason, at most [`MAX_LINES`] lines in all; the rest are counted, and the
//! count is logged (and exported) when the window closes.
//!
//! One line per client and reason keeps what an operator needs (who was refused, and why)
//! while a scanner repeating itself 100 000 times a second costs one line per window.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashSet;

/// How long a (client, reason) pair stays logged once.
pub const WINDOW: Duration = Duration::from_secs(10);
/// At most this many refusal lines per window, however many clients there are (a few more
/// when many refusals race for the last places).
pub const MAX_LINES: usize = 1000;

pub struct RefusalLog {
    origin: Instant,
    /// Milliseconds from `origin` at which the current window opened.
    window_start: AtomicU64,
    logged: DashSet<(IpAddr, &'static str)>,
    /// `logged.len()`, kept apart: the set's own count read-locks every shard, on every refusal.
    lines: AtomicUsize,
    suppressed: AtomicU64,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Log,
    Suppress,
}

/// A window that closed with lines left out: how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    pub suppressed: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(Instant::now())
    }
}

impl RefusalLog {
    pub fn new(origin: Instant) -> Self {
        RefusalLog {
            origin,
            window_start: AtomicU64::new(0),
            logged: DashSet::new(),
            lines: AtomicUsize::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether this refusal gets a line; also reports the previous window when this call is the
    /// one that closes it.
    pub fn admit(&self, client: IpAddr, reason: &'static str, now: Instant) -> (Verdict, Option<Closed>) {
        let closed = self.roll(now);
        let verdict =
            if self.lines.load(Ordering::Relaxed) < MAX_LINES && self.logged.insert((client, reason)) {
                self.lines.fetch_add(1, Ordering::Relaxed);
                Verdict::Log
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                Verdict::Suppress
            };
        (verdict, closed)
    }

    /// Opens a new window when the current one has run out. Exactly one caller wins the swap and
    /// reports what the old window suppressed.
    fn roll(&self, now: Instant) -> Option<Closed> {
        let now_ms =
            u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Relaxed);
        if now_ms.saturating_sub(start) < WINDOW.as_millis() as u64 {
            return None;
        }
        self.window_start.compare_exchange(start, now_ms, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        self.logged.clear();
        self.lines.store(0, Ordering::Relaxed);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        (suppressed > 0).then_some(Closed { suppressed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_line_per_client_and_reason_per_window() {
        let t0 = Instant::now();
        let log = RefusalLog::new(t0);
        assert_eq!(log.admit(ip(1), "token missing", t0), (Verdict::Log, None));
        assert_eq!(log.admit(ip(1), "token missing", t0).0, Verdict::Suppress);
        assert_eq!(log.admit(ip(1), "token expired", t0).0, Verdict::Log);
        assert_eq!(log.admit(ip(2), "token missing", t0).0, Verdict::Log);
        for _ in 0..1000 {
            assert_eq!(log.admit(ip(1), "token missing", t0 + WINDOW / 2).0, Verdict::Suppress);
        }
        let (verdict, closed) = log.admit(ip(1), "token missing", t0 + WINDOW);
        assert_eq!((verdict, closed), (Verdict::Log, Some(Closed { suppressed: 1001 })));
        // A quiet window closes without a report.
        assert_eq!(log.admit(ip(1), "token missing", t0 + WINDOW * 2), (Verdict::Log, None));
    }

    #[test]
    fn many_clients_are_capped_per_window() {
        let t0 = Instant::now();
        let log = RefusalLog::new(t0);
        let logged = (0..5000u32)
            .map(|i| IpAddr::from((0xC000_0000u32 + i).to_be_bytes()))
            .filter(|client| log.admit(*client, "token missing", t0).0 == Verdict::Log)
            .count();
        assert_eq!(logged, MAX_LINES);
        let (_, closed) = log.admit(ip(1), "token missing", t0 + WINDOW);
        assert_eq!(closed, Some(Closed { suppressed: 5000 - MAX_LINES as u64 }));
    }
}
