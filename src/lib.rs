//! hlsgate: a gatekeeper for live HLS. It checks the signed link a viewer arrives with, rewrites
//! each playlist so every URI in it carries a short-lived token bound to that viewer's address,
//! and checks every fetch against its token.
//!
//! Tokens are Gcore CDN Secure Token / nginx `secure_link` compatible:
//! `base64url_nopad(MD5("{expires}{path}{ip} {secret}"))`.
//!
//! The modules, in the order a request meets them:
//!
//! * [`server`]: listeners (TLS, HTTP/1.1 and HTTP/2), signals (reload, drain), the admin port.
//!   Its `gate` submodule is where every request is checked; `viewer` answers it (and holds
//!   LL-HLS blocking reloads); `error` turns every refusal into a response.
//! * [`client_ip`]: who is asking (socket peer, or trusted proxies' forwarding headers).
//! * [`request_path`]: which stream and file, or a 400 before any token is looked at.
//! * [`keys`]: where keys live — the per-stream policy map, swapped whole on reload.
//! * [`token`]: signing and checking, skew, issued expiries, address text. Pure.
//! * [`links`]: leaked-link detection, the networks each IP-less entry link was opened from
//!   (a bounded in-process ledger), asked by the gate once a token has passed.
//! * [`origin`]: where bytes come from (a folder or an HTTP origin with failover), behind one
//!   bounded live cache and request collapsing.
//! * [`playlist`]: where a playlist is rewritten per viewer (variables, interstitials, LL-HLS
//!   parts), the live simulation of a VOD, and what a blocking reload waits for.
//! * [`fleet`]: keys and policies shared by a fleet through Redis (`[keys] source`): the
//!   schema, an instance's sync loop, and `hlsgate keys …` (coordinated rotation).
//! * [`config`]: the TOML schema and its validation; [`tls`]: the viewer port's certificate;
//!   [`metrics`]: Prometheus counters; [`clock`]: Unix time, read in one place.
//!
//! The pure modules (`token`, `client_ip`, `request_path`, `playlist`, `config`, `keys`) know
//! nothing of `server` or `origin`.

pub mod client_ip;
pub mod clock;
pub mod config;
pub mod fleet;
pub mod keys;
pub mod links;
pub mod metrics;
pub mod origin;
pub mod playlist;
pub mod request_path;
pub mod server;
pub mod tls;
pub mod token;
