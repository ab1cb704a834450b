//! Vetting: m3u8-rs reads the whole playlist before anything in it is signed, and says what
//! kind it is. The verdict depends on the bytes alone, so [`Verdicts`] keeps the latest one per
//! playlist: a live playlist is fetched by every viewer each target duration but changes once
//! per segment, and vetting is a sixth of a playlist request's CPU.

use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use m3u8_rs::{MediaPlaylistType, Playlist};

use super::live::LiveLoop;
use super::skeleton::Skeletons;
use super::PlaylistError;

/// What a rewrite needs to know about a playlist that passed vetting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Master,
    Media {
        target_duration: u64,
        /// ENDLIST, or PLAYLIST-TYPE:VOD: no more refreshes.
        vod: bool,
    },
}

impl Shape {
    /// The one answer to "is this a VOD": a media playlist with ENDLIST or PLAYLIST-TYPE:VOD,
    /// as m3u8-rs read it (never a byte search, which a comment would fool).
    pub fn is_vod(self) -> bool {
        matches!(self, Shape::Media { vod: true, .. })
    }
}

/// A playlist text that passed vetting: its shape, and (for a VOD that is served as live) the
/// loop read from it once.
#[derive(Debug)]
pub struct Vetted {
    text: Box<[u8]>,
    shape: Shape,
    live: OnceLock<Result<LiveLoop, PlaylistError>>,
    skeletons: Skeletons,
}

impl Vetted {
    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn text(&self) -> &[u8] {
        &self.text
    }

    pub(super) fn skeletons(&self) -> &Skeletons {
        &self.skeletons
    }

    /// The VOD read as a loop for live simulation, on the first call only.
    pub fn live_loop(&self) -> Result<&LiveLoop, PlaylistError> {
        self.live.get_or_init(|| LiveLoop::read(&self.text)).as_ref().map_err(Clone::clone)
    }
}

/// Makes sure the text is a playlist at all, with m3u8-rs, and says what kind.
///
/// m3u8-rs 6 accepts LL-HLS: it has no LL-HLS tags of its own, but keeps `EXT-X-PART`,
/// `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL`, … as unknown tags. It is lenient to a fault,
/// though: on a line it cannot read it stops and still returns `Ok` with what it read so far,
/// and `parse_playlist_res` throws the unread rest away. So this calls `parse_playlist`, which
/// hands the rest back, and refuses a playlist unless everything was read.
pub fn vet(text: &[u8]) -> Result<Shape, PlaylistError> {
    parse(text).map(|playlist| shape_of(&playlist))
}

/// The playlist [`vet`] reads, for the live simulation, which needs its segments.
pub(super) fn parse(text: &[u8]) -> Result<Playlist, PlaylistError> {
    std::str::from_utf8(text).map_err(|_| PlaylistError::NotUtf8)?;
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    if first_line.trim_ascii_end() != b"#EXTM3U" {
        return Err(PlaylistError::Unparsable("first line is not #EXTM3U".into()));
    }
    match m3u8_rs::parse_playlist(text) {
        Ok((rest, playlist)) if rest.iter().all(u8::is_ascii_whitespace) => Ok(playlist),
        Ok((rest, _)) => {
            let line = line_number(text, text.len().saturating_sub(rest.len()));
            Err(PlaylistError::Unparsable(format!("unreadable from line {line}")))
        }
        Err(_) => Err(PlaylistError::Unparsable("not an m3u8 playlist".into())),
    }
}

fn shape_of(playlist: &Playlist) -> Shape {
    match playlist {
        Playlist::MasterPlaylist(_) => Shape::Master,
        // PLAYLIST-TYPE:VOD promises no more refreshes too, so a VOD whose ENDLIST is missing
        // is still not treated as live.
        Playlist::MediaPlaylist(media) => Shape::Media {
            target_duration: media.target_duration,
            vod: media.end_list || media.playlist_type == Some(MediaPlaylistType::Vod),
        },
    }
}

fn line_number(text: &[u8], offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).iter().filter(|&&b| b == b'\n').count() + 1
}

/// The latest verdict per playlist path, with the text it was given on. A hit costs one
/// comparison of the text; a refused playlist is not remembered.
#[derive(Debug, Default)]
pub struct Verdicts {
    by_path: DashMap<String, Arc<Vetted>>,
}

impl Verdicts {
    /// Playlists remembered before the memory starts over: a stream folder holds a few dozen,
    /// and this bounds what a folder with many more can cost.
    const CAPACITY: usize = 1024;

    /// [`vet`], answered from memory when `path` last had exactly this text.
    pub fn vet(&self, path: &str, text: &[u8]) -> Result<Arc<Vetted>, PlaylistError> {
        if let Some(seen) = self.by_path.get(path) {
            if *seen.text == *text {
                return Ok(Arc::clone(&seen));
            }
        }
        let vetted = Arc::new(Vetted {
            text: text.into(),
            shape: vet(text)?,
            live: OnceLock::new(),
            skeletons: Skeletons::default(),
        });
        if self.by_path.len() >= Self::CAPACITY {
            self.by_path.clear();
        }
        self.by_path.insert(path.to_owned(), Arc::clone(&vetted));
        Ok(vetted)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_path.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\na.ts\n";
    const VOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\na.ts\n#EXT-X-ENDLIST\n";
    const MASTER: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv/index.m3u8\n";

    #[test]
    fn shapes() {
        assert_eq!(vet(LIVE.as_bytes()), Ok(Shape::Media { target_duration: 4, vod: false }));
        assert_eq!(vet(VOD.as_bytes()), Ok(Shape::Media { target_duration: 4, vod: true }));
        assert_eq!(vet(MASTER.as_bytes()), Ok(Shape::Master));
        let typed = LIVE.replace("#EXTM3U\n", "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n");
        assert_eq!(vet(typed.as_bytes()), Ok(Shape::Media { target_duration: 4, vod: true }));
    }

    #[test]
    fn a_verdict_follows_the_text_of_its_path() {
        let verdicts = Verdicts::default();
        let path = "/s/index.m3u8";
        assert_eq!(verdicts.vet(path, LIVE.as_bytes()).map(|v| v.shape()), vet(LIVE.as_bytes()));
        assert_eq!(verdicts.vet(path, LIVE.as_bytes()).map(|v| v.shape()), vet(LIVE.as_bytes()));
        // The packager ends the event: the same path, new text, a new verdict.
        assert_eq!(
            verdicts.vet(path, VOD.as_bytes()).map(|v| v.shape()),
            Ok(Shape::Media { target_duration: 4, vod: true })
        );
        // A broken write is refused, and is not remembered in place of the last good one.
        assert!(verdicts.vet(path, b"#EXTM3U\n\xff.ts\n").is_err());
        assert!(verdicts.vet(path, b"not a playlist").is_err());
        assert_eq!(
            verdicts.vet(path, VOD.as_bytes()).map(|v| v.shape()),
            Ok(Shape::Media { target_duration: 4, vod: true })
        );
        assert_eq!(verdicts.vet("/s/master.m3u8", MASTER.as_bytes()).map(|v| v.shape()), Ok(Shape::Master));
    }

    #[test]
    fn memory_is_bounded() {
        let verdicts = Verdicts::default();
        for i in 0..Verdicts::CAPACITY + 10 {
            verdicts.vet(&format!("/s/{i}.m3u8"), LIVE.as_bytes()).unwrap();
            assert!(verdicts.len() <= Verdicts::CAPACITY);
        }
    }
}
