//! The TOML config: schema, defaults, and validation whose errors name the field.
//!
//! Loading is all-or-nothing: a file either yields a complete [`Config`] or an error, so a bad
//! reload can be refused while the running generation stays in force.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::client_ip::{ForwardedHeader, Proxies};
use axum::http::{HeaderName, HeaderValue};

use crate::keys::{EntryIp, Generation, KeyRing, OriginSpec, StreamPolicy, MAX_IPS_PER_LINK};
use crate::playlist::SegmentTtl;
use crate::tls;
use crate::token::{Key, ParamNames};
use tokio_rustls::rustls::ServerConfig;

/// The file `hlsgate serve` reads when no `--config` is given.
pub const DEFAULT_PATH: &str = "hlsgate.toml";

/// A validated config. Relative paths are already resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub streams_dir: PathBuf,
    pub proxies: Proxies,
    pub public_hosts: Vec<String>,
    /// The viewer port's certificate, when it speaks TLS.
    pub tls: Option<Arc<ServerConfig>>,
    pub cors_origins: Vec<String>,
    pub header_read_timeout: Duration,
    /// How long open downloads may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Open viewer connections at most; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// The live cache shared by every origin, in bytes.
    pub cache_bytes: u64,
    pub origin_connect_timeout: Duration,
    /// Until an origin's first byte, and between any two of its body chunks.
    pub origin_timeout: Duration,
    pub streams: BTreeMap<String, StreamPolicy>,
    /// Where the streams and their keys come from instead of `[streams]`: a Redis a fleet shares.
    pub key_source: Option<KeySource>,
    /// `[defaults]`, kept for the streams a key source brings.
    defaults: RawPolicy,
}

/// `[keys]`: a Redis holding every stream's keys and policy (`crate::fleet`).
#[derive(Clone, PartialEq, Eq)]
pub struct KeySource {
    /// `redis://` or `rediss://`, with the password if any: never logged whole.
    pub url: String,
    pub prefix: String,
    pub resync_interval: Duration,
    pub stale_after: Duration,
}

