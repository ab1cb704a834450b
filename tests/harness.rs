//! Self-checks of the test harness itself (tests/common), independent of the hlsgate
//! server: if these fail, every other integration test's verdict is suspect.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `python3 -m http.server` on 127.0.0.1, a real third-party server whose access log shows
/// the peer address and the raw request line. Killed by PID on drop.
struct PyServer {
    child: Child,
    addr: SocketAddr,
    log: Lines,
    _root: Option<TempDir>,
}

impl PyServer {
    fn start(root: TempDir) -> PyServer {
        Self::serve(root.path().to_path_buf(), Some(root))
    }

    /// Serves `dir`; `owned` (if any) is removed when the server is dropped.
    fn serve(dir: std::path::PathBuf, owned: Option<TempDir>) -> PyServer {
        let mut child = Command::new("python3")
            // -u: unbuffered, or the "Serving HTTP on … port N" line stays in a pipe buffer.
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(&dir)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (scripts/test-deps.sh)");
        let (tx, rx) = mpsc::channel();
        collect_lines(child.stdout.take().unwrap(), move |line| {
            if let Some(port) = serving_port(line) {
                let _ = tx.send(port);
            }
        });
        // http.server writes its access log to stderr.
        let log = collect_lines(child.stderr.take().unwrap(), |_| {});
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(port) => port,
            Err(e) => {
                terminate(&mut child);
                panic!("python http.server did not start: {e}; stderr: {:?}", log.lock().unwrap());
            }
        };
        PyServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log, _root: owned }
    }

    /// Waits for an access-log line containing `needle` (logged after the response is sent).
    fn log_line(&self, needle: &str) -> String {
        for _ in 0..250 {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no access-log line with {needle:?}; log: {:#?}", self.log.lock().unwrap());
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..." → 40123
fn serving_port(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Serving HTTP on ")?;
    rest.split(" port ").nth(1)?.split(' ').next()?.parse().ok()
}

#[tokio::test]
async fn client_binds_the_chosen_viewer_ip_and_sends_targets_verbatim() {
    let root = TempDir::new("pyroot");
    root.write("hello.txt", "hello, viewer\n");
    let py = PyServer::start(root);

    let resp = Request::get(py.addr, "/hello.txt").from("127.0.0.2").send().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello, viewer\n");
    assert_eq!(resp.header("CONTENT-length"), Some("14"), "lookup is case-insensitive");
    let line = py.log_line("\"GET /hello.txt HTTP/1.1\"");
    assert!(line.starts_with("127.0.0.2 "), "server saw another peer: {line}");

    let head = Request::head(py.addr, "/hello.txt").from("127.0.0.3").send().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("14"));
    assert!(head.body.is_empty(), "HEAD must not read a body");
    assert!(py.log_line("\"HEAD /hello.txt HTTP/1.1\"").starts_with("127.0.0.3 "));

    // The targets hlsgate's path checks must see unaltered. (%00 is checked against the
    // in-process server below: python's http.server drops the connection on it.)
    for target in ["/demo/../x", "/demo/%2e%2e/x", "/demo%2Fx", "/demo\\..\\x"] {
        let resp = Request::get(py.addr, target).from("127.0.0.4").send().await;
        assert!(resp.status >= 200, "{target}: {}", resp.status);
        // http.server's log escapes a backslash as two; the wire had one (see the test below).
        let logged = target.replace('\\', "\\\\");
        let line = py.log_line(&format!("\"GET {logged} HTTP/1.1\""));
        assert!(line.starts_with("127.0.0.4 "), "{line}");
    }
}

/// An in-process server that records exactly what arrived and answers with fixed bytes.
async fn one_shot(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<(SocketAddr, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, peer) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before finishing its request");
            got.extend_from_slice(&buf[..n]);
        }
        stream.write_all(reply).await.unwrap();
        stream.shutdown().await.unwrap();
        (peer, got)
    });
    (addr, task)
}

#[tokio::test]
async fn client_sends_exact_bytes_and_decodes_chunked() {
    let (addr, task) = one_shot(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Seen: yes\r\n\r\n\
          5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n",
    )
    .await;
    let resp = Request::get(addr, "/a%2F..\\b%00.ts")
        .from("127.0.0.5")
        .header("Host", "cdn.example")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("Range", "bytes=0-9")
        .send()
        .await;
    let (peer, got) = task.await.unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.5");
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "GET /a%2F..\\b%00.ts HTTP/1.1\r\nHost: cdn.example\r\nX-Forwarded-For: 203.0.113.7\r\n\
         Range: bytes=0-9\r\nConnection: close\r\n\r\n",
        "a test-set Host replaces the default one, and nothing else is added"
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello, world");
    assert_eq!(resp.header("x-seen"), Some("yes"));
}

