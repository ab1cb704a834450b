//! One bounded live cache for every origin: recent segments, parts, init maps, keys and (for
//! HTTP origins) playlists, bounded in bytes with quick_cache's CLOCK-Pro eviction.
//!
//! An entry says how it stays valid: a folder file by the inode, size and mtime it was read
//! with (checked against a fresh `stat` on every hit), an HTTP answer until an instant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

/// A whole file, as served.
#[derive(Debug, Clone)]
pub struct Cached {
    pub bytes: Bytes,
    pub modified: Option<SystemTime>,
    pub valid: Validity,
}

/// How a cached file stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// A folder file: valid while a `stat` gives the same stamp.
    Stamp(Stamp),
    /// An HTTP answer: valid until then.
    Until(Instant),
}

/// What says a file on disk is the one we read: a rename gives a new inode, a rewrite a new
/// mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i128,
}

/// Entries weigh their bytes plus a little for the key and bookkeeping, so a flood of tiny
/// files is bounded too.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<String, Cached> for ByBytes {
    fn weight(&self, key: &String, value: &Cached) -> u64 {
        (value.bytes.len() + key.len() + 128) as u64
    }
}

/// Counts evictions for the metrics.
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<String, Cached> for CountEvictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: String, _value: Cached) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct LiveCache {
    files: Cache<String, Cached, ByBytes, DefaultHashBuilder, CountEvictions>,
    evictions: Arc<AtomicU64>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The cache's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub capacity: u64,
}

impl LiveCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let evictions = CountEvictions::default();
        // quick_cache wants an estimate of the item count; segments of a few hundred KiB are
        // typical, and a wrong guess only costs some memory in its tables.
        let items = usize::try_from((capacity_bytes / (256 << 10)).clamp(64, 1 << 16)).unwrap_or(1 << 16);
        // quick_cache splits the capacity across shards and refuses any item bigger than one
        // shard: enough shards for concurrency, few enough that a shard holds the largest file
        // the cache takes (a sixteenth of the whole, see `origin::Settings::whole_max`).
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 4).min(8);
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity_bytes)
            .shards(shards)
            .build();
        let files = match options {
            Ok(options) => {
                Cache::with_options(options, ByBytes, DefaultHashBuilder::default(), evictions.clone())
            }
            Err(_) => {
                Cache::with(items, capacity_bytes, ByBytes, DefaultHashBuilder::default(), evictions.clone())
            }
        };
        LiveCache { files, evictions: evictions.0, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The entry for `key` if it is still valid: `current` is the file's stamp now (folder
    /// origins), `now` the time (HTTP origins). A stale entry is dropped.
    pub fn get(&self, key: &str, current: Option<Stamp>, now: Instant) -> Option<Cached> {
        let found = self.files.get(key).filter(|cached| match cached.valid {
            Validity::Stamp(stamp) => current == Some(stamp),
            Validity::Until(until) => now < until,
        });
        match found {
            Some(cached) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(cached)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, key: String, cached: Cached) {
        self.files.insert(key, cached);
    }

    pub fn forget(&self, key: &str) {
        self.files.remove(key);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.files.weight(),
            capacity: self.files.capacity(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(len: usize, valid: Validity) -> Cached {
        Cached { bytes: Bytes::from(vec![0; len]), modified: None, valid }
    }

    #[test]
    fn entries_stay_valid_by_stamp_or_by_time() {
        let cache = LiveCache::new(1 << 20);
        let t0 = Instant::now();
        let stamp = Stamp { ino: 1, len: 10, mtime_ns: 5 };
        cache.insert("a".into(), file(10, Validity::Stamp(stamp)));
        assert!(cache.get("a", Some(stamp), t0).is_some());
        assert!(cache.get("a", Some(Stamp { mtime_ns: 6, ..stamp }), t0).is_none(), "rewritten");
        cache.insert("b".into(), file(10, Validity::Until(t0 + Duration::from_secs(1))));
        assert!(cache.get("b", None, t0).is_some());
        assert!(cache.get("b", None, t0 + Duration::from_secs(1)).is_none(), "expired");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (2, 2));
    }

    #[test]
    fn the_byte_bound_holds_and_evictions_are_counted() {
        let cache = LiveCache::new(1 << 20);
        let forever = Validity::Until(Instant::now() + Duration::from_secs(3600));
        for i in 0..100 {
            cache.insert(format!("seg{i}"), file(64 << 10, forever));
            assert!(cache.stats().bytes <= 1 << 20, "over budget after {i}");
        }
        assert!(cache.stats().evictions >= 80, "{:?}", cache.stats());
        // A file larger than the whole cache is never held.
        cache.insert("huge".into(), file(2 << 20, forever));
        assert!(cache.get("huge", None, Instant::now()).is_none());
    }

    /// quick_cache refuses items bigger than one of its shards: the largest file the origins
    /// cache (a sixteenth of the capacity) must fit.
    #[test]
    fn a_sixteenth_of_the_capacity_is_cached() {
        for capacity in [1u64 << 20, 64 << 20, 256 << 20] {
            let cache = LiveCache::new(capacity);
            let forever = Validity::Until(Instant::now() + Duration::from_secs(3600));
            cache.insert("big".into(), file((capacity / 16) as usize - 200, forever));
            assert!(cache.get("big", None, Instant::now()).is_some(), "capacity {capacity}");
        }
    }
}