impl KeySource {
    /// The URL without its password, for logs and errors.
    pub fn url_for_log(&self) -> String {
        match (self.url.split_once("://"), self.url.rfind('@')) {
            (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", self.url.get(at + 1..).unwrap_or("")),
            _ => self.url.clone(),
        }
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("url", &self.url_for_log())
            .field("prefix", &self.prefix)
            .field("resync_interval", &self.resync_interval)
            .field("stale_after", &self.stale_after)
            .finish()
    }
}

impl Config {
    /// The part of the config that a reload may change.
    pub fn generation(&self) -> Generation {
        Generation {
            streams: self.streams.iter().map(|(name, p)| (name.clone(), Arc::new(p.clone()))).collect(),
            proxies: self.proxies.clone(),
            public_hosts: self.public_hosts.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// A refused config: which field, and what is wrong with it. Never includes a key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base)
}

/// Parses and validates config text; `base` is the folder relative paths are resolved against.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| toml_error(&e, text))?;
    raw.validate(base)
}

/// A TOML or type error, named by the dotted path of the field it is in.
fn toml_error(e: &serde_path_to_error::Error<toml::de::Error>, text: &str) -> ConfigError {
    let message = e.inner().message().replace('\n', " ");
    // The path is "." for a syntax error, which belongs to no field.
    let field = match e.path().to_string() {
        root if root == "." => "config".to_string(),
        field => field,
    };
    // serde quotes the offending value ("invalid type: string \"…\""), and this message goes to
    // the log: under [streams] and [defaults] that value may be a key, misplaced or mistyped.
    let problem = if is_keys_field(&field) {
        "must be a list of strings".to_string()
    } else if is_policy_field(&field) {
        without_value(&message)
    } else {
        message
    };
    let line =
        e.inner().span().and_then(|span| text.get(..span.start)).map(|before| before.lines().count().max(1));
    let at = line.map(|n| format!(" (line {n})")).unwrap_or_default();
    ConfigError::new(field, format!("{problem}{at}"))
}

fn is_keys_field(field: &str) -> bool {
    field == "keys" || field.ends_with(".keys") || field.contains(".keys[")
}

fn is_policy_field(field: &str) -> bool {
    ["streams", "defaults"].iter().any(|table| {
        field.strip_prefix(table).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// A serde message with the offending value left out: what was expected, when serde says
/// (`invalid type: string "…", expected a boolean` → `invalid value; expected a boolean`).
fn without_value(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        // Names a field, not a value; the path already holds it.
        return message.to_string();
    }
    match message.rsplit_once(", expected ") {
        Some((_, expected)) => format!("invalid value (not shown); expected {expected}"),
        None => "invalid value (not shown)".to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    #[serde(default = "default_streams_dir")]
    streams_dir: PathBuf,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    forwarded_header: ForwardedHeader,
    #[serde(default)]
    public_hosts: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default = "default_cors")]
    cors_origins: Vec<String>,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: u64,
    #[serde(default = "default_drain_timeout")]
    drain_timeout: u64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_cache_bytes")]
    cache_bytes: u64,
    #[serde(default = "default_origin_connect_timeout")]
    origin_connect_timeout: f64,
    #[serde(default = "default_origin_timeout")]
    origin_timeout: f64,
    #[serde(default)]
    defaults: RawPolicy,
    #[serde(default)]
    streams: BTreeMap<String, RawPolicy>,
    keys: Option<RawKeySource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeySource {
    source: String,
    #[serde(default = "default_prefix")]
    prefix: String,
    #[serde(default = "default_resync_interval")]
    resync_interval: u64,
    #[serde(default = "default_stale_after")]
    stale_after: u64,
}

fn default_prefix() -> String {
    "hlsgate:".into()
}
fn default_resync_interval() -> u64 {
    30
}
fn default_stale_after() -> u64 {
    120
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_streams_dir() -> PathBuf {
    "streams".into()
}
fn default_cors() -> Vec<String> {
    vec!["*".into()]
}
fn default_header_read_timeout() -> u64 {
    10
}
fn default_drain_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    10_000
}
fn default_cache_bytes() -> u64 {
    256 << 20
}
fn default_origin_connect_timeout() -> f64 {
    3.0
}
fn default_origin_timeout() -> f64 {
    10.0
}

/// The fields of `[defaults]` and `[streams.NAME]`: a stream's value wins over the default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    keys: Option<Vec<String>>,
    segment_ttl: Option<SegmentTtl>,
    session_ttl: Option<u64>,
    skew: Option<u64>,
    entry_ip: Option<EntryIp>,
    ip_prefix_v4: Option<u8>,
    ip_prefix_v6: Option<u8>,
    max_ips_per_link: Option<u8>,
    token_params: Option<Vec<String>>,
    simulate_live: Option<bool>,
    live_window: Option<usize>,
    origin: Option<OneOrMany>,
    origin_headers: Option<BTreeMap<String, String>>,
    playlist_cache: Option<f64>,
}

/// `origin = "http://…"` or `origin = ["http://a/…", "http://b/…"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin_listen = parse_addr("admin_listen", &self.admin_listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::new(
                "admin_listen",
                "must differ from listen (metrics never go to viewers)",
            ));
        }
        if self.defaults.keys.is_some() {
            return Err(ConfigError::new(
                "defaults.keys",
                "keys belong to a stream: [streams.NAME] keys = [...]",
            ));
        }
        if self.header_read_timeout == 0 {
            return Err(ConfigError::new("header_read_timeout", "must be at least 1 second"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("max_connections", "must be at least 1"));
        }
        if self.cache_bytes < 1 << 20 {
            return Err(ConfigError::new("cache_bytes", "must be at least 1 MiB (1048576)"));
        }
        let origin_connect_timeout = seconds("origin_connect_timeout", self.origin_connect_timeout)?;
        let origin_timeout = seconds("origin_timeout", self.origin_timeout)?;
        let misplaced = [
            ("origin", self.defaults.origin.is_some()),
            ("origin_headers", self.defaults.origin_headers.is_some()),
        ];
        if let Some((field, _)) = misplaced.into_iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                format!("defaults.{field}"),
                "an origin belongs to a stream: [streams.NAME] origin = ...",
            ));
        }
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_net(text).map_err(|p| ConfigError::new(format!("trusted_proxies[{i}]"), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, origin) in self.cors_origins.iter().enumerate() {
            if !is_cors_origin(origin) {
                return Err(ConfigError::new(
                    format!("cors_origins[{i}]"),
                    format!("`{origin}` is not \"*\" or an origin like https://www.example.com"),
                ));
            }
        }
        let public_hosts = self
            .public_hosts
            .iter()
            .enumerate()
            .map(|(i, host)| public_host(host).map_err(|p| ConfigError::new(format!("public_hosts[{i}]"), p)))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::new("tls_key", "missing: tls_cert needs its key")),
            (None, Some(_)) => {
                return Err(ConfigError::new("tls_cert", "missing: tls_key needs its certificate"))
            }
            (Some(cert), Some(key)) => Some(
                tls::server_config(&base.join(cert), &base.join(key))
                    .map_err(|e| ConfigError::new(e.field, e.problem))?,
            ),
        };
        let mut streams = BTreeMap::new();
        for (name, raw) in &self.streams {
            streams.insert(name.clone(), build_policy(name, raw, &self.defaults)?);
        }
        let key_source = self.keys.map(key_source).transpose()?;
        match (&key_source, streams.is_empty()) {
            (Some(_), false) => return Err(ConfigError::new(
                "streams",
                "with [keys] source, streams come from the key source: move them there (hlsgate keys add)",
            )),
            // An empty or truncated file would otherwise take every stream offline on a reload.
            (None, true) => {
                return Err(ConfigError::new(
                    "streams",
                    "no streams: add at least one [streams.NAME] with keys",
                ))
            }
            _ => {}
        }
        Ok(Config {
            listen,
            admin_listen,
            streams_dir: base.join(&self.streams_dir),
            proxies: Proxies { trusted: trusted_proxies, header: self.forwarded_header },
            public_hosts,
            tls,
            cors_origins: self.cors_origins,
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            drain_timeout: Duration::from_secs(self.drain_timeout),
            max_connections: self.max_connections,
            cache_bytes: self.cache_bytes,
            origin_connect_timeout,
            origin_timeout,
            streams,
            key_source,
            defaults: self.defaults,
        })
    }
}

