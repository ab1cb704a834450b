//! Issue 8, "Prove it holds", part two: many and slow clients against the real `hlsgate
//! serve`. A full house (`max_connections`), slowloris, ten thousand idle connections and a
//! slow reader of a big file; each time a valid request is still answered. Hostile requests
//! are in `tests/hostile.rs`.
//!
//! Server figures (RSS, CPU time, open descriptors) are read from `/proc/<pid>` and printed;
//! only generous bounds are asserted, never speed.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "clients-key-a41f";
const VIEWER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
const A: &[u8] = b"segment a";
const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n";
/// How long an answer that must come may take on a loaded machine.
const ANSWER: Duration = Duration::from_secs(20);
/// Clock ticks a second in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const TICKS: u64 = 100;

/// A server for stream `s` (a.ts, index.m3u8 and `extra` files), with `top` config lines.
fn start(top: &str, extra: &[(&str, &[u8])]) -> Server {
    let dir = TempDir::new("clients");
    dir.write("streams/s/a.ts", A);
    dir.write("streams/s/index.m3u8", PLAYLIST);
    for (name, contents) in extra {
        dir.write(format!("streams/s/{name}"), contents);
    }
    let config = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{top}\n\
         [streams.s]\nkeys = [\"{KEY}\"]\n",
        toml_path(&dir.join("streams"))
    );
    Server::start_in(dir, &config, &[])
}

fn signed_for(path: &str, ip: &str) -> String {
    signed(path, KEY, Some(ip), now() + 600)
}

/// A valid request from `from` is answered 200 with a.ts, and `/healthz` answers.
async fn assert_served(server: &Server, from: &str) {
    let resp = Request::get(server.viewer_addr(), &signed_for("/s/a.ts", from)).from(from).send().await;
    assert_eq!((resp.status, resp.body.as_slice()), (200, A), "a valid request");
    assert_eq!(Request::get(server.admin_addr(), "/healthz").send().await.status, 200, "/healthz");
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A keep-alive request for a.ts signed for `from`.
fn keep_alive(from: &str) -> Vec<u8> {
    format!("GET {} HTTP/1.1\r\nHost: hlsgate.test\r\n\r\n", signed_for("/s/a.ts", from)).into_bytes()
}

/// A connection the server has certainly accepted: one request answered on it, then idle.
async fn held_connection(to: SocketAddr, from: &str) -> TcpStream {
    let mut stream = connect_from(to, ip(from)).await.unwrap();
    stream.write_all(&keep_alive(from)).await.unwrap();
    let resp = read_response(&mut stream, ANSWER).await.unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, A));
    stream
}

/// Does anything (bytes, EOF or a reset) arrive on `stream` within `wait`?
async fn hears_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(wait, stream.peek(&mut byte)).await.is_ok()
}

/// CPU ticks the server used over `wait`, with the wall time it took.
async fn cpu_over(pid: u32, wait: Duration) -> (u64, Duration) {
    let before = proc_cpu_ticks(pid).expect("server CPU time");
    let started = Instant::now();
    tokio::time::sleep(wait).await;
    let used = proc_cpu_ticks(pid).expect("server CPU time") - before;
    (used, started.elapsed())
}

// ---------------------------------------------------------------------------------------
// A full house
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn at_max_connections_new_connections_wait_in_the_backlog_until_one_closes() {
    let server = start("max_connections = 4\nheader_read_timeout = 120", &[]);
    let to = server.viewer_addr();
    for round in 0..2 {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(held_connection(to, VIEWER).await);
        }
        // The fifth connects (the kernel completes the handshake) but is not served.
        let mut fifth = connect_from(to, ip(OTHER)).await.unwrap();
        let mut request = keep_alive(OTHER);
        request.truncate(request.len() - 2);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        fifth.write_all(&request).await.unwrap();
        let (ticks, wall) = cpu_over(server.pid(), Duration::from_secs(3)).await;
        eprintln!("round {round}: saturated for {wall:?}, the server used {ticks} CPU ticks ({TICKS}/s)");
        assert!(
            !hears_within(&mut fifth, Duration::from_millis(100)).await,
            "round {round}: the fifth was served"
        );
        // Waiting in accept is not spinning: an idle wait costs next to nothing, a spinning
        // loop would take a core. Half the wall time is far from either.
        assert!(
            ticks * 1000 < wall.as_millis() as u64 * TICKS / 2,
            "round {round}: {ticks} ticks in {wall:?} while saturated"
        );
        // The admin port is not a viewer connection.
        assert_eq!(Request::get(server.admin_addr(), "/healthz").send().await.status, 200);
        // The held ones are still open and served.
        held[1].write_all(&keep_alive(VIEWER)).await.unwrap();
        assert_eq!(read_response(&mut held[1], ANSWER).await.unwrap().status, 200);
        assert!(!hears_within(&mut fifth, Duration::from_millis(500)).await, "round {round}: still waiting");

        // One closes: the fifth is accepted and answered.
        drop(held.remove(0));
        let mut got = Vec::new();
        tokio::time::timeout(ANSWER, fifth.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the fifth got no answer after one of four closed"))
            .unwrap();
        let resp = parse_response(&got, false).unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, A), "round {round}");
        drop(held);
    }
    // Never stopped for good: a stream of short connections, each answered.
    for i in 0..20 {
        let from = format!("127.0.0.{}", 10 + i);
        let resp = Request::get(to, &signed_for("/s/a.ts", &from)).from(&from).send().await;
        assert_eq!(resp.status, 200, "connection {i} after the full house");
    }
    assert_served(&server, VIEWER).await;
}

