//! Issue 7, upstream HTTP origins, against real servers on loopback: Debian's nginx serving a
//! packager's folder (its access log says what reached it), and a scripted Python origin for
//! what nginx will not do (hold a blocking reload, answer slowly). hlsgate is the real binary in
//! front (`origin = "http://127.0.0.1:PORT/…/"`). Faults, failover and exhaustion are in
//! `tests/origin_faults.rs`.
//!
//! What is asserted: playback through the gate, requests checked before the origin is asked,
//! only the token parameters removed on the way, `origin_headers` sent and never logged,
//! collapsing (one origin read per file and per playlist cache interval, however many viewers),
//! blocking reloads never answered from the cache, absolute URIs that point at the origin
//! mapped to the gate and signed. Figures are printed (`--no-capture` to see them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const KEY: &str = "origin-key-5e2a91";
/// What nginx demands in `X-Origin-Auth` (`origin_headers`): must never reach a log of ours.
const AUTH: &str = "gate-only-3f9c1d77";
const VIEWER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// `[streams.NAME]` fronting `origin` (one URL), with `extra` lines (origin_headers, …).
fn stream(name: &str, origin: &str, extra: &str) -> String {
    format!("[streams.{name}]\nkeys = [\"{KEY}\"]\norigin = \"{origin}\"\n{extra}\n")
}

/// A link the site would hand `ip`, valid 10 minutes.
fn link(path: &str, ip: &str) -> String {
    signed(path, KEY, Some(ip), now() + 600)
}

async fn get_from(server: &Server, target: &str, ip: &str) -> Response {
    Request::get(server.viewer_addr(), target).from(ip).send().await
}

/// Viewer `i` of many: 127.0.0.10…109, then 127.0.1.10…, a distinct address each.
fn viewer_ip(i: usize) -> String {
    format!("127.0.{}.{}", i / 100, i % 100 + 10)
}

/// nginx serving `folder` at `/live/`, refusing (403) any request without our `X-Origin-Auth`.
fn nginx_for(folder: &std::path::Path, require_auth: bool) -> Nginx {
    let guard = if require_auth {
        format!("if ($http_x_origin_auth != \"{AUTH}\") {{ return 403; }}")
    } else {
        String::new()
    };
    Nginx::start(&format!("location /live/ {{\n alias {}/;\n {guard}\n}}", folder.display()))
}

fn token_free(line: &AccessLine) -> bool {
    !line.args.contains("md5=") && !line.args.contains("expires=")
}

// ---------------------------------------------------------------------------------------
// 1. A real packager behind a real nginx, ffmpeg playing through the gate
// ---------------------------------------------------------------------------------------

