//! Operations: metrics, logs, CORS, timeouts, drain, config files.

use super::*;

const OPS_KEYS: [&str; 2] = ["ops-secret-key-1", "ops-secret-key-0"];

fn ops_server(env: &[(&str, &str)], top: &str) -> Server {
    let setup = Setup::new("ops");
    setup
        .file("o/a.ts", "a")
        .file("o/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("o/big.mp4", pattern(BIG, 4));
    setup.start_env(top, "[streams.o]\nkeys = [\"ops-secret-key-1\", \"ops-secret-key-0\"]\n", env)
}

#[tokio::test]
async fn metrics_count_requests_by_stream_kind_and_outcome() {
    let server = ops_server(&[], "");
    let exp = now() + 300;
    let ok = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp);
    for target in [
        ok.clone(),
        ok.clone(),
        url("/o/index.m3u8", OPS_KEYS[1], Some(VIEWER), exp),
        "/o/a.ts".to_string(),
        "/o/index.m3u8".to_string(),
        url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100),
        url("/o/missing.ts", OPS_KEYS[0], Some(VIEWER), exp),
        "/o/../a.ts".to_string(),
        "/elsewhere/a.ts".to_string(),
        // `%2E` spells the same playlist, and it is served (rewritten) as one.
        url("/o/index.m3u8", OPS_KEYS[0], Some(VIEWER), exp).replacen("index.m3u8", "index%2Em3u8", 1),
        // And `%6F` spells stream `o`.
        url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp).replacen("/o/", "/%6F/", 1),
    ] {
        get(&server, &target, VIEWER).await;
    }
    let resp = admin(&server, "/metrics").await;
    assert_eq!(resp.status, 200);
    let text = resp.text();
    let series = |stream: &str, kind: &str, outcome: &str| {
        metric(
            &text,
            &format!("hlsgate_requests_total{{stream=\"{stream}\",kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(series("o", "media", "ok"), Some(3), "{text}");
    assert_eq!(series("o", "playlist", "ok"), Some(2), "{text}");
    assert_eq!(series("o", "media", "forbidden"), Some(1), "{text}");
    assert_eq!(series("o", "playlist", "forbidden"), Some(1), "{text}");
    assert_eq!(series("o", "media", "expired"), Some(1), "{text}");
    assert_eq!(series("o", "media", "not_found"), Some(1), "{text}");
    assert_eq!(series("o", "media", "bad_request"), Some(1), "{text}");
    assert_eq!(series("unknown", "media", "forbidden"), Some(1), "{text}");
    let total: u64 = text
        .lines()
        .filter(|l| l.starts_with("hlsgate_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 11, "{text}");
    assert!(text.contains("# TYPE hlsgate_request_duration_seconds histogram"), "{text}");
    assert_eq!(metric(&text, "hlsgate_request_duration_seconds_count"), Some(11), "{text}");
    assert_eq!(metric(&text, "hlsgate_request_duration_seconds_bucket{le=\"+Inf\"}"), Some(11), "{text}");
    assert!(metric(&text, "hlsgate_request_duration_seconds_bucket{le=\"0.0005\"}").is_some(), "{text}");
    assert_eq!(metric(&text, "hlsgate_config_reloads_total{result=\"ok\"}"), Some(0), "{text}");
    assert_eq!(metric(&text, "hlsgate_config_reloads_total{result=\"error\"}"), Some(0), "{text}");

    let health = admin(&server, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(admin(&server, "/readyz").await.status, 200);

    // Nothing of this on the viewer port.
    for target in ["/metrics", "/healthz", "/readyz"] {
        let resp = get(&server, target, VIEWER).await;
        assert_ne!(resp.status, 200, "{target} on the viewer port");
        assert!(!resp.text().contains("hlsgate_"), "{target}: {}", resp.text());
    }
    // And no viewer files on the admin port.
    let resp = Request::get(server.admin_addr(), &ok).from(VIEWER).send().await;
    assert_eq!(resp.status, 404);
}

#[tokio::test]
async fn one_log_line_per_refusal_with_reason_and_client_and_never_a_key() {
    let server = ops_server(&[("RUST_LOG", "debug")], "");
    let exp = now() + 300;
    let forged = url("/o/a.ts", "not-a-key", Some(VIEWER), exp);
    let expected_token = sign(exp, "/o/a.ts", Some(VIEWER), &Key::new(OPS_KEYS[0]));
    let refused = [
        ("/o/a.ts".to_string(), VIEWER, "token missing"),
        (forged, OTHER, "token invalid"),
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100), VIEWER, "token expired"),
        ("/o/%2e%2e/x".to_string(), OTHER, "dot segment"),
    ];
    for (target, from, _) in &refused {
        get(&server, target, from).await;
    }
    // A successful request, whose token must not be logged either.
    let good = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp);
    assert_eq!(get(&server, &good, VIEWER).await.status, 200);

    wait_for_lines(&server, "refused", refused.len());
    let lines: Vec<String> = server.logs().into_iter().filter(|l| l.contains("refused")).collect();
    assert_eq!(lines.len(), refused.len(), "{lines:#?}");
    for ((_, from, reason), line) in refused.iter().zip(&lines) {
        assert!(line.contains(reason) && line.contains(from), "{line} should name {reason} and {from}");
    }
    for line in server.logs() {
        for secret in OPS_KEYS.iter().copied().chain([expected_token.as_str()]) {
            assert!(!line.contains(secret), "log line holds a secret: {line}");
        }
    }
}

#[tokio::test]
async fn cors_headers_on_every_outcome_and_preflight() {
    let server = ops_server(&[], "");
    let exp = now() + 300;
    let origin = "https://player.example";
    for (target, status) in [
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), exp), 200),
        (url("/o/index.m3u8", OPS_KEYS[0], Some(VIEWER), exp), 200),
        ("/o/a.ts".to_string(), 403),
        (url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() - 100), 410),
        (url("/o/none.ts", OPS_KEYS[0], Some(VIEWER), exp), 404),
        ("/o/../x".to_string(), 400),
    ] {
        let resp =
            Request::get(server.viewer_addr(), &target).from(VIEWER).header("Origin", origin).send().await;
        assert_eq!(resp.status, status, "{target}");
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"), "{target} ({status})");
    }
    let resp = Request::options(server.viewer_addr(), "/o/a.ts")
        .from(VIEWER)
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await;
    assert!((200..300).contains(&resp.status), "preflight: {}", resp.status);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp.header("access-control-allow-methods").unwrap_or("").to_ascii_uppercase();
    assert!(methods.contains("GET") && methods.contains("HEAD"), "{methods}");
    let headers = resp.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
    assert!(headers.contains("range"), "{headers}");
}