fn key_source(raw: RawKeySource) -> Result<KeySource, ConfigError> {
    if !(raw.source.starts_with("redis://") || raw.source.starts_with("rediss://")) {
        return Err(ConfigError::new("keys.source", "must be a redis:// or rediss:// URL"));
    }
    if raw.resync_interval == 0 {
        return Err(ConfigError::new("keys.resync_interval", "must be at least 1 second"));
    }
    if raw.stale_after == 0 {
        return Err(ConfigError::new("keys.stale_after", "must be at least 1 second"));
    }
    Ok(KeySource {
        url: raw.source,
        prefix: raw.prefix,
        resync_interval: Duration::from_secs(raw.resync_interval),
        stale_after: Duration::from_secs(raw.stale_after),
    })
}

impl Config {
    /// A stream held by the key source: its policy fields (each a TOML value; a bare word is a
    /// string) over this file's `[defaults]`, and its keys in the order they verify, signing
    /// key first. Errors name `streams.NAME.FIELD`, never a value.
    pub fn stream_from_fields(
        &self,
        name: &str,
        keys: Vec<String>,
        fields: &[(String, String)],
    ) -> Result<StreamPolicy, ConfigError> {
        let mut table = toml::Table::new();
        for (field, text) in fields {
            if field == "keys" {
                return Err(ConfigError::new(
                    format!("streams.{name}.keys"),
                    "keys are the hash's key:ID fields (hlsgate keys add)",
                ));
            }
            table.insert(field.clone(), toml_value(text));
        }
        let mut raw: RawPolicy =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let message = e.inner().to_string().replace('\n', " ");
                let field = match e.path().to_string() {
                    root if root == "." => format!("streams.{name}"),
                    path => format!("streams.{name}.{path}"),
                };
                ConfigError::new(field, without_value(&message))
            })?;
        raw.keys = Some(keys);
        build_policy(name, &raw, &self.defaults)
    }
}

