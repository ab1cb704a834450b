//! Issue 11, the edge: TLS on the viewer port (rustls; `tls_cert`/`tls_key`, ALPN h2 and
//! http/1.1, certificate reload on SIGHUP), HTTP/2 over TLS and h2c with prior knowledge on
//! plain ports, with every rule of the gate holding on each protocol.
//!
//! Certificates are made by the test with the openssl CLI; the clients are curl (built with
//! nghttp2), `openssl s_client`, Python's `ssl` module and hls.js in Chromium, so no TLS code of
//! ours is on the client side.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const DEMO_KEY: &str = "demo-key-2026-11";
const ORIGIN: &str = "https://player.example";

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// A config serving the committed demo (live-simulated) with `top` added.
fn demo_config(top: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{top}\n\
         [streams.demo]\nkeys = [\"{DEMO_KEY}\"]\nsimulate_live = true\n",
        toml_path(&repo_streams())
    )
}

/// `tls_cert`/`tls_key` lines for these files.
fn tls_lines(cert: &Path, key: &Path) -> String {
    format!("tls_cert = {}\ntls_key = {}\n", toml_path(cert), toml_path(key))
}

/// A demo server with TLS on, in a temp dir that holds its certificate (`cert.pem`, `cert.key`,
/// named relative to the config, as the README shows).
fn tls_demo(label: &str, top: &str) -> (Server, TestCert) {
    let dir = TempDir::new(label);
    let cert = make_cert(dir.path(), "cert", "hlsgate-edge-A", 0xA1A1, KeyKind::EcP256);
    let config = demo_config(&format!("tls_cert = \"cert.pem\"\ntls_key = \"cert.key\"\n{top}"));
    (Server::start_in(dir, &config, &[]), cert)
}

/// The URI lines of a playlist (`seg.ts?md5=…`), resolved against `dir_path` (`/demo/180p/`).
fn uri_lines(text: &str, dir_path: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| if l.starts_with('/') { l.to_string() } else { format!("{dir_path}{l}") })
        .collect()
}

fn master(ip: Option<&str>) -> String {
    signed("/demo/master.m3u8", DEMO_KEY, ip, now() + 600)
}

