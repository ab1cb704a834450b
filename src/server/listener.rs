//! Listeners and the life of one connection: accept (within `max_connections`), the TLS
//! handshake when the viewer port has a certificate, then HTTP/1.1 or HTTP/2 (by ALPN, or h2c
//! with prior knowledge on a plain port), each with its limits.
//!
//! Our own loop rather than `axum::serve`, for what a live edge cannot do without: TCP_NODELAY
//! on every socket (small playlist responses otherwise wait on Nagle), deadlines on the TLS
//! handshake and the request head (a stock server keeps a slowloris connection open forever),
//! and a connection limit that stops accepting instead of failing.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::shutdown::Shutdown;
use super::{viewer, App};

/// Pending connections the kernel holds for us. The standard library's 128 overflows when
/// viewers arrive in a burst (a broadcast starting), or wait while `max_connections` is
/// reached; the kernel caps it at `net.core.somaxconn` anyway.
const BACKLOG: u32 = 4096;

/// HTTP/2 streams one connection may have open at once: a player needs a handful (playlist,
/// segment, part, preload hint), a browser tab a few dozen.
const H2_MAX_STREAMS: u32 = 128;
/// The largest HTTP/2 header list accepted: a player's are well under 2 KiB.
const H2_MAX_HEADER_LIST: u32 = 16 << 10;

pub fn bind(addr: SocketAddr, field: &str) -> io::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|e: io::Error| io::Error::new(e.kind(), format!("{field}: cannot bind {addr}: {e}")))
}

/// HTTP/1.1 and HTTP/2 with their limits. HTTP/2's rapid-reset defence is hyper's own: a
/// connection that resets more than a few streams before they are accepted is closed.
pub struct Http {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

pub fn http(header_read_timeout: Duration) -> Arc<Http> {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Arc::new(Http { h1, h2 })
}

/// What a port answers with.
pub enum Service {
    /// The viewer port: a plain function, no router (see `viewer::serve`).
    Viewer(Arc<App>),
    /// The admin port's few routes.
    Router(Router),
}

/// One port: what it serves and how.
pub struct Port {
    pub listener: TcpListener,
    pub service: Service,
    pub http: Arc<Http>,
    /// The certificate for a new connection (re-read on reload), or none for plain HTTP.
    pub tls: Box<dyn Fn() -> Option<Arc<ServerConfig>> + Send + Sync>,
    /// How long a new connection has to finish its TLS handshake, or to send its first byte.
    pub greeting_timeout: Duration,
}

/// Accepts until `shutdown`, holding one of `limit`'s permits per open connection: at the limit
/// it stops accepting (the kernel's backlog holds newcomers) and resumes when one closes.
pub async fn accept_loop(
    port: Port,
    graceful: &GracefulShutdown,
    limit: &Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    let port = Arc::new(port);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed; if it were, no connection could be taken again.
                Err(_) => return,
            },
            () = shutdown.recv() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = port.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.recv() => return,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        tokio::spawn(connection(Arc::clone(&port), stream, peer, graceful.watcher(), permit));
    }
}

/// One connection, from handshake to close.
async fn connection(
    port: Arc<Port>,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = tokio::time::Instant::now() + port.greeting_timeout;
    match (port.tls)() {
        Some(config) => {
            let tls = match tokio::time::timeout_at(deadline, TlsAcceptor::from(config).accept(stream)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(peer = %peer, "TLS handshake timed out"),
            };
            greet_then_serve(&port, tls, peer, watcher, deadline).await;
        }
        None => greet_then_serve(&port, stream, peer, watcher, deadline).await,
    }
}

/// The HTTP/2 connection preface: what a client speaking h2 sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Telling HTTP/1.1 from HTTP/2 has no deadline of its own in hyper-util: the bytes that decide
/// it must come by the same deadline as the handshake, or a client that connects (or finishes
/// TLS) and sends nothing, or half a preface, would hold its slot forever. After them,
/// HTTP/1.1's header read timeout and HTTP/2's keep-alive pings take over.
async fn greet_then_serve<I>(
    port: &Port,
    mut io: I,
    peer: SocketAddr,
    watcher: Watcher,
    deadline: tokio::time::Instant,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout_at(deadline, greeting(&mut io)).await {
        Ok(Ok(first)) => serve(port, Prefixed { first, read: 0, io }, peer, watcher).await,
        Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "closed before its first request"),
        Err(_) => tracing::debug!(peer = %peer, "no request within the header read timeout"),
    }
}

/// Reads until the protocol is known: the whole HTTP/2 preface, or bytes that are not it.
async fn greeting<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<Vec<u8>> {
    let mut first = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        first.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let decided = first.len() >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&first);
        if decided {
            return Ok(first);
        }
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Prefixed<I> {
    first: Vec<u8>,
    read: usize,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.first.get(this.read..).filter(|rest| !rest.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves the connection with the protocol its first bytes chose: HTTP/2 for the preface (h2c
/// with prior knowledge, or after ALPN), else HTTP/1.1. Chosen here, once, from the greeting
/// already read, rather than by a sniffing wrapper that every later read would go through.
async fn serve<I>(port: &Port, io: Prefixed<I>, peer: SocketAddr, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let h2 = io.first.starts_with(H2_PREFACE);
    let io = TokioIo::new(io);
    let ended = match &port.service {
        Service::Viewer(app) => {
            let app = Arc::clone(app);
            let service = hyper::service::service_fn(move |req| {
                let app = Arc::clone(&app);
                async move { Ok::<_, Infallible>(viewer::serve(app, peer, req).await) }
            });
            match h2 {
                true => watcher.watch(port.http.h2.serve_connection(io, service)).await,
                false => watcher.watch(port.http.h1.serve_connection(io, service)).await,
            }
        }
        Service::Router(router) => {
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            match h2 {
                true => watcher.watch(port.http.h2.serve_connection(io, service)).await,
                false => watcher.watch(port.http.h1.serve_connection(io, service)).await,
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
