//! A fleet for tests/fleet.rs: a real `redis-server` on a free loopback port (its data in a temp
//! dir, append-only, so a restart keeps it), `hlsgate keys …` as an operator runs it, and
//! instances that share the Redis.

use super::*;

/// A `redis-server` child, stopped by PID when dropped.
pub struct Redis {
    process: Option<Bounded>,
    pub port: u16,
    dir: TempDir,
    /// TLS only (`rediss://`), with this certificate.
    tls: Option<TestCert>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// Speaking TLS only, with a certificate for 127.0.0.1 (self-signed, CA:FALSE: a client
    /// trusts it only when told to, e.g. by `SSL_CERT_FILE`), kept in the data dir.
    pub fn start_tls() -> Redis {
        let dir = TempDir::new("redis");
        let cert = make_cert(&dir.join("tls"), "redis", "127.0.0.1", 0xA1B2, KeyKind::EcP256);
        let mut redis = Redis { process: None, port: free_port(), dir, tls: Some(cert) };
        redis.restart();
        redis
    }

    fn start_with(tls: Option<TestCert>) -> Redis {
        let dir = TempDir::new("redis");
        let mut redis = Redis { process: None, port: free_port(), dir, tls };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The certificate a TLS Redis presents.
    pub fn certificate(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.cert.as_path())
    }

    /// Starts it (again) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "redis-server already running");
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(tls) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key),
        };
        command.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"]);
        let process = Bounded::spawn(command.arg("--dir").arg(self.dir.path()));
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "redis-server did not listen on {} within 20 s:\n{}",
            self.port,
            process.stderr_text()
        );
        self.process = Some(process);
    }

    /// Kills it (SIGTERM, then SIGKILL), as a crash or a network cut would look to hlsgate.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// `redis-cli` against this server; panics unless it succeeds. Its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-p", &self.port.to_string()]);
        if let Some(tls) = &self.tls {
            command.arg("--tls").arg("--cacert").arg(&tls.cert);
        }
        let done = run_bounded(command.args(args), Duration::from_secs(20));
        assert!(done.status.success(), "redis-cli {args:?}: {}", done.stderr);
        done.stdout
    }
}

/// `hlsgate keys --redis URL ARGS…` within `limit`; its exit status and output. With a TLS
/// Redis, its certificate is trusted through `SSL_CERT_FILE`, as an operator with a private CA
/// would.
pub fn keys_cmd(redis: &Redis, args: &[&str], limit: Duration) -> Finished {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hlsgate"));
    if let Some(cert) = redis.certificate() {
        command.env("SSL_CERT_FILE", cert);
    }
    run_bounded(command.args(["keys", "--redis", &redis.url()]).args(args), limit)
}

/// As [`keys_cmd`], failing the test unless it exits 0.
pub fn keys_ok(redis: &Redis, args: &[&str]) -> String {
    let done = keys_cmd(redis, args, Duration::from_secs(90));
    assert!(done.status.success(), "hlsgate keys {args:?} failed:\n{}\n{}", done.stdout, done.stderr);
    done.stdout
}

/// An instance's config: viewers on `ip`, the demo streams, keys from `redis`, `extra` lines
/// at the top level (before `[keys]`), and `[defaults]` lines.
pub fn fleet_config(ip: &str, redis: &Redis, extra: &str, defaults: &str) -> String {
    format!(
        "listen = \"{ip}:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{extra}\n\
         [keys]\nsource = \"{}\"\n\n[defaults]\n{defaults}\n",
        toml_path(&repo_streams()),
        redis.url()
    )
}

/// The text of the admin port's `/readyz` (status, body).
pub async fn readyz(server: &Server) -> (u16, String) {
    let response = Request::get(server.admin_addr(), "/readyz").send().await;
    (response.status, response.text())
}

/// Polls `probe` every 50 ms until it returns true or `limit` passes; whether it did.
pub async fn eventually(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
