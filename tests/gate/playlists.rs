//! Playlist rewriting: every URI signed for the viewer and checked independently, every other byte kept.

use super::*;

const PL_KEY: &str = "pl-key-1";
const PL_STREAMS: &str = r#"
[streams.s]
keys = ["pl-key-1", "pl-key-0"]
session_ttl = 3000

[streams.det]
keys = ["pl-key-1"]
segment_ttl = 400
"#;
const SESSION: u64 = 3000;

const CHILD_VOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n";

fn master_text(host: &str) -> String {
    format!(
        "#EXTM3U\n\
         #EXT-X-VERSION:7\n\
         ## a comment that looks like a tag: URI=\"not/a/uri.m3u8\"\n\
         #EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-CONTENT-STEERING:SERVER-URI=\"steering.json\",PATHWAY-ID=\"CDN-A\"\n\
         #EXT-X-SESSION-DATA:DATA-ID=\"com.example.title\",URI=\"meta/title.json\"\n\
         #EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"keys/session.key\"\n\
         #EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-id-1\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
         #X-VENDOR-TAG:FOO=bar,URI=\"vendor/tag.m3u8\"\n\
         \n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
         #EXT-X-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.4d400c,mp4a.40.2\",AUDIO=\"aud\",RESOLUTION=320x180\n\
         low/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=400000,AUDIO=\"aud\"\n\
         /s/mid/index.m3u8?quality=mid\n\
         \n\
         #EXT-X-STREAM-INF:BANDWIDTH=800000\n\
         http://{host}/s/high/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=900000\n\
         https://cdn.other.example/s/high/index.m3u8\n\
         #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"low/iframes.m3u8\"\n"
    )
}

const KEYS_LIVE: &str = "#EXTM3U\n\
#EXT-X-VERSION:6\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-MEDIA-SEQUENCE:100\n\
#EXT-X-MAP:BYTERANGE=\"720@0\",URI=\"init.mp4\"\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"keys/k1.key\",IV=0x00000000000000000000000000000001\n\
#EXTINF:4.000,\n\
#EXT-X-BYTERANGE:1000@720\n\
main.mp4\n\
#EXTINF:4.000,\n\
#EXT-X-BYTERANGE:1000\n\
main.mp4\n\
#EXT-X-KEY:METHOD=AES-128,IV=0x00000000000000000000000000000002,URI=\"../shared/k2.key\",KEYFORMAT=\"identity\"\n\
#EXTINF:4.000,title with, a comma\n\
seg102.m4s?cache=1\n\
#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://live-key\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\n\
#EXTINF:4.000,\n\
/s/live/seg103.m4s\n\
#EXT-X-KEY:METHOD=NONE\n\
#EXT-X-DISCONTINUITY\n\
#EXTINF:4.0,\n\
seg104.m4s\n";

const LL_HLS: &str = "#EXTM3U\n\
#EXT-X-TARGETDURATION:4\n\
#EXT-X-VERSION:9\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0,CAN-SKIP-UNTIL=24.0\n\
#EXT-X-PART-INF:PART-TARGET=1.0\n\
#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2026-11-28T18:00:00.000Z\n\
#EXTINF:4.0,\n\
seg10.m4s\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg11.0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg11.1.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg11.2.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=11,LAST-PART=1\n\
#EXT-X-RENDITION-REPORT:URI=\"/s/1080p/index.m3u8\",LAST-MSN=11,LAST-PART=1\n";

const CRLF_VOD: &str = "#EXTM3U\r\n\
#EXT-X-VERSION:3\r\n\
#EXT-X-TARGETDURATION:2\r\n\
#EXT-X-PLAYLIST-TYPE:VOD\r\n\
\r\n\
# made on Windows\r\n\
#EXTINF:2.000,\r\n\
seg_000.ts\r\n\
#EXTINF:2.000,\r\n\
seg_001.ts\r\n\
#EXT-X-ENDLIST\r\n";

