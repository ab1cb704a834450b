//! The floor for `benches/load/run.sh`: the least a server on hlsgate's own stack (tokio, hyper
//! HTTP/1.1) can do per signed-link request. It checks the same token as hlsgate and nginx's
//! `secure_link` (`base64url_nopad(MD5("{expires}{path}{ip} {key}"))`, the `md5` and `expires`
//! query parameters, the peer's address) and answers a 1 KiB body from memory, 403 for a token
//! that does not match, 410 for an expired one. No routing, no layers, no metrics, no logging, no
//! file system: what hlsgate spends above this per request is its own work, not the framework's.
//!
//! A `[[bench]]` target with `harness = false` so that it is built with the release profile and
//! hlsgate's dependencies and nothing else. `cargo bench` runs every bench target with `--bench`
//! and no `--listen`: then it says what it is for and exits, so a plain `cargo bench` does not
//! hang on a server.
//!
//! `floor --listen 127.0.0.1:PORT --key KEY`; the worker count is tokio's default, so
//! `TOKIO_WORKER_THREADS` (and the CPU affinity, through `available_parallelism`) set it exactly
//! as for hlsgate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use tokio::net::TcpListener;

/// The body every valid request gets: the size of the load script's `1k.ts`.
static BODY: [u8; 1024] = [b'x'; 1024];

fn main() {
    let mut listen = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next(),
            "--key" => key = args.next(),
            _ => {} // `--bench` from `cargo bench`
        }
    }
    let (Some(listen), Some(key)) = (listen, key) else {
        eprintln!("floor: the minimal server benches/load/run.sh measures hlsgate against; nothing to do without --listen ADDR --key KEY");
        return;
    };
    let listen: SocketAddr = listen.parse().expect("--listen: an address such as 127.0.0.1:8081");
    let key: &'static str = Box::leak(key.into_boxed_str());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(serve(listen, key));
}

async fn serve(listen: SocketAddr, key: &'static str) {
    let listener = TcpListener::bind(listen).await.expect("bind --listen");
    eprintln!("floor ready {}", listener.local_addr().expect("local address"));
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        // The address text is hashed into every token: formatted once per connection.
        let ip: Arc<str> = peer.ip().to_canonical().to_string().into();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = answer(&req, &ip, key);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn answer(req: &Request<Incoming>, ip: &str, key: &str) -> Response<Full<Bytes>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let status = check(req.uri().path(), req.uri().query().unwrap_or(""), ip, key, now);
    let mut response = if status == StatusCode::OK {
        let mut response = Response::new(Full::new(Bytes::from_static(&BODY)));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
        response
    } else {
        Response::new(Full::new(Bytes::from_static(b"forbidden\n")))
    };
    *response.status_mut() = status;
    response
}

/// nginx `secure_link` semantics: a missing, malformed or wrong token is 403, an expired one 410.
fn check(path: &str, query: &str, ip: &str, key: &str, now: u64) -> StatusCode {
    let (mut token, mut expires) = (None, None);
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("md5=") {
            token = Some(value);
        } else if let Some(value) = pair.strip_prefix("expires=") {
            expires = Some(value);
        }
    }
    let (Some(token), Some(expires)) = (token, expires) else { return StatusCode::FORBIDDEN };
    let Ok(expiry) = expires.parse::<u64>() else { return StatusCode::FORBIDDEN };
    // 22 characters decode to 16 bytes; the engine wants room for its estimate (18).
    let mut presented = [0u8; 18];
    if token.len() != 22 || URL_SAFE_NO_PAD.decode_slice(token, &mut presented) != Ok(16) {
        return StatusCode::FORBIDDEN;
    }
    let mut md5 = Md5::new();
    for part in [expires, path, ip, " ", key] {
        md5.update(part.as_bytes());
    }
    if md5.finalize()[..] != presented[..16] {
        StatusCode::FORBIDDEN
    } else if now >= expiry {
        StatusCode::GONE
    } else {
        StatusCode::OK
    }
}
