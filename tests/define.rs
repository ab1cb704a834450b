//! hls.js in Chromium plays a stream whose playlists use variables (`EXT-X-DEFINE`, RFC 8216bis
//! §4.3), through the real server: the rewriter must sign each URI for the path the player makes
//! of it, and leave the written text for the player to substitute.
//!
//! The stream is the committed demo's 180p rendition (8 two-second segments), with playlists
//! written here:
//! - the master takes its variant's folder from its own URL (`QUERYPARAM="r"`, the entry link
//!   carries `r=180p`) and defines `pre` for the media playlist to `IMPORT`;
//! - the media playlist names even segments `{$p}000.ts` (`NAME`/`VALUE`, known to hlsgate: a
//!   file token) and odd ones `{$pre}001.ts` (`IMPORT`ed from the master, which hlsgate does not
//!   see when it rewrites the media playlist: a directory token for `180p/`).
//!
//! hls.js 1.7 supports all three kinds of definition. Needs `scripts/test-deps.sh`.

mod common;

use common::*;

const KEY: &str = "define-key-1";
/// The demo's segments are 2 s each.
const SEGMENTS: usize = 8;

const MASTER: &str = "#EXTM3U\n\
#EXT-X-VERSION:11\n\
#EXT-X-DEFINE:QUERYPARAM=\"r\"\n\
#EXT-X-DEFINE:NAME=\"pre\",VALUE=\"seg_\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=217800,RESOLUTION=320x180,CODECS=\"avc1.4d400c,mp4a.40.2\"\n\
{$r}/index.m3u8\n";

/// The media playlist, VOD: `{$p}` on even segments, the imported `{$pre}` on odd ones.
fn media_playlist() -> String {
    let mut text = String::from(
        "#EXTM3U\n#EXT-X-VERSION:8\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-DEFINE:NAME=\"p\",VALUE=\"seg_\"\n#EXT-X-DEFINE:IMPORT=\"pre\"\n",
    );
    for i in 0..SEGMENTS {
        let variable = if i % 2 == 0 { "p" } else { "pre" };
        text.push_str(&format!("#EXTINF:2.000000,\n{{${variable}}}{i:03}.ts\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// A server with stream `d`: the demo's 180p segments and the playlists above.
fn define_server(simulate_live: bool) -> Server {
    let setup = Setup::new("define");
    let demo = repo_streams().join("demo/180p");
    for i in 0..SEGMENTS {
        let name = format!("seg_{i:03}.ts");
        let bytes = std::fs::read(demo.join(&name)).unwrap_or_else(|e| panic!("read demo {name}: {e}"));
        setup.file(&format!("d/180p/{name}"), bytes);
    }
    setup.file("d/master.m3u8", MASTER).file("d/180p/index.m3u8", media_playlist());
    setup.start("", &format!("[streams.d]\nkeys = [\"{KEY}\"]\nsimulate_live = {simulate_live}\n"))
}

/// `hlsgate_requests_total` series of stream `d`, as (kind, outcome, count).
fn requests(server: &Server) -> Vec<(String, String, u64)> {
    let text = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin(server, "/metrics"))
        .text();
    text.lines()
        .filter_map(|line| line.strip_prefix("hlsgate_requests_total{stream=\"d\",kind=\""))
        .filter_map(|rest| {
            let (kind, rest) = rest.split_once("\",outcome=\"")?;
            let (outcome, n) = rest.split_once("\"} ")?;
            Some((kind.to_string(), outcome.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn hls_js_plays_a_stream_whose_playlists_use_define_queryparam_and_import() {
    plays_five_seconds(false);
}

/// The same stream looped as live: every window must carry the VOD's definitions.
#[test]
fn hls_js_plays_it_live_too() {
    plays_five_seconds(true);
}

fn plays_five_seconds(live: bool) {
    let server = define_server(live);
    // An IP-less entry link as a site hands out, with the parameter the master reads.
    let signed = signed("/d/master.m3u8", KEY, None, now() + 600);
    let entry = format!("http://{}{}", server.viewer_addr(), signed.replacen('?', "?r=180p&", 1));
    let page = player_url(server.viewer_addr(), &entry);

    let started = std::time::Instant::now();
    let result = if live { play_for(&page, 5.0) } else { play(&page, 5.0) };
    eprintln!("{result:?} after {:.1} s", started.elapsed().as_secs_f64());
    let requests = requests(&server);
    eprintln!("requests of stream d: {requests:?}");
    assert!(
        result.fatal.is_none()
            && !result.timed_out
            && if live { result.played >= 5.0 } else { result.current_time >= 5.0 },
        "{result:?}\nrequests: {requests:?}\nserver log:\n{}",
        server.logs().join("\n")
    );

    // Both playlists and every segment request were answered 200: nothing refused, nothing
    // missing. Five seconds of playback needs segments 0, 1 and 2: a `{$p}` one (file token)
    // and an imported `{$pre}` one (directory token) at least.
    let count = |kind: &str, outcome: &str| {
        requests.iter().filter(|(k, o, _)| k == kind && o == outcome).map(|(.., n)| n).sum::<u64>()
    };
    assert!(
        requests.iter().all(|(_, outcome, _)| outcome == "ok"),
        "some requests of stream d were refused: {requests:?}\nserver log:\n{}",
        server.logs().join("\n")
    );
    assert!(count("playlist", "ok") >= 2, "{requests:?}");
    assert!(count("media", "ok") >= 3, "{requests:?}");
    let refused: Vec<String> = server.logs().into_iter().filter(|line| line.contains("refused")).collect();
    assert!(refused.is_empty(), "{refused:#?}");
}
