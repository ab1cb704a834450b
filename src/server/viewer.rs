//! The viewer port's handler: accept → who is asking → the gate → the origin → rewrite if it
//! is a playlist → answer. Also logs and counts each request once, whatever its outcome.

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;

use super::error::Refusal;
use super::gate::{self, Admitted};
use super::media::{self, RangeAsk};
use super::refusal_log::{self, Verdict};
use super::App;
use crate::client_ip::client_ip;
use crate::clock::{unix_now, unix_now_ms};
use crate::keys::{Generation, StreamPolicy};
use crate::metrics::{Kind, Outcome};
use crate::origin::{self, Fetched, OriginError};
use crate::playlist::{self, Issue, Location};
use crate::request_path::{self, StreamPath};
use crate::token;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// The player page, for people: hls.js from its CDN, the signed URL from `?src=`.
const PLAYER_PAGE: &str = include_str!("../../assets/player.html");

/// The viewer port: CORS preflights, the player page, and every other request through the gate.
/// A plain function rather than a router: the paths are fixed, and a router with its layers
/// cost a fifth of a refused request's instructions.
pub async fn serve<B>(app: Arc<App>, peer: SocketAddr, req: Request<B>) -> Response {
    // Only the head matters (GET and HEAD have no body).
    let (req, _body) = req.into_parts();
    let mut response = match app.cors.preflight(&req) {
        Some(preflight) => preflight,
        None if req.uri.path() == "/player.html"
            && (req.method == Method::GET || req.method == Method::HEAD) =>
        {
            strip_body_for_head(&req.method, Html(PLAYER_PAGE).into_response())
        }
        None => handle(&app, peer, &req).await,
    };
    app.cors.decorate(&req.headers, response.headers_mut());
    response
}

async fn handle(app: &App, peer: SocketAddr, req: &Parts) -> Response {
    let started = Instant::now();
    let generation = app.keys.current();
    let client = client_ip(peer.ip(), &req.headers, &generation.proxies);
    let path = request_path::parse(req.uri.path());
    let (stream, policy, kind) = labels(path.as_ref().ok(), req.uri.path(), &generation);

    let result = match (client, path) {
        (Err(unreadable), _) => Err(Refusal::Forwarding(unreadable)),
        (_, Err(bad)) => Err(Refusal::BadPath(bad)),
        (Ok(client), Ok(path)) => {
            let query = req.uri.query().unwrap_or("");
            match gate::admit(policy, &app.links, path, query, client, unix_now()).await {
                Ok(admitted) => answer(app, admitted, client, req, &generation.public_hosts).await,
                Err(refusal) => Err(refusal),
            }
        }
    };
    // A refused forwarding header names nobody: the log shows the proxy that sent it.
    let client = client.unwrap_or_else(|_| peer.ip().to_canonical());
    match result {
        Ok(response) => {
            app.metrics.record(stream, kind, Outcome::Ok, started.elapsed());
            response
        }
        Err(refusal) => {
            app.metrics.record(stream, kind, refusal.outcome(), started.elapsed());
            if let Refusal::SharedLink(_) = refusal {
                app.metrics.record_shared_link_refusal(stream);
            }
            log_refusal(app, &refusal, client, req.uri.path(), started);
            refusal.into_response()
        }
    }
}

/// One line per client and reason per window (see `refusal_log`): a flood of refusals is
/// counted, not written out.
fn log_refusal(app: &App, refusal: &Refusal, client: IpAddr, path: &str, now: Instant) {
    let (verdict, closed) = app.refusal_log.admit(client, refusal.reason(), now);
    if let Some(closed) = closed {
        tracing::warn!(
            suppressed = closed.suppressed,
            window_s = refusal_log::WINDOW.as_secs(),
            "refusal lines suppressed in the last window (one line per client and reason)"
        );
    }
    let status = refusal.status().as_u16();
    match (verdict, refusal) {
        // Which link was shared, by 8 hex characters of its digest: never the token.
        (Verdict::Log, Refusal::SharedLink(link)) => {
            tracing::info!(client = %client, path = %path, status, reason = %refusal.reason(), link = %link, "refused")
        }
        (Verdict::Log, _) => {
            tracing::info!(client = %client, path = %path, status, reason = %refusal.reason(), "refused")
        }
        (Verdict::Suppress, _) => app.metrics.record_suppressed_refusal_line(),
    }
}

