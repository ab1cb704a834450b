//! Issue 8's holes, each found by probing the server as an attacker would, each tried again
//! here against the real `hlsgate serve` on loopback. Every test failed on the code before
//! its fix; the section numbers follow the list.

mod common;

use std::time::Duration;

use common::*;
use hlsgate::token::{sign, Key};

const VIEWER: &str = "127.0.0.2";
const PROXY: &str = "127.0.0.1";
const KEY: &str = "sec-key";
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const LIVE: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\na.ts\n";

/// A stream `x` with a live playlist and one segment; `streams` may add to its table.
fn x_server(top: &str, x_table: &str) -> Server {
    let setup = Setup::new("security");
    setup.file("x/index.m3u8", LIVE).file("x/a.ts", "segment a");
    setup.start(top, &format!("[streams.x]\nkeys = [\"{KEY}\"]\n{x_table}\n"))
}

/// An IP-less entry link, as a site hands out when it does not know the viewer's address.
fn entry(path: &str) -> String {
    url(path, KEY, None, now() + 300)
}

fn url(path: &str, key: &str, ip: Option<&str>, expires: u64) -> String {
    signed(path, key, ip, expires)
}

/// GET `target` from socket address `from`, with header lines given as raw bytes (so they can
/// hold what `&str` cannot, like a lone 0xFF).
async fn get_raw(server: &Server, from: &str, target: &str, header_lines: &[&[u8]]) -> Response {
    let mut bytes = format!("GET {target} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n").into_bytes();
    for line in header_lines {
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let answer = raw(server.viewer_addr(), from, &bytes).await.expect("request");
    parse_response(&answer, false).expect("a response")
}

/// The URI lines of a playlist (not tags, not blanks).
fn uri_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// `(path?query, expires, token)` of a relative URI signed under `dir` (e.g. `/x/`).
fn signed_parts(uri: &str, dir: &str) -> (String, u64, String) {
    let (file, query) = uri.split_once('?').unwrap_or_else(|| panic!("{uri} is unsigned"));
    let param = |name: &str| {
        query.split('&').find_map(|p| p.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {uri}"))
    };
    let expires = param("expires=").parse().unwrap();
    (format!("{dir}{file}?{query}"), expires, param("md5=").to_string())
}

// ---------------------------------------------------------------------------------------
// 1. Junk in a forwarding header must not make the viewer look like the proxy
// ---------------------------------------------------------------------------------------

/// The bypass as it was verified: behind a trusted proxy that appends (nginx's
/// `$proxy_add_x_forwarded_for`), a client sends `X-Forwarded-For: \xff`. The whole line used
/// to be unreadable, the walk stopped at the proxy, and every client sending the same junk
/// shared the proxy's identity: a restreamer elsewhere replayed a viewer's tokens with a 200.
#[tokio::test]
async fn junk_in_a_forwarding_header_never_makes_two_viewers_share_an_identity() {
    let server = x_server("trusted_proxies = [\"127.0.0.1\"]", "");
    let (viewer, restreamer) = ("127.0.0.9", "127.0.0.10");
    let through_proxy = |client: &str| [&b"X-Forwarded-For: \xff, "[..], client.as_bytes()].concat();

    let resp = get_raw(&server, PROXY, &entry("/x/index.m3u8"), &[&through_proxy(viewer)]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (target, expires, token) = signed_parts(uri_lines(&resp.text())[0], "/x/");
    assert_eq!(
        token,
        sign(expires, "/x/a.ts", Some(viewer), &Key::new(KEY)),
        "bound to the viewer behind the proxy"
    );

    let replay = get_raw(&server, PROXY, &target, &[&through_proxy(restreamer)]).await;
    assert_eq!(replay.status, 403, "a restreamer sending the same junk replayed the viewer's token");
    let own = get_raw(&server, PROXY, &target, &[&through_proxy(viewer)]).await;
    assert_eq!(own.status, 200, "{}", own.text());
}

/// Where the trusted chain ends on something that is not an address, nobody can be named: the
/// request is refused, never resolved to the proxy.
#[tokio::test]
async fn an_unreadable_hop_where_the_trusted_chain_ends_is_400() {
    let server = x_server("trusted_proxies = [\"127.0.0.1\"]", "");
    let proxy_bound = url("/x/a.ts", KEY, Some(PROXY), now() + 300);
    for line in
        [&b"X-Forwarded-For: \xff"[..], b"X-Forwarded-For: 127.0.0.9, unknown", b"X-Forwarded-For: _hidden"]
    {
        let resp = get_raw(&server, PROXY, &proxy_bound, &[line]).await;
        assert_eq!(resp.status, 400, "{}: {}", String::from_utf8_lossy(line), resp.text());
        assert_eq!(resp.text(), "unreadable forwarding header\n");
    }
    // The proxy's own requests (no header) are still the proxy's.
    assert_eq!(get_raw(&server, PROXY, &proxy_bound, &[]).await.status, 200);
    // From an untrusted peer the header is not read at all, junk or not.
    let viewer_bound = url("/x/a.ts", KEY, Some(VIEWER), now() + 300);
    assert_eq!(get_raw(&server, VIEWER, &viewer_bound, &[b"X-Forwarded-For: \xff"]).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// 2. Only the configured forwarding header is read
// ---------------------------------------------------------------------------------------

/// Behind a proxy that writes only RFC 7239 `Forwarded` and passes the client's own
/// `X-Forwarded-For` through, the client used to pick its address, even with
/// `entry_ip = "required"`.
#[tokio::test]
async fn only_the_configured_forwarding_header_is_read() {
    let server = x_server(
        "trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"forwarded\"",
        "entry_ip = \"required\"",
    );
    let headers: [&[u8]; 2] = [b"Forwarded: for=127.0.0.9;proto=https", b"X-Forwarded-For: 6.6.6.6"];
    let chosen = url("/x/a.ts", KEY, Some("6.6.6.6"), now() + 300);
    assert_eq!(get_raw(&server, PROXY, &chosen, &headers).await.status, 403, "the client chose its address");
    let real = url("/x/a.ts", KEY, Some("127.0.0.9"), now() + 300);
    assert_eq!(get_raw(&server, PROXY, &real, &headers).await.status, 200);

    // And the default reads X-Forwarded-For alone: a client's `Forwarded` changes nothing.
    let server = x_server("trusted_proxies = [\"127.0.0.1\"]", "entry_ip = \"required\"");
    let headers: [&[u8]; 2] = [b"Forwarded: for=6.6.6.6", b"X-Forwarded-For: 127.0.0.9"];
    assert_eq!(get_raw(&server, PROXY, &chosen, &headers).await.status, 403);
    assert_eq!(get_raw(&server, PROXY, &real, &headers).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// 3. Absolute URLs are signed for configured hosts only, never by the request's Host
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn absolute_urls_are_signed_for_public_hosts_only() {
    let setup = Setup::new("public-hosts");
    setup.file("x/a.ts", "a").file("x/b.ts", "b");
    let server =
        setup.start("public_hosts = [\"video.example.com\"]", &format!("[streams.x]\nkeys = [\"{KEY}\"]\n"));
    let own = server.viewer_addr();
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttps://VIDEO.example.com/x/a.ts\n\
         #EXTINF:2,\nhttps://evil.example/x/b.ts\n#EXTINF:2,\nhttp://{own}/x/b.ts\n"
    );
    server.dir().write("streams/x/index.m3u8", &playlist);
    for host in ["evil.example", &own.to_string(), "video.example.com"] {
        let resp = Request::get(own, &entry("/x/index.m3u8")).from(VIEWER).header("Host", host).send().await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let text = resp.text();
        let lines = uri_lines(&text);
        assert!(lines[0].starts_with("https://VIDEO.example.com/x/a.ts?md5="), "Host {host}: {text}");
        assert_eq!(lines[1], "https://evil.example/x/b.ts", "Host {host} picked what gets signed");
        assert_eq!(lines[2], format!("http://{own}/x/b.ts"), "Host {host}: not a public host");
        let (_, expires, token) = signed_parts(lines[0].split_once("/x/").unwrap().1, "/x/");
        assert_eq!(token, sign(expires, "/x/a.ts", Some(VIEWER), &Key::new(KEY)));
    }
}

// ---------------------------------------------------------------------------------------
// 4. A URI that resolves to a directory is never signed as one
// ---------------------------------------------------------------------------------------

/// `.`, `./` and `..` were signed as directory tokens, which open every file of the
/// playlist's directory (`.`) or the stream's root (`..`).
#[tokio::test]
async fn dot_uris_are_never_signed_as_directory_tokens() {
    let setup = Setup::new("dot-uris");
    setup
        .file("x/v/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n.\n#EXTINF:2,\n./\n#EXTINF:2,\n..\n#EXTINF:2,\nsub/\n#EXTINF:2,\na.ts\n")
        .file("x/v/a.ts", "a")
        .file("x/v/other.ts", "sibling")
        .file("x/root.ts", "root");
    let server = setup.start("", &format!("[streams.x]\nkeys = [\"{KEY}\"]\n"));
    let resp = get(&server, &entry("/x/v/index.m3u8"), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert_eq!(uri_lines(&text)[..4], [".", "./", "..", "sub/"], "{text}");
    let (target, ..) = signed_parts(uri_lines(&text)[4], "/x/v/");
    assert_eq!(get(&server, &target, VIEWER).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// 5. A config with no streams is refused, at start and on reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_config_without_streams_is_refused_at_start_and_on_reload() {
    let base = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
    for config in [String::new(), base.to_string(), format!("{base}[streams]\n")] {
        let (code, stderr) = serve_once(&config);
        assert_eq!(code, Some(2), "{config:?}\n{stderr}");
        assert!(stderr.contains("streams: no streams"), "{stderr}");
    }

    let server = x_server("", "");
    let a = url("/x/a.ts", KEY, Some(VIEWER), now() + 300);
    for truncated in ["", "listen = \"127.0.0.1:0\"\n[stre"] {
        let refusals = server.logs().iter().filter(|l| l.contains("config reload refused")).count();
        server.rewrite_config(truncated);
        server.reload();
        wait_until(|| {
            server.logs().iter().filter(|l| l.contains("config reload refused")).count() > refusals
        });
        assert_eq!(get(&server, &a, VIEWER).await.status, 200, "the stream went offline");
    }
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("config reload refused") && l.contains("streams: no streams")));
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// 6. Playlist-ness is decided once, whatever the case of the name
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_playlist_is_rewritten_whatever_the_case_of_its_name() {
    let setup = Setup::new("case");
    for name in ["INDEX.M3U8", "Index.m3U8", "old.m3u", "OLD.M3U"] {
        setup.file(&format!("x/{name}"), LIVE);
    }
    setup.file("x/a.ts", "a");
    let server = setup.start("", &format!("[streams.x]\nkeys = [\"{KEY}\"]\n"));
    for name in ["INDEX.M3U8", "Index.m3U8", "old.m3u", "OLD.M3U"] {
        let resp = get(&server, &entry(&format!("/x/{name}")), VIEWER).await;
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some(PLAYLIST_TYPE), "{name}");
        let text = resp.text();
        let (target, ..) = signed_parts(uri_lines(&text)[0], "/x/");
        assert_eq!(get(&server, &target, VIEWER).await.status, 200, "{name}: {text}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. Unknown streams cannot be told from known ones without a valid token
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_streams_answer_exactly_as_known_ones_without_a_valid_token() {
    let server = x_server("", "");
    let forged = url("/x/a.ts", "not-the-key", None, now() + 300);
    let query = forged.split_once('?').unwrap().1;
    let malformed = "md5=short&expires=2000000000";
    for q in ["", malformed, query, "md5=AAAAAAAAAAAAAAAAAAAAAA&expires=1"] {
        let known = get(&server, &format!("/x/a.ts?{q}"), VIEWER).await;
        let unknown = get(&server, &format!("/no-such-stream/a.ts?{q}"), VIEWER).await;
        assert_eq!(known.status, 403, "{q}");
        assert_eq!((unknown.status, unknown.text()), (known.status, known.text()), "{q}");
    }
    // A valid token for a missing file of a known stream is still a 404: only its holder sees it.
    assert_eq!(get(&server, &url("/x/none.ts", KEY, None, now() + 300), VIEWER).await.status, 404);
}

// ---------------------------------------------------------------------------------------
// 8. A config error never quotes a value from under [streams] or [defaults]
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn config_errors_never_quote_what_may_be_a_secret() {
    let base = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
    let leaks = [
        (format!("{base}[streams]\nother = \"SECRET-VALUE\"\n"), "streams.other"),
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nentry_ip = \"SECRET-VALUE\"\n"), "streams.s.entry_ip"),
        (
            format!("{base}[defaults]\nsimulate_live = \"SECRET-VALUE\"\n[streams.s]\nkeys = [\"k\"]\n"),
            "defaults.simulate_live",
        ),
    ];
    for (config, field) in &leaks {
        let (code, stderr) = serve_once(config);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(field), "{field} not named: {stderr}");
        assert!(!stderr.contains("SECRET"), "echoed: {stderr}");
    }
    // On reload too: the refusal goes to the same log.
    let server = x_server("", "");
    server.rewrite_config(&leaks[0].0);
    server.reload();
    let line = server.wait_for_log("config reload refused", Duration::from_secs(10));
    assert!(line.contains("streams.other") && !line.contains("SECRET"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 10. HEAD on a playlist says the length GET sends
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn head_on_a_playlist_announces_the_length_of_the_rewritten_text() {
    let server = x_server("", "");
    let target = entry("/x/index.m3u8");
    let get = Request::get(server.viewer_addr(), &target).from(VIEWER).send().await;
    let head = Request::head(server.viewer_addr(), &target).from(VIEWER).send().await;
    assert_eq!((get.status, head.status), (200, 200));
    let len = get.body.len();
    assert!(len > LIVE.len(), "the rewrite adds tokens");
    assert_eq!(get.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(head.header("content-length"), Some(len.to_string().as_str()), "HEAD said otherwise");
    assert!(head.body.is_empty());
}

// ---------------------------------------------------------------------------------------
// 11. A query that repeats the token or the expiry is refused
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_token_parameter_or_a_padded_expiry_is_refused() {
    let server = x_server("", "");
    let good = url("/x/a.ts", KEY, Some(VIEWER), now() + 300);
    let (path, query) = good.split_once('?').unwrap();
    let token = query.split('&').find_map(|p| p.strip_prefix("md5=")).unwrap();
    let expires = query.split('&').find_map(|p| p.strip_prefix("expires=")).unwrap();
    assert_eq!(get(&server, &good, VIEWER).await.status, 200);
    for repeated in [
        format!("{path}?{query}&md5={token}"),
        format!("{path}?{query}&expires={expires}"),
        format!("{path}?md5=AAAAAAAAAAAAAAAAAAAAAA&{query}"),
    ] {
        let resp = get(&server, &repeated, VIEWER).await;
        assert_eq!((resp.status, resp.text().as_str()), (403, "token parameter repeated\n"), "{repeated}");
    }
    // nginx hashes `expires` as sent: a leading zero is another spelling, refused.
    let padded = format!("{path}?md5={token}&expires=0{expires}");
    let resp = get(&server, &padded, VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (403, "token malformed\n"));
}

// ---------------------------------------------------------------------------------------
// 9. A flood of refusals cannot flood the log
// ---------------------------------------------------------------------------------------

/// 160 000 lines in 10 s were possible: one per refusal. Now one per client and reason per
/// window, and a counter of the rest.
#[tokio::test]
async fn a_flood_of_refusals_writes_one_line_per_client_and_reason() {
    let server = x_server("", "");
    let flood = 300;
    for _ in 0..flood {
        assert_eq!(get(&server, "/x/a.ts", VIEWER).await.status, 403);
    }
    get(&server, &url("/x/a.ts", KEY, Some(VIEWER), now() - 100), VIEWER).await;
    get(&server, "/x/a.ts", "127.0.0.3").await;
    let metrics = Request::get(server.admin_addr(), "/metrics").send().await.text();
    let suppressed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hlsgate_refusal_log_lines_suppressed_total "))
        .unwrap_or_else(|| panic!("no suppression counter:\n{metrics}"));
    assert_eq!(suppressed, (flood - 1).to_string());
    let lines =
        |needle: &str| server.logs().iter().filter(|l| l.contains("refused") && l.contains(needle)).count();
    wait_until(|| lines("127.0.0.3") == 1);
    assert_eq!(lines("token missing"), 2, "one per client: {:#?}", server.logs());
    assert_eq!(lines("token expired"), 1, "another reason gets its own line");
}

// ---------------------------------------------------------------------------------------
// 12. A second signal ends the drain at once; the drain deadline is a setting
// ---------------------------------------------------------------------------------------

/// A download held open by a reader that has stopped reading: the drain waits for it.
async fn held_download(server: &Server) -> Streaming {
    server.dir().write("streams/x/big.mp4", vec![7u8; 32 << 20]);
    let target = url("/x/big.mp4", KEY, Some(VIEWER), now() + 300);
    let mut download =
        Streaming::open(&Request::get(server.viewer_addr(), &target).from(VIEWER)).await.unwrap();
    assert_eq!(download.status, 200);
    download.read_at_least(1 << 20).await.unwrap();
    download
}

/// Waits for the server to exit by itself, up to `limit` (generous: this is not a timing test,
/// it tells "exits" from "still waiting for a deadline far beyond it").
fn exit_within(server: &mut Server, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = server.exited() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn a_second_signal_during_the_drain_stops_at_once() {
    for signal in ["TERM", "INT"] {
        let mut server = x_server("drain_timeout = 3600", "");
        let _download = held_download(&server).await;
        server.signal(signal);
        server.wait_for_log("shutting down", Duration::from_secs(10));
        assert!(exit_within(&mut server, Duration::from_secs(2)).is_none(), "the drain did not wait");
        server.signal(signal);
        let status = exit_within(&mut server, Duration::from_secs(20));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{signal}: {:#?}", server.logs());
        server.wait_for_log("second signal: closing open connections now", Duration::from_secs(5));
    }
}

#[tokio::test]
async fn the_drain_deadline_is_a_setting() {
    let mut server = x_server("drain_timeout = 1", "");
    let _download = held_download(&server).await;
    server.signal("TERM");
    let status = exit_within(&mut server, Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{:#?}", server.logs());
    let line = server.wait_for_log("drain deadline passed", Duration::from_secs(5));
    assert!(line.contains("deadline_s=1"), "{line}");
}

// ---------------------------------------------------------------------------------------
// 13. The open-file limit is raised to the hard limit at start
// ---------------------------------------------------------------------------------------

/// A wrapper that starts hlsgate with the soft open-file limit a systemd unit or a container
/// typically hands down (1024), and a hard limit of `hard`.
fn with_nofile(dir: &TempDir, hard: u64) -> std::path::PathBuf {
    let script = dir.write(
        "limited.sh",
        format!(
            "#!/bin/sh\nulimit -Sn 1024 && ulimit -Hn {hard} && exec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_hlsgate")
        ),
    );
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();
    script
}

/// The soft and hard "Max open files" of a running process.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let wrappers = TempDir::new("nofile");
    let setup = Setup::new("nofile");
    setup.file("x/a.ts", "a");
    let streams = setup.streams();
    let config = |extra: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{extra}\n[streams.x]\nkeys = [\"{KEY}\"]\n",
            toml_path(&streams)
        )
    };
    let server =
        Server::start_program(&with_nofile(&wrappers, 20_000), TempDir::new("nofile-a"), &config(""), &[]);
    assert_eq!(open_file_limits(server.pid()), (20_000, 20_000));
    let line = server.wait_for_log("open-file limit", Duration::from_secs(5));
    assert!(line.contains("open_files=20000"), "{line}");
    let a = url("/x/a.ts", KEY, Some(VIEWER), now() + 300);
    assert_eq!(get(&server, &a, VIEWER).await.status, 200);

    // A hard limit below max_connections is raised to, and warned about.
    let server = Server::start_program(
        &with_nofile(&wrappers, 2_000),
        TempDir::new("nofile-b"),
        &config("max_connections = 5000"),
        &[],
    );
    assert_eq!(open_file_limits(server.pid()), (2_000, 2_000));
    let line = server.wait_for_log("open-file limit is below max_connections", Duration::from_secs(5));
    assert!(
        line.contains("WARN") && line.contains("open_files=2000") && line.contains("max_connections=5000"),
        "{line}"
    );
}
