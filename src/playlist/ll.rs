//! Low-Latency HLS blocking playlist reload (RFC 8216bis §6.2.5.2), the playlist's side: what a
//! request with `_HLS_msn`/`_HLS_part` asks for, and whether a playlist text has it yet.
//!
//! Pure: the server holds the request and asks again each time the packager writes.

use std::fmt;

/// What a blocking reload asks for: media sequence number `msn`, and optionally its part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingAsk {
    pub msn: u64,
    pub part: Option<u64>,
}

/// A blocking reload that can never be answered as asked: 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadBlockingAsk {
    PartWithoutMsn,
    NotANumber,
    /// More than two segments ahead of the playlist.
    TooFarAhead,
}

impl BadBlockingAsk {
    pub fn reason(self) -> &'static str {
        match self {
            BadBlockingAsk::PartWithoutMsn => "_HLS_part without _HLS_msn",
            BadBlockingAsk::NotANumber => "_HLS_msn or _HLS_part is not a number",
            BadBlockingAsk::TooFarAhead => "_HLS_msn is more than two segments ahead",
        }
    }
}

impl fmt::Display for BadBlockingAsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// The `_HLS_msn`/`_HLS_part` of a raw query, if any.
pub fn blocking_ask(query: &str) -> Result<Option<BlockingAsk>, BadBlockingAsk> {
    let value = |name: &str| query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='));
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
            .ok_or(BadBlockingAsk::NotANumber)
    };
    match (value("_HLS_msn"), value("_HLS_part")) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(BadBlockingAsk::PartWithoutMsn),
        (Some(msn), part) => Ok(Some(BlockingAsk { msn: number(msn)?, part: part.map(number).transpose()? })),
    }
}

/// Where a live playlist stands: its last complete segment and the parts published of the one
/// after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The media sequence number the next segment will have (one past the last complete one).
    pub next_msn: u64,
    /// `EXT-X-PART`s listed after the last complete segment: parts of segment `next_msn`.
    pub next_parts: u64,
    /// `EXT-X-TARGETDURATION`, in seconds.
    pub target_duration: u64,
}

/// Whether the packager promises blocking reloads (`CAN-BLOCK-RELOAD=YES`): only then is a
/// request held; otherwise it is answered at once, as the spec says.
pub fn can_block_reload(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("#EXT-X-SERVER-CONTROL:") && line.contains("CAN-BLOCK-RELOAD=YES")
    })
}

/// Reads the playlist's position from its lines.
pub fn position(text: &str) -> Position {
    let mut first_msn = 0u64;
    let mut segments = 0u64;
    let mut parts_since_segment = 0u64;
    let mut target_duration = 0u64;
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            first_msn = n.trim().parse().unwrap_or(0);
        } else if let Some(n) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration = n.trim().parse().unwrap_or(0);
        } else if line.starts_with("#EXT-X-PART:") {
            parts_since_segment += 1;
        } else if !line.is_empty() && !line.starts_with('#') {
            segments += 1;
            parts_since_segment = 0;
        }
    }
    Position {
        next_msn: first_msn.saturating_add(segments),
        next_parts: parts_since_segment,
        target_duration,
    }
}

impl Position {
    /// Whether the playlist has what was asked: segment `msn` complete, or (with a part) that
    /// part of the segment in progress. A later segment or part answers an earlier ask.
    pub fn has(&self, ask: BlockingAsk) -> bool {
        match ask.part {
            None => ask.msn < self.next_msn,
            Some(part) => ask.msn < self.next_msn || (ask.msn == self.next_msn && part < self.next_parts),
        }
    }

    /// An ask more than two segments past the last one cannot be for this stream's near future.
    pub fn is_too_far(&self, ask: BlockingAsk) -> bool {
        // The last complete segment is `next_msn - 1`; two past it is `next_msn + 1`.
        ask.msn > self.next_msn.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str =
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0\n\
        #EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:10\n\
        #EXT-X-PART:DURATION=0.5,URI=\"s10.0.mp4\"\n#EXTINF:2,\ns10.mp4\n#EXTINF:2,\ns11.mp4\n\
        #EXT-X-PART:DURATION=0.5,URI=\"s12.0.mp4\"\n#EXT-X-PART:DURATION=0.5,URI=\"s12.1.mp4\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s12.2.mp4\"\n";

    fn ask(msn: u64, part: Option<u64>) -> BlockingAsk {
        BlockingAsk { msn, part }
    }

    #[test]
    fn asks_are_read_from_the_query() {
        assert_eq!(blocking_ask("md5=x&expires=1"), Ok(None));
        assert_eq!(blocking_ask("_HLS_msn=12&md5=x"), Ok(Some(ask(12, None))));
        assert_eq!(blocking_ask("_HLS_part=2&_HLS_msn=12"), Ok(Some(ask(12, Some(2)))));
        assert_eq!(blocking_ask("_HLS_part=2"), Err(BadBlockingAsk::PartWithoutMsn));
        assert_eq!(blocking_ask("_HLS_msn=x"), Err(BadBlockingAsk::NotANumber));
        assert_eq!(blocking_ask("_HLS_msn=1&_HLS_part=-1"), Err(BadBlockingAsk::NotANumber));
        assert_eq!(blocking_ask("_HLS_msn="), Err(BadBlockingAsk::NotANumber));
    }

    #[test]
    fn position_and_what_it_has() {
        assert!(can_block_reload(LL));
        assert!(!can_block_reload("#EXTM3U\n#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL=12\n"));
        let at = position(LL);
        assert_eq!(at, Position { next_msn: 12, next_parts: 2, target_duration: 2 });
        assert!(at.has(ask(11, None)));
        assert!(!at.has(ask(12, None)));
        assert!(at.has(ask(12, Some(1))));
        assert!(!at.has(ask(12, Some(2))));
        assert!(at.has(ask(11, Some(7))), "a complete segment has all its parts");
        assert!(!at.is_too_far(ask(13, Some(0))));
        assert!(at.is_too_far(ask(14, None)));
    }
}
