//! Serves a VOD media playlist as an endless live stream. The VOD loops forever and sequence
//! numbers count from the Unix epoch, so every instance computes the same window for the same
//! instant without sharing any state.

use std::fmt::Write as _;

use m3u8_rs::{MediaPlaylist, Playlist};

use super::vet::parse;
use super::{PlaylistError, Shape};

/// One VOD segment, with the tags in effect for it as the VOD wrote them.
#[derive(Debug)]
struct Segment {
    uri: Box<str>,
    duration_ms: u64,
    /// Length and absolute offset: a live window starts anywhere, so an offset left implicit in
    /// the VOD must be spelled out.
    byte_range: Option<(u64, u64)>,
    /// The EXT-X-KEY lines in effect (several when several KEYFORMATs are offered).
    keys: Vec<Box<str>>,
    map: Option<Box<str>>,
}

/// A VOD read once, ready to cut any number of live windows from: what
/// [`Verdicts`](super::Verdicts) keeps with the text, so a window costs no parsing.
#[derive(Debug)]
pub struct LiveLoop {
    version: usize,
    /// The VOD's target duration, raised to its longest segment if it lies.
    target_duration: u64,
    segments: Vec<Segment>,
    loop_ms: u64,
    /// The VOD's EXT-X-DEFINE lines: its URIs may need them, so every window repeats them.
    defines: Vec<Box<str>>,
}

/// Where a VOD line-scan finds a segment's URI and the KEY/MAP lines in effect for it.
#[derive(Debug)]
struct Scanned<'a> {
    uri: &'a str,
    keys: Vec<&'a str>,
    map: Option<&'a str>,
}

/// Turns a VOD media playlist into the live window at `now_ms`: the last `window` segments
/// published before the one being "recorded" now.
pub fn simulate_live(vod: &[u8], window: usize, now_ms: u64) -> Result<String, PlaylistError> {
    Ok(LiveLoop::read(vod)?.window(window, now_ms))
}

impl LiveLoop {
    /// Reads a VOD media playlist.
    pub fn read(vod: &[u8]) -> Result<LiveLoop, PlaylistError> {
        let text = std::str::from_utf8(vod).map_err(|_| PlaylistError::NotUtf8)?;
        let Playlist::MediaPlaylist(media) = parse(vod)? else {
            return Err(PlaylistError::NotMedia);
        };
        let segments = segments(text, &media)?;
        let loop_ms = segments.iter().fold(0u64, |sum, s| sum.saturating_add(s.duration_ms));
        if loop_ms == 0 {
            return Err(PlaylistError::NoSegments);
        }
        // Every EXTINF must round to at most the target duration; trust the VOD's unless it lies.
        let longest = segments.iter().map(|s| s.duration_ms.saturating_add(500) / 1000).max().unwrap_or(0);
        let defines = text
            .lines()
            .map(|line| line.trim_matches([' ', '\t', '\r']))
            .filter(|line| line.starts_with("#EXT-X-DEFINE:"))
            .map(Box::from)
            .collect();
        Ok(LiveLoop {
            defines,
            version: media.version.unwrap_or(1).max(3),
            target_duration: media.target_duration.max(longest),
            segments,
            loop_ms,
        })
    }

    /// The live window at `now_ms`: the last `window` segments published before the one being
    /// "recorded" now.
    pub fn window(&self, window: usize, now_ms: u64) -> String {
        let recording = recording_sequence(&self.segments, self.loop_ms, now_ms);
        let first = recording.saturating_sub(window.max(1) as u64);
        self.write_window(first..recording)
    }

    /// What the windows are: live media playlists of this target duration.
    pub fn shape(&self) -> Shape {
        Shape::Media { target_duration: self.target_duration, vod: false }
    }
}

