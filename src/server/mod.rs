//! `hlsgate serve`: binds the viewer and admin listeners, runs their accept loops
//! (`listener.rs`), reloads the config on SIGHUP and drains on SIGTERM / Ctrl-C.

mod admin;
mod cors;
mod error;
mod gate;
mod listener;
mod media;
mod refusal_log;
pub mod shutdown;
mod viewer;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Semaphore;

use crate::config::{self, Config};
use crate::fleet::Fleet;
use crate::keys::{EntryIp, KeyStore};
use crate::links::Links;
use crate::metrics::Metrics;
use crate::origin::{self, Origins};
use crate::playlist::{StickyExpiries, Verdicts};
use crate::token;
use shutdown::{Shutdown, Trigger};
use tokio::net::TcpListener;

/// Connections the admin port holds at once: a scraper and a few probes.
const ADMIN_CONNECTIONS: usize = 64;
/// File descriptors a process needs besides its connections: listeners, files being read,
/// the log, the runtime's own.
const SPARE_FILES: u64 = 64;

/// What every request handler shares.
pub struct App {
    pub keys: KeyStore,
    /// The networks each IP-less entry link was opened from; outlives reloads.
    pub links: Links,
    pub origins: Origins,
    pub verdicts: Verdicts,
    pub sticky_expiries: StickyExpiries,
    pub metrics: Metrics,
    pub refusal_log: refusal_log::RefusalLog,
    pub cors: cors::Cors,
    pub draining: AtomicBool,
    /// The shared key source, when `[keys] source` is set.
    pub fleet: Option<Arc<Fleet>>,
}

/// Runs until SIGTERM or Ctrl-C, then drains. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: PathBuf) -> io::Result<()> {
    raise_open_file_limit(config.max_connections);
    let viewers = listener::bind(config.listen, "listen")?;
    let admin = listener::bind(config.admin_listen, "admin_listen")?;
    // Installed before the ready line: until then SIGHUP's default action would kill the
    // process, and scripts reload as soon as they see "ready".
    let signals = Signals::install()?;
    let app = App::start(&config, &viewers.local_addr()?.to_string()).await?;
    let (trigger, shutdown) = shutdown::channel();
    let (hurry, hurried) = shutdown::channel();
    tokio::spawn(signals.handle(Arc::clone(&app), config_path, trigger, hurry));
    serve(viewers, admin, app, &config, shutdown, hurried).await
}

impl App {
    /// What every handler shares, for this config: the keys (from the file, or read from the
    /// key source, whose follower starts here), the origins and their cache, the metrics.
    pub async fn start(config: &Config, listen: &str) -> io::Result<Arc<App>> {
        let (fleet, generation) = match &config.key_source {
            None => (None, config.generation()),
            Some(source) => {
                let (fleet, generation) = Fleet::start(config.clone(), listen).await.map_err(|e| {
                    io::Error::other(format!(
                        "keys.source ({}): cannot read the key source, and there is no cache to start from: {e}",
                        source.url_for_log()
                    ))
                })?;
                let streams = config::stream_names(&generation.streams).join(",");
                tracing::info!(source = %source.url_for_log(), streams = %streams, "streams and keys read from the key source");
                (Some(fleet), generation)
            }
        };
        let app = Arc::new(App {
            keys: KeyStore::new(generation),
            links: fleet.clone().map_or_else(Links::default, Links::shared_by),
            origins: Origins::new(&origin::Settings {
                streams_dir: config.streams_dir.clone(),
                cache_bytes: config.cache_bytes,
                connect_timeout: config.origin_connect_timeout,
                timeout: config.origin_timeout,
            }),
            verdicts: Verdicts::default(),
            sticky_expiries: StickyExpiries::default(),
            metrics: Metrics::default(),
            refusal_log: refusal_log::RefusalLog::default(),
            cors: cors::Cors::new(&config.cors_origins),
            draining: AtomicBool::new(false),
            fleet,
        });
        if let Some(fleet) = &app.fleet {
            let (fleet, app) = (Arc::clone(fleet), Arc::clone(&app));
            tokio::spawn(async move { fleet.run(&app.keys).await });
        }
        Ok(app)
    }
}

/// The server on listeners already bound, until `shutdown`; then the drain, which `hurried` cuts
/// short. All of `run` but the process's own business (the open-file limit, signals, reloads):
/// tests start it in-process, like mini-redis's `server::run`.
pub async fn serve(
    viewers: TcpListener,
    admin: TcpListener,
    app: Arc<App>,
    config: &Config,
    shutdown: Shutdown,
    hurried: Shutdown,
) -> io::Result<()> {
    let viewer_addr = viewers.local_addr()?;
    // Tests and scripts wait for this exact line (with the bound ports, which may be ephemeral).
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(viewers = %viewer_addr, admin = %admin.local_addr()?, scheme = %scheme, "hlsgate ready");
    announce_links(config, viewer_addr);

    let http = listener::http(config.header_read_timeout);
    // The admin port outlives the viewers' drain, so a load balancer sees `/readyz` turn 503
    // and Prometheus can scrape until the last download has finished.
    let (admin_done, admin_shutdown) = shutdown::channel();
    let admin_port = listener::Port {
        listener: admin,
        service: listener::Service::Router(admin::router(Arc::clone(&app))),
        http: Arc::clone(&http),
        tls: Box::new(|| None),
        greeting_timeout: config.header_read_timeout,
    };
    let admin_loop = tokio::spawn(serve_admin(admin_port, admin_shutdown));

    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let certificates = Arc::clone(&app);
    let viewer_port = listener::Port {
        listener: viewers,
        service: listener::Service::Viewer(Arc::clone(&app)),
        http,
        // Each new connection takes the certificate in force: a reload swaps it.
        tls: Box::new(move || certificates.keys.current().tls.clone()),
        greeting_timeout: config.header_read_timeout,
    };
    listener::accept_loop(viewer_port, &graceful, &limit, shutdown).await;
    tracing::info!(
        deadline_s = config.drain_timeout.as_secs(),
        "shutting down: no new connections; draining open ones (a second signal stops at once)"
    );
    drain(graceful, config.drain_timeout, hurried).await;
    admin_done.fire();
    let _ = admin_loop.await;
    Ok(())
}