#[test]
fn ffmpeg_plays_a_live_packager_behind_nginx_through_the_gate() {
    let setup = Setup::new("origin-play");
    let folder = setup.dir.join("packager");
    let packager = live_packager(&folder, 3);
    let nginx = nginx_for(&folder, true);
    let extra = format!("origin_headers = {{ \"X-Origin-Auth\" = \"{AUTH}\" }}");
    // Debug logs: whatever the origin code says about its requests must still not name the secret.
    let server = setup.start_env("", &stream("live", &nginx.url("/live/"), &extra), &[("RUST_LOG", "debug")]);

    let url = format!("http://{}{}", server.viewer_addr(), link("/live/index.m3u8", "127.0.0.1"));
    let run = run_bounded(&mut ffmpeg_player(&url, 11), Duration::from_secs(60));
    let packager_log = packager.stop();
    assert!(run.status.success(), "ffmpeg failed ({}):\n{}", run.status, run.stderr);
    let played = ffmpeg_out_seconds(&run.stdout);
    assert!(played >= 10.0, "ffmpeg read only {played} s through the gate:\n{}", run.stderr);
    let opened = ffmpeg_opened(&run.stderr);
    assert!(opened.iter().all(|u| u.contains("md5=")), "unsigned URL opened: {opened:#?}");

    // What reached nginx: hlsgate's requests only, every one with the origin header, none with
    // a token, the live playlist re-read and each segment once.
    let access = nginx.access();
    let playlists = access.iter().filter(|l| l.uri == "/live/index.m3u8").count();
    let mut segments: BTreeMap<&str, usize> = BTreeMap::new();
    for line in access.iter().filter(|l| l.uri.ends_with(".ts")) {
        *segments.entry(&line.uri).or_default() += 1;
    }
    eprintln!(
        "ffmpeg read {played:.1} s; nginx saw {} requests: {playlists} playlist, {} segments {:?}",
        access.len(),
        segments.len(),
        segments.values().collect::<Vec<_>>()
    );
    // 206: ffmpeg sends `Range: bytes=0-`, which the gate passes on (see the range test below).
    assert!(
        access.iter().all(|l| l.auth == AUTH && [200, 206].contains(&l.status)),
        "{}",
        nginx.access_text()
    );
    assert!(access.iter().all(token_free), "a token reached the origin:\n{}", nginx.access_text());
    assert!(playlists >= 3, "the live playlist reached nginx {playlists} times");
    assert!(segments.len() >= 10, "{segments:?}");
    assert!(segments.values().all(|&n| n == 1), "a segment was fetched twice: {segments:?}");

    // nginx really refuses everyone else, so the header is what let the gate in.
    let direct = block_on(Request::get(([127, 0, 0, 1], nginx.port()).into(), "/live/index.m3u8").send());
    assert_eq!(direct.status, 403, "nginx serves without the origin header");
    let logs = server.logs().join("\n");
    assert!(!logs.contains(AUTH), "hlsgate logged the origin header's value:\n{logs}");
    assert!(!packager_log.contains("Error"), "packager errors:\n{packager_log}");
}

// ---------------------------------------------------------------------------------------
// 2. 200 viewers, one origin fetch per playlist cache interval and per segment
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    playlists: AtomicU64,
    segments: AtomicU64,
    failures: AtomicU64,
}

