//! Issue 8, "Prove it holds", part one: hostile requests against the real `hlsgate serve`, one
//! server per test. Every case has the answer it must get, and after each batch the server
//! must still be healthy: a valid signed request gets 200 and `/healthz` on the admin port
//! answers. Many and slow clients are in `tests/clients.rs`.
//!
//! Requests that no well-behaved client library would send (raw non-UTF-8 bytes, bodies on
//! GET, pipelined smuggling attempts) go through the harness's `raw` socket functions, byte
//! for byte.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hlsgate::token::{sign, Key};

const KEY: &str = "hostile-key-5b1e9c";
const VIEWER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
/// The trusted proxy of the forwarding tests.
const PROXY: &str = "127.0.0.1";
/// The viewer behind the proxy (documentation range: no socket of ours has it).
const BEHIND: &str = "203.0.113.5";
/// In a file next to streams_dir, and in one inside it but outside every stream.
const MARKER: &str = "TOPSECRET-outside-every-stream";
const A: &[u8] = b"segment a, the one valid requests fetch";
const B: &[u8] = b"segment b, only ever asked for by a smuggled request";
const C: &[u8] = b"segment c, the pipelined request after the body";
/// `streams/s/%2e%2e/x.ts`: a directory whose name really is `%2e%2e`.
const LITERAL: &[u8] = b"a file in a directory literally named %2e%2e";
const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n";
const ANSWER: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Setup and checks
// ---------------------------------------------------------------------------------------

/// A server for stream `s`, with a secret planted next to streams_dir and in it.
fn start(listen: &str, top: &str) -> Server {
    let dir = TempDir::new("hostile");
    dir.write("secret.txt", format!("{MARKER} next to streams_dir\n"));
    dir.write("streams/secret.txt", format!("{MARKER} in streams_dir, in no stream\n"));
    dir.write("streams/s/a.ts", A);
    dir.write("streams/s/b.ts", B);
    dir.write("streams/s/c.ts", C);
    dir.write("streams/s/index.m3u8", PLAYLIST);
    dir.write("streams/s/%2e%2e/x.ts", LITERAL);
    let config = format!(
        "listen = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{top}\n\
         [streams.s]\nkeys = [\"{KEY}\"]\n",
        toml_path(&dir.join("streams"))
    );
    Server::start_in(dir, &config, &[])
}

fn gate() -> Server {
    start("127.0.0.1:0", "")
}

/// `path?md5=…&expires=…` for `ip`, valid for five minutes.
fn signed_for(path: &str, ip: &str) -> String {
    signed(path, KEY, Some(ip), now() + 300)
}

async fn get(to: SocketAddr, target: &str, from: &str) -> Response {
    Request::get(to, target).from(from).send().await
}

/// The server still works: a valid signed request is 200 with the file, `/healthz` is 200.
async fn assert_healthy(server: &Server) {
    let resp = get(server.viewer_addr(), &signed_for("/s/a.ts", VIEWER), VIEWER).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, A), "valid request after the attack");
    let health = Request::get(server.admin_addr(), "/healthz").send().await;
    assert_eq!(health.status, 200, "/healthz after the attack");
}

/// Nothing outside the stream, and never the key, in anything the server sent.
fn assert_no_leak(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(MARKER), "{what} leaked a file outside the stream: {text}");
    assert!(!text.contains(KEY), "{what} leaked the key: {text}");
}

