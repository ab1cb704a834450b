//! Issue 11, LL-HLS: blocking playlist reload (RFC 8216bis §6.2.5.2) for folder streams whose
//! playlist says `CAN-BLOCK-RELOAD=YES`, against a real LL-HLS packager
//! (`tests/llhls_packager.py`: ffmpeg's fMP4 fragments published as 0.333 s `EXT-X-PART`s of
//! 2 s segments, with preload hints, every playlist renamed into place) and against playlists
//! the test writes itself when it needs to know exactly when one appeared.
//!
//! Figures (hold-to-answer delay, 503 timing, player latency, CPU with 1 and 200 held
//! requests) are printed with `eprintln!`; run with `--nocapture` to read them.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hlsgate::token::{sign, Key};

const KEY: &str = "ll-key-2026";
const STREAM: &str = "ll";
const PLAYLIST: &str = "/ll/index.m3u8";
/// The packager's target duration (2 s segments) and part target (8 frames at 24 fps).
const TARGET_DURATION: f64 = 2.0;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn streams_config() -> String {
    format!("[streams.{STREAM}]\nkeys = [\"{KEY}\"]\n")
}

/// The viewer's entry link to the stream's playlist, bound to `ip`, plus `extra` query.
fn entry(ip: &str, extra: &str) -> String {
    let url = signed(PLAYLIST, KEY, Some(ip), now() + 600);
    if extra.is_empty() {
        url
    } else {
        format!("{url}&{extra}")
    }
}

// ---------------------------------------------------------------------------------------
// Reading LL-HLS playlists (the packager's, and the rewritten ones hlsgate sends)
// ---------------------------------------------------------------------------------------

/// Attribute list → map (`DURATION=0.333,URI="a.m4s",INDEPENDENT=YES`); quotes removed.
fn attrs(list: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else { break };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted[(end + 1).min(quoted.len())..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        out.insert(name.trim().to_string(), value.to_string());
        rest = next;
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
struct Part {
    uri: String,
    duration: f64,
    independent: bool,
}

#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    duration: f64,
    uri: String,
    parts: Vec<Part>,
    date: Option<String>,
}

/// The parts of an LL-HLS media playlist this suite looks at.
#[derive(Debug, Clone, Default)]
struct LlPlaylist {
    target_duration: u64,
    media_sequence: u64,
    can_block_reload: bool,
    part_hold_back: Option<f64>,
    part_target: Option<f64>,
    map_uri: Option<String>,
    segments: Vec<Segment>,
    /// Parts after the last complete segment: the segment in progress.
    trailing_parts: Vec<Part>,
    preload_hint: Option<String>,
    endlist: bool,
}

impl LlPlaylist {
    fn parse(text: &str) -> LlPlaylist {
        assert!(text.starts_with("#EXTM3U"), "not a playlist: {text:?}");
        let mut p = LlPlaylist::default();
        let mut parts = Vec::new();
        let mut duration = None;
        let mut date = None;
        let mut msn = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().unwrap();
                msn = Some(p.media_sequence);
            } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
                let a = attrs(v);
                p.can_block_reload = a.get("CAN-BLOCK-RELOAD").is_some_and(|v| v == "YES");
                p.part_hold_back = a.get("PART-HOLD-BACK").map(|v| v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
                p.part_target = attrs(v).get("PART-TARGET").map(|v| v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                p.map_uri = attrs(v).get("URI").cloned();
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                date = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
                let a = attrs(v);
                parts.push(Part {
                    uri: a["URI"].clone(),
                    duration: a["DURATION"].parse().unwrap(),
                    independent: a.get("INDEPENDENT").is_some_and(|v| v == "YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                p.preload_hint = attrs(v).get("URI").cloned();
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                duration = Some(v.trim_end_matches(',').split(',').next().unwrap().parse::<f64>().unwrap());
            } else if line == "#EXT-X-ENDLIST" {
                p.endlist = true;
            } else if !line.starts_with('#') {
                let n = msn.unwrap_or(0);
                p.segments.push(Segment {
                    msn: n,
                    duration: duration.take().expect("URI line without EXTINF"),
                    uri: line.to_string(),
                    parts: std::mem::take(&mut parts),
                    date: date.take(),
                });
                msn = Some(n + 1);
            }
        }
        p.trailing_parts = parts;
        p
    }

    /// Media sequence number of the last complete segment.
    fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.msn)
    }

    /// The (msn, part) a player asks for next: the part after the last listed one.
    fn next_part(&self) -> (u64, usize) {
        let next_msn = self.last_msn().map_or(self.media_sequence, |m| m + 1);
        (next_msn, self.trailing_parts.len())
    }

    /// The rule hlsgate answers by: does this playlist contain part `part` of segment `msn`
    /// (or, with `part` None, the whole segment `msn`)?
    fn contains(&self, msn: u64, part: Option<usize>) -> bool {
        let Some(last) = self.last_msn() else {
            return part.is_some_and(|p| msn == self.media_sequence && self.trailing_parts.len() > p);
        };
        msn <= last || part.is_some_and(|p| msn == last + 1 && self.trailing_parts.len() > p)
    }

    /// Every URI the playlist names with the part/segment it is (`seg3.part1.m4s?…`).
    fn all_part_uris(&self) -> Vec<String> {
        self.segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(&self.trailing_parts)
            .map(|p| p.uri.clone())
            .collect()
    }
}

/// `seg12.part3.m4s?md5=…` → `seg12.part3.m4s`.
fn file_of(uri: &str) -> &str {
    uri.split('?').next().unwrap()
}

/// The `md5` and `expires` of a signed URI.
fn token_of(uri: &str) -> (String, u64) {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let mut md5 = None;
    let mut expires = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("md5", v)) => md5 = Some(v.to_string()),
            Some(("expires", v)) => expires = v.parse().ok(),
            _ => {}
        }
    }
    (
        md5.unwrap_or_else(|| panic!("no md5 in {uri}")),
        expires.unwrap_or_else(|| panic!("no expires in {uri}")),
    )
}

