//! The admin port: Prometheus metrics and the probes. Never bound to the viewer port, so a
//! viewer cannot read who else is watching.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut text = app.metrics.render();
    text.push_str(&crate::metrics::render_link_ledger(app.links.evictions()));
    text.push_str(&crate::metrics::render_origins(&app.origins.stats()));
    if let Some(fleet) = &app.fleet {
        text.push_str(&fleet.render_metrics());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: listening, not draining, and (with a key source) holding keys read from it within
/// `stale_after`. A load balancer stops sending viewers on shutdown, and prefers instances
/// whose keys are current; a stale instance still serves on its cached keys.
async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let stale = app.fleet.as_ref().and_then(|fleet| fleet.stale_for());
    match (app.draining.load(Ordering::Relaxed), stale) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string()),
        (false, Some(age)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("stale: key source last read {age} s ago\n"))
        }
        (false, None) => (StatusCode::OK, "ready\n".to_string()),
    }
}