/// `GET target HTTP/1.1` with a Host, the given header lines (raw bytes, no CRLF), and
/// `Connection: close`.
fn get_bytes(target: &[u8], headers: &[&[u8]]) -> Vec<u8> {
    let mut out = b"GET ".to_vec();
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: hlsgate.test\r\n");
    for line in headers {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// Sends raw bytes and parses the one response.
async fn send_raw(to: SocketAddr, from: &str, bytes: &[u8]) -> Response {
    let got =
        raw(to, from, bytes).await.unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(bytes)));
    assert_no_leak(&got, &format!("{:?}", String::from_utf8_lossy(bytes)));
    parse_response(&got, false).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&got)))
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn traversal_in_every_encoding_is_400_and_nothing_outside_streams_dir_is_served() {
    let server = gate();
    let to = server.viewer_addr();
    let bad = [
        "/s/../secret.txt",
        "/s/../../secret.txt",
        "/s/../hlsgate.toml",
        "/s/%2e%2e/secret.txt",
        "/s/%2E%2e/secret.txt",
        "/s/%2e%2E/%2E%2E/hlsgate.toml",
        "/s/.%2e/secret.txt",
        "/s/%2e./secret.txt",
        "/s/.%2E/.%2E/secret.txt",
        "/s/%2e/a.ts",
        "/s/..%2fsecret.txt",
        "/s%2f..%2fsecret.txt",
        "/s/..%2F..%2Fhlsgate.toml",
        "/s/a.ts%2f",
        "/s/..%5csecret.txt",
        "/s/..%5C..%5Chlsgate.toml",
        "/s/..\\secret.txt",
        "/s\\..\\secret.txt",
        "/s/a.ts\\",
        "/s/./a.ts",
        "//s/..//secret.txt",
        "/./s/a.ts",
        "/s/..",
        "/..",
        "/%2e%2e",
        "/%2e%2e/secret.txt",
        // Overlong UTF-8 for `.` and `/` (2 and 3 bytes): not UTF-8 at all.
        "/s/%c0%ae%c0%ae/secret.txt",
        "/s/%C0%AE%C0%AE/%C0%AE%C0%AE/hlsgate.toml",
        "/s/..%c0%afsecret.txt",
        "/s/%e0%80%ae%e0%80%ae/secret.txt",
        "/s/%ff.ts",
        "/s/%fe%ff/a.ts",
        "/s/a.ts%00",
        "/s/a.ts%00.m3u8",
        "/s/%00/../secret.txt",
        "/s/a%0a.ts",
        // Absolute form.
        "http://127.0.0.1/s/../../secret.txt",
        "http://127.0.0.1/../secret.txt",
        "http://hlsgate.test/s/%2e%2e/secret.txt",
        "*",
    ];
    let exp = now() + 300;
    for target in bad {
        let mut attempts = vec![target.to_string()];
        // And with a token genuinely signed for the path as it decodes.
        let path = target.strip_prefix("http://127.0.0.1").or(target.strip_prefix("http://hlsgate.test"));
        let path = path.unwrap_or(target);
        if path.starts_with('/') {
            let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned();
            let token = sign(exp, &decoded, Some(VIEWER), &Key::new(KEY));
            attempts.push(format!("{target}?md5={token}&expires={exp}"));
        }
        for attempt in attempts {
            let resp = get(to, &attempt, VIEWER).await;
            assert_eq!(resp.status, 400, "{attempt}: {}", resp.text());
            assert_no_leak(&resp.body, &attempt);
        }
    }
    // Doubled slashes are merged as nginx merges them: the token is for the merged path, and
    // merging reaches nothing a single slash does not.
    for (target, merged) in
        [("//s/a.ts", "/s/a.ts"), ("/s//a.ts", "/s/a.ts"), ("//secret.txt", "/secret.txt")]
    {
        let token = sign(exp, merged, Some(VIEWER), &Key::new(KEY));
        let resp = get(to, &format!("{target}?md5={token}&expires={exp}"), VIEWER).await;
        let expected = if merged.starts_with("/s/") { 200 } else { 403 };
        assert_eq!(resp.status, expected, "{target}: {}", resp.text());
        assert_no_leak(&resp.body, target);
    }
    // Raw bytes that no URL encoder would send: a NUL, overlong dots, 0xFF, a backslash.
    for target in [
        &b"/s/a\x00.ts"[..],
        b"/s/\xc0\xae\xc0\xae/secret.txt",
        b"/s/\xff.ts",
        b"/s/..\\..\\secret.txt",
        b"/s/\x7f.ts",
    ] {
        let resp = send_raw(to, VIEWER, &get_bytes(target, &[])).await;
        assert_eq!(resp.status, 400, "{:?}: {}", String::from_utf8_lossy(target), resp.text());
    }

    // Double encoding is one decoding away from a dot segment, so it names the directory
    // literally called `%2e%2e`: refused without a token, served with one for that name.
    let literal = "/s/%252e%252e/x.ts";
    assert_eq!(get(to, literal, VIEWER).await.status, 403);
    let token = sign(exp, "/s/%2e%2e/x.ts", Some(VIEWER), &Key::new(KEY));
    let resp = get(to, &format!("{literal}?md5={token}&expires={exp}"), VIEWER).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, LITERAL), "{}", resp.text());
    let sneaky = "/s/%252e%252e/%252e%252e/secret.txt";
    let token = sign(exp, "/s/%2e%2e/%2e%2e/secret.txt", Some(VIEWER), &Key::new(KEY));
    let resp = get(to, &format!("{sneaky}?md5={token}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 404, "a literal name that does not exist");
    assert_no_leak(&resp.body, sneaky);
    // The file inside streams_dir but in no stream: `/secret.txt` names an unknown stream,
    // which answers as a bad token does (403), whatever the token.
    let resp = get(to, &signed_for("/secret.txt", VIEWER), VIEWER).await;
    assert_eq!(resp.status, 403);
    assert_no_leak(&resp.body, "/secret.txt");

    assert_healthy(&server).await;
    for line in server.logs() {
        assert!(!line.contains(KEY), "key in the log: {line}");
    }
}

#[tokio::test]
async fn invalid_utf8_is_400_in_the_path_and_harmless_in_header_values() {
    let server = gate();
    let to = server.viewer_addr();
    let exp = now() + 300;
    for path in ["/s/%ff.ts", "/s/a%80.ts", "/s/%c3%28.ts", "/s/%ed%a0%80.ts"] {
        let token = sign(exp, path, Some(VIEWER), &Key::new(KEY));
        for target in [path.to_string(), format!("{path}?md5={token}&expires={exp}")] {
            let resp = get(to, &target, VIEWER).await;
            assert_eq!(resp.status, 400, "{target}");
        }
    }
    let resp = send_raw(to, VIEWER, &get_bytes(b"/s/a\xe9.ts", &[])).await;
    assert_eq!(resp.status, 400, "a raw Latin-1 byte in the path");

    // Header values with bytes that are not UTF-8 (obs-text): every header the server reads
    // (Host for playlist URIs, Range, Origin, forwarding from an untrusted peer) and some it
    // does not. The request is answered as if they were absent or ignorable.
    let odd: [&[u8]; 7] = [
        b"User-Agent: \xff\xfe\xfd",
        b"Range: bytes=\xff-\xfe",
        b"Origin: https://\xc0\xae.example",
        b"X-Forwarded-For: \xff, 6.6.6.6",
        b"Forwarded: for=\"\xff\"",
        b"Cookie: a=\x80\x81",
        b"If-None-Match: \"\xff\"",
    ];
    for path in ["/s/a.ts", "/s/index.m3u8"] {
        let target = signed_for(path, VIEWER);
        for line in odd {
            let resp = send_raw(to, VIEWER, &get_bytes(target.as_bytes(), &[line])).await;
            assert_eq!(resp.status, 200, "{path} with {:?}: {}", String::from_utf8_lossy(line), resp.text());
        }
        let resp = send_raw(to, VIEWER, &get_bytes(target.as_bytes(), &odd)).await;
        assert_eq!(resp.status, 200, "{path} with all of them");
    }
    // A Host that is not text: the playlist is still signed, with relative URIs.
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(signed_for("/s/index.m3u8", VIEWER).as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: \xff\xfe.example\r\nConnection: close\r\n\r\n");
    let resp = send_raw(to, VIEWER, &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("a.ts?md5="), "{}", resp.text());
    // A header name that is not a token is the parser's 400.
    let resp =
        send_raw(to, VIEWER, &get_bytes(signed_for("/s/a.ts", VIEWER).as_bytes(), &[b"X-\xff: 1"])).await;
    assert_eq!(resp.status, 400);
    assert_healthy(&server).await;
}

// ---------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn ten_thousand_query_parameters_get_a_normal_answer() {
    let server = gate();
    let to = server.viewer_addr();
    // 4 bytes a parameter: 40 000 bytes, under the 64 KiB a request target may have.
    let params: Vec<String> = (0..10_000).map(|i| format!("p{}=", i % 10)).collect();
    let filler = params.join("&");
    let (left, right) = (params[..5000].join("&"), params[5000..].join("&"));
    let resp = get(to, &format!("/s/a.ts?{filler}"), VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (403, "token missing\n"));

    let exp = now() + 300;
    let token = sign(exp, "/s/a.ts", Some(VIEWER), &Key::new(KEY));
    for target in [
        format!("/s/a.ts?{left}&md5={token}&{right}&expires={exp}"),
        format!("/s/a.ts?md5={token}&expires={exp}&{filler}"),
        format!("/s/a.ts?{filler}&expires={exp}&md5={token}"),
    ] {
        let resp = get(to, &target, VIEWER).await;
        assert_eq!((resp.status, resp.body.as_slice()), (200, A), "{} bytes", target.len());
    }
    // Among them, but bound to someone else: still checked.
    let resp = get(to, &format!("/s/a.ts?{left}&md5={token}&{right}&expires={exp}"), OTHER).await;
    assert_eq!(resp.status, 403);
    // The playlist too (its URIs are signed, the parameters not copied).
    let token = sign(exp, "/s/index.m3u8", Some(VIEWER), &Key::new(KEY));
    let resp = get(to, &format!("/s/index.m3u8?{filler}&md5={token}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() < 1000, "the playlist grew with the query: {} bytes", resp.body.len());
    assert_healthy(&server).await;
}

/// Sends a request that is too large to be read whole; returns the status of the answer.
async fn oversized(server: &Server, request: &[u8]) -> u16 {
    let got = raw_until_closed(server.viewer_addr(), VIEWER, request, ANSWER)
        .await
        .unwrap_or_else(|e| panic!("{} byte request: {e}", request.len()));
    assert_no_leak(&got, "an oversized request");
    let resp = parse_response(&got, false).unwrap_or_else(|e| {
        panic!(
            "{} byte request: {e}: {:?}",
            request.len(),
            String::from_utf8_lossy(&got[..got.len().min(500)])
        )
    });
    resp.status
}

#[tokio::test]
async fn a_huge_query_is_414_or_431_and_the_server_carries_on() {
    let server = gate();
    let signed = signed_for("/s/a.ts", VIEWER);
    for size in [100 << 10, 1 << 20] {
        let target = format!("{signed}&pad={}", "a".repeat(size));
        let status = oversized(&server, &get_bytes(target.as_bytes(), &[])).await;
        eprintln!("a {size} byte query: {status}");
        assert!([414, 431].contains(&status), "{size} byte query: {status}");
        assert_healthy(&server).await;
    }
}

#[tokio::test]
async fn header_floods_are_431() {
    let server = gate();
    let target = signed_for("/s/a.ts", VIEWER);
    let many: Vec<Vec<u8>> = (0..5000).map(|i| format!("X-Flood-{i}: {i}").into_bytes()).collect();
    let same: Vec<Vec<u8>> = (0..5000).map(|_| b"X-Forwarded-For: 6.6.6.6".to_vec()).collect();
    let huge = format!("X-Huge: {}", "h".repeat(1 << 20)).into_bytes();
    let cookie = format!("Cookie: {}", "c=1; ".repeat(200_000)).into_bytes();
    for (what, lines) in [
        ("5000 headers", many),
        ("5000 X-Forwarded-For", same),
        ("1 MiB header", vec![huge]),
        ("1 MiB cookie", vec![cookie]),
    ] {
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let status = oversized(&server, &get_bytes(target.as_bytes(), &lines)).await;
        assert_eq!(status, 431, "{what}");
        assert_healthy(&server).await;
    }
}

// ---------------------------------------------------------------------------------------
// Bodies, pipelining, methods
// ---------------------------------------------------------------------------------------

/// A request for `path` signed for VIEWER, keep-alive, with extra head lines and a body.
fn with_body(method: &str, path: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{method} {} HTTP/1.1\r\nHost: hlsgate.test\r\n{head}\r\n", signed_for(path, VIEWER))
            .into_bytes();
    out.extend_from_slice(body);
    out
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_body_on_get_is_answered_and_never_desynchronises_the_connection() {
    let server = gate();
    let to = server.viewer_addr();
    // The body is itself a complete request for b.ts: if the server ever read it as the next
    // request, b.ts would be answered. It must not be; the real next request (c.ts) must.
    let smuggled = format!("GET {} HTTP/1.1\r\nHost: hlsgate.test\r\n\r\n", signed_for("/s/b.ts", VIEWER));
    let last = format!(
        "GET {} HTTP/1.1\r\nHost: hlsgate.test\r\nConnection: close\r\n\r\n",
        signed_for("/s/c.ts", VIEWER)
    );
    let cases = [
        (
            "Content-Length",
            with_body(
                "GET",
                "/s/a.ts",
                &format!("Content-Length: {}\r\n", smuggled.len()),
                smuggled.as_bytes(),
            ),
        ),
        (
            "chunked",
            with_body("GET", "/s/a.ts", "Transfer-Encoding: chunked\r\n", &chunked(smuggled.as_bytes())),
        ),
        (
            "HEAD with Content-Length",
            with_body(
                "HEAD",
                "/s/a.ts",
                &format!("Content-Length: {}\r\n", smuggled.len()),
                smuggled.as_bytes(),
            ),
        ),
        (
            "playlist, Content-Length",
            with_body(
                "GET",
                "/s/index.m3u8",
                &format!("Content-Length: {}\r\n", smuggled.len()),
                smuggled.as_bytes(),
            ),
        ),
        ("GET, empty chunked", with_body("GET", "/s/a.ts", "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n")),
    ];
    for (what, first) in cases {
        let mut bytes = first.clone();
        bytes.extend_from_slice(last.as_bytes());
        let got = raw(to, VIEWER, &bytes).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains(std::str::from_utf8(B).unwrap()),
            "{what}: the body was answered as a request:\n{text}"
        );
        let head = what.starts_with("HEAD");
        // A HEAD response has a Content-Length and no body: parse it on its own.
        let responses = if head {
            let end = text.find("\r\n\r\n").expect("a response head") + 4;
            let mut all = vec![parse_response(&got[..end], true).unwrap()];
            all.extend(parse_responses(&got[end..]).unwrap_or_else(|e| panic!("{what}: {e}\n{text}")));
            all
        } else {
            parse_responses(&got).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
        };
        let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200], "{what}: one answer per request:\n{text}");
        if !head && !what.starts_with("playlist") {
            assert_eq!(responses[0].body, A, "{what}");
        }
        assert_eq!(responses[1].body, C, "{what}: the second answer is for the second request");
    }

    // Content-Length and chunked at once (the classic smuggling pair): refused, or read as
    // chunked; never is the smuggled request answered.
    let mut both = with_body(
        "GET",
        "/s/a.ts",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        &chunked(smuggled.as_bytes()),
    );
    both.extend_from_slice(last.as_bytes());
    let got = raw(to, VIEWER, &both).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains(std::str::from_utf8(B).unwrap()), "CL+TE smuggled a request:\n{text}");
    let responses = parse_responses(&got).unwrap_or_else(|e| panic!("CL+TE: {e}\n{text}"));
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    // hyper reads it as chunked and then closes the connection (RFC 9112 6.1 allows both).
    let closed = responses.first().and_then(|r| r.header("connection")) == Some("close");
    assert!(
        statuses == [400] || statuses == [200, 200] || (statuses == [200] && closed),
        "CL+TE: {statuses:?}\n{text}"
    );
    // A large body (1 MiB, the smuggled request at its end) is not read through: the answer
    // comes, then the connection may close instead of answering the pipelined request (the
    // client retries on a new one). Never is any part of the body read as a request.
    let mut filler = "x".repeat(1 << 20).into_bytes();
    filler.extend_from_slice(smuggled.as_bytes());
    for (what, mut big) in [
        (
            "1 MiB, Content-Length",
            with_body("GET", "/s/a.ts", &format!("Content-Length: {}\r\n", filler.len()), &filler),
        ),
        ("1 MiB, chunked", with_body("GET", "/s/a.ts", "Transfer-Encoding: chunked\r\n", &chunked(&filler))),
    ] {
        big.extend_from_slice(last.as_bytes());
        let got = raw_until_closed(to, VIEWER, &big, ANSWER).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains(std::str::from_utf8(B).unwrap()),
            "{what}: the body was answered as a request"
        );
        let responses = parse_responses(&got).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
        let bodies: Vec<(u16, &[u8])> = responses.iter().map(|r| (r.status, r.body.as_slice())).collect();
        assert!(bodies == [(200, A)] || bodies == [(200, A), (200, C)], "{what}: {bodies:?}");
        eprintln!("{what}: {} answer(s) on the connection", bodies.len());
    }
    // A broken chunked body is the parser's 400, and ends the connection.
    let mut broken = with_body("GET", "/s/a.ts", "Transfer-Encoding: chunked\r\n", b"zz\r\nnope\r\n");
    broken.extend_from_slice(last.as_bytes());
    let got = raw(to, VIEWER, &broken).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains(std::str::from_utf8(C).unwrap()),
        "a request after a broken body was answered:\n{text}"
    );
    assert_healthy(&server).await;
}

