//! A folder origin with a bounded in-memory cache of hot files, validated on every request by
//! inode, size and mtime.
//!
//! Why a cache: a live segment is fetched by every viewer within seconds, and a `tokio::fs`
//! read hops through the blocking pool each time. A hit costs one `stat` and no hop; a miss
//! costs one blocking read of the whole file. Playlists rewritten in place by a packager
//! (`temp_file` renames) change inode or mtime, so they are never served stale.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use dashmap::DashMap;
use http_body::Frame;
use tokio::sync::mpsc;

use super::{Body, Fetched, OriginError};

/// Files up to this size are read whole and may be cached; larger ones are streamed.
const WHOLE_FILE_MAX: u64 = 16 << 20;
/// Total bytes the cache may hold before the least recently used files go.
const CACHE_BUDGET: usize = 256 << 20;
/// Chunk size for streamed files: large, so one blocking hop moves a lot of bytes.
const STREAM_CHUNK: usize = 256 << 10;

pub struct DirOrigin {
    root: PathBuf,
    cache: DashMap<PathBuf, Entry>,
    cached_bytes: AtomicUsize,
    /// A logical clock for LRU order: cheaper and more exact than reading the time.
    tick: AtomicU64,
}

struct Entry {
    stamp: Stamp,
    bytes: Bytes,
    modified: Option<SystemTime>,
    last_used: AtomicU64,
}

/// What says a file is the one we cached: a rename gives a new inode, a rewrite a new mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

impl DirOrigin {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirOrigin {
            root: root.into(),
            cache: DashMap::new(),
            cached_bytes: AtomicUsize::new(0),
            tick: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fetches `relative` (already checked by `request_path`: no dot segments, no backslashes).
    pub async fn fetch(&self, relative: &str) -> Result<Fetched, OriginError> {
        let path = self.root.join(relative);
        // A stat of a page-cached inode takes about a microsecond: cheaper inline than a hop.
        let meta = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err(OriginError::NotFound),
            Err(e) => {
                self.forget(&path);
                return Err(not_found_or_io(e));
            }
        };
        if meta.len() > WHOLE_FILE_MAX {
            return Ok(Fetched {
                len: meta.len(),
                modified: meta.modified().ok(),
                body: Body::Stream(FileStream { path }),
            });
        }
        if let Some(hit) = self.cached(&path, Stamp::of(&meta)) {
            return Ok(hit);
        }
        let read_path = path.clone();
        let (bytes, meta) = tokio::task::spawn_blocking(move || read_whole(&read_path))
            .await
            .map_err(|e| OriginError::Io(io::Error::other(e)))?
            .map_err(not_found_or_io)?;
        let fetched = Fetched {
            len: bytes.len() as u64,
            modified: meta.modified().ok(),
            body: Body::Whole(bytes.clone()),
        };
        self.remember(path, Stamp::of(&meta), bytes, meta.modified().ok());
        Ok(fetched)
    }

    fn cached(&self, path: &Path, stamp: Stamp) -> Option<Fetched> {
        let entry = self.cache.get(path)?;
        if entry.stamp != stamp {
            return None;
        }
        entry.last_used.store(self.tick.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(Fetched { len: stamp.len, modified: entry.modified, body: Body::Whole(entry.bytes.clone()) })
    }

    fn remember(&self, path: PathBuf, stamp: Stamp, bytes: Bytes, modified: Option<SystemTime>) {
        let size = bytes.len();
        let entry = Entry {
            stamp,
            bytes,
            modified,
            last_used: AtomicU64::new(self.tick.fetch_add(1, Ordering::Relaxed)),
        };
        if let Some(old) = self.cache.insert(path, entry) {
            self.cached_bytes.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
        if self.cached_bytes.fetch_add(size, Ordering::Relaxed) + size > CACHE_BUDGET {
            self.evict_to_budget();
        }
    }

    fn forget(&self, path: &Path) {
        if let Some((_, old)) = self.cache.remove(path) {
            self.cached_bytes.fetch_sub(old.bytes.len(), Ordering::Relaxed);
        }
    }

    /// Drops least recently used files until the cache is back to three quarters of its budget,
    /// so eviction runs rarely rather than on every insert.
    fn evict_to_budget(&self) {
        let mut by_age: Vec<(u64, PathBuf)> =
            self.cache.iter().map(|e| (e.last_used.load(Ordering::Relaxed), e.key().clone())).collect();
        by_age.sort_unstable_by_key(|(used, _)| *used);
        for (_, path) in by_age {
            if self.cached_bytes.load(Ordering::Relaxed) <= CACHE_BUDGET / 4 * 3 {
                break;
            }
            self.forget(&path);
        }
    }
}

fn not_found_or_io(e: io::Error) -> OriginError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OriginError::NotFound,
        _ => OriginError::Io(e),
    }
}