/// Every gate rule, through curl with `proto` args against `base` (`https://…` or `http://…`):
/// signed → rewritten 200, unsigned 403, expired 410, CORS on each, preflight, Range 206, HEAD.
/// Returns the http_version curl reported for each request.
fn check_rules(base: &str, proto: &[&str]) -> Vec<String> {
    let mut versions = Vec::new();
    let mut get = |target: &str, extra: &[&str]| {
        let mut args: Vec<&str> = proto.to_vec();
        let origin = format!("Origin: {ORIGIN}");
        args.extend_from_slice(&["-H", &origin]);
        args.extend_from_slice(extra);
        let out = curl(&args, &format!("{base}{target}"));
        versions.push(out.version.clone());
        out
    };

    let signed_master = get(&master(Some("127.0.0.1")), &[]);
    assert_eq!(signed_master.status, 200, "{proto:?} signed master: {signed_master:?}");
    assert_eq!(signed_master.header("access-control-allow-origin"), Some("*"), "{signed_master:?}");
    let variants = uri_lines(&signed_master.text(), "/demo/");
    assert!(!variants.is_empty() && variants.iter().all(|u| u.contains("md5=")), "{}", signed_master.text());

    let media = get(&variants[0], &[]);
    assert_eq!(media.status, 200, "{proto:?} {}: {media:?}", variants[0]);
    let dir = &variants[0][..variants[0].split('?').next().unwrap().rfind('/').unwrap() + 1];
    let segments = uri_lines(&media.text(), dir);
    assert!(segments.len() >= 3 && segments.iter().all(|u| u.contains("md5=")), "{}", media.text());

    let segment = get(&segments[0], &[]);
    assert_eq!(segment.status, 200, "{proto:?} segment: {segment:?}");
    assert!(segment.body.len() > 1000);
    assert_eq!(segment.header("content-type"), Some("video/mp2t"));

    let range = get(&segments[0], &["-r", "0-99"]);
    assert_eq!(range.status, 206, "{proto:?} range: {range:?}");
    assert_eq!(range.body.len(), 100);
    assert_eq!(range.body[..], segment.body[..100]);
    let total = segment.body.len();
    assert_eq!(range.header("content-range"), Some(format!("bytes 0-99/{total}").as_str()));

    let head = get(&segments[0], &["-I"]);
    assert_eq!(head.status, 200, "{proto:?} HEAD: {head:?}");
    assert_eq!(head.header("content-length"), Some(total.to_string().as_str()), "{head:?}");
    // (curl -I writes the head where the body would go; a body would be an error in curl.)
    assert_eq!(head.exit, Some(0), "{head:?}");

    let unsigned = get("/demo/master.m3u8", &[]);
    assert_eq!(unsigned.status, 403, "{proto:?} unsigned: {unsigned:?}");
    assert_eq!(unsigned.header("access-control-allow-origin"), Some("*"));
    assert!(!unsigned.text().contains("md5="));

    let expired = get(&signed("/demo/master.m3u8", DEMO_KEY, Some("127.0.0.1"), now() - 60), &[]);
    assert_eq!(expired.status, 410, "{proto:?} expired: {expired:?}");
    assert_eq!(expired.header("access-control-allow-origin"), Some("*"));

    // Another viewer's segment URL: 403.
    let elsewhere = get(&segments[0], &["--interface", "127.0.0.7"]);
    assert_eq!(elsewhere.status, 403, "{proto:?} from another address: {elsewhere:?}");

    let preflight = get(
        "/demo/180p/seg_000.ts",
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Access-Control-Request-Method: GET",
            "-H",
            "Access-Control-Request-Headers: range",
        ],
    );
    assert!((200..300).contains(&preflight.status), "{proto:?} preflight: {preflight:?}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    versions
}

// ---------------------------------------------------------------------------------------
// 1. TLS: ALPN, HTTP/2 and HTTP/1.1 with every rule
// ---------------------------------------------------------------------------------------

#[test]
fn tls_offers_h2_and_http11_and_every_rule_holds_on_both() {
    let (server, cert) = tls_demo("tls-rules", "");
    let addr = server.viewer_addr();

    // ALPN: h2 when offered first, http/1.1 when that is all the client speaks; the test
    // certificate is served with and without SNI.
    let h2 = served_cert(addr, Some("localhost"), Some("h2,http/1.1"));
    assert_eq!(h2.alpn.as_deref(), Some("h2"), "{}", h2.transcript);
    assert_eq!(h2.serial, cert.serial, "{}", h2.transcript);
    let h1 = served_cert(addr, None, Some("http/1.1"));
    assert_eq!(h1.alpn.as_deref(), Some("http/1.1"), "{}", h1.transcript);
    assert_eq!(h1.serial, cert.serial, "{}", h1.transcript);

    let cacert = cert.cert.to_string_lossy().into_owned();
    let base = format!("https://{addr}");
    let versions = check_rules(&base, &["--http2", "--cacert", &cacert]);
    assert!(versions.iter().all(|v| v == "2"), "not all over HTTP/2: {versions:?}");
    let versions = check_rules(&base, &["--http1.1", "--cacert", &cacert]);
    assert!(versions.iter().all(|v| v == "1.1"), "not all over HTTP/1.1: {versions:?}");

    // The certificate verifies for its DNS name too (curl checks the name against the SAN).
    let port = addr.port();
    let by_name = curl(
        &["--http2", "--cacert", &cacert, "--resolve", &format!("localhost:{port}:127.0.0.1")],
        &format!("https://localhost:{port}{}", master(Some("127.0.0.1"))),
    );
    assert_eq!((by_name.status, by_name.version.as_str()), (200, "2"), "{by_name:?}");

    // HTTP/2's header list limit (16 KiB, README): a 20 KiB header is refused with 431.
    let big = format!("X-Big: {}", "a".repeat(20 << 10));
    let refused =
        curl(&["--http2", "--cacert", &cacert, "-H", &big], &format!("{base}{}", master(Some("127.0.0.1"))));
    assert_eq!((refused.status, refused.version.as_str()), (431, "2"), "{refused:?}");

    // The raw HTTP/1.1 client (no TLS) does not get a page from the TLS port.
    let plain = block_on(raw(
        addr,
        "127.0.0.1",
        format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", master(None)).as_bytes(),
    ));
    if let Ok(bytes) = plain {
        assert!(
            !String::from_utf8_lossy(&bytes).contains("#EXTM3U"),
            "a playlist over plain TCP on the TLS port"
        );
    }
}