#[tokio::test]
async fn other_methods_are_403_without_a_token_and_405_with_one() {
    let server = gate();
    let to = server.viewer_addr();
    for method in ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "BREW"] {
        let bare = format!("{method} /s/a.ts HTTP/1.1\r\nHost: hlsgate.test\r\nConnection: close\r\n\r\n");
        let resp = send_raw(to, VIEWER, bare.as_bytes()).await;
        assert_eq!(resp.status, 403, "{method} without a token: {}", resp.text());
        let signed = with_body(method, "/s/a.ts", "Content-Length: 5\r\nConnection: close\r\n", b"hello");
        let resp = send_raw(to, VIEWER, &signed).await;
        assert_eq!(resp.status, 405, "{method} with a token: {}", resp.text());
        let allow = resp.header("allow").unwrap_or("");
        assert!(allow.contains("GET") && !allow.contains(method), "{method}: Allow {allow:?}");
        assert_ne!(resp.body, A, "{method} got the file");
        assert!(resp.header("access-control-allow-origin").is_some(), "{method}: CORS on the refusal");
    }
    // A preflight is answered without a token, for GET and Range.
    let resp = Request::options(to, "/s/a.ts")
        .from(VIEWER)
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await;
    assert!((200..300).contains(&resp.status), "preflight: {}", resp.status);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    let methods = resp.header("access-control-allow-methods").unwrap_or("").to_ascii_uppercase();
    assert!(methods.contains("GET") && !methods.contains("POST"), "{methods}");
    assert_ne!(resp.body, A);
    assert_healthy(&server).await;
}