#[tokio::test]
async fn client_adds_host_and_can_omit_it() {
    let (addr, task) = one_shot(b"HTTP/1.1 204 No Content\r\n\r\n").await;
    let resp = Request::options(addr, "*").header("Origin", "https://player.example").send().await;
    let (_, got) = task.await.unwrap();
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with(&format!("OPTIONS * HTTP/1.1\r\nHost: {addr}\r\nOrigin: ")), "{got}");
    assert_eq!(resp.status, 204);

    let (addr, task) = one_shot(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
    let resp = Request::get(addr, "/").no_host().send().await;
    let (_, got) = task.await.unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn client_times_out_instead_of_hanging() {
    // Accepts and never answers nor closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move { listener.accept().await });
    let err = http(&Request::get(addr, "/").timeout(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    hold.abort();
}

#[test]
fn parser_cases() {
    // Interim 100 is skipped; Content-Length limits the body.
    let r = parse_response(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nabcdef",
        false,
    )
    .unwrap();
    assert_eq!((r.status, r.reason.as_str(), r.text().as_str()), (206, "Partial Content", "abc"));
    // No length: to EOF.
    assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\n\r\nrest", false).unwrap().text(), "rest");
    // HEAD ignores the announced length.
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true).unwrap().body.is_empty());
    // A short body is an error, not a silently truncated pass.
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", false).is_err());
    assert!(parse_response(b"garbage", false).is_err());
    // Repeated headers.
    let r =
        parse_response(b"HTTP/1.1 200 OK\r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    assert_eq!(r.header_all("VARY"), ["a", "b"]);
}

#[test]
fn ready_line_contract() {
    let plain = "2026-11-28T18:40:00Z  INFO hlsgate::server: hlsgate ready viewers=127.0.0.1:41234 admin=127.0.0.1:40111";
    let want: (SocketAddr, SocketAddr) =
        ("127.0.0.1:41234".parse().unwrap(), "127.0.0.1:40111".parse().unwrap());
    assert_eq!(parse_ready_line(plain), Some(want));
    // What tracing's fmt layer writes when colours are on.
    let coloured = "\x1b[2m2026-11-28T18:40:00Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mhlsgate::server\x1b[0m\x1b[2m:\x1b[0m \
                    hlsgate ready \x1b[3mviewers\x1b[0m\x1b[2m=\x1b[0m127.0.0.1:41234 \x1b[3madmin\x1b[0m\x1b[2m=\x1b[0m127.0.0.1:40111";
    assert_eq!(parse_ready_line(&strip_ansi(coloured)), Some(want));
    let quoted = "INFO hlsgate ready viewers=\"[::1]:8080\" admin=\"127.0.0.1:9090\"";
    assert_eq!(parse_ready_line(quoted).unwrap().0, "[::1]:8080".parse().unwrap());
    assert_eq!(parse_ready_line("INFO hlsgate starting viewers=127.0.0.1:1 admin=127.0.0.1:2"), None);
}

#[test]
fn toml_strings_escape() {
    assert_eq!(toml_str(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
    let parsed: toml::Value = toml::from_str(&format!("p = {}", toml_str("a\\b\"c\n\u{1}"))).unwrap();
    assert_eq!(parsed["p"].as_str(), Some("a\\b\"c\n\u{1}"));
}

/// The one place the signer is checked against an independent MD5: the nginx secure_link
/// documentation recipe `echo -n '{expires}{uri}{addr} {secret}' | openssl md5 -binary | base64url`.
#[test]
fn signed_helper_matches_openssl() {
    // nginx's documented example value, as a fixed anchor.
    assert_eq!(
        signed("/s/link", "secret", Some("127.0.0.1"), 2147483647),
        "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647"
    );
    let expires = now() + 300;
    for (path, ip) in
        [("/demo/master.m3u8", None), ("/demo/180p/seg_000.ts", Some("127.0.0.2")), ("/l/a b", Some("::1"))]
    {
        let want = openssl_token(expires, path, ip.unwrap_or(""), "s3cret");
        assert_eq!(signed(path, "s3cret", ip, expires), format!("{path}?md5={want}&expires={expires}"));
    }
}

/// A stand-in for hlsgate that honours the ready-line contract, logs what it is asked, and
/// reacts to SIGHUP; checks the Server guard before the real server exists.
const FAKE_SERVER: &str = r#"#!/usr/bin/env bash
echo "args: $*" >&2
echo "config: $(head -c 200 "$3")" >&2
trap 'echo "reload requested" >&2' HUP
echo "2026-11-28T18:40:00Z  INFO hlsgate::server: hlsgate ready viewers=127.0.0.1:41234 admin=127.0.0.1:40111" >&2
while :; do sleep 0.05; done
"#;

#[test]
fn server_guard_reads_ready_line_keeps_logs_signals_and_kills() {
    let dir = TempDir::new("fake");
    let script = dir.write("fake-hlsgate", FAKE_SERVER);
    Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    let config = format!("listen = \"127.0.0.1:0\"\nstreams_dir = {}\n", toml_path(&repo_streams()));
    let server = Server::start_program(&script, dir, &config, &[("RUST_LOG", "debug")]);
    assert_eq!(server.viewer_addr(), "127.0.0.1:41234".parse().unwrap());
    assert_eq!(server.admin_addr(), "127.0.0.1:40111".parse().unwrap());
    let args = server.wait_for_log("args:", Duration::from_secs(5));
    assert_eq!(args, format!("args: serve --config {}", server.config_path().display()));
    server.wait_for_log("config: listen = \"127.0.0.1:0\"", Duration::from_secs(5));

    server.reload();
    server.wait_for_log("reload requested", Duration::from_secs(5));

    // Drop must end and reap the process.
    let pid = server.pid();
    let dir = server.dir().path().to_path_buf();
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} still exists after drop");
    assert!(!dir.exists(), "temp dir left behind");
}

#[test]
fn server_guard_stop_returns_the_exit_status() {
    let dir = TempDir::new("fake");
    let script = dir.write("fake-hlsgate", FAKE_SERVER);
    Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    let server = Server::start_program(&script, dir, "", &[]);
    let status = server.stop();
    assert!(!status.success(), "bash killed by SIGTERM: {status}");
}

/// Works with today's stub main and with the real server (which must reject bad TOML).
#[test]
#[should_panic(expected = "exited before ready")]
fn server_guard_reports_a_server_that_dies_before_ready() {
    Server::start("this is [[[ not toml");
}

#[test]
fn copy_demo_copies_the_committed_stream() {
    let dir = TempDir::new("copy");
    let streams = copy_demo(&dir);
    for rel in ["demo/master.m3u8", "demo/180p/index.m3u8", "demo/270p/seg_007.ts"] {
        let copied = std::fs::read(streams.join(rel)).unwrap();
        assert_eq!(copied, std::fs::read(repo_streams().join(rel)).unwrap(), "{rel}");
    }
}

/// The browser toolchain end to end on the committed, unsigned demo: Chromium + hls.js play
/// the player page, and a missing playlist surfaces as a fatal error with its HTTP status.
#[test]
fn browser_plays_the_demo_and_reports_a_404() {
    let py = PyServer::serve(repo_root(), None);
    let page = |src: &str| format!("http://{}/assets/player.html?src={src}", py.addr);

    let ok = play(&page("/streams/demo/master.m3u8"), 4.0);
    assert!(ok.fatal.is_none() && !ok.timed_out, "{ok:?}");
    assert!(ok.current_time >= 4.0, "{ok:?}");

    let missing = play(&page("/streams/demo/missing.m3u8"), 4.0);
    assert_eq!(missing.fatal_status(), Some(404), "{missing:?}");

    // A src with its own query (as every signed URL has) survives the trip through ?src=;
    // the query must reach the server, so python's log shows it verbatim.
    let signed_src = "/streams/demo/180p/index.m3u8?md5=abc-_&expires=123";
    let url = player_url(py.addr, signed_src).replace("/player.html", "/assets/player.html");
    let with_query = play(&url, 1.0);
    assert!(with_query.fatal.is_none() && with_query.current_time >= 1.0, "{with_query:?}");
    py.log_line("\"GET /streams/demo/180p/index.m3u8?md5=abc-_&expires=123 HTTP/1.1\" 200");
}