/// One open, one fstat, one read: the stamp describes exactly the bytes read.
fn read_whole(path: &Path) -> io::Result<(Bytes, Metadata)> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut buf)?;
    Ok((Bytes::from(buf), meta))
}

/// A large file, read on demand. Once a response has started it runs to the end: the token was
/// checked when the request arrived, never again (a download begun before expiry finishes).
pub struct FileStream {
    path: PathBuf,
}

impl FileStream {
    /// A body yielding bytes `start..end` of the file from a blocking reader task.
    pub fn body(self, start: u64, end: u64) -> ChunkBody {
        // Two chunks in flight: the reader stays ahead without buffering the whole file.
        let (tx, rx) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let result = send_range(&self.path, start, end, &tx);
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        ChunkBody { rx }
    }
}

fn send_range(path: &Path, start: u64, end: u64, tx: &mpsc::Sender<io::Result<Bytes>>) -> io::Result<()> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut left = end.saturating_sub(start);
    while left > 0 {
        let want = usize::try_from(left.min(STREAM_CHUNK as u64)).unwrap_or(STREAM_CHUNK);
        let mut chunk = vec![0; want];
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
        }
        chunk.truncate(n);
        left -= n as u64;
        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return Ok(()); // the client went away
        }
    }
    Ok(())
}

/// An HTTP body fed by [`FileStream`]'s reader task.
pub struct ChunkBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hlsgate-origin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn whole(f: Fetched) -> Bytes {
        match f.body {
            Body::Whole(b) => b,
            Body::Stream(_) => panic!("expected a whole file"),
        }
    }

    #[tokio::test]
    async fn rewritten_file_is_never_served_stale() {
        let dir = temp_dir("stale");
        let origin = DirOrigin::new(&dir);
        std::fs::write(dir.join("a.m3u8"), "one").unwrap();
        assert_eq!(whole(origin.fetch("a.m3u8").await.unwrap()), "one");
        assert_eq!(whole(origin.fetch("a.m3u8").await.unwrap()), "one");
        // Same size, new content, written the way packagers do: a temp file renamed over it.
        std::fs::write(dir.join("a.tmp"), "two").unwrap();
        std::fs::rename(dir.join("a.tmp"), dir.join("a.m3u8")).unwrap();
        assert_eq!(whole(origin.fetch("a.m3u8").await.unwrap()), "two");
        std::fs::remove_file(dir.join("a.m3u8")).unwrap();
        assert!(matches!(origin.fetch("a.m3u8").await, Err(OriginError::NotFound)));
        assert_eq!(origin.cached_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn directories_and_missing_files_are_not_found() {
        let dir = temp_dir("missing");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let origin = DirOrigin::new(&dir);
        assert!(matches!(origin.fetch("sub").await, Err(OriginError::NotFound)));
        assert!(matches!(origin.fetch("nope.ts").await, Err(OriginError::NotFound)));
        assert!(matches!(origin.fetch("nope.ts/x").await, Err(OriginError::NotFound)));
    }

    #[tokio::test]
    async fn streamed_range_yields_exact_bytes() {
        let dir = temp_dir("stream");
        let data: Vec<u8> = (0..(STREAM_CHUNK * 3 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("big.mp4"), &data).unwrap();
        let stream = FileStream { path: dir.join("big.mp4") };
        let body = stream.body(5, data.len() as u64 - 3).collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &data[5..data.len() - 3]);
    }
}