// ---------------------------------------------------------------------------------------
// Who the client is
// ---------------------------------------------------------------------------------------

/// The token and expiry of the one segment URI in a rewritten PLAYLIST.
fn issued(playlist: &str) -> (String, u64) {
    let uri = playlist
        .lines()
        .find(|l| l.starts_with("a.ts?"))
        .unwrap_or_else(|| panic!("no a.ts URI:\n{playlist}"));
    let param = |name: &str| {
        uri.split(['?', '&'])
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
            .unwrap()
    };
    (param("md5"), param("expires").parse().unwrap())
}

#[tokio::test]
async fn ipv6_and_ipv4_mapped_peers_are_bound_by_their_canonical_address() {
    let bindv6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
    assert_eq!(bindv6only.trim(), "0", "this test needs a dual-stack [::] listener");
    let server = start("[::]:0", "trusted_proxies = [\"127.0.0.1\"]");
    let port = server.viewer_addr().port();
    assert!(server.viewer_addr().ip().is_unspecified() && server.viewer_addr().is_ipv6());
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();

    // An IPv4 socket on the dual-stack listener is ::ffff:127.0.0.2 to the kernel, and
    // 127.0.0.2 to hlsgate: the token signed for 127.0.0.2 opens, the mapped spelling not.
    let resp = get(v4, &signed_for("/s/a.ts", VIEWER), VIEWER).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, A), "{}", resp.text());
    assert_eq!(get(v4, &signed_for("/s/a.ts", "::ffff:127.0.0.2"), VIEWER).await.status, 403);
    assert_eq!(get(v4, &signed_for("/s/a.ts", VIEWER), OTHER).await.status, 403);
    // What it issues to the mapped peer is bound to the canonical text too.
    let resp = get(v4, &signed_for("/s/index.m3u8", VIEWER), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (token, exp) = issued(&resp.text());
    assert_eq!(token, sign(exp, "/s/a.ts", Some(VIEWER), &Key::new(KEY)));
    let target = format!("/s/a.ts?md5={token}&expires={exp}");
    assert_eq!(get(v4, &target, VIEWER).await.status, 200);
    assert_eq!(get(v4, &target, OTHER).await.status, 403);
    assert_eq!(get(v6, &target, "::1").await.status, 403);

    // A real IPv6 peer is bound by its RFC 5952 text.
    let resp = get(v6, &signed_for("/s/index.m3u8", "::1"), "::1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (token, exp) = issued(&resp.text());
    assert_eq!(token, sign(exp, "/s/a.ts", Some("::1"), &Key::new(KEY)));
    assert_eq!(get(v6, &signed_for("/s/a.ts", "0:0:0:0:0:0:0:1"), "::1").await.status, 403);
    assert_eq!(get(v4, &format!("/s/a.ts?md5={token}&expires={exp}"), VIEWER).await.status, 403);

    // trusted_proxies = 127.0.0.1 matches the mapped peer ::ffff:127.0.0.1 ...
    let xff = |resp: Request| resp.header("X-Forwarded-For", "6.6.6.6, 127.0.0.9");
    assert_eq!(
        xff(Request::get(v4, &signed_for("/s/a.ts", "127.0.0.9")).from(PROXY)).send().await.status,
        200
    );
    assert_eq!(xff(Request::get(v4, &signed_for("/s/a.ts", PROXY)).from(PROXY)).send().await.status, 403);
    // ... and no other peer.
    assert_eq!(
        xff(Request::get(v6, &signed_for("/s/a.ts", "127.0.0.9")).from("::1")).send().await.status,
        403
    );
    assert_eq!(xff(Request::get(v6, &signed_for("/s/a.ts", "::1")).from("::1")).send().await.status, 200);
    assert_eq!(
        xff(Request::get(v4, &signed_for("/s/a.ts", "127.0.0.9")).from(VIEWER)).send().await.status,
        403
    );
    assert_healthy_at(&server, v4).await;
}

async fn assert_healthy_at(server: &Server, to: SocketAddr) {
    let resp = get(to, &signed_for("/s/a.ts", VIEWER), VIEWER).await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, A));
    assert_eq!(Request::get(server.admin_addr(), "/healthz").send().await.status, 200);
}

