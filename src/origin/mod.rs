//! Where bytes come from: today a folder the packager writes into ([`dir`]). An HTTP upstream
//! would be one more file here answering with the same [`Fetched`].

pub mod dir;

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;

pub use dir::DirOrigin;

/// A file's bytes, whole or streamed, with what a response needs to describe it.
pub struct Fetched {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub body: Body,
}

pub enum Body {
    /// Small files (segments, playlists, keys) come whole, usually from the in-memory cache.
    Whole(Bytes),
    /// Large files are read in big blocking chunks as the client drains them.
    Stream(dir::FileStream),
}

#[derive(Debug)]
pub enum OriginError {
    NotFound,
    /// The file exists but could not be read; the cause is logged, not shown to the client.
    Io(std::io::Error),
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::NotFound => f.write_str("not found"),
            OriginError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}