/// A hash field's text as a TOML value (`3600`, `true`, `["a", "b"]`), else as a string.
fn toml_value(text: &str) -> toml::Value {
    // A newline could smuggle a second key into the one-line document below.
    let parsed = match text.contains('\n') {
        true => None,
        false => toml::from_str::<toml::Table>(&format!("v = {text}")).ok().and_then(|mut t| t.remove("v")),
    };
    parsed.unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| ConfigError::new(field, format!("`{text}` is not an IP:port address")))
}

/// A CIDR, or a bare address meaning just that host.
fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("`{text}` is not a CIDR like 10.0.0.0/8 or an address"))
}

fn build_policy(name: &str, raw: &RawPolicy, defaults: &RawPolicy) -> Result<StreamPolicy, ConfigError> {
    if !is_stream_name(name) {
        return Err(ConfigError::new(
            format!("streams.{name}"),
            "a stream name is letters, digits, '-' and '_' (it is the first URL path segment)",
        ));
    }
    let keys = key_ring(name, raw.keys.as_deref())?;
    let segment_ttl = raw.segment_ttl.or(defaults.segment_ttl).unwrap_or(SegmentTtl::Auto);
    if segment_ttl == SegmentTtl::Seconds(0) {
        return Err(ConfigError::new(
            origin_field(raw.segment_ttl.is_some(), name, "segment_ttl"),
            "must be at least 1",
        ));
    }
    let session_ttl = raw.session_ttl.or(defaults.session_ttl).unwrap_or(14400);
    if session_ttl == 0 {
        return Err(ConfigError::new(
            origin_field(raw.session_ttl.is_some(), name, "session_ttl"),
            "must be at least 1",
        ));
    }
    let skew = raw.skew.or(defaults.skew).unwrap_or(5);
    let v4 = raw.ip_prefix_v4.or(defaults.ip_prefix_v4).unwrap_or(32);
    if !(1..=32).contains(&v4) {
        return Err(ConfigError::new(
            origin_field(raw.ip_prefix_v4.is_some(), name, "ip_prefix_v4"),
            "must be 1..=32",
        ));
    }
    let v6 = raw.ip_prefix_v6.or(defaults.ip_prefix_v6).unwrap_or(128);
    if !(1..=128).contains(&v6) {
        return Err(ConfigError::new(
            origin_field(raw.ip_prefix_v6.is_some(), name, "ip_prefix_v6"),
            "must be 1..=128",
        ));
    }
    let max_ips_per_link = raw.max_ips_per_link.or(defaults.max_ips_per_link);
    if max_ips_per_link.is_some_and(|n| !(1..=MAX_IPS_PER_LINK).contains(&n)) {
        return Err(ConfigError::new(
            origin_field(raw.max_ips_per_link.is_some(), name, "max_ips_per_link"),
            format!("must be 1..={MAX_IPS_PER_LINK}"),
        ));
    }
    let token_params = match raw.token_params.as_ref().or(defaults.token_params.as_ref()) {
        None => ParamNames::default(),
        Some(names) => param_names(names).map_err(|p| {
            ConfigError::new(origin_field(raw.token_params.is_some(), name, "token_params"), p)
        })?,
    };
    let live_window = raw.live_window.or(defaults.live_window).unwrap_or(6);
    if live_window == 0 {
        return Err(ConfigError::new(
            origin_field(raw.live_window.is_some(), name, "live_window"),
            "must be at least 1",
        ));
    }
    let origin = origin_spec(name, raw)?;
    let playlist_cache = match raw.playlist_cache.or(defaults.playlist_cache) {
        None => None,
        Some(s) => Some(Duration::try_from_secs_f64(s).map_err(|_| {
            ConfigError::new(
                origin_field(raw.playlist_cache.is_some(), name, "playlist_cache"),
                "must be a number of seconds, 0 or more",
            )
        })?),
    };
    Ok(StreamPolicy {
        origin,
        playlist_cache,
        name: name.to_string(),
        keys,
        segment_ttl,
        session_ttl,
        skew,
        entry_ip: raw.entry_ip.or(defaults.entry_ip).unwrap_or(EntryIp::Optional),
        ip_prefix_v4: v4,
        ip_prefix_v6: v6,
        max_ips_per_link,
        token_params,
        simulate_live: raw.simulate_live.or(defaults.simulate_live).unwrap_or(false),
        live_window,
    })
}

