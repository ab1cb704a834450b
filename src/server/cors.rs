//! CORS on the viewer port, at a fixed small cost: a browser player cannot read a 403 or a 410
//! (and so cannot tell the viewer why) without these headers, so every response gets them,
//! refusals included. Hand-written rather than tower-http's layer, which cost a sixth of a
//! refused request's instructions; the rules are few and fixed.

use axum::body::Body;
use axum::http::{header, request, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("range, if-modified-since, if-none-match");
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("content-length, content-range, accept-ranges");
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const ANY: HeaderValue = HeaderValue::from_static("*");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");

/// Which page origins may read the viewer port's answers (`cors_origins`).
pub struct Cors {
    allowed: Allowed,
}

enum Allowed {
    Any,
    /// As browsers send them in `Origin`, compared byte for byte.
    List(Vec<HeaderValue>),
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        let allowed = if origins.iter().any(|o| o == "*") {
            Allowed::Any
        } else {
            Allowed::List(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect())
        };
        Cors { allowed }
    }

    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if it may read.
    /// `*` goes on every answer (two static headers cost next to nothing, and a page that
    /// fetches without `Origin` is served the same).
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.allowed {
            Allowed::Any => Some(ANY),
            Allowed::List(list) => list.iter().find(|allowed| Some(*allowed) == origin).cloned(),
        }
    }

    /// A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) is answered
    /// here, before the gate: browsers send it without the URL's token.
    pub fn preflight(&self, request: &request::Parts) -> Option<Response> {
        let asks = request.method == Method::OPTIONS
            && request.headers.contains_key(header::ORIGIN)
            && request.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !asks {
            return None;
        }
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        if let Some(allow) = self.allow(request.headers.get(header::ORIGIN)) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        }
        self.vary(headers);
        Some(response)
    }

    /// Lets the page that asked read this response: every outcome, refusals included.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        if let Some(allow) = self.allow(request.get(header::ORIGIN)) {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
        }
        self.vary(response);
    }

    /// With a list, the answer depends on `Origin`: say so to any cache on the way.
    fn vary(&self, response: &mut HeaderMap) {
        if matches!(self.allowed, Allowed::List(_)) {
            response.append(header::VARY, VARY_ORIGIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> request::Parts {
        let mut request = Request::builder().method(method).uri("/s/a.ts");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn any_origin_reads_everything_whoever_asks() {
        let cors = Cors::new(&["*".into()]);
        let mut out = HeaderMap::new();
        cors.decorate(&parts(Method::GET, &[("origin", "https://a.example")]).headers, &mut out);
        assert_eq!(out.get("access-control-allow-origin").unwrap(), "*");
        assert!(out
            .get("access-control-expose-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("content-range"));
        let mut out = HeaderMap::new();
        cors.decorate(&parts(Method::GET, &[]).headers, &mut out);
        assert_eq!(out.get("access-control-allow-origin").unwrap(), "*");
        assert!(out.get("vary").is_none(), "nothing varies");
    }

    #[test]
    fn a_list_admits_its_origins_only_and_varies() {
        let cors = Cors::new(&["https://good.example".into()]);
        let mut out = HeaderMap::new();
        cors.decorate(&parts(Method::GET, &[("origin", "https://good.example")]).headers, &mut out);
        assert_eq!(out.get("access-control-allow-origin").unwrap(), "https://good.example");
        assert_eq!(out.get("vary").unwrap(), "origin");
        let mut out = HeaderMap::new();
        cors.decorate(&parts(Method::GET, &[("origin", "https://evil.example")]).headers, &mut out);
        assert!(out.get("access-control-allow-origin").is_none());
    }

    #[test]
    fn preflights_are_answered_and_other_options_are_not() {
        let cors = Cors::new(&["*".into()]);
        let ask = [("origin", "https://a.example"), ("access-control-request-method", "GET")];
        let response = cors.preflight(&parts(Method::OPTIONS, &ask)).expect("a preflight");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response
            .headers()
            .get("access-control-allow-headers")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("range"));
        assert!(cors.preflight(&parts(Method::OPTIONS, &ask[..1])).is_none());
        assert!(cors.preflight(&parts(Method::GET, &ask)).is_none());
    }
}