/// Is `uri` (relative to the stream folder) signed for this viewer's address with the stream key?
fn signed_for(uri: &str, ip: &str) -> bool {
    let (md5, expires) = token_of(uri);
    sign(expires, &format!("/{STREAM}/{}", file_of(uri)), Some(ip), &Key::new(KEY)) == md5
}

// ---------------------------------------------------------------------------------------
// The packager (tests/llhls_packager.py)
// ---------------------------------------------------------------------------------------

/// One line the packager logged.
#[derive(Debug, Clone)]
struct PackEvent {
    event: String,
    /// Unix seconds, right after the rename.
    t: f64,
    /// Unix seconds, just before the temp file was written: the rename came between the two.
    before: f64,
    /// Last complete segment (-1 before the first).
    msn: i64,
    /// Parts of the segment in progress.
    parts: usize,
}

impl PackEvent {
    /// Did the playlist this event announced contain part `part` of `msn` (hlsgate's rule)?
    fn contains(&self, msn: u64, part: Option<usize>) -> bool {
        let msn = msn as i64;
        msn <= self.msn || part.is_some_and(|p| msn == self.msn + 1 && self.parts > p)
    }
}

struct Packager {
    proc: Bounded,
    dir: PathBuf,
}

impl Packager {
    /// Starts the packager writing into `dir` and waits for its first complete segment.
    fn start(dir: &Path, extra: &[&str]) -> Packager {
        let script = repo_root().join("tests/llhls_packager.py");
        let mut cmd = Command::new("python3");
        cmd.arg("-u").arg(&script).arg(dir).args(["--seconds", "150"]).args(extra);
        let packager = Packager { proc: Bounded::spawn(&mut cmd), dir: dir.to_path_buf() };
        packager.wait_for(Duration::from_secs(30), |e| e.msn >= 0);
        packager
    }