/// GET /s/a.ts signed for `bound_to`, from `from`, with raw header lines; the status and body.
async fn via(server: &Server, from: &str, bound_to: &str, lines: &[&[u8]]) -> (u16, String) {
    let target = signed_for("/s/a.ts", bound_to);
    let resp = send_raw(server.viewer_addr(), from, &get_bytes(target.as_bytes(), lines)).await;
    (resp.status, resp.text())
}

/// The status alone.
async fn status_via(server: &Server, from: &str, bound_to: &str, lines: &[&[u8]]) -> u16 {
    via(server, from, bound_to, lines).await.0
}

#[tokio::test]
async fn forged_forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let server = gate();
    let forged: [&[u8]; 8] = [
        b"X-Forwarded-For: 127.0.0.9",
        b"X-Forwarded-For: 127.0.0.9, 127.0.0.1",
        b"Forwarded: for=127.0.0.9",
        b"X-Real-IP: 127.0.0.9",
        b"True-Client-IP: 127.0.0.9",
        b"CF-Connecting-IP: 127.0.0.9",
        b"X-Forwarded-For: \xff",
        b"Forwarded: for=\xff",
    ];
    for line in forged {
        let what = String::from_utf8_lossy(line);
        assert_eq!(status_via(&server, VIEWER, "127.0.0.9", &[line]).await, 403, "{what}");
        assert_eq!(status_via(&server, VIEWER, VIEWER, &[line]).await, 200, "{what}");
    }
    assert_eq!(status_via(&server, VIEWER, VIEWER, &forged).await, 200, "all at once");
    // 127.0.0.1 is trusted by nobody here either.
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &forged[..1]).await, 403);
    assert_eq!(status_via(&server, PROXY, PROXY, &forged[..1]).await, 200);
    assert_healthy(&server).await;
}