/// The playlist stream, its files, and a viewer-side checker.
fn playlist_server() -> Server {
    let setup = Setup::new("playlists");
    for rel in ["audio/en.m3u8", "low/index.m3u8", "mid/index.m3u8", "high/index.m3u8", "low/iframes.m3u8"] {
        setup.file(&format!("s/{rel}"), CHILD_VOD);
    }
    setup
        .file("s/steering.json", "{\"VERSION\":1}")
        .file("s/meta/title.json", "{\"title\":\"t\"}")
        .file("s/keys/session.key", [7u8; 16])
        .file("s/live/keys.m3u8", KEYS_LIVE)
        .file("s/live/init.mp4", pattern(720, 2))
        .file("s/live/main.mp4", pattern(2720, 3))
        .file("s/live/keys/k1.key", [1u8; 16])
        .file("s/shared/k2.key", [2u8; 16])
        .file("s/live/seg102.m4s", "102")
        .file("s/live/seg103.m4s", "103")
        .file("s/live/seg104.m4s", "104")
        .file("s/ll/index.m3u8", LL_HLS)
        .file("s/ll/init.mp4", "init")
        .file("s/crlf/index.m3u8", CRLF_VOD)
        .file("s/crlf/seg_000.ts", "0")
        .file("s/crlf/seg_001.ts", "1")
        .file("det/live.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n")
        .file("det/a.ts", "a")
        .file("s/bad.m3u8", "this is not a playlist\nsecret-segment.ts\n")
        .file(
            "s/badattr.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"unterminated\n#EXTINF:2.0,\nsecret-segment.ts\n",
        );
    for name in ["seg10.m4s", "seg11.0.m4s", "seg11.1.m4s", "seg11.2.m4s"] {
        setup.file(&format!("s/ll/{name}"), name);
    }
    setup.file("s/master.m3u8", master_text(PUBLIC_HOST));
    setup.start(&format!("public_hosts = [\"{PUBLIC_HOST}\"]"), PL_STREAMS)
}

fn viewer_check(server: &Server) -> Rewritten<'_> {
    Rewritten { server, key: PL_KEY, names: ParamNames::default(), viewer: VIEWER, binding: VIEWER.into() }
}

#[tokio::test]
async fn master_playlist_is_signed_uri_by_uri_and_otherwise_byte_identical() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let unsigned = ["skd://key-id-1", "https://cdn.other.example/s/high/index.m3u8"];
    let signed = check.check("/s/master.m3u8", &disk(&server, "s/master.m3u8"), SESSION, &unsigned).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/s/audio/en.m3u8",
            "/s/high/index.m3u8",
            "/s/keys/session.key",
            "/s/low/iframes.m3u8",
            "/s/low/index.m3u8",
            "/s/meta/title.json",
            "/s/mid/index.m3u8",
            "/s/steering.json",
        ]
    );
    // The form of each URI is kept: relative stays relative, other parameters stay.
    let uri_of = |path: &str| &signed.iter().find(|s| s.path == path).unwrap().uri;
    assert!(uri_of("/s/low/index.m3u8").starts_with("low/index.m3u8?md5="));
    assert!(uri_of("/s/mid/index.m3u8").starts_with("/s/mid/index.m3u8?quality=mid&md5="));
    assert!(uri_of("/s/high/index.m3u8").starts_with(&format!("http://{PUBLIC_HOST}/s/high/index.m3u8?md5=")));

    // The recipe nginx documents, computed without any of our code.
    let first = &signed[0];
    assert_eq!(first.token, openssl_token(first.expires, &first.path, VIEWER, PL_KEY));

    check.fetch_all(&signed, OTHER).await;

    // The request's Host picks nothing: a URL naming the server's own address is not a public
    // host, and stays as written whatever the viewer sends (more in tests/security.rs).
    let resp = Request::get(server.viewer_addr(), &check.entry("/s/master.m3u8"))
        .from(VIEWER)
        .header("Host", "cdn.other.example")
        .send()
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("\nhttps://cdn.other.example/s/high/index.m3u8\n"), "{}", resp.text());
}

