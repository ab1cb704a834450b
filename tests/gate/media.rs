//! Media: content types, ranges, HEAD, fresh reads, big files, downloads that outlive their token.

use super::*;

const MEDIA_KEY: &str = "media-key";
const MEDIA_STREAMS: &str = r#"
[streams.m]
keys = ["media-key"]
skew = 0
"#;

fn media_server() -> Server {
    let setup = Setup::new("media");
    for ext in ["ts", "m4s", "mp4", "m4a", "aac", "vtt", "key"] {
        setup.file(&format!("m/a.{ext}"), pattern(1000, 5));
    }
    setup.file("m/big.mp4", pattern(BIG, 9));
    setup.start("", MEDIA_STREAMS)
}

fn media_url(path: &str, exp: u64) -> String {
    url(path, MEDIA_KEY, Some(VIEWER), exp)
}

/// An origin read that fails for another reason than a missing file is 502, after the token
/// and never before, and is logged. As root no file can be made unreadable, so a symlink loop
/// (ELOOP) stands in for the failing disk.
#[tokio::test]
async fn an_origin_read_error_is_502_after_the_token() {
    let setup = Setup::new("origin-error");
    setup.file("m/a.ts", "a");
    std::os::unix::fs::symlink("loop.ts", setup.streams().join("m/loop.ts")).unwrap();
    let server = setup.start("", MEDIA_STREAMS);
    let unsigned = get(&server, "/m/loop.ts", VIEWER).await;
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    let resp = get(&server, &media_url("/m/loop.ts", now() + 300), VIEWER).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.text(), "origin unavailable\n");
    server.wait_for_log("origin read failed", LOG_WAIT);
    let metrics = admin(&server, "/metrics").await.text();
    let series = "hlsgate_requests_total{stream=\"m\",kind=\"media\",outcome=\"origin_error\"}";
    assert_eq!(metric(&metrics, series), Some(1), "{metrics}");
}

#[tokio::test]
async fn content_types_ranges_and_head() {
    let server = media_server();
    let exp = now() + 300;
    for (ext, want) in [
        ("ts", "video/mp2t"),
        ("m4s", "video/iso.segment"),
        ("mp4", "video/mp4"),
        ("m4a", "audio/mp4"),
        ("aac", "audio/aac"),
        ("vtt", "text/vtt"),
        ("key", "application/octet-stream"),
    ] {
        let resp = get(&server, &media_url(&format!("/m/a.{ext}"), exp), VIEWER).await;
        assert_eq!(resp.status, 200, "{ext}");
        assert_eq!(resp.header("content-type"), Some(want), "{ext}");
        assert_eq!(resp.body, pattern(1000, 5), "{ext}");
    }
    let target = media_url("/m/a.ts", exp);
    let ranged =
        |range: &str| Request::get(server.viewer_addr(), &target).from(VIEWER).header("Range", range);
    let resp = ranged("bytes=10-109").send().await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("content-range"), Some("bytes 10-109/1000"));
    assert_eq!(resp.header("content-length"), Some("100"));
    assert_eq!(resp.body, pattern(1000, 5)[10..110]);
    let resp = ranged("bytes=-5").send().await;
    assert_eq!((resp.status, resp.header("content-range")), (206, Some("bytes 995-999/1000")));
    assert_eq!(resp.body, pattern(1000, 5)[995..]);
    let resp = ranged("bytes=1000-").send().await;
    assert_eq!(resp.status, 416);
    assert_eq!(resp.header("content-range"), Some("bytes */1000"));

    let resp = Request::head(server.viewer_addr(), &target).from(VIEWER).send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some("1000"));
    assert_eq!(resp.header("content-type"), Some("video/mp2t"));
    assert!(resp.body.is_empty());
    // HEAD reveals no more than GET: it needs the token too.
    let resp = Request::head(server.viewer_addr(), "/m/a.ts").from(VIEWER).send().await;
    assert_eq!(resp.status, 403);

    // The streamed path honours ranges too.
    let big = media_url("/m/big.mp4", exp);
    let resp = Request::get(server.viewer_addr(), &big)
        .from(VIEWER)
        .header("Range", "bytes=16777200-16777299")
        .send()
        .await;
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("content-range"), Some(format!("bytes 16777200-16777299/{BIG}").as_str()));
    assert_eq!(resp.body, pattern(BIG, 9)[16777200..16777300]);
    let resp = Request::head(server.viewer_addr(), &big).from(VIEWER).send().await;
    assert_eq!(resp.header("content-length"), Some(BIG.to_string().as_str()));
}

#[tokio::test]
async fn a_live_playlist_replaced_by_rename_is_served_fresh() {
    let server = media_server();
    let playlist = |seg: &str| format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{seg}\n");
    put(&server, "m/live.m3u8", playlist("seg_1.ts"));
    let target = media_url("/m/live.m3u8", now() + 300);
    let first = get(&server, &target, VIEWER).await;
    assert_eq!(first.status, 200);
    assert!(first.text().contains("seg_1.ts?"), "{}", first.text());
    // ffmpeg's temp_file: write next to it, rename over it (same size, maybe the same mtime).
    let tmp = put(&server, "m/live.m3u8.tmp", playlist("seg_2.ts"));
    std::fs::rename(&tmp, server.dir().join("streams/m/live.m3u8")).unwrap();
    let second = get(&server, &target, VIEWER).await;
    assert_eq!(second.status, 200);
    assert!(second.text().contains("seg_2.ts?") && !second.text().contains("seg_1"), "{}", second.text());
    // And an in-place rewrite of the same size.
    std::fs::write(server.dir().join("streams/m/live.m3u8"), playlist("seg_3.ts")).unwrap();
    let third = get(&server, &target, VIEWER).await;
    assert!(third.text().contains("seg_3.ts?"), "{}", third.text());
}

#[tokio::test]
async fn a_big_file_downloads_completely() {
    let server = media_server();
    let resp = get(&server, &media_url("/m/big.mp4", now() + 300), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-length"), Some(BIG.to_string().as_str()));
    assert!(resp.body == pattern(BIG, 9), "body differs ({} bytes)", resp.body.len());
}

#[tokio::test]
async fn a_download_started_before_expiry_finishes() {
    let server = media_server();
    let exp = now() + 4;
    let target = media_url("/m/big.mp4", exp);
    let mut download =
        Streaming::open(&Request::get(server.viewer_addr(), &target).from(VIEWER)).await.unwrap();
    assert_eq!(download.status, 200);
    download.read_at_least(1 << 20).await.unwrap();
    // Hold the download until the token is dead by the server's clock (skew 0), bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while now() <= exp {
        assert!(Instant::now() < deadline, "clock did not pass {exp}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = get(&server, &target, VIEWER).await;
    assert_eq!(fresh.status, 410, "a new request with the same token is refused");
    download.read_to_end().await.unwrap();
    assert_eq!(download.body.len(), BIG);
    assert!(download.body == pattern(BIG, 9), "body differs");
}