#[test]
fn the_announced_link_and_player_page_are_https_when_tls_is_on() {
    let (server, _cert) = tls_demo("tls-link", "");
    let url = logged_link(&server, "demo");
    assert!(
        url.starts_with(&format!("https://{}/demo/master.m3u8?md5=", server.viewer_addr())),
        "the start log announces {url} for a TLS port"
    );
    let line = server.wait_for_log("player=", Duration::from_secs(1));
    let player = log_field(&line, "player").unwrap();
    assert!(player.starts_with("https://"), "player page announced as {player}");
}

// ---------------------------------------------------------------------------------------
// 2. h2c with prior knowledge on a plain port
// ---------------------------------------------------------------------------------------

#[test]
fn plain_ports_speak_h2c_with_prior_knowledge_and_http11() {
    let server = Server::start(&demo_config(""));
    let base = format!("http://{}", server.viewer_addr());
    let versions = check_rules(&base, &["--http1.1"]);
    assert!(versions.iter().all(|v| v == "1.1"), "{versions:?}");
    let versions = check_rules(&base, &["--http2-prior-knowledge"]);
    assert!(versions.iter().all(|v| v == "2"), "not all over h2c: {versions:?}");

    // An HTTP/1.1 Upgrade to h2c (curl --http2 on http://) is not required, but must not break
    // the request: answered over 1.1 or 2.
    let upgrade = curl(&["--http2"], &format!("{base}{}", master(Some("127.0.0.1"))));
    eprintln!("curl --http2 (Upgrade: h2c) on the plain port: {} over {}", upgrade.status, upgrade.version);
    assert_eq!(upgrade.status, 200, "{upgrade:?}");

    // And the raw client still sees the same server.
    let resp = block_on(get(&server, &master(Some("127.0.0.1")), "127.0.0.1"));
    assert_eq!(resp.status, 200);
}

// ---------------------------------------------------------------------------------------
// 3. Certificate reload (SIGHUP): renewals are served, broken files are refused
// ---------------------------------------------------------------------------------------

/// Waits until `needle` has been logged `count` times.
fn wait_for_count(server: &Server, needle: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = server.logs().into_iter().filter(|l| l.contains(needle)).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} logged {} times, not {count}; logs:\n{}",
            lines.len(),
            server.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces `link` with a symlink to `target`, atomically (a temp link, then a rename), as