    fn events(&self) -> Vec<PackEvent> {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| PackEvent {
                event: v["event"].as_str().unwrap_or("").to_string(),
                t: v["t"].as_f64().unwrap_or(0.0),
                before: v["before"].as_f64().unwrap_or(0.0),
                msn: v["msn"].as_i64().unwrap_or(-1),
                parts: v["parts"].as_u64().unwrap_or(0) as usize,
            })
            .filter(|e| e.event == "playlist")
            .collect()
    }

    /// Waits for the first playlist event (among all, past ones included) matching `pred`.
    fn wait_for(&self, limit: Duration, pred: impl Fn(&PackEvent) -> bool) -> PackEvent {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no packager event as wanted within {limit:?}; stderr:\n{}\nstdout:\n{}",
                self.proc.stderr_text(),
                self.proc.stdout_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the next playlist the packager writes after now, and returns its event.
    fn next_event(&self, limit: Duration, pred: impl Fn(&PackEvent) -> bool) -> PackEvent {
        let seen = self.events().len();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events().into_iter().skip(seen).find(|e| pred(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no new packager event within {limit:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn playlist(&self) -> LlPlaylist {
        LlPlaylist::parse(&std::fs::read_to_string(self.dir.join("index.m3u8")).unwrap())
    }

    fn stop(self) -> String {
        self.proc.stop()
    }
}

/// A server on a fresh setup whose `streams/ll` a packager fills; the packager is started
/// first (it takes a few seconds to write its first segment).
fn packager_and_server(label: &str, top: &str) -> (Packager, Server) {
    let setup = Setup::new(label);
    let dir = setup.streams().join(STREAM);
    let packager = Packager::start(&dir, &[]);
    let server = setup.start(top, &streams_config());
    (packager, server)
}

/// A playlist the test writes itself: `complete` segments from `first` (2 s, 6 parts each,
/// parts listed for the last two) and `parts` parts of the next, with a preload hint.
fn static_playlist(first: u64, complete: u64, parts: usize, target: u64, block: bool) -> String {
    let mut s = format!("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:{target}\n");
    if block {
        s += "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002\n";
    } else {
        s += "#EXT-X-SERVER-CONTROL:PART-HOLD-BACK=1.002\n";
    }
    s += &format!(
        "#EXT-X-PART-INF:PART-TARGET=0.334\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-MAP:URI=\"init.mp4\"\n"
    );
    let seg_duration = target as f64;
    for msn in first..first + complete {
        if msn + 2 >= first + complete {
            for k in 0..6 {
                s +=
                    &format!("#EXT-X-PART:DURATION={:.5},URI=\"seg{msn}.part{k}.m4s\"\n", seg_duration / 6.0);
            }
        }
        s += &format!("#EXTINF:{seg_duration:.5},\nseg{msn}.m4s\n");
    }
    let next = first + complete;
    for k in 0..parts {
        s += &format!("#EXT-X-PART:DURATION={:.5},URI=\"seg{next}.part{k}.m4s\"\n", seg_duration / 6.0);
    }
    s += &format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg{next}.part{parts}.m4s\"\n");
    s
}

/// Writes `text` as `<dir>/index.m3u8` the way packagers should: a temp file, then a rename.
fn rename_in(dir: &Path, text: &str) {
    let tmp = dir.join(".index.m3u8.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("index.m3u8")).unwrap();
}

/// A server on a stream folder holding a playlist written by the test.
fn static_server(label: &str, text: &str, top: &str) -> (Server, PathBuf) {
    let setup = Setup::new(label);
    let dir = setup.streams().join(STREAM);
    std::fs::create_dir_all(&dir).unwrap();
    rename_in(&dir, text);
    let server = setup.start(top, &streams_config());
    (server, dir)
}

/// GET of the playlist with `_HLS_*` parameters, as viewer `ip`; returns the response and how
/// long it took.
async fn blocking_get(server: &Server, ip: &str, hls: &str, limit: Duration) -> (Response, Duration) {
    let start = Instant::now();
    let resp = Request::get(server.viewer_addr(), &entry(ip, hls))
        .from(ip)
        .header("Origin", "https://player.example")
        .timeout(limit)
        .send()
        .await;
    (resp, start.elapsed())
}

fn hls_query(msn: u64, part: Option<usize>) -> String {
    match part {
        Some(p) => format!("_HLS_msn={msn}&_HLS_part={p}"),
        None => format!("_HLS_msn={msn}"),
    }
}

// ---------------------------------------------------------------------------------------
// 0. The packager on its own: valid LL-HLS that ffmpeg can read
// ---------------------------------------------------------------------------------------

#[test]
fn the_packager_writes_valid_ll_hls() {
    let dir = TempDir::new("llpack");
    let out = dir.join("ll");
    let packager = Packager::start(&out, &[]);

    // Watch every playlist version for 5 s more: each one checked as a player would read it.
    let mut versions = 0;
    let mut last_text = String::new();
    let mut last_position = (0u64, 0usize);
    let mut hint_then_part = 0;
    let mut pending_hint: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(out.join("index.m3u8")).unwrap();
        if text == last_text {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let p = LlPlaylist::parse(&text);
        versions += 1;
        let part_target = p.part_target.expect("EXT-X-PART-INF:PART-TARGET");
        assert_eq!(p.target_duration, 2, "{text}");
        assert!(p.can_block_reload, "{text}");
        assert!(p.part_hold_back.unwrap() >= 3.0 * part_target, "PART-HOLD-BACK < 3 x PART-TARGET:\n{text}");
        assert_eq!(p.map_uri.as_deref(), Some("init.mp4"));
        assert!(!p.segments.is_empty() && !p.endlist);
        for s in &p.segments {
            assert!(s.duration.round() as u64 <= p.target_duration, "EXTINF over the target: {text}");
            assert!(s.date.is_some(), "segment {} has no PROGRAM-DATE-TIME", s.msn);
            assert!(out.join(file_of(&s.uri)).exists(), "{} listed before it was written", s.uri);
            if !s.parts.is_empty() {
                assert_eq!(s.parts.len(), 6, "{text}");
                let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
                assert!((sum - s.duration).abs() < 0.002, "parts sum {sum} != EXTINF {}", s.duration);
                // The segment is its parts, byte for byte.
                let whole = std::fs::read(out.join(&s.uri)).unwrap();
                let joined: Vec<u8> =
                    s.parts.iter().flat_map(|p| std::fs::read(out.join(&p.uri)).unwrap()).collect();
                assert!(whole == joined, "{} is not the concatenation of its parts", s.uri);
            }
        }
        for part in p.segments.iter().flat_map(|s| &s.parts).chain(&p.trailing_parts) {
            assert!(part.duration <= part_target, "part over PART-TARGET: {text}");
            assert!(part.independent);
            assert!(out.join(&part.uri).exists(), "{} listed before it was written", part.uri);
        }
        // Parts are listed within 3 target durations of the end (and only there).
        let with_parts = p.segments.iter().filter(|s| !s.parts.is_empty()).count();
        assert!((1..=3).contains(&with_parts), "{text}");
        // The hint names the part after the last one listed, which the next playlist lists.
        let (next_msn, next_k) = p.next_part();
        assert_eq!(p.preload_hint.as_deref(), Some(format!("seg{next_msn}.part{next_k}.m4s").as_str()));
        if let Some(hint) = pending_hint.take() {
            if p.all_part_uris().contains(&hint) {
                hint_then_part += 1;
            }
        }
        pending_hint = p.preload_hint.clone();
        // Moves forward one part at a time (or more, if this loop missed a version).
        assert!(
            (next_msn, next_k) > last_position,
            "went back: {last_position:?} -> {:?}",
            (next_msn, next_k)
        );
        last_position = (next_msn, next_k);
        last_text = text;
    }
    assert!(versions >= 10, "only {versions} playlist versions in 5 s (one per 0.333 s part expected)");
    assert!(hint_then_part >= 8, "hinted parts showed up in the next playlist {hint_then_part} times");

    // Parts come out every ~0.333 s.
    let times: Vec<f64> = packager.events().iter().map(|e| e.t).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let (min, median, max) = spread(&gaps);
    eprintln!(
        "packager: {} playlists, gap between them min {min:.3} median {median:.3} max {max:.3} s",
        times.len()
    );
    assert!((0.25..0.42).contains(&median), "parts every {median} s");

    // ffmpeg reads it as plain HLS (segments and EXT-X-MAP; it ignores the parts) over HTTP.
    let mut http = Command::new("python3");
    http.args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"]).arg(dir.path());
    let http = Bounded::spawn(&mut http);
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = loop {
        let line = http.stdout_lines().into_iter().find(|l| l.contains(" port "));
        if let Some(port) =
            line.and_then(|l| l.split(" port ").nth(1)?.split_whitespace().next()?.parse::<u16>().ok())
        {
            break port;
        }
        assert!(Instant::now() < deadline, "http.server did not start: {}", http.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    // Python's server speaks HTTP/1.0 and closes each connection: no persistent reuse. One
    // retry, reported: a failed first read once showed "Invalid NAL unit size" that no later run
    // reproduced, while the segments themselves always probe clean (below).
    let read = || {
        run_bounded(
            Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-v", "error", "-xerror", "-http_persistent", "0", "-i"])
                .arg(format!("http://127.0.0.1:{port}/ll/index.m3u8"))
                .args(["-t", "3", "-progress", "pipe:1", "-f", "null", "-"]),
            Duration::from_secs(45),
        )
    };
    let mut run = read();
    if !run.status.success() {
        eprintln!("ffmpeg's first read of the packager's playlist failed, retrying:\n{}", run.stderr);
        run = read();
    }
    drop(http);
    assert!(run.status.success(), "ffmpeg could not read the packager's playlist:\n{}", run.stderr);
    assert!(ffmpeg_out_seconds(&run.stdout) >= 2.9, "ffmpeg read {} s", ffmpeg_out_seconds(&run.stdout));

    // A whole segment decodes with the init section: 48 frames.
    let p = packager.playlist();
    let segment = p.segments.last().unwrap();
    let probe = probe_with_init(&out, &segment.uri, &dir.join("segment.mp4"));
    assert_eq!(probe.stdout.trim(), "h264,320,180,48", "{}", probe.stderr);

    // A part alone decodes (with the init section): 8 frames of 320x180 H.264.
    let part = &segment.parts[2];
    let probe = probe_with_init(&out, &part.uri, &dir.join("part.mp4"));
    assert_eq!(probe.stdout.trim(), "h264,320,180,8", "{}", probe.stderr);
    packager.stop();
}

// ---------------------------------------------------------------------------------------
// 1. A blocking request for the next part is answered as soon as the packager writes it
// ---------------------------------------------------------------------------------------

#[test]
fn a_blocking_request_for_the_next_part_is_answered_when_the_packager_writes_it() {
    let (packager, server) = packager_and_server("llhold", "");
    let ip = "127.0.0.1";
    let mut delays = Vec::new();
    let mut lower = Vec::new();
    let mut not_held = 0;
    block_on(async {
        // Warm up (first requests pay for lazy initialisation).
        let (resp, _) = blocking_get(&server, ip, "", HTTP_TIMEOUT).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        while delays.len() < 12 {
            assert!(not_held < 20, "the next part was already there {not_held} times: cannot measure");
            // Right after the packager wrote a playlist, ask for the part after it: it is
            // about 0.333 s away.
            packager.next_event(Duration::from_secs(10), |_| true);
            let (resp, _) = blocking_get(&server, ip, "", HTTP_TIMEOUT).await;
            let now_listed = LlPlaylist::parse(&resp.text());
            let (msn, part) = now_listed.next_part();
            let sent = now_f64();
            let (resp, took) = blocking_get(&server, ip, &hls_query(msn, Some(part)), HTTP_TIMEOUT).await;
            let arrived = now_f64();
            assert_eq!(resp.status, 200, "_HLS_msn={msn}&_HLS_part={part}: {}", resp.text());
            let answer = LlPlaylist::parse(&resp.text());
            assert!(
                answer.contains(msn, Some(part)),
                "the answer to _HLS_msn={msn}&_HLS_part={part} does not contain it:\n{}",
                resp.text()
            );
            assert!(
                answer.all_part_uris().iter().all(|u| signed_for(u, ip)),
                "the answer is not signed for {ip}:\n{}",
                resp.text()
            );
            // When did the packager rename the first playlist that contains it? Between its
            // `before` and `t`: the delay is at most arrived - before, at least arrived - t.
            let written = packager.wait_for(Duration::from_secs(5), |e| e.contains(msn, Some(part)));
            if written.t < sent {
                not_held += 1; // it was already there (the request raced the packager)
                continue;
            }
            delays.push(arrived - written.before);
            lower.push(arrived - written.t);
            eprintln!(
                "held {:.0} ms for seg{msn}.part{part}; answered {:.1} ms after the packager began writing \
                 the playlist with it ({:.1} ms after its rename returned)",
                took.as_secs_f64() * 1e3,
                (arrived - written.before) * 1e3,
                (arrived - written.t) * 1e3
            );
        }
    });
    let ms = |(a, b, c): (f64, f64, f64)| {
        format!("min {:.1} ms, median {:.1} ms, max {:.1} ms", a * 1e3, b * 1e3, c * 1e3)
    };
    eprintln!(
        "hold-to-answer over {} requests (HTTP/1.1), from the packager starting to write: {}; \
         from its rename returning: {} ({not_held} not held)",
        delays.len(),
        ms(spread(&delays)),
        ms(spread(&lower))
    );
    // The issue's bound, with grace for one hiccup of a loaded machine.
    let over: Vec<f64> = delays.iter().copied().filter(|d| *d > 0.150).collect();
    assert!(
        over.len() <= 1,
        "answered more than 150 ms after the playlist was written: {over:?} of {delays:?}"
    );
    assert!(
        over.iter().all(|d| *d <= 0.500),
        "answered more than 500 ms after the playlist was written: {over:?}"
    );
    packager.stop();
}

// ---------------------------------------------------------------------------------------
// 2. What is refused at once: too far ahead, a part without a segment, a bad token
// ---------------------------------------------------------------------------------------

#[test]
fn blocking_requests_too_far_ahead_or_malformed_or_unsigned_are_refused_at_once() {
    let (packager, server) = packager_and_server("llrefuse", "");
    let ip = "127.0.0.1";
    let addr = server.viewer_addr();
    // Right after a segment completed: the next one is ~2 s away, so "last" stays put while
    // the requests below run.
    let event = packager.next_event(Duration::from_secs(10), |e| e.parts == 0);
    let last = event.msn as u64;
    block_on(async {
        let quick = Duration::from_secs(1);
        for (query, want) in [
            (format!("_HLS_msn={}", last + 3), 400),
            (format!("_HLS_msn={}&_HLS_part=0", last + 3), 400),
            (format!("_HLS_msn={}", last + 100), 400),
            ("_HLS_part=0".to_string(), 400),
            ("_HLS_part=2".to_string(), 400),
            // Already there: answered at once.
            (format!("_HLS_msn={last}"), 200),
            (format!("_HLS_msn={last}&_HLS_part=5"), 200),
            (format!("_HLS_msn={}", last.saturating_sub(2)), 200),
        ] {
            let (resp, took) = blocking_get(&server, ip, &query, HTTP_TIMEOUT).await;
            eprintln!("{query}: {} in {:.0} ms", resp.status, took.as_secs_f64() * 1e3);
            assert_eq!(resp.status, want, "{query}: {}", resp.text());
            assert!(took < quick, "{query} took {took:?}");
            if want == 200 {
                assert!(LlPlaylist::parse(&resp.text()).contains(last, None));
            }
        }

        // A token is checked before anything is held: no token, another viewer's token, an
        // expired one, each for a part that will come (which would otherwise be held).
        let hold = hls_query(last + 1, Some(0));
        let unsigned = format!("{PLAYLIST}?{hold}");
        let other_ip = format!("{}&{hold}", signed(PLAYLIST, KEY, Some("127.0.0.9"), now() + 600));
        let expired = format!("{}&{hold}", signed(PLAYLIST, KEY, Some(ip), now() - 60));
        for (target, want) in [(unsigned, 403), (other_ip, 403), (expired, 410)] {
            let start = Instant::now();
            let resp = Request::get(addr, &target).send().await;
            let took = start.elapsed();
            eprintln!("{target}: {} in {:.0} ms", resp.status, took.as_secs_f64() * 1e3);
            assert_eq!(resp.status, want, "{target}: {}", resp.text());
            assert!(took < quick, "{target} was held {took:?} before its {want}");
        }

        // Not in the issue: how a non-number is answered (reported, not asserted).
        for query in
            ["_HLS_msn=x", "_HLS_msn=-1", "_HLS_msn=1&_HLS_part=x", "_HLS_msn=99999999999999999999999"]
        {
            let (resp, took) = blocking_get(&server, ip, query, HTTP_TIMEOUT).await;
            eprintln!("(report) {query}: {} in {:.0} ms", resp.status, took.as_secs_f64() * 1e3);
        }
    });
    // The playlist did not move on during the test, or "+3" might have been "+2".
    assert!(packager.playlist().last_msn().unwrap() <= last + 1);
    packager.stop();
}

// ---------------------------------------------------------------------------------------
// 3. Something that never comes: 503 after three target durations
// ---------------------------------------------------------------------------------------

#[test]
fn a_part_that_never_comes_gets_503_after_three_target_durations() {
    let (packager, server) = packager_and_server("ll503", "");
    packager.wait_for(Duration::from_secs(20), |e| e.msn >= 1);
    packager.stop();
    let p = LlPlaylist::parse(&std::fs::read_to_string(server.dir().join("streams/ll/index.m3u8")).unwrap());
    let last = p.last_msn().unwrap();
    let (next_msn, next_part) = p.next_part();
    let ip = "127.0.0.1";
    let queries = [
        hls_query(next_msn, Some(next_part)),
        hls_query(last + 1, None),
        hls_query(last + 2, None),
        hls_query(last + 2, Some(3)),
    ];
    let results = block_on(async {
        let limit = Duration::from_secs(30);
        let gets = queries.iter().map(|q| blocking_get(&server, ip, q, limit));
        futures_util::future::join_all(gets).await
    });
    let hold_limit = 3.0 * TARGET_DURATION;
    for (query, (resp, took)) in queries.iter().zip(&results) {
        eprintln!(
            "stopped packager, {query}: {} after {:.2} s (3 target durations = {hold_limit} s)",
            resp.status,
            took.as_secs_f64()
        );
    }
    for (query, (resp, took)) in queries.iter().zip(&results) {
        assert_eq!(resp.status, 503, "{query}: {}", resp.text());
        let took = took.as_secs_f64();
        assert!(took >= hold_limit - 0.5, "{query}: 503 after {took:.2} s, before 3 target durations");
        assert!(took <= hold_limit + 4.0, "{query}: 503 only after {took:.2} s");
        // Even the refusal carries CORS headers (a browser player must see the status).
        assert!(resp.header("access-control-allow-origin").is_some(), "503 without CORS: {:?}", resp.headers);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Playlists the test writes: without CAN-BLOCK-RELOAD, renamed in, written in place
// ---------------------------------------------------------------------------------------

#[test]
fn a_playlist_without_can_block_reload_is_answered_at_once() {
    let text = static_playlist(100, 4, 2, 2, false);
    let (server, _dir) = static_server("llnoblock", &text, "");
    block_on(async {
        for query in ["_HLS_msn=104&_HLS_part=2", "_HLS_msn=104", "_HLS_msn=105", "_HLS_msn=103&_HLS_part=1"]
        {
            let (resp, took) = blocking_get(&server, "127.0.0.1", query, HTTP_TIMEOUT).await;
            eprintln!("no CAN-BLOCK-RELOAD, {query}: {} in {:.0} ms", resp.status, took.as_secs_f64() * 1e3);
            assert_eq!(resp.status, 200, "{query}: {}", resp.text());
            assert!(took < Duration::from_secs(1), "{query} was held {took:?}");
            let p = LlPlaylist::parse(&resp.text());
            assert_eq!(p.last_msn(), Some(103));
            assert_eq!(p.trailing_parts.len(), 2);
        }
    });
}

#[test]
fn held_requests_are_answered_on_rename_and_on_write_in_place_rewritten_per_viewer() {
    let (server, dir) = static_server("llstatic", &static_playlist(100, 4, 2, 2, true), "");
    let viewers = ["127.0.0.2", "127.0.0.3"];
    block_on(async {
        // Already contained → at once.
        let (resp, took) = blocking_get(&server, viewers[0], "_HLS_msn=104&_HLS_part=1", HTTP_TIMEOUT).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(took < Duration::from_secs(1), "{took:?}");

        // Two viewers wait for part 2 of 104; a playlist with it is renamed in after 1 s.
        let waits = viewers.map(|ip| blocking_get(&server, ip, "_HLS_msn=104&_HLS_part=2", HTTP_TIMEOUT));
        let writer = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rename_in(&dir, &static_playlist(100, 4, 3, 2, true));
            Instant::now()
        };
        let (results, renamed) = tokio::join!(futures_util::future::join_all(waits), writer);
        for (ip, (resp, took)) in viewers.iter().zip(&results) {
            assert_eq!(resp.status, 200, "{ip}: {}", resp.text());
            let p = LlPlaylist::parse(&resp.text());
            assert_eq!(p.trailing_parts.len(), 3, "{ip} got an old playlist:\n{}", resp.text());
            let uris = p.all_part_uris();
            assert!(
                uris.iter().all(|u| signed_for(u, ip)),
                "{ip}'s answer is not signed for {ip}:\n{}",
                resp.text()
            );
            let other = viewers.iter().find(|v| *v != ip).unwrap();
            assert!(uris.iter().all(|u| !signed_for(u, other)), "{ip}'s answer is signed for {other}");
            assert!(*took >= Duration::from_millis(900), "{ip} was answered before the rename: {took:?}");
        }
        let answered = Instant::now();
        eprintln!(
            "rename: both viewers answered within {:.1} ms of the rename",
            answered.duration_since(renamed).as_secs_f64() * 1e3
        );

        // Written in place (truncate + write, no rename), as some packagers do.
        let wait = blocking_get(&server, viewers[0], "_HLS_msn=105", HTTP_TIMEOUT);
        let writer = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            std::fs::write(dir.join("index.m3u8"), static_playlist(101, 5, 0, 2, true)).unwrap();
            Instant::now()
        };
        let ((resp, took), written) = tokio::join!(wait, writer);
        let delay = Instant::now().duration_since(written);
        eprintln!("in place: answered {:.1} ms after the write", delay.as_secs_f64() * 1e3);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(LlPlaylist::parse(&resp.text()).last_msn(), Some(105), "{}", resp.text());
        assert!(took >= Duration::from_millis(900), "answered before the write: {took:?}");
        assert!(delay < Duration::from_millis(500), "answered {delay:?} after the write");

        // _HLS_part counts parts: one new part is not enough for part 1.
        let wait = blocking_get(&server, viewers[1], "_HLS_msn=106&_HLS_part=1", HTTP_TIMEOUT);
        let writer = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rename_in(&dir, &static_playlist(101, 5, 1, 2, true)); // part 0 of 106 only
            tokio::time::sleep(Duration::from_millis(700)).await;
            rename_in(&dir, &static_playlist(101, 5, 2, 2, true)); // now part 1 too
            Instant::now()
        };
        let ((resp, took), second) = tokio::join!(wait, writer);
        let delay = Instant::now().duration_since(second);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(LlPlaylist::parse(&resp.text()).trailing_parts.len(), 2, "{}", resp.text());
        assert!(took >= Duration::from_millis(1100), "answered on the playlist with part 0 only: {took:?}");
        eprintln!("_HLS_part: answered {:.1} ms after the playlist with the part", delay.as_secs_f64() * 1e3);
        assert!(delay < Duration::from_millis(500));
    });
}

// ---------------------------------------------------------------------------------------
// 5. Preload hints: the URI hinted is the URI the part then appears under
// ---------------------------------------------------------------------------------------

#[test]
fn a_preload_hint_uri_is_the_uri_its_part_then_appears_under() {
    let (packager, server) = packager_and_server("llhint", "");
    let ip = "127.0.0.1";
    let mut compared = 0;
    let mut mismatches = Vec::new();
    block_on(async {
        let (resp, _) = blocking_get(&server, ip, "", HTTP_TIMEOUT).await;
        let mut previous = LlPlaylist::parse(&resp.text());
        // Not in the issue (reported, not asserted): a player that preloads the hint asks for a
        // part that does not exist yet; RFC 8216bis has the server answer it once it does.
        let hint = previous.preload_hint.clone().expect("no preload hint");
        let start = Instant::now();
        let early = Request::get(server.viewer_addr(), &format!("/{STREAM}/{hint}")).send().await;
        eprintln!(
            "(report) GET of the preload hint before its part exists: {} after {:.0} ms",
            early.status,
            start.elapsed().as_secs_f64() * 1e3
        );
        // Follow the live edge part by part with blocking reloads, as an LL-HLS player does,
        // for 24 parts (8 s: several seconds and any rounding step of the expiry pass).
        while compared < 24 {
            let (msn, part) = previous.next_part();
            let (resp, _) = blocking_get(&server, ip, &hls_query(msn, Some(part)), HTTP_TIMEOUT).await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            let next = LlPlaylist::parse(&resp.text());
            let hint = previous.preload_hint.clone().expect("no preload hint");
            let under = next.all_part_uris().into_iter().find(|u| file_of(u) == file_of(&hint));
            let under =
                under.unwrap_or_else(|| panic!("{hint} is not in the next playlist:\n{}", resp.text()));
            compared += 1;
            if under != hint {
                mismatches.push(format!("hinted {hint}\n  listed {under}"));
            }
            assert!(signed_for(&hint, ip), "the hint is not signed for {ip}: {hint}");
            previous = next;
        }
    });
    eprintln!("preload hints: {} of {compared} differ from the part URI", mismatches.len());
    assert!(
        mismatches.is_empty(),
        "{} of {compared} preload-hint URIs differ from the URI the part is then listed under \
         (a player's preloaded request is not reused):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    packager.stop();
}

// ---------------------------------------------------------------------------------------
// 6. 200 viewers holding requests on one playlist cost one watcher
// ---------------------------------------------------------------------------------------

#[test]
fn two_hundred_held_requests_cost_about_what_one_does() {
    raise_nofile_limit();
    // 6 s segments: requests may be held 18 s, long enough to measure while they wait.
    let (server, dir) = static_server("llcpu", &static_playlist(100, 4, 0, 6, true), "");
    let pid = server.pid();
    let window = Duration::from_secs(4);
    let ticks_over = |what: &str| {
        let before = proc_cpu_ticks(pid).unwrap();
        std::thread::sleep(window);
        let used = proc_cpu_ticks(pid).unwrap() - before;
        eprintln!("CPU while {what}: {used} ticks (1/100 s) in {window:?}");
        used
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = server.viewer_addr();
    let target = entry("127.0.0.1", "_HLS_msn=104");
    let hold = |n: usize| {
        (0..n)
            .map(|_| {
                let req = Request::get(addr, &target).timeout(Duration::from_secs(40));
                runtime.spawn(async move { req.send().await })
            })
            .collect::<Vec<_>>()
    };

    std::thread::sleep(Duration::from_millis(500));
    let idle = ticks_over("idle, nothing held");
    let mut held = hold(1);
    std::thread::sleep(Duration::from_millis(700));
    let one = ticks_over("1 request held");
    held.extend(hold(199));
    // Let all 199 connect and be read.
    std::thread::sleep(Duration::from_millis(1500));
    let open = proc_open_fds(pid).unwrap_or(0);
    let many = ticks_over("200 requests held");
    assert!(open >= 200, "only {open} fds open in the server: were the 200 requests held?");

    // Then one playlist with 104 in it answers all 200.
    let renamed = Instant::now();
    rename_in(&dir, &static_playlist(101, 4, 0, 6, true));
    let answers = runtime.block_on(async {
        let mut out = Vec::new();
        for h in held {
            out.push(h.await.unwrap());
        }
        out
    });
    let fan_out = renamed.elapsed();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    eprintln!(
        "CPU ticks in {window:?}: idle {idle}, 1 held {one}, 200 held {many}; \
         one rename answered all 200 in {:.0} ms ({ok} x 200)",
        fan_out.as_secs_f64() * 1e3
    );
    assert_eq!(ok, 200, "statuses: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(answers.iter().all(|r| LlPlaylist::parse(&r.text()).last_msn() == Some(104)));
    // One watcher: 200 pollers at 10 ms would be 20 000 stat calls a second. Generous: half a
    // core-second of CPU more over the 4 s for 200 than for 1.
    assert!(many <= one + 50, "200 held requests cost {many} ticks in {window:?}, 1 cost {one}");
}

// ---------------------------------------------------------------------------------------
// 7. HTTP/2: a held request does not stall the other streams of its connection
// ---------------------------------------------------------------------------------------

/// `curl -Z` (parallel, multiplexed on one HTTP/2 connection) of `urls`; per transfer:
/// (url, status, http_version, time_total, num_connects).
fn curl_parallel(args: &[&str], urls: &[String]) -> Vec<(String, u16, String, f64, u32)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-Z", "--max-time", "30", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{url} %{http_code} %{http_version} %{time_total} %{num_connects}\\n"]);
    cmd.args(args).args(urls);
    let run = run_bounded(&mut cmd, Duration::from_secs(45));
    assert!(run.status.success(), "curl -Z failed ({}): {}", run.status, run.stderr);
    run.stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((
                w.first()?.to_string(),
                w.get(1)?.parse().ok()?,
                w.get(2)?.to_string(),
                w.get(3)?.parse().ok()?,
                w.get(4)?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn a_held_request_does_not_stall_its_h2_connection() {
    let setup = Setup::new("llh2");
    let certs = make_cert(&setup.dir.join("tls"), "cert", "hlsgate-ll-test", 0xC001, KeyKind::EcP256);
    let dir = setup.streams().join(STREAM);
    std::fs::create_dir_all(&dir).unwrap();
    rename_in(&dir, &static_playlist(100, 4, 0, 2, true));
    std::fs::write(dir.join("seg103.m4s"), vec![7u8; 100_000]).unwrap();
    let tls = format!("tls_cert = {}\ntls_key = {}\n", toml_path(&certs.cert), toml_path(&certs.key));
    let server = setup.start(&tls, &streams_config());
    let addr = server.viewer_addr();
    let media = signed("/ll/seg103.m4s", KEY, Some("127.0.0.1"), now() + 600);
    let held = entry("127.0.0.1", "_HLS_msn=104");
    let urls = [format!("https://{addr}{held}"), format!("https://{addr}{media}")];
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        rename_in(&dir, &static_playlist(101, 4, 0, 2, true));
    });
    let cacert = certs.cert.to_string_lossy().into_owned();
    let results = curl_parallel(&["--http2", "--cacert", &cacert], &urls);
    writer.join().unwrap();
    eprintln!("h2, one connection: {results:?}");
    assert_eq!(results.len(), 2, "{results:?}");
    let playlist = results.iter().find(|r| r.0.contains("_HLS_msn")).unwrap();
    let segment = results.iter().find(|r| r.0.contains("seg103")).unwrap();
    assert_eq!((playlist.1, playlist.2.as_str()), (200, "2"), "{playlist:?}");
    assert_eq!((segment.1, segment.2.as_str()), (200, "2"), "{segment:?}");
    assert_eq!(playlist.4 + segment.4, 1, "not one connection: {results:?}");
    assert!(playlist.3 >= 1.3, "the playlist was not held: {playlist:?}");
    assert!(segment.3 < 1.0, "the segment waited for the held playlist: {segment:?}");
}

// ---------------------------------------------------------------------------------------
// 8. hls.js in low-latency mode, over HTTP/2 with TLS, keeps up with the live edge
// ---------------------------------------------------------------------------------------

/// The packager starts at media sequence 100, as a stream a viewer joins has been running a
/// while. Joined at sequence 0 on a quiet machine (Chromium up before the second segment),
/// hls.js settles 4 s behind live and re-requests the first segment's last part hundreds of
/// times: an open finding, not yet pinned on hlsgate, the test packager or hls.js (see the
/// session note of 2026-12-01); on a loaded machine the join came later and it played at 1.2 s.
#[test]
fn hlsjs_low_latency_plays_over_h2_and_stays_within_3s_of_live() {
    let setup = Setup::new("llplay");
    let certs = make_cert(&setup.dir.join("tls"), "cert", "hlsgate-ll-test", 0xC002, KeyKind::EcP256);
    let packager = Packager::start(&setup.streams().join(STREAM), &["--start-msn", "100"]);
    let tls = format!("tls_cert = {}\ntls_key = {}\n", toml_path(&certs.cert), toml_path(&certs.key));
    let server = setup.start(&tls, &streams_config());
    let base = format!("https://{}", server.viewer_addr());
    let src = format!("{base}{}", entry("127.0.0.1", ""));
    let options = PlayOptions {
        ignore_https_errors: true,
        hls_config: Some(r#"{"lowLatencyMode":true}"#.to_string()),
        latency: true,
        resources: true,
    };
    let report = play_with(&player_url_at(&base, &src), 15.0, "played", 75, &options);
    packager.stop();
    let playback = &report.playback;
    assert!(playback.fatal.is_none() && !playback.timed_out, "{playback:?}\n{}", report.stderr);
    assert!(playback.played >= 15.0, "{playback:?}");
    assert_eq!(report.json["lowLatencyMode"].as_bool(), Some(true), "{}", report.json);

    let resources = report.resources();
    let ours: Vec<&(String, String)> = resources.iter().filter(|(name, _)| name.contains("/ll/")).collect();
    let blocking = ours.iter().filter(|(name, _)| name.contains("_HLS_msn=")).count();
    let parts = ours.iter().filter(|(name, _)| name.contains(".part")).count();
    // An aborted fetch (hls.js cancels a blocking reload it no longer needs) has no protocol.
    let aborted = ours.iter().filter(|(_, proto)| proto.is_empty()).count();
    let not_h2: Vec<_> = ours.iter().filter(|(_, proto)| !proto.is_empty() && proto != "h2").collect();
    eprintln!(
        "hls.js fetched {} resources from the stream: {blocking} blocking playlist reloads, {parts} parts, \
         {aborted} aborted; not h2: {}",
        ours.len(),
        not_h2.len()
    );
    assert!(not_h2.is_empty(), "fetched without h2: {not_h2:?}");
    assert!(blocking >= 10, "hls.js made {blocking} blocking reloads: {ours:?}");
    assert!(parts >= 20, "hls.js fetched {parts} parts");

    // Latency while playing (from 2 s of played media on; the first samples are the join).
    let samples = report.latency();
    let playing: Vec<_> = samples.iter().filter(|s| s.3 >= 2.0).collect();
    let latency: Vec<f64> = playing.iter().map(|s| s.1).collect();
    let wall: Vec<f64> = playing.iter().filter_map(|s| s.2).collect();
    let (lmin, lmed, lmax) = spread(&latency);
    let (wmin, wmed, wmax) = spread(&wall);
    eprintln!(
        "hls.latency over {} samples: min {lmin:.2} median {lmed:.2} max {lmax:.2} s; \
         wall clock (now - playingDate): min {wmin:.2} median {wmed:.2} max {wmax:.2} s",
        latency.len()
    );
    assert!(latency.len() >= 40, "{} latency samples", latency.len());
    assert!(lmax < 3.0, "hls.latency reached {lmax:.2} s: {latency:?}");
}

// ---------------------------------------------------------------------------------------
// 9. Held requests and the rest of the server's life: hang-ups, SIGTERM
// ---------------------------------------------------------------------------------------

#[test]
fn viewers_who_hang_up_release_their_held_requests() {
    raise_nofile_limit();
    let (server, _dir) = static_server("llhangup", &static_playlist(100, 4, 0, 4, true), "");
    let pid = server.pid();
    let addr = server.viewer_addr();
    let baseline = proc_open_fds(pid).unwrap();
    let hold_limit = Duration::from_secs(12); // 3 x TARGETDURATION:4
    let (peak, released) = block_on(async {
        let request = Request::get(addr, &entry("127.0.0.1", "_HLS_msn=104")).to_bytes();
        let mut streams = Vec::new();
        for _ in 0..100 {
            use tokio::io::AsyncWriteExt;
            let mut s = connect_from(addr, "127.0.0.1".parse().unwrap()).await.unwrap();
            s.write_all(&request).await.unwrap();
            streams.push(s);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let peak = proc_open_fds(pid).unwrap();
        let hung_up = Instant::now();
        drop(streams);
        let deadline = hung_up + hold_limit + Duration::from_secs(3);
        loop {
            let open = proc_open_fds(pid).unwrap();
            if open <= baseline + 2 {
                return (peak, Some(hung_up.elapsed()));
            }
            if Instant::now() > deadline {
                return (peak, None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    eprintln!("100 held requests whose viewers hung up: fds {baseline} -> {peak}, back to baseline after {released:?}");
    assert!(peak >= baseline + 100, "the requests were not held: fds {baseline} -> {peak}");
    let released = released.expect("the server still holds the hung-up requests after 3 target durations");
    // Not in the issue: released at once or at the latest when the hold would have expired.
    assert!(released <= hold_limit + Duration::from_secs(2), "released after {released:?}");
    // And the server still holds and answers new ones.
    let (resp, _) = block_on(blocking_get(&server, "127.0.0.1", "_HLS_msn=103", HTTP_TIMEOUT));
    assert_eq!(resp.status, 200);
}

#[test]
fn sigterm_does_not_cut_a_held_request() {
    let (server, _dir) =
        static_server("llterm", &static_playlist(100, 4, 0, 2, true), "drain_timeout = 30\n");
    let addr = server.viewer_addr();
    let target = entry("127.0.0.1", "_HLS_msn=104");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let req = Request::get(addr, &target).timeout(Duration::from_secs(30));
    let start = Instant::now();
    let held = runtime.spawn(async move { http(&req).await });
    std::thread::sleep(Duration::from_millis(800));
    server.signal("TERM");
    server.wait_for_log("shutting down", Duration::from_secs(5));
    let answer = runtime.block_on(held).unwrap();
    let took = start.elapsed();
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 15 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "SIGTERM with a request held: it got {:?} after {took:.2?}; exit {status}",
        answer.as_ref().map(|r| r.status)
    );
    // What the issue asks of the drain: what is in flight finishes with an answer, not a cut
    // connection. For a held request that is its 200 or its 503 (or an answer at once).
    let answer = answer.unwrap_or_else(|e| panic!("the held request was cut by SIGTERM: {e}"));
    assert!(matches!(answer.status, 200 | 503), "{} {}", answer.status, answer.text());
    assert!(status.success(), "exit {status}");
}

/// ffprobe's codec, size and decoded frame count of `media` (a segment or part in `out`) joined
/// to the packager's init section at `joined`.
fn probe_with_init(out: &std::path::Path, media: &str, joined: &std::path::Path) -> Finished {
    let mut bytes = std::fs::read(out.join("init.mp4")).unwrap();
    bytes.extend(std::fs::read(out.join(media)).unwrap());
    std::fs::write(joined, bytes).unwrap();
    run_bounded(
        Command::new("ffprobe")
            .args(["-v", "error", "-count_frames"])
            .args(["-show_entries", "stream=codec_name,width,height,nb_read_frames"])
            .args(["-of", "csv=p=0"])
            .arg(joined),
        Duration::from_secs(20),
    )
}