fn key_ring(stream: &str, keys: Option<&[String]>) -> Result<KeyRing, ConfigError> {
    let field = format!("streams.{stream}.keys");
    let keys = keys.ok_or_else(|| ConfigError::new(&field, "missing: list at least one key"))?;
    let keys = keys
        .iter()
        .enumerate()
        .map(|(i, k)| match k.is_empty() {
            true => Err(ConfigError::new(format!("{field}[{i}]"), "a key cannot be empty")),
            false => Ok(Key::new(k.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    KeyRing::new(keys).ok_or_else(|| ConfigError::new(field, "empty: list at least one key"))
}

/// A stream's HTTP origin, if it has one: URLs that end in `/` (added if missing), headers
/// that are valid HTTP.
fn origin_spec(stream: &str, raw: &RawPolicy) -> Result<Option<OriginSpec>, ConfigError> {
    let urls = match &raw.origin {
        None => {
            if raw.origin_headers.is_some() {
                return Err(ConfigError::new(format!("streams.{stream}.origin_headers"), "needs an origin"));
            }
            return Ok(None);
        }
        Some(OneOrMany::One(url)) => vec![url.clone()],
        Some(OneOrMany::Many(urls)) => urls.clone(),
    };
    if urls.is_empty() {
        return Err(ConfigError::new(format!("streams.{stream}.origin"), "list at least one URL"));
    }
    let bases = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            origin_base(url).map_err(|p| ConfigError::new(format!("streams.{stream}.origin[{i}]"), p))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut headers = Vec::new();
    for (name, value) in raw.origin_headers.iter().flatten() {
        let field = format!("streams.{stream}.origin_headers.{name}");
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigError::new(&field, "not a header name"))?;
        // The value may be a password: the error never quotes it.
        let value =
            HeaderValue::from_str(value).map_err(|_| ConfigError::new(&field, "not a valid header value"))?;
        headers.push((name, value));
    }
    Ok(Some(OriginSpec { bases, headers }))
}

/// `http://host[:port]/path/`, lowercase scheme, with its trailing slash.
fn origin_base(url: &str) -> Result<String, String> {
    let uri: axum::http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    if uri.scheme_str().map(str::to_ascii_lowercase).as_deref() != Some("http") {
        return Err(format!(
            "`{url}`: only http:// origins (put TLS on the packager's side of a private network, or a proxy)"
        ));
    }
    if uri.authority().is_none() || uri.query().is_some() {
        return Err(format!("`{url}` must be http://host[:port]/path/ without a query"));
    }
    let mut base =
        format!("http://{}{}", uri.authority().map(|a| a.as_str()).unwrap_or_default(), uri.path());
    if !base.ends_with('/') {
        base.push('/');
    }
    Ok(base)
}

/// A timeout in (possibly fractional) seconds, above zero.
fn seconds(field: &str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::new(field, "must be a number of seconds above 0"))
}

/// The name of the table a value came from: the stream's own, or `[defaults]`.
fn origin_field(from_stream: bool, stream: &str, f: &str) -> String {
    if from_stream {
        format!("streams.{stream}.{f}")
    } else {
        format!("defaults.{f}")
    }
}

fn param_names(names: &[String]) -> Result<ParamNames, String> {
    let [token, expires] = names else {
        return Err("must list exactly two names: the token's and the expiry's".into());
    };
    let usable =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !usable(token) || !usable(expires) || token == expires {
        return Err("names must differ and be letters, digits, '-' or '_'".into());
    }
    Ok(ParamNames { token: token.clone(), expires: expires.clone() })
}

/// `host` or `host:port` as it appears in a URL's authority, lowercased so it compares as
/// hosts do.
fn public_host(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(is_authority_byte) {
        return Err(format!("`{text}` is not a host or host:port like video.example.com:8443"));
    }
    Ok(text.to_ascii_lowercase())
}

fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)
}