/// certbot renews `live/`.
fn swap_symlink(link: &Path, target: &Path) {
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// Checks the served certificate and a signed fetch over h2 verified against `cert`.
fn assert_serves(addr: SocketAddr, cert: &TestCert, when: &str) {
    let seen = served_cert(addr, Some("localhost"), Some("h2"));
    assert_eq!(seen.serial, cert.serial, "{when}: served serial {:?}\n{}", seen.serial, seen.transcript);
    assert!(seen.subject.contains(&cert.cn), "{when}: subject {}", seen.subject);
    let out = curl(
        &["--http2", "--cacert", &cert.cert.to_string_lossy()],
        &format!("https://{addr}{}", master(Some("127.0.0.1"))),
    );
    assert_eq!((out.status, out.version.as_str()), (200, "2"), "{when}: {out:?}");
}

#[test]
fn sighup_serves_a_renewed_certificate_on_new_connections() {
    let dir = TempDir::new("tls-renew");
    let archive = dir.join("archive");
    let one = make_cert(&archive, "one", "hlsgate-edge-one", 0x1001, KeyKind::EcP256);
    let two = make_cert(&archive, "two", "hlsgate-edge-two", 0x2002, KeyKind::EcP256);
    let three = make_cert(&archive, "three", "hlsgate-edge-three", 0x3003, KeyKind::Rsa2048);
    // certbot's layout: live/ holds symlinks into archive/.
    let live = dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    swap_symlink(&live.join("cert.pem"), &one.cert);
    swap_symlink(&live.join("key.pem"), &one.key);
    let config = demo_config("tls_cert = \"live/cert.pem\"\ntls_key = \"live/key.pem\"\n");
    let server = Server::start_in(dir, &config, &[]);
    let addr = server.viewer_addr();
    assert_serves(addr, &one, "at start");

    // Renewal by symlink swap, then SIGHUP.
    swap_symlink(&live.join("cert.pem"), &two.cert);
    swap_symlink(&live.join("key.pem"), &two.key);
    // Not before the reload: nothing watches the files.
    assert_serves(addr, &one, "after the swap, before SIGHUP");
    server.reload();
    wait_for_count(&server, "config reloaded", 1);
    assert_serves(addr, &two, "after the symlink swap and SIGHUP");

    // Renewal by replacing the files themselves (an RSA certificate this time).
    std::fs::remove_file(live.join("cert.pem")).unwrap();
    std::fs::remove_file(live.join("key.pem")).unwrap();
    std::fs::copy(&three.cert, live.join("cert.pem")).unwrap();
    std::fs::copy(&three.key, live.join("key.pem")).unwrap();
    server.reload();
    wait_for_count(&server, "config reloaded", 2);
    assert_serves(addr, &three, "after replacing the files and SIGHUP");
}

#[test]
fn a_broken_certificate_on_reload_changes_nothing() {
    let dir = TempDir::new("tls-broken");
    let good = make_cert(dir.path(), "good", "hlsgate-edge-good", 0x600D, KeyKind::EcP256);
    let other = make_cert(dir.path(), "other", "hlsgate-edge-other", 0x0B0B, KeyKind::EcP256);
    let renewed = make_cert(dir.path(), "renewed", "hlsgate-edge-renewed", 0x4E4E, KeyKind::EcP256);
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let restore = |cert_path: &Path, key_path: &Path| {
        std::fs::copy(&good.cert, cert_path).unwrap();
        std::fs::copy(&good.key, key_path).unwrap();
    };
    restore(&cert_path, &key_path);
    let config = demo_config("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
    let good_pem = std::fs::read_to_string(&good.cert).unwrap();
    let server = Server::start_in(dir, &config, &[]);
    let addr = server.viewer_addr();
    assert_serves(addr, &good, "at start");

    type Break = Box<dyn Fn(&Path, &Path)>;
    let other_key = other.key.clone();
    let other_cert = other.cert.clone();
    let half = good_pem[..good_pem.len() / 2].to_string();
    let cases: Vec<(&str, Break, &[&str])> = vec![
        (
            "certificate is junk",
            Box::new(|c, _| std::fs::write(c, "not a certificate\n").unwrap()),
            &["tls_cert"],
        ),
        ("certificate is empty", Box::new(|c, _| std::fs::write(c, "").unwrap()), &["tls_cert"]),
        ("certificate cut in half", Box::new(move |c, _| std::fs::write(c, &half).unwrap()), &["tls_cert"]),
        ("certificate missing", Box::new(|c, _| std::fs::remove_file(c).unwrap()), &["tls_cert"]),
        ("key is junk", Box::new(|_, k| std::fs::write(k, "not a key\n").unwrap()), &["tls_key"]),
        ("key missing", Box::new(|_, k| std::fs::remove_file(k).unwrap()), &["tls_key"]),
        (
            "key of another certificate",
            Box::new(move |_, k| {
                std::fs::copy(&other_key, k).unwrap();
            }),
            &["tls_cert", "tls_key"],
        ),
        (
            "certificate of another key",
            Box::new(move |c, _| {
                std::fs::copy(&other_cert, c).unwrap();
            }),
            &["tls_cert", "tls_key"],
        ),
    ];
    for (n, (what, breaks, fields)) in cases.iter().enumerate() {
        breaks(&cert_path, &key_path);
        server.reload();
        let refused = wait_for_count(&server, "config reload refused", n + 1);
        let line = refused.last().unwrap();
        eprintln!("{what}: {line}");
        assert!(
            fields.iter().any(|f| line.contains(f)),
            "{what}: the refusal does not name {fields:?}: {line}"
        );
        assert!(!line.contains("BEGIN"), "{what}: the refusal quotes the file: {line}");
        assert_serves(addr, &good, &format!("after a reload with the {what}"));
        restore(&cert_path, &key_path);
    }
    assert_eq!(server.logs().iter().filter(|l| l.contains("config reloaded")).count(), 0);

    // Reload still works after all that.
    std::fs::copy(&renewed.cert, &cert_path).unwrap();
    std::fs::copy(&renewed.key, &key_path).unwrap();
    server.reload();
    wait_for_count(&server, "config reloaded", 1);
    assert_serves(addr, &renewed, "after a good reload");
}

// ---------------------------------------------------------------------------------------
// 4. Bad TLS settings at start: exit 2 naming the field; the usual key formats start
// ---------------------------------------------------------------------------------------

#[test]
fn bad_tls_files_at_start_exit_2_naming_the_field() {
    let dir = TempDir::new("tls-start");
    let good = make_cert(dir.path(), "good", "hlsgate-edge-good", 0x600D, KeyKind::EcP256);
    let other = make_cert(dir.path(), "other", "hlsgate-edge-other", 0x0B0B, KeyKind::Rsa2048);
    let junk =
        dir.write("junk.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
    let empty = dir.write("empty.pem", "");
    let missing = dir.join("missing.pem");
    let streams = "[streams.demo]\nkeys = [\"k\"]\n";
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("missing certificate", tls_lines(&missing, &good.key), &["tls_cert"]),
        ("junk certificate", tls_lines(&junk, &good.key), &["tls_cert"]),
        ("empty certificate", tls_lines(&empty, &good.key), &["tls_cert"]),
        ("a key where the certificate goes", tls_lines(&good.key, &good.key), &["tls_cert"]),
        ("missing key", tls_lines(&good.cert, &missing), &["tls_key"]),
        ("junk key", tls_lines(&good.cert, &junk), &["tls_key"]),
        ("empty key", tls_lines(&good.cert, &empty), &["tls_key"]),
        ("a certificate where the key goes", tls_lines(&good.cert, &good.cert), &["tls_key"]),
        ("key that does not match", tls_lines(&good.cert, &other.key), &["tls_cert", "tls_key"]),
        ("tls_cert without tls_key", format!("tls_cert = {}\n", toml_path(&good.cert)), &["tls_key"]),
        ("tls_key without tls_cert", format!("tls_key = {}\n", toml_path(&good.key)), &["tls_cert"]),
    ];
    for (what, top, fields) in cases {
        let (code, stderr) = serve_once(&config_text(&repo_streams(), &top, streams));
        eprintln!("{what}: exit {code:?}: {}", stderr.trim());
        assert_eq!(code, Some(2), "{what}: exit {code:?}\n{stderr}");
        assert!(
            fields.iter().any(|f| stderr.contains(f)),
            "{what}: stderr does not name {fields:?}:\n{stderr}"
        );
        assert!(!stderr.contains("hlsgate ready"), "{what}: {stderr}");
        assert!(!stderr.contains("unknown field"), "{what}: {stderr}");
    }
}

#[test]
fn the_usual_key_formats_start() {
    let dir = TempDir::new("tls-formats");
    let ec = make_cert(dir.path(), "ec", "hlsgate-edge-ec", 0xEC01, KeyKind::EcP256);
    let rsa = make_cert(dir.path(), "rsa", "hlsgate-edge-rsa", 0x5A01, KeyKind::Rsa2048);
    // SEC1 (`BEGIN EC PRIVATE KEY`) and PKCS#1 (`BEGIN RSA PRIVATE KEY`), as older tools write.
    let sec1 = dir.join("ec-sec1.key");
    let pkcs1 = dir.join("rsa-pkcs1.key");
    let convert = |args: &[&str], from: &Path, to: &Path| {
        let run = run_bounded(
            Command::new("openssl").args(args).arg("-in").arg(from).arg("-out").arg(to),
            Duration::from_secs(20),
        );
        assert!(run.status.success(), "{}", run.stderr);
    };
    convert(&["ec"], &ec.key, &sec1);
    convert(&["rsa", "-traditional"], &rsa.key, &pkcs1);
    assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
    assert!(std::fs::read_to_string(&pkcs1).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    // A full chain file (leaf + another certificate), as certbot's fullchain.pem.
    let chain = dir.join("fullchain.pem");
    let mut both = std::fs::read(&rsa.cert).unwrap();
    both.extend(std::fs::read(&ec.cert).unwrap());
    std::fs::write(&chain, both).unwrap();
    for (what, cert, key, want) in [
        ("EC, PKCS#8", &ec.cert, &ec.key, &ec),
        ("EC, SEC1", &ec.cert, &sec1, &ec),
        ("RSA, PKCS#8", &rsa.cert, &rsa.key, &rsa),
        ("RSA, PKCS#1", &rsa.cert, &pkcs1, &rsa),
        ("RSA, full chain", &chain, &rsa.key, &rsa),
    ] {
        let server = Server::start(&demo_config(&tls_lines(cert, key)));
        assert_serves(server.viewer_addr(), want, what);
    }
}

// ---------------------------------------------------------------------------------------
// 5. Slow and silent TLS clients are closed within header_read_timeout
// ---------------------------------------------------------------------------------------

/// A Python `ssl` client: connects, completes the handshake offering `alpn`, sends `send`, then
/// waits for the server to close. Prints `closed after S` / `open after S` / `handshake failed`.
const PY_TLS_IDLE: &str = r#"
import socket, ssl, sys, time
port, alpn, send = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode().decode("unicode_escape").encode()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols([alpn])
raw = socket.create_connection(("127.0.0.1", port), timeout=float(sys.argv[4]) if len(sys.argv) > 4 else 15)
t0 = time.monotonic()
try:
    s = ctx.wrap_socket(raw)
except Exception as e:
    print(f"handshake failed {e}"); sys.exit(0)
if send:
    s.sendall(send)
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
except socket.timeout:  # before OSError: it is one
    print(f"open after {time.monotonic() - t0:.2f} alpn={s.selected_alpn_protocol()}"); sys.exit(0)
except (ConnectionResetError, ssl.SSLError, OSError):
    pass
print(f"closed after {time.monotonic() - t0:.2f} alpn={s.selected_alpn_protocol()}")
"#;

/// Seconds until the server closed a TCP connection to which `bytes` were sent.
async fn closed_after(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = connect_from(addr, "127.0.0.1".parse().unwrap()).await.unwrap();
    let start = Instant::now();
    stream.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok().map(|_| start.elapsed().as_secs_f64())
}

#[test]
fn unfinished_tls_handshakes_and_silent_tls_clients_are_closed_within_the_header_timeout() {
    let timeout = 2.0;
    let (server, cert) = tls_demo("tls-slow", "header_read_timeout = 2\n");
    let addr = server.viewer_addr();
    let port = addr.port().to_string();
    let py = |alpn: &str, send: &str| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PY_TLS_IDLE, &port, alpn, send]);
        Bounded::spawn(&mut cmd)
    };
    // All at once: each must be closed within the timeout of its own start.
    let idle_h1 = py("http/1.1", "");
    let partial_h1 = py("http/1.1", "GET /demo/master.m3u8 HTTP/1.1\\r\\nHost: x\\r\\n");
    let idle_h2 = py("h2", "");
    let (silent, partial_hello) = block_on(async {
        let limit = Duration::from_secs(15);
        // A ClientHello record header announcing 512 bytes, then nothing.
        let hello_start: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        tokio::join!(closed_after(addr, b"", limit), closed_after(addr, hello_start, limit))
    });
    // Meanwhile the server answers others.
    let ok = curl(
        &["--http2", "--cacert", &cert.cert.to_string_lossy()],
        &format!("https://{addr}{}", master(Some("127.0.0.1"))),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    let report = |b: Bounded| {
        let run = b.finish(Duration::from_secs(40));
        run.stdout.trim().to_string()
    };
    let idle_h1 = report(idle_h1);
    let partial_h1 = report(partial_h1);
    let idle_h2 = report(idle_h2);
    eprintln!(
        "header_read_timeout = {timeout} s: TCP silent closed after {silent:?} s; partial ClientHello {partial_hello:?} s; \
         TLS+HTTP/1.1 silent: {idle_h1}; TLS+HTTP/1.1 half a head: {partial_h1}; TLS+h2 silent (report only): {idle_h2}"
    );
    let bound = timeout + 3.0;
    for (what, after) in [("no ClientHello", silent), ("half a ClientHello", partial_hello)] {
        let after = after.unwrap_or_else(|| panic!("{what}: still open after 15 s"));
        assert!(after <= bound, "{what}: closed after {after:.2} s (header_read_timeout {timeout} s)");
    }
    for (what, line) in [("TLS, HTTP/1.1, silent", &idle_h1), ("TLS, HTTP/1.1, half a head", &partial_h1)] {
        let secs: f64 = line
            .strip_prefix("closed after ")
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {line}"));
        assert!(secs <= bound, "{what}: closed after {secs:.2} s (header_read_timeout {timeout} s)");
    }
}

// ---------------------------------------------------------------------------------------
// 6. SIGTERM drains: an HTTP/2 download in flight finishes
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_lets_an_h2_download_in_flight_finish() {
    for tls in [true, false] {
        let setup = Setup::new(if tls { "drain-h2" } else { "drain-h2c" });
        let size = 24 << 20;
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        setup.file("big/big.ts", &body);
        let cert = make_cert(&setup.dir.join("tls"), "cert", "hlsgate-drain", 0xD0D0, KeyKind::EcP256);
        let top = if tls { tls_lines(&cert.cert, &cert.key) } else { String::new() };
        let server = setup.start(&top, "[streams.big]\nkeys = [\"big-key\"]\n");
        let target = signed("/big/big.ts", "big-key", Some("127.0.0.1"), now() + 600);
        let out_dir = TempDir::new("drain-out");
        let out = out_dir.join("big.ts");
        let (scheme, proto) = if tls { ("https", "--http2") } else { ("http", "--http2-prior-knowledge") };
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", proto, "--limit-rate", "6M", "--max-time", "60", "-o"])
            .arg(&out)
            .args(["-w", "%{http_code} %{http_version} %{size_download}"]);
        if tls {
            cmd.arg("--cacert").arg(&cert.cert);
        }
        cmd.arg(format!("{scheme}://{}{target}", server.viewer_addr()));
        let download = Bounded::spawn(&mut cmd);
        // Once bytes are flowing, SIGTERM.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 1 << 20 {
            assert!(Instant::now() < deadline, "the download did not start: {}", download.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        let signalled = Instant::now();
        server.signal("TERM");
        server.wait_for_log("shutting down", Duration::from_secs(5));
        let run = download.finish(Duration::from_secs(60));
        let took = signalled.elapsed();
        let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        eprintln!("{proto}: {} ; {got} bytes, finished {took:.1?} after SIGTERM", run.stdout.trim());
        assert!(
            run.status.success(),
            "{proto}: curl failed during the drain ({}): {}",
            run.status,
            run.stderr
        );
        assert_eq!(run.stdout.split_whitespace().take(2).collect::<Vec<_>>(), ["200", "2"], "{}", run.stdout);
        assert_eq!(got, size as u64, "{proto}: the download was cut");
        assert!(std::fs::read(&out).unwrap() == body, "{proto}: corrupted download");
        assert!(took >= Duration::from_millis(500), "{proto}: the download was not in flight ({took:?})");
        let status = server.stop();
        assert!(status.success(), "{proto}: exit {status:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 7. hls.js over https://, segments over h2
// ---------------------------------------------------------------------------------------

#[test]
fn hlsjs_plays_the_signed_demo_over_https_with_h2_fetches() {
    let (server, _cert) = tls_demo("tls-browser", "");
    let base = format!("https://{}", server.viewer_addr());
    let src = format!("{base}{}", master(None));
    let options = PlayOptions { ignore_https_errors: true, resources: true, ..PlayOptions::default() };
    let report = play_with(&player_url_at(&base, &src), 6.0, "played", 60, &options);
    let playback = &report.playback;
    assert!(playback.fatal.is_none() && !playback.timed_out, "{playback:?}\n{}", report.stderr);
    assert!(playback.played >= 6.0, "{playback:?}");
    let resources = report.resources();
    let ours: Vec<_> = resources.iter().filter(|(name, _)| name.contains("/demo/")).collect();
    let segments = ours
        .iter()
        .filter(|(name, proto)| name.split('?').next().unwrap().ends_with(".ts") && proto == "h2")
        .count();
    // An aborted fetch (hls.js cancels the other variant's playlist when it picks a level) has
    // no protocol in Resource Timing.
    let aborted = ours.iter().filter(|(_, proto)| proto.is_empty()).count();
    let not_h2: Vec<_> = ours.iter().filter(|(_, proto)| !proto.is_empty() && proto != "h2").collect();
    eprintln!(
        "hls.js over https: {} fetches ({segments} segments, {aborted} aborted), protocols {:?}",
        ours.len(),
        {
            let mut p: Vec<&str> = ours.iter().map(|(_, p)| p.as_str()).collect();
            p.dedup();
            p
        }
    );
    assert!(segments >= 3, "{ours:?}");
    assert!(not_h2.is_empty(), "fetched without h2: {not_h2:?}");
}

#[test]
fn a_stalled_h2c_preface_on_a_plain_port_is_closed_within_the_header_timeout() {
    let timeout = 2.0;
    let server = Server::start(&demo_config("header_read_timeout = 2\n"));
    let addr = server.viewer_addr();
    let limit = Duration::from_secs(15);
    // The first bytes of the h2c preface, then nothing: neither an HTTP/1.1 head nor an h2
    // connection yet, so the head's deadline is the only one there is.
    let cases: [(&str, &[u8]); 4] = [
        ("P", b"P"),
        ("PRI * HTTP/2.0\\r\\n", b"PRI * HTTP/2.0\r\n"),
        ("half an HTTP/1.1 head", b"GET /demo/master.m3u8 HTTP/1.1\r\nHost: x\r\n"),
        ("nothing", b""),
    ];
    let results = block_on(futures_util::future::join_all(
        cases.iter().map(|(_, bytes)| closed_after(addr, bytes, limit)),
    ));
    for ((what, _), after) in cases.iter().zip(&results) {
        eprintln!("header_read_timeout = {timeout} s, plain port, {what}: closed after {after:?} s");
    }
    for ((what, _), after) in cases.iter().zip(results) {
        let after = after.unwrap_or_else(|| {
            panic!("{what}: still open after {limit:?} (header_read_timeout {timeout} s)")
        });
        assert!(
            after <= timeout + 3.0,
            "{what}: closed after {after:.2} s (header_read_timeout {timeout} s)"
        );
    }
}
