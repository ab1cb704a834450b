//! A folder origin: the files a packager writes under `streams_dir/<stream>/`.
//!
//! A `stat` of a page-cached inode takes about a microsecond, so it runs inline and tells a
//! cached copy from a file the packager has since replaced (`temp_file` renames give a new
//! inode). Large files are read a chunk at a time, each read a short trip to the blocking pool:
//! a slow viewer holds a file descriptor, never a thread.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;

use super::cache::Stamp;
use super::OriginError;

/// Bytes per read of a large file: large, so one trip to the blocking pool moves a lot.
const CHUNK: u64 = 256 << 10;

impl Stamp {
    fn of(meta: &Metadata) -> Self {
        Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// A regular file's metadata; a directory or a missing file is not found.
pub fn stat(path: &Path) -> Result<(Metadata, Stamp), OriginError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {
            let stamp = Stamp::of(&meta);
            Ok((meta, stamp))
        }
        Ok(_) => Err(OriginError::NotFound),
        Err(e) => Err(not_found_or_failed(e)),
    }
}

/// One open, one fstat, one read: the stamp describes exactly the bytes read.
pub fn read_whole(path: &Path) -> Result<(Bytes, Option<SystemTime>, Stamp), OriginError> {
    let read = || -> io::Result<(Bytes, Option<SystemTime>, Stamp)> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut buf)?;
        Ok((Bytes::from(buf), meta.modified().ok(), Stamp::of(&meta)))
    };
    read().map_err(not_found_or_failed)
}

fn not_found_or_failed(e: io::Error) -> OriginError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OriginError::NotFound,
        _ => OriginError::Failed(e.to_string()),
    }
}

/// A large file, read on demand. Once a response has started it runs to the end: the token was
/// checked when the request arrived, never again (a download begun before expiry finishes).
pub struct FileStream {
    path: PathBuf,
    len: u64,
}

impl FileStream {
    pub fn new(path: PathBuf, len: u64) -> Self {
        FileStream { path, len }
    }

    /// Bytes `start..end` of the file, one chunk per poll: the next read starts only when the
    /// viewer has taken the last chunk.
    pub fn body(self, start: u64, end: u64) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let end = end.min(self.len);
        let state = (self.path, None::<Arc<File>>, start);
        futures_util::stream::unfold(Some(state), move |state| async move {
            let (path, file, offset) = state?;
            if offset >= end {
                return None;
            }
            let want = (end - offset).min(CHUNK);
            let read = tokio::task::spawn_blocking(move || read_chunk(path, file, offset, want)).await;
            match read.unwrap_or_else(|e| Err(io::Error::other(e))) {
                Ok((path, file, chunk)) => {
                    let next = offset + chunk.len() as u64;
                    Some((Ok(chunk), Some((path, Some(file), next))))
                }
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

/// Opens the file on the first read; a file that shrank under us is an error, not a short body.
fn read_chunk(
    path: PathBuf,
    file: Option<Arc<File>>,
    offset: u64,
    want: u64,
) -> io::Result<(PathBuf, Arc<File>, Bytes)> {
    let file = match file {
        Some(file) => file,
        None => Arc::new(File::open(&path)?),
    };
    let mut chunk = vec![0; usize::try_from(want).unwrap_or(CHUNK as usize)];
    let n = file.read_at(&mut chunk, offset)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"));
    }
    chunk.truncate(n);
    Ok((path, file, Bytes::from(chunk)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hlsgate-origin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn directories_and_missing_files_are_not_found() {
        let dir = temp_dir("missing");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        assert!(matches!(stat(&dir.join("sub")), Err(OriginError::NotFound)));
        assert!(matches!(stat(&dir.join("nope.ts")), Err(OriginError::NotFound)));
        assert!(matches!(stat(&dir.join("nope.ts/x")), Err(OriginError::NotFound)));
    }

    #[tokio::test]
    async fn streamed_range_yields_exact_bytes() {
        let dir = temp_dir("stream");
        let data: Vec<u8> = (0..(CHUNK as usize * 3 + 17)).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("big.mp4"), &data).unwrap();
        let stream = FileStream::new(dir.join("big.mp4"), data.len() as u64);
        let chunks: Vec<Bytes> = stream.body(5, data.len() as u64 - 3).map(Result::unwrap).collect().await;
        assert_eq!(chunks.concat(), &data[5..data.len() - 3]);
    }

    #[tokio::test]
    async fn a_file_that_shrinks_is_an_error() {
        let dir = temp_dir("shrink");
        std::fs::write(dir.join("f"), vec![1u8; 10]).unwrap();
        let stream = FileStream::new(dir.join("f"), 100);
        let read: Vec<io::Result<Bytes>> = stream.body(0, 100).collect().await;
        assert!(read.last().unwrap().is_err());
    }
}