/// Pairs m3u8-rs's segments (durations, byte ranges) with a line scan of the same text, which
/// gives the KEY and MAP lines byte for byte. m3u8-rs cannot supply those: it attaches a KEY or
/// MAP only to the one segment right after it, and writes MAP attributes in HashMap order.
fn segments(text: &str, media: &MediaPlaylist) -> Result<Vec<Segment>, PlaylistError> {
    let scanned = scan(text);
    if media.segments.is_empty() {
        return Err(PlaylistError::NoSegments);
    }
    if scanned.len() != media.segments.len() {
        return Err(PlaylistError::Unparsable(format!(
            "{} segment URIs, but the parser saw {} segments",
            scanned.len(),
            media.segments.len()
        )));
    }
    let mut next_offset = 0u64;
    let mut out = Vec::with_capacity(scanned.len());
    for (parsed, line) in media.segments.iter().zip(scanned) {
        let byte_range = parsed.byte_range.as_ref().map(|range| {
            // An implicit offset continues right after the previous sub-range.
            let offset = range.offset.unwrap_or(next_offset);
            next_offset = offset.saturating_add(range.length);
            (range.length, offset)
        });
        out.push(Segment {
            uri: line.uri.into(),
            duration_ms: (f64::from(parsed.duration) * 1000.0).round() as u64,
            byte_range,
            keys: line.keys.into_iter().map(Box::from).collect(),
            map: line.map.map(Box::from),
        });
    }
    Ok(out)
}

/// Every URI line, with the KEY and MAP lines in effect for it.
fn scan(text: &str) -> Vec<Scanned<'_>> {
    let mut found = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    // KEY lines that follow each other form one set; the next KEY after a segment replaces it.
    let mut keys_closed = false;
    let mut map = None;
    for line in text.lines().map(|line| line.trim_matches([' ', '\t', '\r'])) {
        if line.starts_with("#EXT-X-KEY:") {
            if keys_closed {
                keys.clear();
                keys_closed = false;
            }
            keys.push(line);
        } else if line.starts_with("#EXT-X-MAP:") {
            map = Some(line);
        } else if !line.is_empty() && !line.starts_with('#') {
            found.push(Scanned { uri: line, keys: keys.clone(), map });
            keys_closed = true;
        }
    }
    found
}

/// The sequence number of the segment being recorded at `now_ms`.
fn recording_sequence(segments: &[Segment], loop_ms: u64, now_ms: u64) -> u64 {
    let loops = now_ms / loop_ms;
    let offset = now_ms % loop_ms;
    let mut start = 0u64;
    let mut index = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let end = start.saturating_add(segment.duration_ms);
        if offset < end {
            index = i;
            break;
        }
        start = end;
    }
    loops.saturating_mul(segments.len() as u64).saturating_add(index as u64)
}

/// Does a DISCONTINUITY tag stand before this sequence number? Yes at every loop start but the
/// very first.
fn starts_loop(sequence: u64, count: u64) -> bool {
    sequence > 0 && sequence.is_multiple_of(count)
}

/// Loop starts before `first`: the DISCONTINUITY tags that have slid out of the window.
fn discontinuity_sequence(first: u64, count: u64) -> u64 {
    first.saturating_sub(1) / count
}