#[tokio::test]
async fn cors_origin_list_is_honoured() {
    let server = ops_server(&[], "cors_origins = [\"https://good.example\"]");
    let target = url("/o/a.ts", OPS_KEYS[0], Some(VIEWER), now() + 300);
    let with_origin =
        |origin: &str| Request::get(server.viewer_addr(), &target).from(VIEWER).header("Origin", origin);
    let good = with_origin("https://good.example").send().await;
    assert_eq!(good.header("access-control-allow-origin"), Some("https://good.example"));
    let evil = with_origin("https://evil.example").send().await;
    assert_eq!(evil.header("access-control-allow-origin"), None);
    let refused = Request::get(server.viewer_addr(), "/o/a.ts")
        .from(VIEWER)
        .header("Origin", "https://good.example")
        .send()
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), Some("https://good.example"));
}

/// Connects, sends `bytes`, and reports whether the server closed the connection within
/// `limit` (true) or kept it open (false).
async fn closed_within(to: SocketAddr, bytes: &[u8], limit: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    // EOF or a reset both mean the server let go.
    tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await.is_ok()
}

#[tokio::test]
async fn header_read_timeout_closes_slow_clients() {
    let server = ops_server(&[], "header_read_timeout = 1");
    let generous = Duration::from_secs(10);
    assert!(
        closed_within(server.viewer_addr(), b"GET /o/a.ts HT", generous).await,
        "a partial request line was held open"
    );
    assert!(
        closed_within(server.viewer_addr(), b"GET /o/a.ts HTTP/1.1\r\nHost: x\r\n", generous).await,
        "partial headers were held open"
    );
    assert!(closed_within(server.viewer_addr(), b"", generous).await, "a silent connection was held open");
    // The server still answers afterwards.
    assert_eq!(get(&server, "/o/a.ts", VIEWER).await.status, 403);
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_download_and_exits_0() {
    let server = ops_server(&[], "");
    let target = url("/o/big.mp4", OPS_KEYS[0], Some(VIEWER), now() + 300);
    let mut download =
        Streaming::open(&Request::get(server.viewer_addr(), &target).from(VIEWER)).await.unwrap();
    assert_eq!(download.status, 200);
    download.read_at_least(1 << 20).await.unwrap();

    server.signal("TERM");
    server.wait_for_log("shutting down", LOG_WAIT);
    // No new viewers once draining (bounded wait for the listener to close).
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            http(&Request::get(server.viewer_addr(), "/o/a.ts").from(VIEWER)),
        )
        .await;
        if !matches!(attempt, Ok(Ok(_))) {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The admin port stays up for the drain: the load balancer sees not-ready, Prometheus
    // still scrapes.
    let ready = admin(&server, "/readyz").await;
    assert_eq!((ready.status, ready.text().as_str()), (503, "draining\n"));
    assert_eq!(admin(&server, "/healthz").await.status, 200);
    assert_eq!(admin(&server, "/metrics").await.status, 200);

    download.read_to_end().await.unwrap();
    assert_eq!(download.body.len(), BIG, "the in-flight download was cut");
    assert!(download.body == pattern(BIG, 4));
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn relative_streams_dir_is_relative_to_the_config_file() {
    let setup = Setup::new("relative");
    setup.file("rel/a.ts", "relative");
    let config = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = \"streams\"\n\
                  [streams.rel]\nkeys = [\"rel-key\"]\n";
    // The test's working directory is the package root, not the config's folder.
    let server = Server::start_in(setup.dir, config, &[]);
    let resp = get(&server, &url("/rel/a.ts", "rel-key", Some(VIEWER), now() + 300), VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "relative"));
}

#[test]
fn the_default_config_is_hlsgate_toml_in_the_working_directory() {
    let dir = TempDir::new("default-config");
    dir.write("hlsgate.toml", "[streams.s]\nkeys = [\"k\"]\nip_prefix_v6 = 129\n");
    let out = Command::new(env!("CARGO_BIN_EXE_hlsgate"))
        .arg("serve")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("streams.s.ip_prefix_v6"), "{stderr}");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = TempDir::new("jsonlog");
    let path = dir.write(
        "hlsgate.toml",
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[streams.s]\nkeys = [\"json-secret\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hlsgate"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = collect_lines(child.stderr.take().unwrap(), move |line| {
        if line.contains("hlsgate ready") {
            let _ = tx.send(line.to_string());
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(20));
    let status = terminate(&mut child);
    let ready =
        ready.unwrap_or_else(|e| panic!("no ready line ({e}); {status:?}: {:?}", lines.lock().unwrap()));
    let json: serde_json::Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready}"));
    assert_eq!(json["level"], "INFO", "{ready}");
    assert_eq!(json["fields"]["message"], "hlsgate ready", "{ready}");
    let viewers: SocketAddr = json["fields"]["viewers"].as_str().unwrap().parse().unwrap();
    assert_eq!(viewers.ip().to_string(), "127.0.0.1");
    for line in lines.lock().unwrap().iter() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(!line.contains("json-secret"), "a key in the log: {line}");
    }
}

#[test]
fn a_bad_config_exits_2_naming_the_field() {
    let base = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
    for (config, field) in [
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nip_prefix_v4 = 99\n"), "streams.s.ip_prefix_v4"),
        (format!("{base}[streams.s]\nkeys = []\n"), "streams.s.keys"),
        (format!("{base}trusted_proxies = [\"nonsense\"]\n"), "trusted_proxies[0]"),
        (format!("{base}header_read_timeout = 0\n"), "header_read_timeout"),
        (format!("{base}[defaults]\nsession_ttl = 0\n[streams.s]\nkeys = [\"k\"]\n"), "defaults.session_ttl"),
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nsegment_ttl = \"often\"\n"), "streams.s.segment_ttl"),
        ("listen = \"nowhere\"\n".to_string(), "listen"),
        (format!("{base}bogus_field = 1\n"), "bogus_field"),
        (format!("{base}[streams.s]\nkeys = [\"k\"]\nentry_ip = \"sometimes\"\n"), "streams.s.entry_ip"),
        (format!("{base}[defaults]\nskew = \"5\"\n"), "defaults.skew"),
        (format!("{base}cors_origins = [\"example.com\"]\n"), "cors_origins[0]"),
    ] {
        let (code, stderr) = serve_once(&config);
        assert_eq!(code, Some(2), "{config}\n{stderr}");
        assert!(stderr.contains(field), "{field} not named:\n{stderr}");
        assert!(!stderr.contains("hlsgate ready"));
    }
    let (code, _) = serve_once("this is [[[ not toml");
    assert_eq!(code, Some(2));
    // A mistyped key list names the field, never the key.
    let (code, stderr) = serve_once(&format!("{base}[streams.s]\nkeys = \"topsecret-key\"\n"));
    assert_eq!(code, Some(2));
    assert!(stderr.contains("streams.s.keys") && !stderr.contains("topsecret"), "{stderr}");
}
