//! Every way a viewer request can fail, turned into a response in this one place.
//!
//! Bodies are one short line. None of them names a key or an expected hash, and a missing file
//! is only reported after a valid token, so a caller without one learns nothing.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::client_ip::Unreadable;
use crate::links::LinkId;
use crate::metrics::Outcome;
use crate::playlist::BadBlockingAsk;
use crate::request_path::BadPath;
use crate::token::Denial;

#[derive(Debug)]
pub enum Refusal {
    /// A trusted proxy forwarded a client hop that is not an address.
    Forwarding(Unreadable),
    BadPath(BadPath),
    Token(Denial),
    /// A genuine IP-less entry link, opened from more networks than `max_ips_per_link`. The id
    /// (8 hex characters of the digest) is for the log, never the body.
    SharedLink(LinkId),
    NotFound,
    MethodNotAllowed,
    /// The range does not overlap the file; carries the file's length for `Content-Range`.
    RangeNotSatisfiable(u64),
    /// The origin could not be read; the cause is logged, not shown.
    Origin,
    /// The origin did not answer within `origin_timeout`.
    OriginTimeout,
    /// The packager's playlist did not parse: never hand out an unsigned one.
    BadPlaylist,
    /// A blocking playlist reload that cannot be answered as asked.
    BadBlockingAsk(BadBlockingAsk),
    /// A blocking playlist reload held three target durations without the playlist catching up.
    BlockingTimeout,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Forwarding(_) | Refusal::BadPath(_) => StatusCode::BAD_REQUEST,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Token(Denial::Expired) => StatusCode::GONE,
            Refusal::Token(_) | Refusal::SharedLink(_) => StatusCode::FORBIDDEN,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Refusal::Origin | Refusal::BadPlaylist => StatusCode::BAD_GATEWAY,
            Refusal::OriginTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::BadBlockingAsk(_) => StatusCode::BAD_REQUEST,
            Refusal::BlockingTimeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::Forwarding(_)
            | Refusal::BadPath(_)
            | Refusal::BadBlockingAsk(_)
            | Refusal::MethodNotAllowed
            | Refusal::RangeNotSatisfiable(_) => Outcome::BadRequest,
            Refusal::NotFound => Outcome::NotFound,
            Refusal::Token(Denial::Expired) => Outcome::Expired,
            Refusal::Token(_) | Refusal::SharedLink(_) => Outcome::Forbidden,
            Refusal::Origin | Refusal::OriginTimeout | Refusal::BadPlaylist | Refusal::BlockingTimeout => {
                Outcome::OriginError
            }
        }
    }

    /// The one-line reason, for the body and the log.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Forwarding(unreadable) => unreadable.reason(),
            Refusal::BadPath(why) => why.reason(),
            Refusal::Token(denial) => denial.reason(),
            Refusal::SharedLink(_) => "shared link",
            Refusal::NotFound => "not found",
            Refusal::MethodNotAllowed => "method not allowed",
            Refusal::RangeNotSatisfiable(_) => "range not satisfiable",
            Refusal::Origin => "origin unavailable",
            Refusal::OriginTimeout => "origin timed out",
            Refusal::BadPlaylist => "origin playlist invalid",
            Refusal::BadBlockingAsk(why) => why.reason(),
            Refusal::BlockingTimeout => "playlist not updated within three target durations",
        }
    }
}

impl IntoResponse for Refusal {
    /// Built directly, not through axum's tuple conversions: a forged-token flood is answered
    /// here, so a refusal costs one small allocation and four header inserts.
    fn into_response(self) -> Response {
        let reason = self.reason();
        let mut line = String::with_capacity(reason.len() + 1);
        line.push_str(reason);
        line.push('\n');
        let mut response = Response::new(Body::from(line));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.reserve(6);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Refusal::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            }
            Refusal::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}