// ---------------------------------------------------------------------------------------
// Slowloris
// ---------------------------------------------------------------------------------------

/// Trickles a request head, one byte a second, until the server closes the connection.
/// Returns how long it stayed open and how many bytes went out; panics after `limit`.
async fn trickle(to: SocketAddr, from: &str, limit: Duration) -> (Duration, usize) {
    let mut stream = connect_from(to, ip(from)).await.unwrap();
    let started = Instant::now();
    let head =
        b"GET /s/a.ts HTTP/1.1\r\nHost: hlsgate.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if sent < head.len() && stream.write_all(&head[sent..=sent]).await.is_ok() {
            sent += 1;
        }
        // Read for a second: EOF or a reset means the server let go; data too (a 408).
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(!text.starts_with("HTTP/1.1 200"), "a partial head was served: {text}");
                // Read on to the close.
                let _ = tokio::time::timeout(limit, stream.read_to_end(&mut Vec::new())).await;
                return (started.elapsed(), sent);
            }
            Ok(_) => return (started.elapsed(), sent),
        }
    }
    panic!("a client sending one byte a second was still connected after {limit:?} ({sent} bytes)");
}

#[tokio::test]
async fn slowloris_is_closed_by_header_read_timeout_while_others_are_served() {
    let server = start("header_read_timeout = 2", &[]);
    let to = server.viewer_addr();
    let limit = Duration::from_secs(30);
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..50 {
        slow.spawn(trickle(to, if i % 2 == 0 { VIEWER } else { OTHER }, limit));
    }
    // Meanwhile, viewers are served.
    for from in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        assert_served(&server, from).await;
    }
    let mut longest = Duration::ZERO;
    while let Some(joined) = slow.join_next().await {
        let (open, sent) = joined.unwrap();
        // The timeout is 2 s from the first byte awaited: never closed before it.
        assert!(open >= Duration::from_millis(1500), "closed after {open:?}, before the 2 s timeout");
        assert!(sent < 40, "{sent} bytes sent before the close");
        longest = longest.max(open);
    }
    eprintln!("50 slowloris connections, each closed within {longest:?} (header_read_timeout = 2 s)");
    assert_served(&server, VIEWER).await;
}

// ---------------------------------------------------------------------------------------
// Ten thousand idle connections
// ---------------------------------------------------------------------------------------

const IDLE: usize = 10_000;
/// Connects in flight at a time: well under the listen backlog.
const BATCH: usize = 64;