/// `*`, or `scheme://host[:port]` as a browser sends it in `Origin` (no path, no slash).
fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, host)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !host.is_empty() && host.bytes().all(is_authority_byte)
}

pub fn is_stream_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The stream names, for logs at start and on reload.
pub fn stream_names(streams: &HashMap<String, Arc<StreamPolicy>>) -> Vec<&str> {
    let mut names: Vec<&str> = streams.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_STREAM: &str = "[streams.a]\nkeys = [\"k\"]\n";

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("/etc/hlsgate")).unwrap()
    }

    fn parse_err(text: &str) -> ConfigError {
        parse(text, Path::new("/etc/hlsgate")).unwrap_err()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = parse_ok("[streams.demo]\nkeys = [\"k1\", \"k2\"]\n");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.streams_dir, PathBuf::from("/etc/hlsgate/streams"));
        assert_eq!(c.cors_origins, vec!["*"]);
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 10_000);
        let d = &c.streams["demo"];
        assert_eq!(d.segment_ttl, SegmentTtl::Auto);
        assert_eq!((d.session_ttl, d.skew, d.ip_prefix_v4, d.ip_prefix_v6), (14400, 5, 32, 128));
        assert_eq!(d.entry_ip, EntryIp::Optional);
        assert_eq!(d.token_params, ParamNames::default());
        assert_eq!(d.keys.all(), [Key::new("k1"), Key::new("k2")]);
        assert_eq!(d.keys.signing(), &Key::new("k1"));
        assert!(!d.simulate_live);
        assert_eq!(d.live_window, 6);
    }

    #[test]
    fn stream_values_override_defaults() {
        let c = parse_ok(
            "[defaults]\nskew = 2\nsession_ttl = 60\nentry_ip = \"required\"\n\
             [streams.a]\nkeys = [\"k\"]\nskew = 0\ntoken_params = [\"st\", \"e\"]\n[streams.b]\nkeys = [\"k\"]\n",
        );
        assert_eq!(c.streams["a"].skew, 0);
        assert_eq!(c.streams["b"].skew, 2);
        assert_eq!(c.streams["a"].session_ttl, 60);
        assert_eq!(c.streams["b"].entry_ip, EntryIp::Required);
        assert_eq!(c.streams["a"].token_params.token, "st");
    }

    #[test]
    fn max_ips_per_link_is_off_unless_set_and_follows_defaults() {
        assert_eq!(parse_ok(A_STREAM).streams["a"].max_ips_per_link, None);
        let c = parse_ok(
            "[defaults]\nmax_ips_per_link = 3\n[streams.a]\nkeys = [\"k\"]\n\
             [streams.b]\nkeys = [\"k\"]\nmax_ips_per_link = 16\n",
        );
        assert_eq!(c.streams["a"].max_ips_per_link, Some(3));
        assert_eq!(c.streams["b"].max_ips_per_link, Some(16));
        let e = parse_err("[streams.a]\nkeys = [\"k\"]\nmax_ips_per_link = 17\n");
        assert_eq!(e.to_string(), "streams.a.max_ips_per_link: must be 1..=16");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[streams.demo]\n", "streams.demo.keys"),
            ("[streams.demo]\nkeys = []\n", "streams.demo.keys"),
            ("[streams.demo]\nkeys = [\"a\", \"\"]\n", "streams.demo.keys[1]"),
            ("listen = \"nope\"\n", "listen"),
            ("admin_listen = \"127.0.0.1:8080\"\n", "admin_listen"),
            ("trusted_proxies = [\"10.0.0.0/8\", \"bad\"]\n", "trusted_proxies[1]"),
            ("[defaults]\nkeys = [\"x\"]\n", "defaults.keys"),
            ("[defaults]\nsession_ttl = 0\n[streams.a]\nkeys = [\"k\"]\n", "defaults.session_ttl"),
            ("[streams.a]\nkeys = [\"k\"]\nsession_ttl = 0\n", "streams.a.session_ttl"),
            ("[streams.a]\nkeys = [\"k\"]\nip_prefix_v4 = 33\n", "streams.a.ip_prefix_v4"),
            ("[streams.a]\nkeys = [\"k\"]\nmax_ips_per_link = 0\n", "streams.a.max_ips_per_link"),
            ("[streams.a]\nkeys = [\"k\"]\nmax_ips_per_link = 17\n", "streams.a.max_ips_per_link"),
            ("[streams.a]\nkeys = [\"k\"]\nmax_ips_per_link = 300\n", "streams.a.max_ips_per_link"),
            ("[streams.a]\nkeys = [\"k\"]\nmax_ips_per_link = \"3\"\n", "streams.a.max_ips_per_link"),
            ("[defaults]\nmax_ips_per_link = 17\n[streams.a]\nkeys = [\"k\"]\n", "defaults.max_ips_per_link"),
            ("[streams.a]\nkeys = [\"k\"]\ntoken_params = [\"md5\"]\n", "streams.a.token_params"),
            ("[streams.\"a/b\"]\nkeys = [\"k\"]\n", "streams.a/b"),
            ("header_read_timeout = 0\n", "header_read_timeout"),
            ("max_connections = 0\n", "max_connections"),
            ("max_connections = -1\n", "max_connections"),
            ("drain_timeout = \"soon\"\n", "drain_timeout"),
            ("cors_origins = [\"https://a.example\", \"a.example\"]\n", "cors_origins[1]"),
            ("cors_origins = [\"https://a.example/\"]\n", "cors_origins[0]"),
            ("[streams.a]\nkeys = [\"k\"]\nbogus = 1\n", "streams.a.bogus"),
            ("[streams.a]\nkeys = [\"k\"]\nentry_ip = \"sometimes\"\n", "streams.a.entry_ip"),
            ("[defaults]  # d\nsegment_ttl = \"often\"\n", "defaults.segment_ttl"),
            ("skew = 1\n", "skew"),
            ("listen = 8080\n", "listen"),
            ("[streams.\"a\"]\nkeys = [\n  \"k\",\n  5,\n]\n", "streams.a.keys[1]"),
            ("this is [[[ not toml\n", "config"),
        ];
        for (text, field) in cases {
            let e = parse_err(text);
            assert_eq!(e.field, field, "{text:?} gave {e}");
        }
    }

    #[test]
    fn errors_never_echo_a_key() {
        let e = parse_err("[streams.a]\nkeys = [\"topsecret\"]\nip_prefix_v4 = 99\n");
        assert!(!e.to_string().contains("topsecret"));
        // serde would quote the mistyped value itself.
        let e = parse_err("[streams.a]\nkeys = \"topsecret\"\n");
        assert_eq!(e.field, "streams.a.keys");
        assert!(!e.to_string().contains("topsecret"), "{e}");
    }

    #[test]
    fn cors_origins_accept_browser_origins() {
        let c = parse_ok(&format!(
            "cors_origins = [\"https://www.example.com\", \"http://127.0.0.1:8080\", \"http://[::1]:80\"]\n{A_STREAM}"
        ));
        assert_eq!(c.cors_origins.len(), 3);
    }

    #[test]
    fn trusted_proxies_accept_bare_addresses() {
        let c = parse_ok(&format!("trusted_proxies = [\"127.0.0.1\", \"10.1.2.3/8\", \"::1\"]\n{A_STREAM}"));
        let shown: Vec<String> = c.proxies.trusted.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn forwarded_header_and_public_hosts() {
        let c = parse_ok(A_STREAM);
        assert_eq!(c.proxies.header, ForwardedHeader::XForwardedFor);
        assert!(c.public_hosts.is_empty());
        let c = parse_ok(&format!(
            "forwarded_header = \"forwarded\"\npublic_hosts = [\"Video.Example.com\", \"[::1]:8443\"]\n{A_STREAM}"
        ));
        assert_eq!(c.proxies.header, ForwardedHeader::Forwarded);
        assert_eq!(c.public_hosts, ["video.example.com", "[::1]:8443"]);
        assert_eq!(c.generation().public_hosts, c.public_hosts);
        for (text, field) in [
            ("forwarded_header = \"x-real-ip\"\n", "forwarded_header"),
            ("public_hosts = [\"a.example\", \"https://b.example\"]\n", "public_hosts[1]"),
            ("public_hosts = [\"\"]\n", "public_hosts[0]"),
            ("public_hosts = [\"a.example/path\"]\n", "public_hosts[0]"),
        ] {
            assert_eq!(parse_err(&format!("{text}{A_STREAM}")).field, field, "{text}");
        }
    }

    /// A truncated or emptied file on reload would take every stream offline.
    #[test]
    fn a_config_without_streams_is_refused() {
        for text in
            ["", "# nothing yet\n", "listen = \"127.0.0.1:8080\"\n", "[streams]\n", "[defaults]\nskew = 1\n"]
        {
            let e = parse_err(text);
            assert_eq!(e.field, "streams", "{text:?}: {e}");
        }
    }

    /// Whatever sits under [streams] or [defaults] may be a key put in the wrong place.
    #[test]
    fn errors_never_echo_a_value_under_streams_or_defaults() {
        for (text, field) in [
            ("[streams]\nother = \"SECRET-1\"\n", "streams.other"),
            ("[streams.a]\nkeys = [\"k\"]\nentry_ip = \"SECRET-1\"\n", "streams.a.entry_ip"),
            ("[streams.a]\nkeys = [\"k\"]\nsegment_ttl = \"SECRET-1\"\n", "streams.a.segment_ttl"),
            ("[streams.a]\nkeys = [\"k\"]\nsimulate_live = \"SECRET-1\"\n", "streams.a.simulate_live"),
            (
                "[defaults]\ntoken_params = \"SECRET-1\"\n[streams.a]\nkeys = [\"k\"]\n",
                "defaults.token_params",
            ),
            ("[defaults]\nentry_ip = [\"SECRET-1\"]\n", "defaults.entry_ip"),
            ("streams = \"SECRET-1\"\n", "streams"),
        ] {
            let e = parse_err(text);
            assert_eq!(e.field, field, "{text:?}: {e}");
            assert!(!e.to_string().contains("SECRET"), "{text:?} echoed: {e}");
        }
        // What was expected is still said.
        let e = parse_err("[streams.a]\nkeys = [\"k\"]\nsimulate_live = \"SECRET-1\"\n");
        assert!(e.problem.contains("expected a boolean"), "{e}");
    }
}