const UNREADABLE: &str = "unreadable forwarding header";

/// Behind a trusted proxy that appends (default `forwarded_header`, X-Forwarded-For): each
/// comma-separated element is read on its own, as bytes, so one the client filled with
/// non-UTF-8 cannot blind hlsgate to the element the proxy appended.
#[tokio::test]
async fn behind_a_trusted_proxy_an_unreadable_element_never_makes_the_proxy_the_client() {
    let server = gate_behind_proxy("");
    // The client sent `\xff`; the proxy appended what it saw.
    let appended: &[u8] = b"X-Forwarded-For: \xff, 203.0.113.5";
    assert_eq!(
        status_via(&server, PROXY, BEHIND, &[appended]).await,
        200,
        "the appended element is the client"
    );
    assert_eq!(status_via(&server, PROXY, PROXY, &[appended]).await, 403, "never the proxy");
    // Further left garbage changes nothing; nor does a second header line.
    let deep: &[u8] = b"X-Forwarded-For: 6.6.6.6, \xff\xfe, 7.7.7.7, 203.0.113.5";
    assert_eq!(status_via(&server, PROXY, BEHIND, &[deep]).await, 200);
    let lines: [&[u8]; 2] = [b"X-Forwarded-For: \xff", b"X-Forwarded-For: 203.0.113.5"];
    assert_eq!(status_via(&server, PROXY, BEHIND, &lines).await, 200, "two lines are one list");
    // Trusted hops right of the client are skipped as before.
    let chain: &[u8] = b"X-Forwarded-For: \xff, 203.0.113.5, 127.0.0.1";
    assert_eq!(status_via(&server, PROXY, BEHIND, &[chain]).await, 200);

    // An unreadable element right where the client should be: refused, never the proxy.
    for line in [
        &b"X-Forwarded-For: \xff"[..],
        b"X-Forwarded-For: 203.0.113.5, \xff",
        b"X-Forwarded-For: 203.0.113.5, 203.0.113.\xff",
        b"X-Forwarded-For: 203.0.113.5, \xff, 127.0.0.1",
    ] {
        let what = String::from_utf8_lossy(line);
        for bound_to in [PROXY, BEHIND] {
            let (status, body) = via(&server, PROXY, bound_to, &[line]).await;
            assert_eq!(status, 400, "{what} (token for {bound_to}): {body}");
            assert!(body.contains(UNREADABLE), "{what}: {body:?}");
        }
        let resp = send_raw(server.viewer_addr(), PROXY, &get_bytes(b"/s/a.ts", &[line])).await;
        assert_eq!((resp.status, resp.text().contains(UNREADABLE)), (400, true), "{what} without a token");
    }
    // From a peer that is not trusted, the same header is not read at all.
    assert_eq!(status_via(&server, VIEWER, VIEWER, &[b"X-Forwarded-For: \xff"]).await, 200);
    assert_healthy(&server).await;
}