/// The metric labels, read from the decoded path as the gate reads it (`/%64emo/index%2Em3u8`
/// is the demo's playlist), or from the raw path when it was refused as malformed. The stream
/// label only ever takes a configured stream's name, so a scanner cannot grow the series.
/// The same lookup finds the policy the gate checks against: one map read per request.
fn labels<'a>(
    path: Option<&StreamPath>,
    raw: &str,
    generation: &'a Generation,
) -> (&'a str, Option<&'a Arc<StreamPolicy>>, Kind) {
    let (first, playlist) = match path {
        Some(path) => (path.stream(), path.is_playlist()),
        None => (raw.trim_start_matches('/').split('/').next().unwrap_or(""), request_path::is_playlist(raw)),
    };
    let kind = if playlist { Kind::Playlist } else { Kind::Media };
    match generation.streams.get_key_value(first) {
        Some((name, policy)) => (name.as_str(), Some(policy), kind),
        None => ("unknown", None, kind),
    }
}

async fn answer(
    app: &App,
    admitted: Admitted,
    client: IpAddr,
    req: &Parts,
    public_hosts: &[String],
) -> Result<Response, Refusal> {
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(Refusal::MethodNotAllowed);
    }
    let query = req.uri.query().unwrap_or("");
    // Only an HTTP origin is asked with the query: it goes without hlsgate's parameters.
    let forwarded = match admitted.policy.origin {
        Some(_) => Cow::Owned(token::without_token_params(query, &admitted.policy.token_params)),
        None => Cow::Borrowed(query),
    };
    let ask = origin::Request {
        stream: admitted.path.stream(),
        file: admitted.path.file(),
        origin: admitted.policy.origin.as_ref(),
        query: &forwarded,
        range: req.headers.get(header::RANGE),
        playlist: admitted.path.is_playlist(),
        playlist_cache: admitted.policy.playlist_cache,
    };
    let response = if ask.playlist {
        let source = playlist_source(app, &admitted, &ask).await?;
        let origin_bases = admitted.policy.origin.as_ref().map_or(&[][..], |o| &o.bases[..]);
        let at = Location { path: req.uri.path(), query, origin_bases, public_hosts };
        playlist_response(app, &admitted, source, client, at)?
    } else {
        let fetched = app.origins.fetch(&ask).await.map_err(|e| origin_refusal(e, &admitted))?;
        media_response(&admitted, fetched, ask.range)?
    };
    Ok(strip_body_for_head(&req.method, response))
}

/// The playlist, held until it has what a blocking reload (`_HLS_msn`, `_HLS_part`) asks for
/// when it is a folder stream's that promises blocking reloads. An HTTP origin holds its own:
/// the parameters are passed on.
async fn playlist_source(
    app: &App,
    admitted: &Admitted,
    ask: &origin::Request<'_>,
) -> Result<Bytes, Refusal> {
    let fetch = || async { app.origins.fetch_whole(ask).await.map_err(|e| origin_refusal(e, admitted)) };
    if ask.origin.is_some() {
        return fetch().await;
    }
    let Some(wanted) = playlist::blocking_ask(ask.query).map_err(Refusal::BadBlockingAsk)? else {
        return fetch().await;
    };
    // Subscribed before the first read, so a write between the read and the wait still wakes.
    let mut changes = app.origins.folder_changes(ask.stream, ask.file);
    let mut deadline = None;
    loop {
        let source = fetch().await?;
        let Ok(text) = std::str::from_utf8(&source) else { return Ok(source) };
        if !playlist::can_block_reload(text) {
            return Ok(source);
        }
        let at = playlist::position(text);
        if at.has(wanted) {
            return Ok(source);
        }
        if at.is_too_far(wanted) {
            return Err(Refusal::BadBlockingAsk(playlist::BadBlockingAsk::TooFarAhead));
        }
        // RFC 8216bis §6.2.5.2: give up after three target durations.
        let held_for = Duration::from_secs(at.target_duration.max(1).saturating_mul(3));
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + held_for);
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Err(Refusal::BlockingTimeout),
        }
    }
}