/// One viewer for `run`: the playlist every second or so, each segment it lists once.
async fn watch(server_addr: std::net::SocketAddr, ip: String, run: Duration, tally: Arc<Tally>, i: usize) {
    let entry = link("/live/index.m3u8", &ip);
    let end = Instant::now() + run;
    let mut seen = BTreeSet::new();
    while Instant::now() < end {
        let resp = match http(&Request::get(server_addr, &entry).from(&ip)).await {
            Ok(resp) if resp.status == 200 => resp,
            other => {
                tally.failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("viewer {ip}: playlist {:?}", other.map(|r| (r.status, r.text())));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        tally.playlists.fetch_add(1, Ordering::Relaxed);
        for uri in uri_lines(&resp.text()) {
            let target = target_beside("/live/index.m3u8", &uri);
            let name = target.split('?').next().unwrap().to_string();
            if !seen.insert(name.clone()) {
                continue;
            }
            let n: u64 = name.trim_start_matches("/live/seg_").trim_end_matches(".ts").parse().unwrap();
            match http(&Request::get(server_addr, &target).from(&ip)).await {
                Ok(seg) if seg.status == 200 && seg.body == fake_segment(n, SEGMENT_BYTES) => {
                    tally.segments.fetch_add(1, Ordering::Relaxed);
                }
                other => {
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("viewer {ip}: {name} {:?}", other.map(|r| (r.status, r.body.len())));
                }
            }
        }
        // About twice per target duration, spread so the viewers do not move in lockstep.
        tokio::time::sleep(Duration::from_millis(800 + (i as u64 * 37) % 400)).await;
    }
}

const SEGMENT_BYTES: usize = 48 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_viewers_cost_one_origin_fetch_per_playlist_interval_and_per_segment() {
    let setup = Setup::new("origin-200");
    let folder = setup.dir.join("packager");
    // TARGETDURATION 2: the playlist is cached for 1 s (TD/2, the default).
    let _packager = FakePackager::start(&folder, 2, 6, SEGMENT_BYTES);
    let nginx = nginx_for(&folder, false);
    let server = setup.start("", &stream("live", &nginx.url("/live/"), ""));
    let addr = server.viewer_addr();

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let run = Duration::from_secs(10);
    let viewers: Vec<_> =
        (0..200).map(|i| tokio::spawn(watch(addr, viewer_ip(i), run, Arc::clone(&tally), i))).collect();
    for viewer in viewers {
        viewer.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();

    let access = nginx.access();
    let playlist_times: Vec<f64> =
        access.iter().filter(|l| l.uri == "/live/index.m3u8").map(|l| l.msec).collect();
    let mut per_segment: BTreeMap<&str, usize> = BTreeMap::new();
    for line in access.iter().filter(|l| l.uri.ends_with(".ts")) {
        *per_segment.entry(&line.uri).or_default() += 1;
    }
    let gaps: Vec<f64> = playlist_times.windows(2).map(|w| w[1] - w[0]).collect();
    let min_gap = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let metrics = metrics_text(&server).await;
    let (playlists, segments, failures) = (
        tally.playlists.load(Ordering::Relaxed),
        tally.segments.load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
    );
    eprintln!(
        "200 viewers for {took:.1} s: {playlists} playlist and {segments} segment answers ({failures} failed); \
         the origin saw {} playlist fetches (closest {min_gap:.3} s apart) and {} segment fetches for {} segments; \
         collapsed {:?}, cache hits {:?}, misses {:?}",
        playlist_times.len(),
        per_segment.values().sum::<usize>(),
        per_segment.len(),
        metric(&metrics, "hlsgate_origin_collapsed_total"),
        metric(&metrics, "hlsgate_cache_hits_total"),
        metric(&metrics, "hlsgate_cache_misses_total"),
    );
    assert_eq!(failures, 0, "some viewers were not served");
    assert!(playlists >= 200 * 5, "the viewers fetched the playlist only {playlists} times");
    // At most one fetch per cache interval (1 s) over the run, plus the first.
    assert!(
        playlist_times.len() as f64 <= took.ceil() + 2.0,
        "{} playlist fetches in {took:.1} s: {gaps:?}",
        playlist_times.len()
    );
    assert!(min_gap >= 0.9, "two playlist fetches {min_gap:.3} s apart, within one cache interval: {gaps:?}");
    assert!(per_segment.len() >= 8, "{per_segment:?}");
    assert!(per_segment.values().all(|&n| n == 1), "a segment reached the origin twice: {per_segment:?}");
    assert!(access.iter().all(token_free));
    assert!(metric(&metrics, "hlsgate_origin_collapsed_total").unwrap_or(0) > 0, "{metrics}");
}

async fn metrics_text(server: &Server) -> String {
    admin(server, "/metrics").await.text()
}

// ---------------------------------------------------------------------------------------
// 3. origin_headers: sent on every origin request, never logged
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn origin_headers_reach_the_origin_and_never_a_log() {
    let setup = Setup::new("origin-headers");
    let folder = setup.dir.join("files");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("index.m3u8"), "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n")
        .unwrap();
    std::fs::write(folder.join("a.ts"), b"segment a").unwrap();
    let nginx = nginx_for(&folder, true);
    let streams = format!(
        "{}{}",
        stream(
            "gated",
            &nginx.url("/live/"),
            &format!("origin_headers = {{ \"X-Origin-Auth\" = \"{AUTH}\" }}")
        ),
        stream("bare", &nginx.url("/live/"), "")
    );
    let server = setup.start_env("", &streams, &[("RUST_LOG", "debug")]);

    let playlist = get_from(&server, &link("/gated/index.m3u8", VIEWER), VIEWER).await;
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    let seg = get_from(&server, &link("/gated/a.ts", VIEWER), VIEWER).await;
    assert_eq!((seg.status, seg.body.as_slice()), (200, &b"segment a"[..]));
    // Without the header nginx answers 403 to the gate: the viewer gets a 502, not nginx's 403.
    let bare = get_from(&server, &link("/bare/a.ts", VIEWER), VIEWER).await;
    assert_eq!(bare.status, 502, "{}", bare.text());

    let access = nginx.access();
    let auths: Vec<(&str, &str, u16)> =
        access.iter().map(|l| (l.uri.as_str(), l.auth.as_str(), l.status)).collect();
    assert_eq!(
        auths,
        [("/live/index.m3u8", AUTH, 200), ("/live/a.ts", AUTH, 200), ("/live/a.ts", "-", 403)],
        "{}",
        nginx.access_text()
    );
    let logs = server.logs().join("\n");
    assert!(!logs.contains(AUTH), "hlsgate logged the origin header's value:\n{logs}");
    assert!(!seg.headers.iter().any(|(_, v)| v.contains(AUTH)));
}

// ---------------------------------------------------------------------------------------
// 4. Only hlsgate's token parameters are removed on the way to the origin
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn only_token_parameters_are_removed_on_the_way_to_the_origin() {
    let setup = Setup::new("origin-params");
    let folder = setup.dir.join("files");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("index.m3u8"), "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n")
        .unwrap();
    std::fs::write(folder.join("a.ts"), b"segment a").unwrap();
    let nginx = nginx_for(&folder, false);
    let streams = format!(
        "{}{}",
        stream("p", &nginx.url("/live/"), ""),
        stream("q", &nginx.url("/live/"), "token_params = [\"st\", \"e\"]")
    );
    let server = setup.start("", &streams);
    let exp = now() + 600;
    let token = |path: &str| {
        let url = signed(path, KEY, Some(VIEWER), exp);
        url.split_once('?').unwrap().1.to_string()
    };
    let p = token("/p/index.m3u8");
    let (md5, expires) = p.split_once('&').unwrap();

    // The token anywhere in the query: everything else passes, in order, byte for byte.
    let cases = [
        (
            format!("/p/index.m3u8?_HLS_msn=5&_HLS_part=2&{p}&_HLS_skip=YES&foo=bar%20baz&x"),
            "_HLS_msn=5&_HLS_part=2&_HLS_skip=YES&foo=bar%20baz&x",
        ),
        (format!("/p/index.m3u8?{p}&_HLS_skip=v2&a=1"), "_HLS_skip=v2&a=1"),
        (format!("/p/index.m3u8?{expires}&_HLS_msn=7&{md5}"), "_HLS_msn=7"),
        (format!("/p/index.m3u8?{p}"), "-"),
        (format!("/p/a.ts?{}&v=3", token("/p/a.ts")), "v=3"),
    ];
    for (target, _) in &cases {
        let resp = get_from(&server, target, VIEWER).await;
        assert_eq!(resp.status, 200, "{target}: {}", resp.text());
    }
    // Another stream's parameter names: its own are removed, `md5`/`expires` are just parameters.
    let q = signed("/q/a.ts", KEY, Some(VIEWER), exp).replace("?md5=", "?st=").replace("&expires=", "&e=");
    let resp = get_from(&server, &format!("{q}&_HLS_part=0"), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let args: Vec<String> = nginx.access().iter().map(|l| l.args.clone()).collect();
    let mut want: Vec<String> = cases.iter().map(|(_, a)| a.to_string()).collect();
    want.push("_HLS_part=0".into());
    assert_eq!(args, want, "what reached the origin:\n{}", nginx.access_text());
    assert!(nginx.access().iter().all(token_free));
}

// ---------------------------------------------------------------------------------------
// 5. Requests are checked first: a refusal never reaches the origin
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_requests_never_reach_the_origin_and_its_404_needs_a_valid_token() {
    let setup = Setup::new("origin-refused");
    let folder = setup.dir.join("files");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("index.m3u8"), "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n")
        .unwrap();
    std::fs::write(folder.join("a.ts"), b"segment a").unwrap();
    std::fs::write(folder.join("junk.m3u8"), "<html>a login page, not a playlist</html>\n").unwrap();
    let nginx = nginx_for(&folder, false);
    let server = setup.start("", &stream("s", &nginx.url("/live/"), ""));
    let addr = server.viewer_addr();

    let wrong_key = signed("/s/a.ts", "not-the-key", Some(VIEWER), now() + 600);
    let refusals: Vec<(String, &str, u16)> = vec![
        ("/s/a.ts".into(), "GET", 403),
        ("/s/index.m3u8".into(), "GET", 403),
        (wrong_key, "GET", 403),
        (link("/s/a.ts", OTHER), "GET", 403),
        (link("/s/missing.ts", OTHER), "GET", 403),
        (signed("/s/a.ts", KEY, Some(VIEWER), now() - 60), "GET", 410),
        (signed("/s/index.m3u8", KEY, None, now() - 60), "GET", 410),
        (link("/s/a.ts", VIEWER).replace("/s/a.ts", "/s/../s/a.ts"), "GET", 400),
        (link("/s/a%2Fb.ts", VIEWER), "GET", 400),
        (link("/s/a.ts", VIEWER).replace("/s/a.ts", "/s/a%00.ts"), "GET", 400),
        (link("/elsewhere/a.ts", VIEWER), "GET", 403),
        ("/s/a.ts".into(), "HEAD", 403),
        (format!("{}&md5=again", link("/s/a.ts", VIEWER)), "GET", 403),
    ];
    for (target, method, status) in &refusals {
        let resp = Request::new(method, addr, target).from(VIEWER).send().await;
        assert_eq!(resp.status, *status, "{method} {target}: {}", resp.text());
    }
    assert!(nginx.access().is_empty(), "a refused request reached the origin:\n{}", nginx.access_text());

    // With a valid token the origin is asked: its 404 is the viewer's 404; a playlist that does
    // not parse is a 502, never passed on unsigned.
    let missing = get_from(&server, &link("/s/missing.ts", VIEWER), VIEWER).await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    let junk = get_from(&server, &link("/s/junk.m3u8", VIEWER), VIEWER).await;
    assert_eq!(junk.status, 502, "{}", junk.text());
    assert!(!junk.text().contains("login page"));
    let seen: Vec<(String, u16)> = nginx.access().iter().map(|l| (l.uri.clone(), l.status)).collect();
    assert_eq!(seen, [("/live/missing.ts".to_string(), 404), ("/live/junk.m3u8".to_string(), 200)]);
}

// ---------------------------------------------------------------------------------------
// 6. LL-HLS: parameters untouched, blocking reloads never from the cache
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_blocking_reloads_pass_through_untouched_and_never_come_from_the_cache() {
    let origin = Scripted::start();
    let server = Setup::new("origin-ll").start("", &stream("ll", &origin.url("/ll/"), ""));
    let exp = now() + 600;
    let with = |query: &str, ip: &str| {
        let url = signed("/ll/index.m3u8", KEY, Some(ip), exp);
        let (path, token) = url.split_once('?').unwrap();
        format!("{path}?{query}&{token}")
    };

    // Two identical blocking reloads a moment apart: both reach the origin (each held 0.5 s there).
    for _ in 0..2 {
        let resp = get_from(&server, &with("_HLS_msn=7&_HLS_part=1", VIEWER), VIEWER).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(origin.count("/ll/index.m3u8?_HLS_msn=7&_HLS_part=1"), 2, "{:#?}", origin.requests());

    // A plain reload twice within the cache interval (TD/2 = 1 s): the origin is asked once.
    for _ in 0..2 {
        let resp = get_from(&server, &link("/ll/index.m3u8", VIEWER), VIEWER).await;
        assert_eq!(resp.status, 200);
    }
    assert_eq!(
        origin.requests().iter().filter(|t| *t == "/ll/index.m3u8").count(),
        1,
        "{:#?}",
        origin.requests()
    );

    // Ten viewers holding the same blocking reload at once: one request, collapsed by query;
    // a different query is a request of its own.
    let mut held = Vec::new();
    for i in 0..10 {
        let ip = viewer_ip(i);
        let target = with(if i < 9 { "_HLS_msn=8&_HLS_part=0" } else { "_HLS_msn=8&_HLS_part=1" }, &ip);
        let to = server.viewer_addr();
        held.push(tokio::spawn(async move { Request::get(to, &target).from(&ip).send().await }));
    }
    for resp in held {
        assert_eq!(resp.await.unwrap().status, 200);
    }
    assert_eq!(origin.count("/ll/index.m3u8?_HLS_msn=8&_HLS_part=0"), 1, "{:#?}", origin.requests());
    assert_eq!(origin.count("/ll/index.m3u8?_HLS_msn=8&_HLS_part=1"), 1, "{:#?}", origin.requests());

    // _HLS_skip and anything else reach the origin as sent.
    let resp = get_from(&server, &with("_HLS_msn=9&_HLS_skip=YES&z=%2Fq", VIEWER), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert_eq!(origin.count("/ll/index.m3u8?_HLS_msn=9&_HLS_skip=YES&z=%2Fq"), 1, "{:#?}", origin.requests());
    let requests = origin.requests();
    assert!(requests.iter().all(|t| !t.contains("md5=") && !t.contains("expires=")), "{requests:#?}");
}

// ---------------------------------------------------------------------------------------
// 7. Collapsing: many viewers asking at once for one new file cost one origin read
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_asking_at_once_for_a_new_file_cost_one_origin_read_http_and_folder() {
    let origin = Scripted::start();
    let setup = Setup::new("origin-collapse");
    // A folder stream too, with files large enough that a read takes a moment.
    let big: Vec<u8> = (0..(12 << 20)).map(|i: usize| (i % 251) as u8).collect();
    for k in 0..5 {
        setup.file(&format!("folder/new_{k}.ts"), &big);
    }
    let streams =
        format!("{}[streams.folder]\nkeys = [\"{KEY}\"]\n", stream("slow", &origin.url("/sleep/1/"), ""));
    let server = setup.start("", &streams);
    let to = server.viewer_addr();

    // HTTP: the origin takes a second to answer; 40 viewers ask meanwhile.
    for path in ["/slow/new.ts", "/slow/index.m3u8"] {
        let asks: Vec<_> = (0..40)
            .map(|i| {
                let ip = viewer_ip(i);
                let target = link(path, &ip);
                tokio::spawn(async move { Request::get(to, &target).from(&ip).send().await })
            })
            .collect();
        for ask in asks {
            let resp = ask.await.unwrap();
            assert_eq!(resp.status, 200, "{path}: {}", resp.text());
            if path.ends_with(".ts") {
                assert_eq!(resp.body, vec![b's'; 1000]);
            }
        }
        let origin_path = path.replace("/slow/", "/sleep/1/");
        assert_eq!(origin.count(&origin_path), 1, "40 viewers of {path}: {:#?}", origin.requests());
    }
    let http_collapsed = metric(&admin(&server, "/metrics").await.text(), "hlsgate_origin_collapsed_total");
    assert!(http_collapsed.unwrap_or(0) >= 40, "collapsed {http_collapsed:?}");

    // Folder: a read takes milliseconds, so joins are a matter of timing: a fresh file each try.
    let mut folder_collapsed = 0;
    for k in 0..5 {
        let path = format!("/folder/new_{k}.ts");
        let asks: Vec<_> = (0..60)
            .map(|i| {
                let ip = viewer_ip(i);
                let target = link(&path, &ip);
                tokio::spawn(async move {
                    Request::get(to, &target).from(&ip).timeout(Duration::from_secs(60)).send().await
                })
            })
            .collect();
        for ask in asks {
            let resp = ask.await.unwrap();
            assert_eq!(resp.status, 200);
            assert!(resp.body == big, "{path}: a viewer's copy differs ({} bytes)", resp.body.len());
        }
        let collapsed =
            metric(&admin(&server, "/metrics").await.text(), "hlsgate_origin_collapsed_total").unwrap_or(0);
        folder_collapsed = collapsed - http_collapsed.unwrap_or(0);
        eprintln!("folder try {k}: {folder_collapsed} viewers joined a read in flight");
        if folder_collapsed > 0 {
            break;
        }
    }
    eprintln!(
        "collapsed: {http_collapsed:?} over HTTP (80 viewer requests), {folder_collapsed} in folder mode"
    );
    assert!(folder_collapsed > 0, "no folder read was ever shared");
}

// ---------------------------------------------------------------------------------------
// 8. Absolute URIs that point at the origin are mapped to the gate and signed
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn absolute_uris_pointing_at_the_origin_are_mapped_to_the_gate_and_signed() {
    let setup = Setup::new("origin-absolute");
    let folder = setup.dir.join("files");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("init.mp4"), b"init map").unwrap();
    std::fs::write(folder.join("seg0.m4s"), b"segment 0").unwrap();
    std::fs::write(folder.join("sub/seg1.m4s"), b"segment 1").unwrap();
    let nginx = nginx_for(&folder, false);
    let base = nginx.url("/live/");
    let playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-MAP:URI=\"{base}init.mp4\"\n#EXTINF:2.0,\n{base}seg0.m4s\n#EXTINF:2.0,\n{base}sub/seg1.m4s\n\
         #EXTINF:2.0,\nhttp://cdn.example.com/elsewhere/seg2.m4s\n"
    );
    std::fs::write(folder.join("index.m3u8"), &playlist).unwrap();
    let server = setup.start("", &stream("abs", &base, ""));

    let resp = get_from(&server, &link("/abs/index.m3u8", VIEWER), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    eprintln!("origin playlist:\n{playlist}\nas served to the viewer:\n{text}");
    let map_uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\"")?.split_once('"').map(|(u, _)| u.to_string()))
        .unwrap();
    let mut uris = vec![map_uri];
    uris.extend(uri_lines(&text));
    assert_eq!(uris.len(), 4, "{text}");
    // Another server's URL stays as written.
    assert_eq!(uris[3], "http://cdn.example.com/elsewhere/seg2.m4s");
    let wanted = [
        ("/abs/init.mp4", &b"init map"[..]),
        ("/abs/seg0.m4s", b"segment 0"),
        ("/abs/sub/seg1.m4s", b"segment 1"),
    ];
    let mut failures = Vec::new();
    for (uri, (path, body)) in uris.iter().zip(wanted) {
        if uri.contains(&format!("127.0.0.1:{}", nginx.port())) {
            failures.push(format!("{uri}: still points at the origin (the viewer cannot fetch it)"));
            continue;
        }
        let target = target_beside("/abs/index.m3u8", uri);
        if target.split('?').next() != Some(path) || !uri.contains("md5=") {
            failures.push(format!("{uri}: not a signed URI for {path}"));
            continue;
        }
        let got = get_from(&server, &target, VIEWER).await;
        if (got.status, got.body.as_slice()) != (200, body) {
            failures.push(format!("{uri}: {} {:?}", got.status, got.text()));
        }
    }
    assert!(failures.is_empty(), "absolute URIs to the origin, as served:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 9. Players that send `Range: bytes=0-` (ffmpeg does, on every request: nginx logs 206 for
//    all of test 1) are collapsed too; a ranged playlist request never gets part of a playlist
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_sending_range_bytes_0_like_ffmpeg_are_collapsed_too() {
    let origin = Scripted::start();
    let server = Setup::new("origin-range").start("", &stream("slow", &origin.url("/sleep/1/"), ""));
    let to = server.viewer_addr();

    // 20 ffmpeg-like viewers ask at once for a new segment and a playlist the origin takes a
    // second to answer: the issue wants one origin read for each, not 20.
    let mut problems = Vec::new();
    for path in ["/slow/new.ts", "/slow/index.m3u8"] {
        let asks: Vec<_> = (0..20)
            .map(|i| {
                let ip = viewer_ip(i);
                let target = link(path, &ip);
                tokio::spawn(async move {
                    Request::get(to, &target).from(&ip).header("Range", "bytes=0-").send().await
                })
            })
            .collect();
        for ask in asks {
            let resp = ask.await.unwrap();
            assert!([200, 206].contains(&resp.status), "{path}: {} {}", resp.status, resp.text());
        }
        let asked = origin.count(&path.replace("/slow/", "/sleep/1/"));
        eprintln!("20 viewers of {path} with Range: bytes=0- cost {asked} origin requests");
        if asked != 1 {
            problems.push(format!(
                "{path}: 20 viewers with `Range: bytes=0-` cost {asked} origin requests, not 1"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn a_ranged_playlist_request_is_never_answered_with_part_of_the_playlist() {
    let setup = Setup::new("origin-range-playlist");
    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n";
    setup.file("f/index.m3u8", playlist);
    let nginx = nginx_for(&setup.streams().join("f"), false);
    let streams = format!("[streams.f]\nkeys = [\"{KEY}\"]\n{}", stream("h", &nginx.url("/live/"), ""));
    let server = setup.start("", &streams);

    // A playlist is rewritten whole, so a range of the origin's text must not become a shorter
    // "whole" playlist. The folder stream (same file) shows what the viewer should get.
    let mut problems = Vec::new();
    for path in ["/f/index.m3u8", "/h/index.m3u8"] {
        let ranged = Request::get(server.viewer_addr(), &link(path, VIEWER))
            .from(VIEWER)
            .header("Range", "bytes=0-60");
        let resp = ranged.send().await;
        let served = resp.text();
        eprintln!("{path} with Range: bytes=0-60: {} {served:?}", resp.status);
        if resp.status == 200 && !(served.contains("a.ts?") && served.contains("b.ts?")) {
            problems.push(format!(
                "{path}: a ranged request was answered 200 with part of the playlist:\n{served}"
            ));
        }
        let origin_ranges: Vec<String> = nginx.access().iter().map(|l| l.range.clone()).collect();
        eprintln!("Range headers nginx saw so far: {origin_ranges:?}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------
// 10. The live cache holds what fits in it: files up to a sixteenth of cache_bytes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_10_mib_segment_is_cached_in_the_default_cache_folder_and_http() {
    let setup = Setup::new("origin-admit");
    let folder = setup.streams().join("d");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, mib) in [("small.ts", 4usize), ("large.ts", 10)] {
        std::fs::write(folder.join(name), vec![b'x'; mib << 20]).unwrap();
    }
    let nginx = nginx_for(&folder, false);
    let streams = format!("[streams.d]\nkeys = [\"{KEY}\"]\n{}", stream("h", &nginx.url("/live/"), ""));
    // The default 256 MiB: a whole file is cached up to 16 MiB (a sixteenth). quick_cache once
    // refused anything over one of its shards, 7.8 MiB here.
    let server = setup.start("", &streams);

    let mut problems = Vec::new();
    for path in ["/d/small.ts", "/h/small.ts", "/d/large.ts", "/h/large.ts"] {
        let hits = |text: &str| metric(text, "hlsgate_cache_hits_total").unwrap_or(0);
        let before = hits(&admin(&server, "/metrics").await.text());
        for _ in 0..2 {
            let resp = Request::get(server.viewer_addr(), &link(path, VIEWER)).from(VIEWER).send().await;
            assert_eq!(resp.status, 200);
        }
        let text = admin(&server, "/metrics").await.text();
        let (hit, cached) = (hits(&text) - before, metric(&text, "hlsgate_cache_bytes").unwrap_or(0));
        eprintln!(
            "{path} twice: {hit} cache hit(s); cache holds {cached} bytes, {:?} evictions",
            metric(&text, "hlsgate_cache_evictions_total")
        );
        if hit == 0 {
            problems.push(format!("{path}: fetched twice, never a cache hit (cache holds {cached} bytes)"));
        }
    }
    let origin_reads = nginx.access().iter().filter(|l| l.uri == "/live/large.ts").count();
    eprintln!("nginx served large.ts {origin_reads} times for 2 viewer requests");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// With a small cache the largest file read whole shrinks with it (a sixteenth), so slow
/// viewers of evicted files cannot hold more than the cache: a 10 MiB file in a 64 MiB cache
/// is streamed, never cached, and each viewer's copy is a couple of chunks.
#[tokio::test]
async fn past_a_sixteenth_of_a_small_cache_files_are_streamed_not_cached() {
    let setup = Setup::new("origin-stream-large");
    let folder = setup.streams().join("d");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("small.ts"), vec![b'x'; 3 << 20]).unwrap();
    std::fs::write(folder.join("large.ts"), vec![b'y'; 10 << 20]).unwrap();
    let server = setup.start("cache_bytes = 67108864", &format!("[streams.d]\nkeys = [\"{KEY}\"]\n"));
    let hits = |text: &str| metric(text, "hlsgate_cache_hits_total").unwrap_or(0);
    for (path, cached) in [("/d/small.ts", true), ("/d/large.ts", false)] {
        let before = hits(&admin(&server, "/metrics").await.text());
        for _ in 0..2 {
            let resp = Request::get(server.viewer_addr(), &link(path, VIEWER)).from(VIEWER).send().await;
            assert_eq!(resp.status, 200, "{path}");
        }
        let after = hits(&admin(&server, "/metrics").await.text());
        assert_eq!(after > before, cached, "{path}: cache hits {before} -> {after}");
    }
}