/// Lets open connections finish, until the deadline or a second signal.
async fn drain(connections: GracefulShutdown, deadline: Duration, mut hurried: Shutdown) {
    tokio::select! {
        drained = tokio::time::timeout(deadline, connections.shutdown()) => match drained {
            Ok(()) => tracing::info!("drained; bye"),
            Err(_) => tracing::warn!(deadline_s = deadline.as_secs(), "drain deadline passed; closing what is left"),
        },
        () = hurried.recv() => tracing::warn!("second signal: closing open connections now"),
    }
}

/// The admin listener until `shutdown`. Its requests are short: open ones are closed with
/// it rather than drained.
async fn serve_admin(port: listener::Port, shutdown: Shutdown) {
    let connections = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    listener::accept_loop(port, &connections, &limit, shutdown).await;
}

/// Raises the soft limit on open files to the hard one, as nginx's `worker_rlimit_nofile` and
/// Go's runtime do: the 1024 a systemd unit or a container inherits would cap the audience at
/// about a thousand viewers.
fn raise_open_file_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(SPARE_FILES);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is below max_connections: raise the hard limit (systemd LimitNOFILE, docker ulimits nofile)"
        ),
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// The signals `serve` answers: SIGHUP reloads, SIGTERM and SIGINT drain.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> io::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| io::Error::new(e.kind(), format!("cannot handle {name}: {e}")))
        };
        Ok(Signals {
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Reloads on SIGHUP; the first SIGTERM or SIGINT fires `drain`, the second `hurry`.
    async fn handle(mut self, app: Arc<App>, config_path: PathBuf, drain: Trigger, hurry: Trigger) {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => reload(&app, &config_path),
                _ = self.terminate.recv() => break,
                _ = self.interrupt.recv() => break,
            }
        }
        app.draining.store(true, Ordering::Relaxed);
        drain.fire();
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        hurry.fire();
    }
}

/// Re-reads the config. A config that fails validation changes nothing: the keys in force stay.
fn reload(app: &App, config_path: &Path) {
    let loaded = config::load(config_path).and_then(|config| match same_key_source(app, &config) {
        true => Ok(config),
        false => Err(config::ConfigError {
            field: "keys.source".into(),
            problem: "adding, removing or changing the key source needs a restart".into(),
        }),
    });
    match loaded {
        Ok(config) => {
            let generation = match &app.fleet {
                None => config.generation(),
                Some(fleet) => {
                    fleet.set_file(config);
                    fleet.generation(&app.keys.current().streams)
                }
            };
            let streams = config::stream_names(&generation.streams).join(",");
            app.keys.replace(generation);
            app.metrics.record_reload(true);
            tracing::info!(streams = %streams, "config reloaded; new keys and policies in force (listen addresses, streams_dir, CORS and the connection settings need a restart)");
        }
        Err(e) => {
            app.metrics.record_reload(false);
            tracing::error!(error = %e, "config reload refused; the previous config stays in force");
        }
    }
}

fn same_key_source(app: &App, config: &Config) -> bool {
    match (&app.fleet, &config.key_source) {
        (None, None) => true,
        (Some(fleet), Some(source)) => fleet.settings() == source,
        _ => false,
    }
}

/// Logs a ready-to-play link per stream for this machine, so the quick start is copy-paste.
fn announce_links(config: &Config, viewer_addr: SocketAddr) {
    let host = match viewer_addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            SocketAddr::new([127, 0, 0, 1].into(), viewer_addr.port())
        }
        ip if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), viewer_addr.port())
        }
        _ => viewer_addr,
    };
    let expires = token::issue_expiry(crate::clock::unix_now(), 3600, 60);
    for (name, policy) in &config.streams {
        if let Some(origin) = &policy.origin {
            // Its playlists are on another machine; which one a viewer starts from is the site's.
            tracing::info!(stream = %name, origin = %origin.bases.join(","), "stream fronts an HTTP origin");
            continue;
        }
        let Some(master) = entry_playlist(&config.streams_dir.join(name)) else {
            tracing::warn!(stream = %name, dir = %config.streams_dir.join(name).display(), "no playlist found yet");
            continue;
        };
        let path = format!("/{name}/{master}");
        // IP-less where the stream allows it, so any local player works; else bound to loopback.
        let ip = (policy.entry_ip == EntryIp::Required).then(|| token::ip_text(host.ip()));
        let signature = token::sign(expires, &path, ip.as_deref(), policy.keys.signing());
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://{host}{}",
            token::signed_url(&path, &signature, expires, &policy.token_params)
        );
        let player = format!(
            "{scheme}://{host}/player.html?src={}",
            percent_encoding::utf8_percent_encode(&url, percent_encoding::NON_ALPHANUMERIC)
        );
        tracing::info!(stream = %name, url = %url, player = %player, "signed link for this machine, valid 1 h");
    }
}

/// The playlist a viewer starts from: `master.m3u8`, else `index.m3u8`, else the first one.
fn entry_playlist(dir: &Path) -> Option<String> {
    for preferred in ["master.m3u8", "index.m3u8"] {
        if dir.join(preferred).is_file() {
            return Some(preferred.to_string());
        }
    }
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| crate::request_path::is_playlist(n))
        .collect();
    found.sort();
    found.into_iter().next()
}