#[tokio::test]
async fn live_media_playlist_with_keys_maps_and_byteranges() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let ttl = 12; // auto: 3 x TARGETDURATION 4
    let signed =
        check.check("/s/live/keys.m3u8", &disk(&server, "s/live/keys.m3u8"), ttl, &["skd://live-key"]).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/s/live/init.mp4",
            "/s/live/keys/k1.key",
            "/s/live/main.mp4",
            "/s/live/main.mp4",
            "/s/live/seg102.m4s",
            "/s/live/seg103.m4s",
            "/s/live/seg104.m4s",
            "/s/shared/k2.key",
        ]
    );
    assert!(signed.iter().any(|s| s.uri.starts_with("seg102.m4s?cache=1&md5=")));
    assert!(signed.iter().any(|s| s.uri.starts_with("../shared/k2.key?md5=")));
    check.fetch_all(&signed, OTHER).await;
    // The byte ranges a player asks for are served from the signed URI.
    let main = signed.iter().find(|s| s.path == "/s/live/main.mp4").unwrap();
    let resp = Request::get(server.viewer_addr(), &main.target)
        .from(VIEWER)
        .header("Range", "bytes=720-1719")
        .send()
        .await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.body, pattern(2720, 3)[720..1720]);
}

#[tokio::test]
async fn ll_hls_parts_and_preload_hints_signed_rendition_reports_untouched() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let untouched = ["../720p/index.m3u8", "/s/1080p/index.m3u8"];
    let signed = check.check("/s/ll/index.m3u8", &disk(&server, "s/ll/index.m3u8"), 12, &untouched).await;
    let mut paths: Vec<&str> = signed.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["/s/ll/init.mp4", "/s/ll/seg10.m4s", "/s/ll/seg11.0.m4s", "/s/ll/seg11.1.m4s", "/s/ll/seg11.2.m4s"]
    );
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn crlf_vod_playlist_keeps_its_line_endings_and_gets_session_ttl() {
    let server = playlist_server();
    let check = viewer_check(&server);
    let signed = check.check("/s/crlf/index.m3u8", CRLF_VOD.as_bytes(), SESSION, &[]).await;
    assert_eq!(signed.len(), 2);
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn two_fetches_in_a_row_are_byte_identical() {
    let server = playlist_server();
    let check = viewer_check(&server);
    for path in ["/s/master.m3u8", "/det/live.m3u8"] {
        let target = check.entry(path);
        let mut identical = false;
        // A step boundary may fall between two fetches once (steps are 750 s and 100 s here);
        // it cannot fall between both pairs.
        for _ in 0..2 {
            let a = get(&server, &target, VIEWER).await;
            let b = get(&server, &target, VIEWER).await;
            assert_eq!((a.status, b.status), (200, 200));
            if a.body == b.body {
                identical = true;
                break;
            }
        }
        assert!(identical, "{path}: two fetches differ twice in a row");
    }
    // The live one really is live: segment_ttl (400, step 100), not session_ttl.
    let disk = disk(&server, "det/live.m3u8");
    let signed = check.check("/det/live.m3u8", &disk, 400, &[]).await;
    assert_eq!(signed.len(), 1);
}

#[tokio::test]
async fn a_playlist_that_does_not_parse_is_502_never_unsigned() {
    let server = playlist_server();
    let check = viewer_check(&server);
    for (n, (path, rel)) in
        [("/s/bad.m3u8", "s/bad.m3u8"), ("/s/badattr.m3u8", "s/badattr.m3u8")].into_iter().enumerate()
    {
        let resp = get(&server, &check.entry(path), VIEWER).await;
        assert_eq!(resp.status, 502, "{path}: {}", resp.text());
        assert!(!resp.text().contains("secret-segment"), "{path} leaked: {}", resp.text());
        assert_short_reason(&resp, &[PL_KEY]);
        // The line is written after the response: wait for this playlist's, not the one before.
        wait_for_lines(&server, "does not parse", n + 1);
        let logged = server.logs().into_iter().any(|l| l.contains("does not parse") && l.contains(rel));
        assert!(logged, "no log line for {rel}:\n{}", server.logs().join("\n"));
    }
}