/// Waits until the server holds at least `fds` descriptors (bounded).
async fn accepted(pid: u32, fds: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = proc_open_fds(pid).unwrap();
        if open >= fds {
            return;
        }
        assert!(Instant::now() < deadline, "the server holds {open} descriptors, not {fds}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ten_thousand_idle_connections_and_a_valid_request_is_still_answered() {
    let limit = raise_nofile_limit();
    assert!(limit >= IDLE as u64 + 500, "RLIMIT_NOFILE hard limit {limit} is too low for {IDLE} connections");
    let server = start("max_connections = 20000\nheader_read_timeout = 300", &[]);
    let to = server.viewer_addr();
    let pid = server.pid();
    assert_served(&server, VIEWER).await;
    // The connection just served is closed by the server as it answers, and nothing else is
    // open; still, let it settle so the baseline counts only listeners and the runtime.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proc_status_kib(pid, "VmRSS").unwrap();
    let fds_before = proc_open_fds(pid).unwrap();
    let ticks_before = proc_cpu_ticks(pid).unwrap();

    // From ten source addresses, in batches the server must have accepted before the next:
    // past its listen backlog (128, std's) the kernel drops the handshakes' last ACKs or
    // answers with SYN cookies, and a client that stays silent would never learn that its
    // connection exists on its side only.
    let started = Instant::now();
    let mut held = Vec::with_capacity(IDLE);
    while held.len() < IDLE {
        let mut batch = tokio::task::JoinSet::new();
        for i in held.len()..(held.len() + BATCH).min(IDLE) {
            let from: IpAddr = format!("127.0.0.{}", 10 + i % 10).parse().unwrap();
            batch.spawn(connect_from(to, from));
        }
        while let Some(joined) = batch.join_next().await {
            held.push(joined.unwrap().unwrap());
        }
        accepted(pid, fds_before + held.len()).await;
    }
    let fds = proc_open_fds(pid).unwrap();
    eprintln!("{IDLE} connections open and accepted in {:?}", started.elapsed());
    let rss_held = proc_status_kib(pid, "VmRSS").unwrap();
    let ticks = proc_cpu_ticks(pid).unwrap() - ticks_before;

    // Still served, from an address that holds none of them and from one that holds many.
    assert_served(&server, VIEWER).await;
    assert_served(&server, "127.0.0.10").await;
    let resp = Request::get(to, &signed_for("/s/index.m3u8", VIEWER)).from(VIEWER).send().await;
    assert_eq!(resp.status, 200);
    eprintln!(
        "{IDLE} idle connections: server VmRSS {rss_before} kB before, {rss_held} kB while held \
         ({} kB a connection); {fds} descriptors; {ticks} CPU ticks to accept them",
        (rss_held.saturating_sub(rss_before)) / IDLE as u64
    );
    assert!(rss_held < 512 << 10, "VmRSS {rss_held} kB with {IDLE} idle connections");
    // The server closed none of them meanwhile.
    let still = proc_open_fds(pid).unwrap();
    assert!(still >= fds_before + IDLE, "the server holds {still} descriptors, {fds_before} + {IDLE} before");

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fds = proc_open_fds(pid).unwrap();
    while fds > fds_before + 100 {
        assert!(Instant::now() < deadline, "server still holds {fds} descriptors after the clients left");
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds = proc_open_fds(pid).unwrap();
    }
    let rss_after = proc_status_kib(pid, "VmRSS").unwrap();
    eprintln!("after they closed: VmRSS {rss_after} kB, {fds} descriptors");
    assert_served(&server, VIEWER).await;
}

// ---------------------------------------------------------------------------------------
// A slow reader of a big file
// ---------------------------------------------------------------------------------------

const BIG: usize = 64 << 20;

/// Every byte depends on its offset, so a gap, a repeat or a shift shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect()
}

#[tokio::test]
async fn a_slow_reader_keeps_its_download_while_others_are_served() {
    let big = pattern(BIG);
    let server = start("", &[("big.mp4", &big)]);
    let to = server.viewer_addr();
    let pid = server.pid();
    let rss_start = proc_status_kib(pid, "VmRSS").unwrap();
    let target = signed_for("/s/big.mp4", VIEWER);
    // Streaming::open reads with a small fixed receive window.
    let mut slow = Streaming::open(&Request::get(to, &target).from(VIEWER)).await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.header("content-length"), Some(BIG.to_string().as_str()));

    let mut rss_peak = rss_start;
    for pause in 1..=4 {
        // 64 KiB more, then nothing for three seconds.
        let want = slow.body.len() + (64 << 10);
        slow.read_at_least(want).await.unwrap();
        let paused = Instant::now();
        // Meanwhile other viewers are served: small files, a playlist, and the same big file.
        assert_served(&server, OTHER).await;
        let resp = Request::get(to, &signed_for("/s/index.m3u8", OTHER)).from(OTHER).send().await;
        assert_eq!(resp.status, 200);
        if pause == 2 {
            let other = Request::get(to, &signed_for("/s/big.mp4", OTHER)).from(OTHER).timeout(ANSWER * 3);
            let resp = other.send().await;
            assert_eq!(resp.status, 200);
            assert!(resp.body == big, "the other viewer's copy differs ({} bytes)", resp.body.len());
        }
        let rest = Duration::from_secs(3).saturating_sub(paused.elapsed());
        tokio::time::sleep(rest).await;
        rss_peak = rss_peak.max(proc_status_kib(pid, "VmRSS").unwrap());
        eprintln!("pause {pause}: slow reader at {} bytes", slow.body.len());
    }
    assert!(slow.body.len() < BIG / 2, "the slow reader was not slow: {} bytes", slow.body.len());

    // Now it reads on, and gets every byte.
    slow.read_at_least(BIG).await.unwrap();
    assert_eq!(slow.body.len(), BIG, "more bytes than Content-Length");
    assert!(slow.body == big, "the slow reader's copy differs");
    eprintln!("server VmRSS {rss_start} kB at the start, {rss_peak} kB at most during the pauses");
    // The slow reader does not cost the server the file: it is streamed, not held.
    assert!(rss_peak < rss_start + (BIG as u64 >> 10), "VmRSS grew from {rss_start} to {rss_peak} kB");
    assert_served(&server, VIEWER).await;
}