/// A failed origin read: the viewer gets the kind (404, 502, 504), the log gets the cause, once
/// per collapsed read rather than once per viewer where the origin module logs it.
fn origin_refusal(e: OriginError, admitted: &Admitted) -> Refusal {
    match e {
        OriginError::NotFound => Refusal::NotFound,
        OriginError::Timeout => Refusal::OriginTimeout,
        // A folder that cannot be read is a fault of this machine: say what. An HTTP origin's
        // faults are logged where it is marked down, once, not once per viewer.
        e if admitted.policy.origin.is_none() => {
            tracing::error!(path = %admitted.path.as_str(), error = %e, "origin read failed");
            Refusal::Origin
        }
        e => {
            tracing::debug!(path = %admitted.path.as_str(), error = %e, "origin read failed");
            Refusal::Origin
        }
    }
}

/// Rewrites the packager's playlist for this viewer: every URI signed for their address.
fn playlist_response(
    app: &App,
    admitted: &Admitted,
    source: Bytes,
    client: IpAddr,
    at: Location,
) -> Result<Response, Refusal> {
    let policy = &admitted.policy;
    let now_ms = unix_now_ms();
    let vetted = app.verdicts.vet(admitted.path.as_str(), &source).map_err(|e| bad_playlist(admitted, e))?;
    let looped = match policy.simulate_live && vetted.shape().is_vod() {
        true => {
            let live = vetted.live_loop().map_err(|e| bad_playlist(admitted, e))?;
            Some((live.window(policy.live_window, now_ms), live.shape()))
        }
        false => None,
    };
    let binding = policy.issue_binding(client);
    let issue = Issue {
        key: policy.keys.signing(),
        ip: Some(&binding),
        names: &policy.token_params,
        now: now_ms / 1000,
        session_ttl: policy.session_ttl,
        segment_ttl: policy.segment_ttl,
        sticky: Some(&app.sticky_expiries),
    };
    let text = match &looped {
        // The window moves with the clock: rewritten whole, each time.
        Some((window, shape)) => playlist::rewrite_vetted(window.as_bytes(), *shape, &at, &issue),
        None => playlist::rewrite_remembered(&vetted, &at, &issue),
    }
    .map_err(|e| bad_playlist(admitted, e))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(PLAYLIST_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache")),
            // Said here rather than left to the body, which a HEAD response drops.
            (header::CONTENT_LENGTH, HeaderValue::from(text.len())),
        ],
        text,
    )
        .into_response())
}

fn bad_playlist(admitted: &Admitted, e: playlist::PlaylistError) -> Refusal {
    tracing::error!(path = %admitted.path.as_str(), error = %e, "origin playlist does not parse; not serving it");
    Refusal::BadPlaylist
}