impl LiveLoop {
    fn write_window(&self, sequences: std::ops::Range<u64>) -> String {
        let segments = &self.segments;
        let count = segments.len() as u64;
        let (version, target) = (self.version, self.target_duration);
        let mut out = String::new();
        // `write!` to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target}\n\
         #EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            sequences.start,
            discontinuity_sequence(sequences.start, count),
        );
        for define in &self.defines {
            out.push_str(define);
            out.push('\n');
        }
        let mut previous: Option<&Segment> = None;
        for sequence in sequences {
            let Some(segment) = usize::try_from(sequence % count).ok().and_then(|i| segments.get(i)) else {
                continue;
            };
            if previous.is_some() && starts_loop(sequence, count) {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            write_state_changes(&mut out, previous, segment);
            if previous.is_none() && starts_loop(sequence, count) {
                // The first segment's MAP/KEY went into the header above; its tag follows them.
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some((length, offset)) = segment.byte_range {
                let _ = writeln!(out, "#EXT-X-BYTERANGE:{length}@{offset}");
            }
            let _ = writeln!(
                out,
                "#EXTINF:{}.{:03},\n{}",
                segment.duration_ms / 1000,
                segment.duration_ms % 1000,
                segment.uri
            );
            previous = Some(segment);
        }
        out
    }
}

/// Writes the MAP and KEY lines of `segment` where they differ from those of the segment
/// before it in the window (all of them for the first).
fn write_state_changes(out: &mut String, previous: Option<&Segment>, segment: &Segment) {
    if segment.map != previous.and_then(|p| p.map.clone()) {
        if let Some(map) = &segment.map {
            out.push_str(map);
            out.push('\n');
        }
    }
    let previous_keys = previous.map(|p| p.keys.as_slice()).unwrap_or_default();
    if segment.keys.as_slice() != previous_keys {
        if segment.keys.is_empty() {
            // Back to clear segments after encrypted ones (only across a loop).
            out.push_str("#EXT-X-KEY:METHOD=NONE\n");
        }
        for key in &segment.keys {
            out.push_str(key);
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playlist::{rewrite, Issue, Location, SegmentTtl};
    use crate::token::{Key, ParamNames};

    /// Three segments, 16 s a loop.
    const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                       #EXTINF:6.000,\na.ts\n#EXTINF:6,\nb.ts\n#EXTINF:4.0,\nc.ts\n#EXT-X-ENDLIST\n";
    const LOOP_MS: u64 = 16_000;
    const URIS: [&str; 3] = ["a.ts", "b.ts", "c.ts"];
    /// Some instant well after the epoch, at a loop start.
    const T0: u64 = 1_700_000_000_000 / LOOP_MS * LOOP_MS;

    /// What a player reads from a live playlist.
    #[derive(Debug, PartialEq)]
    struct Window {
        media_sequence: u64,
        discontinuity_sequence: u64,
        /// Sequence, discontinuity number and URI of each segment.
        segments: Vec<(u64, u64, String)>,
    }

    fn read(text: &str) -> Window {
        let number =
            |tag: &str| -> u64 { text.lines().find_map(|l| l.strip_prefix(tag)).unwrap().parse().unwrap() };
        let media_sequence = number("#EXT-X-MEDIA-SEQUENCE:");
        let discontinuity_sequence = number("#EXT-X-DISCONTINUITY-SEQUENCE:");
        let (mut sequence, mut discontinuity) = (media_sequence, discontinuity_sequence);
        let mut segments = Vec::new();
        for line in text.lines() {
            if line == "#EXT-X-DISCONTINUITY" {
                discontinuity += 1;
            } else if !line.starts_with('#') {
                segments.push((sequence, discontinuity, line.to_owned()));
                sequence += 1;
            }
        }
        Window { media_sequence, discontinuity_sequence, segments }
    }

    fn live(now_ms: u64) -> String {
        simulate_live(VOD.as_bytes(), 4, now_ms).unwrap()
    }

    #[test]
    fn window_ends_before_the_segment_being_recorded() {
        // 7 s into loop L: segment b (index 1) is being recorded, a is the newest published.
        let loops = T0 / LOOP_MS;
        let w = read(&live(T0 + 7_000));
        assert_eq!(w.segments.len(), 4);
        assert_eq!(w.segments.last().unwrap().0, loops * 3);
        assert_eq!(w.media_sequence, loops * 3 - 3);
        let uris: Vec<_> = w.segments.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(uris, ["a.ts", "b.ts", "c.ts", "a.ts"]);
    }

    #[test]
    fn output_is_exact() {
        // The window starts at a loop start, so its first segment carries the DISCONTINUITY
        // that the sequence number does not count yet.
        let loops = T0 / LOOP_MS;
        let first = loops * 3 - 3;
        let expected = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{}\n#EXT-X-DISCONTINUITY\n#EXTINF:6.000,\na.ts\n#EXTINF:6.000,\nb.ts\n\
             #EXTINF:4.000,\nc.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:6.000,\na.ts\n",
            loops - 2
        );
        assert_eq!(live(T0 + 7_000), expected);
    }

    #[test]
    fn media_sequence_advances_with_the_clock() {
        let at = |ms| read(&live(T0 + ms)).media_sequence;
        assert_eq!(at(5_999), at(0));
        assert_eq!(at(6_000), at(0) + 1);
        assert_eq!(at(12_000), at(0) + 2);
        assert_eq!(at(LOOP_MS), at(0) + 3);
    }

    #[test]
    fn refreshes_agree_on_every_segment_through_two_loops() {
        let mut previous: Option<Window> = None;
        for step in 0..=(2 * LOOP_MS / 250) {
            let now = T0 + step * 250;
            let text = live(now);
            assert_eq!(text, live(now), "pure");
            let w = read(&text);
            assert_eq!(w.segments.len(), 4);
            for (sequence, _, uri) in &w.segments {
                assert_eq!(uri, URIS[(*sequence % 3) as usize]);
            }
            // A DISCONTINUITY stands exactly before each loop start.
            let tags = text.lines().filter(|l| *l == "#EXT-X-DISCONTINUITY").count();
            assert_eq!(tags, w.segments.iter().filter(|s| s.0 % 3 == 0).count());
            if let Some(p) = &previous {
                assert!(w.media_sequence >= p.media_sequence);
                assert!(w.media_sequence <= p.media_sequence + 1);
                // A segment in both windows has the same discontinuity number in both.
                for s in &w.segments {
                    if let Some(old) = p.segments.iter().find(|o| o.0 == s.0) {
                        assert_eq!(old, s, "at {now}");
                    }
                }
            }
            previous = Some(w);
        }
    }

    /// A window whose URIs use variables must define them, or the player cannot read it.
    #[test]
    fn variables_defined_by_the_vod_are_defined_in_every_window() {
        let vod = VOD
            .replace("#EXT-X-VERSION:3", "#EXT-X-VERSION:8\n#EXT-X-DEFINE:NAME=\"p\",VALUE=\"seg_\"")
            .replace("a.ts", "{$p}a.ts");
        let text = simulate_live(vod.as_bytes(), 4, T0 + 7_000).unwrap();
        let define = text.find("#EXT-X-DEFINE:NAME=\"p\",VALUE=\"seg_\"\n").expect("the define is carried");
        assert!(define < text.find("{$p}a.ts").unwrap(), "{text}");
        assert!(text.contains("#EXT-X-VERSION:8\n"));
    }

    #[test]
    fn output_parses_and_can_be_signed() {
        let text = live(T0 + 7_000);
        let Ok(Playlist::MediaPlaylist(media)) = m3u8_rs::parse_playlist_res(text.as_bytes()) else {
            panic!("unparsable: {text}");
        };
        assert_eq!(media.segments.len(), 4);
        assert!(!media.end_list && media.playlist_type.is_none());
        assert!(media.segments[3].discontinuity);
        let (key, names) = (Key::new("k"), ParamNames::default());
        let issue = Issue {
            key: &key,
            ip: None,
            names: &names,
            now: T0 / 1000,
            session_ttl: 3600,
            segment_ttl: SegmentTtl::Auto,
            sticky: None,
        };
        let signed = rewrite(
            text.as_bytes(),
            &Location { path: "/demo/live.m3u8", query: "", origin_bases: &[], public_hosts: &[] },
            &issue,
        )
        .unwrap();
        assert_eq!(signed.matches("?md5=").count(), 4);
    }

    #[test]
    fn window_is_at_least_one() {
        assert_eq!(read(&simulate_live(VOD.as_bytes(), 0, T0).unwrap()).segments.len(), 1);
    }

    #[test]
    fn fmp4_map_keys_and_byte_ranges_carry_over() {
        let vod = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n\
                   #EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"\n\
                   #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://k\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
                   #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,AA\",KEYFORMAT=\"urn:uuid:x\"\n\
                   #EXTINF:4.000,\n#EXT-X-BYTERANGE:1000@700\nmain.mp4\n\
                   #EXTINF:4.000,\n#EXT-X-BYTERANGE:1200\nmain.mp4\n#EXT-X-ENDLIST\n";
        let loop_start = 1_600_000_000_000 / 8_000 * 8_000;
        let text = simulate_live(vod.as_bytes(), 3, loop_start + 1_000).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "#EXT-X-VERSION:7");
        assert_eq!(lines[5], "#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"");
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
        assert_eq!(text.matches("#EXT-X-KEY").count(), 2, "keys unchanged across the window: {text}");
        assert!(text.contains("#EXT-X-BYTERANGE:1200@1700\n"));
        assert!(text.contains("#EXT-X-BYTERANGE:1000@700\n"));
    }

    #[test]
    fn master_and_empty_playlists_are_refused() {
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n";
        assert_eq!(simulate_live(master, 6, T0), Err(PlaylistError::NotMedia));
        let empty = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-ENDLIST\n";
        assert_eq!(simulate_live(empty, 6, T0), Err(PlaylistError::NoSegments));
        let silent = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:0,\na.ts\n";
        assert_eq!(simulate_live(silent, 6, T0), Err(PlaylistError::NoSegments));
        assert!(matches!(simulate_live(b"nope", 6, T0), Err(PlaylistError::Unparsable(_))));
    }
}
