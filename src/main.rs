//! The `hlsgate` command: parses flags, calls the library, picks the exit code. Nothing else.
//!
//! Exit codes: 0 success (or a valid token), 1 an invalid token (`verify`), 2 bad arguments or
//! a bad config.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgGroup, CommandFactory as _, Parser, Subcommand, ValueEnum};

use hlsgate::clock::unix_now;
use hlsgate::fleet::admin::Admin;
use hlsgate::token::{self, Accept, Key, ParamNames};
use hlsgate::{config, request_path, server};

#[derive(Parser)]
#[command(
    name = "hlsgate",
    version,
    about = "A gatekeeper for live HLS: signs every playlist URI per viewer and checks every fetch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the streams named in the config (SIGHUP reloads it, SIGTERM drains and stops).
    Serve {
        /// The config file; relative paths inside it are relative to its folder.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Overrides `listen` from the config (e.g. 0.0.0.0:8080).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Log line format (level filter: RUST_LOG, default info).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Print a signed URL: {base}{path}?md5={token}&expires={expires}.
    #[command(group(ArgGroup::new("lifetime").required(true).args(["ttl", "expires"])))]
    Sign {
        #[arg(long)]
        key: String,
        /// The URL path, starting with `/` (a directory ending in `/` signs its direct files).
        #[arg(long)]
        path: String,
        /// Bind the link to this viewer address (written in canonical form).
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Seconds from now.
        #[arg(long)]
        ttl: Option<u64>,
        /// Absolute Unix time.
        #[arg(long)]
        expires: Option<u64>,
        /// Prefix for the printed URL, e.g. https://video.example.com
        #[arg(long, default_value = "")]
        base: String,
    },
    /// Check a signed URL; exit 0 when valid, 1 when not.
    Verify {
        /// A key that may have signed it (repeat for rotation).
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// The address the request comes from; without it only IP-less tokens verify.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// Seconds of clock-skew tolerance after expiry (0 is Gcore's and nginx's rule).
        #[arg(long, default_value_t = 0)]
        skew: u64,
        /// A full URL or `path?query`.
        url: String,
    },
    /// Change the keys a fleet shares through Redis, without refusing a viewer on the way.
    Keys {
        /// The key source, as in the config's `[keys] source`.
        #[arg(long, global = true)]
        redis: Option<String>,
        /// The key source's prefix, as in `[keys] prefix`.
        #[arg(long, global = true, default_value = "hlsgate:")]
        prefix: String,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Add a key, verify-only (signing if it is the stream's first); prints its ID.
    Add {
        stream: String,
        /// The key; `-` reads it from standard input (it stays out of `ps` and shell history).
        secret: String,
    },
    /// Make a key the signing key, once every live instance verifies with it.
    Promote {
        stream: String,
        /// The key's ID (as `show` prints it) or the key itself.
        key: String,
        /// Seconds to wait for the instances before giving up.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Stop a (non-signing) key verifying after a grace period.
    Retire {
        stream: String,
        key: String,
        /// Seconds it still verifies (default: the longest session_ttl + skew any live instance reports).
        #[arg(long)]
        grace: Option<u64>,
    },
    /// add, wait, promote, wait, then retire every other key after the grace.
    Rotate {
        stream: String,
        /// The new key; `-` reads it from standard input.
        secret: String,
        #[arg(long)]
        grace: Option<u64>,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Set one policy field of a stream (any `[streams.NAME]` field but `keys`), e.g.
    /// `set live session_ttl 3600`, `set live origin http://packager:8080/live/`.
    Set { stream: String, field: String, value: String },
    /// Remove a policy field: the stream takes `[defaults]`'s value again.
    Unset { stream: String, field: String },
    /// The streams, their signing keys, and the live instances.
    List,
    /// One stream's policy and keys (IDs and roles; never a key).
    Show { stream: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config, listen, log_format } => serve(config, listen, log_format),
        Command::Sign { key, path, ip, ttl, expires, base } => sign(&key, &path, ip, ttl, expires, &base),
        Command::Verify { keys, ip, skew, url } => verify(&keys, ip, skew, &url),
        Command::Keys { redis, prefix, action } => keys(redis, &prefix, action),
    }
}

/// `hlsgate keys …`: exit 0 done, 1 refused or the key source failed, 2 bad arguments.
fn keys(redis: Option<String>, prefix: &str, action: KeysAction) -> ExitCode {
    let Some(url) = redis else {
        usage_error("give --redis redis://HOST:PORT/DB (the config's [keys] source)")
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let mut admin = Admin::connect(&url, prefix).await?;
        let out = &mut std::io::stdout();
        match action {
            KeysAction::Add { stream, secret } => {
                admin.add(&stream, &secret_arg(secret), out).await.map(|_| ())
            }
            KeysAction::Promote { stream, key, timeout } => {
                admin.promote(&stream, &key, Duration::from_secs(timeout), out).await
            }
            KeysAction::Retire { stream, key, grace } => admin.retire(&stream, &key, grace, out).await,
            KeysAction::Rotate { stream, secret, grace, timeout } => {
                admin.rotate(&stream, &secret_arg(secret), grace, Duration::from_secs(timeout), out).await
            }
            KeysAction::Set { stream, field, value } => admin.set(&stream, &field, &value, out).await,
            KeysAction::Unset { stream, field } => admin.unset(&stream, &field, out).await,
            KeysAction::List => admin.list(out).await,
            KeysAction::Show { stream } => admin.show(&stream, out).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hlsgate keys: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: PathBuf, listen: Option<SocketAddr>, format: LogFormat) -> ExitCode {
    init_logging(format);
    let mut config = match config::load(&config_path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(config = %config_path.display(), "config refused: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn sign(
    key: &str,
    path: &str,
    ip: Option<IpAddr>,
    ttl: Option<u64>,
    expires: Option<u64>,
    base: &str,
) -> ExitCode {
    if !is_signable_path(path) {
        usage_error("--path must start with / and contain no query, fragment, space or control character");
    }
    let expires = match (ttl, expires) {
        (Some(0), _) => usage_error("--ttl must be at least 1 second"),
        (Some(ttl), _) => unix_now().saturating_add(ttl),
        (None, Some(0)) => usage_error("--expires must be a Unix time after 0"),
        (None, Some(at)) => at,
        (None, None) => usage_error("give --ttl or --expires"),
    };
    let ip = ip.map(token::ip_text);
    let signature = token::sign(expires, path, ip.as_deref(), &Key::new(key));
    println!(
        "{}{}",
        base.trim_end_matches('/'),
        token::signed_url(path, &signature, expires, &ParamNames::default())
    );
    ExitCode::SUCCESS
}

/// A key given on the command line, or `-`: the first line of standard input.
fn secret_arg(secret: String) -> String {
    if secret != "-" {
        return secret;
    }
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        usage_error("cannot read the key from standard input");
    }
    line.trim_end_matches(['\r', '\n']).to_string()
}

fn is_signable_path(path: &str) -> bool {
    path.starts_with('/') && !path.contains(['?', '#', ' ']) && !path.chars().any(char::is_control)
}

fn verify(keys: &[String], ip: Option<IpAddr>, skew: u64, url: &str) -> ExitCode {
    let (raw_path, query) = split_url(url);
    let path = match request_path::parse(raw_path) {
        Ok(path) => path,
        Err(e) => usage_error(&format!("URL: {e}")),
    };
    let keys: Vec<Key> = keys.iter().map(Key::new).collect();
    let ip = ip.map(token::ip_text);
    let accept =
        Accept { paths: &token::covering_paths(path.as_str()), ips: &[ip.as_deref()], keys: &keys, skew };
    let now = unix_now();
    let outcome = token::parse_query(query, &ParamNames::default())
        .and_then(|presented| token::check(&presented, &accept, now));
    match outcome {
        Ok(valid) => {
            println!("valid, expires in {} s", valid.expires.saturating_sub(now));
            ExitCode::SUCCESS
        }
        Err(denial) => {
            println!("{denial}");
            ExitCode::from(1)
        }
    }
}

/// `scheme://host/path?query#fragment` or `/path?query` → (raw path, raw query).
fn split_url(url: &str) -> (&str, &str) {
    let without_scheme = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/"),
        None => url,
    };
    let without_fragment = without_scheme.split('#').next().unwrap_or("");
    without_fragment.split_once('?').unwrap_or((without_fragment, ""))
}

fn usage_error(message: &str) -> ! {
    Cli::command().error(ErrorKind::InvalidValue, message).exit()
}