fn media_response(
    admitted: &Admitted,
    fetched: Fetched,
    range: Option<&HeaderValue>,
) -> Result<Response, Refusal> {
    let (status, body, length, content_range) = match fetched.body {
        origin::Body::Whole(bytes) => {
            let len = bytes.len() as u64;
            let (status, start, end) = ranged(range, len)?;
            (
                status,
                Body::from(slice(bytes, start, end)),
                Some(end - start),
                content_range(status, start, end, len),
            )
        }
        origin::Body::File(file) => {
            let len = fetched.len.unwrap_or(0);
            let (status, start, end) = ranged(range, len)?;
            (
                status,
                Body::from_stream(file.body(start, end)),
                Some(end - start),
                content_range(status, start, end, len),
            )
        }
        // An origin's answer as it arrives: a 206 when the origin answered the range itself.
        origin::Body::Stream(stream) => match fetched.content_range {
            Some(range) => (StatusCode::PARTIAL_CONTENT, Body::from_stream(stream), fetched.len, Some(range)),
            None => (StatusCode::OK, Body::from_stream(stream), fetched.len, None),
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Room for ours, CORS's and hyper's own at once, rather than growing the map three times.
    headers.reserve(12);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media::content_type(admitted.path.file())));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(range) = content_range {
        headers.insert(header::CONTENT_RANGE, range);
    }
    if let Some(modified) = fetched.modified.and_then(last_modified) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    Ok(response)
}

/// `Last-Modified` for a file's mtime, remembered per thread for the last second it was asked:
/// every viewer of a live segment asks for the same one, and formatting a date is a tenth of a
/// segment request.
fn last_modified(modified: SystemTime) -> Option<HeaderValue> {
    thread_local! {
        static LAST: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
    }
    let second = modified.duration_since(UNIX_EPOCH).ok()?.as_secs();
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == second => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok()?;
            *last = Some((second, value.clone()));
            Some(value)
        }
    })
}

/// The status and byte span a `Range` header asks of a file of `len` bytes.
fn ranged(range: Option<&HeaderValue>, len: u64) -> Result<(StatusCode, u64, u64), Refusal> {
    match media::range(range, len) {
        RangeAsk::Whole => Ok((StatusCode::OK, 0, len)),
        RangeAsk::Part { start, end } => Ok((StatusCode::PARTIAL_CONTENT, start, end)),
        RangeAsk::Unsatisfiable => Err(Refusal::RangeNotSatisfiable(len)),
    }
}

fn content_range(status: StatusCode, start: u64, end: u64, len: u64) -> Option<HeaderValue> {
    (status == StatusCode::PARTIAL_CONTENT)
        .then(|| HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end.saturating_sub(1))).ok())
        .flatten()
}

fn slice(bytes: Bytes, start: u64, end: u64) -> Bytes {
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(bytes.len());
    let end = usize::try_from(end).unwrap_or(usize::MAX).clamp(start, bytes.len());
    bytes.slice(start..end)
}

/// HEAD gets GET's headers (Content-Length included) and no body.
fn strip_body_for_head(method: &Method, response: Response) -> Response {
    if method != Method::HEAD {
        return response;
    }
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_decoded_path_and_stay_bounded() {
        let mut generation = Generation::default();
        let policy =
            crate::config::parse("[streams.demo]\nkeys = [\"k\"]\n", std::path::Path::new("/")).unwrap();
        generation.streams = policy.generation().streams;
        let label = |raw: &str| {
            let (stream, _, kind) = labels(request_path::parse(raw).ok().as_ref(), raw, &generation);
            (stream, kind)
        };
        assert_eq!(label("/demo/a.ts"), ("demo", Kind::Media));
        assert_eq!(label("/%64emo/index%2Em3u8"), ("demo", Kind::Playlist));
        assert_eq!(label("/demo/a.m3u8.ts"), ("demo", Kind::Media));
        assert_eq!(label("/random-1234/a.m3u8"), ("unknown", Kind::Playlist));
        assert_eq!(label("/demo/../x.m3u8"), ("demo", Kind::Playlist));
        assert_eq!(label("/%2e%2e/x.ts"), ("unknown", Kind::Media));
    }

    #[test]
    fn slice_is_total() {
        let b = Bytes::from_static(b"0123456789");
        assert_eq!(slice(b.clone(), 2, 5), "234");
        assert_eq!(slice(b.clone(), 8, 50), "89");
        assert_eq!(slice(b, 50, 60), "");
    }
}