fn gate_behind_proxy(extra: &str) -> Server {
    start("127.0.0.1:0", &format!("trusted_proxies = [\"{PROXY}\"]\n{extra}"))
}

#[tokio::test]
async fn forwarded_header_selects_the_only_header_read() {
    // Default: X-Forwarded-For only; a Forwarded header is ignored even when it is alone.
    let server = gate_behind_proxy("");
    let fwd: &[u8] = b"Forwarded: for=127.0.0.9";
    assert_eq!(status_via(&server, PROXY, PROXY, &[fwd]).await, 200, "Forwarded alone is not read");
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &[fwd]).await, 403);
    let both: [&[u8]; 2] = [b"Forwarded: for=127.0.0.8", b"X-Forwarded-For: 127.0.0.9"];
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &both).await, 200);
    assert_eq!(status_via(&server, PROXY, "127.0.0.8", &both).await, 403);
    assert_eq!(
        status_via(&server, PROXY, PROXY, &[b"Forwarded: for=\xff"]).await,
        200,
        "not read, so not refused"
    );
    assert_healthy(&server).await;
    drop(server);

    let server = gate_behind_proxy("forwarded_header = \"x-forwarded-for\"");
    assert_eq!(status_via(&server, PROXY, PROXY, &[fwd]).await, 200, "named explicitly");
    drop(server);

    let server = gate_behind_proxy("forwarded_header = \"forwarded\"");
    let chain: &[u8] = b"Forwarded: for=6.6.6.6, for=\"127.0.0.9:4711\";proto=http";
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &[chain]).await, 200);
    assert_eq!(status_via(&server, PROXY, "6.6.6.6", &[chain]).await, 403);
    let xff: &[u8] = b"X-Forwarded-For: 127.0.0.9";
    assert_eq!(status_via(&server, PROXY, PROXY, &[xff]).await, 200, "X-Forwarded-For alone is not read");
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &[xff]).await, 403);
    let both: [&[u8]; 2] = [b"X-Forwarded-For: 127.0.0.8", b"Forwarded: for=127.0.0.9"];
    assert_eq!(status_via(&server, PROXY, "127.0.0.9", &both).await, 200);
    assert_eq!(status_via(&server, PROXY, "127.0.0.8", &both).await, 403);
    // Unreadable bytes: ignored in the header not read, refused in the one read.
    assert_eq!(status_via(&server, PROXY, PROXY, &[b"X-Forwarded-For: \xff"]).await, 200);
    let (status, body) = via(&server, PROXY, PROXY, &[b"Forwarded: for=\xff"]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(UNREADABLE), "{body:?}");
    let appended: &[u8] = b"Forwarded: for=\"\xff\", for=203.0.113.5";
    assert_eq!(status_via(&server, PROXY, BEHIND, &[appended]).await, 200);
    assert_eq!(status_via(&server, PROXY, PROXY, &[appended]).await, 403);
    assert_healthy(&server).await;
}

#[test]
fn forwarded_header_takes_only_the_two_names() {
    let config = |value: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nforwarded_header = {value}\n\
             [streams.s]\nkeys = [\"k\"]\n"
        )
    };
    for value in ["\"forwarded\"", "\"x-forwarded-for\""] {
        drop(Server::start_in(TempDir::new("fwd-config"), &config(value), &[]));
    }
    for value in ["\"x-real-ip\"", "\"\"", "\"forwarded, x-forwarded-for\"", "1"] {
        let dir = TempDir::new("fwd-config");
        let path = dir.write("hlsgate.toml", config(value));
        let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_hlsgate"));
        serve.args(["serve", "--config"]).arg(&path).env("NO_COLOR", "1");
        // Bounded: a server that took the value would run until killed.
        let out = run_bounded(&mut serve, ANSWER);
        let stderr = strip_ansi(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("forwarded_header") && !stderr.contains("hlsgate ready"),
            "{value}: {stderr}"
        );
    }
}
