//! TLS, HTTP/2 and LL-HLS helpers (tests/edge.rs, tests/llhls.rs): certificates, curl, browser options.

use super::*;

impl Bounded {
    /// Has the child exited (without waiting)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Unix time in seconds, with fractions: to compare with timestamps other processes log.
pub fn now_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_secs_f64()
}

/// The key type of a test certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256; openssl writes the key as PKCS#8 (`BEGIN PRIVATE KEY`).
    EcP256,
    /// RSA 2048; PKCS#8 too.
    Rsa2048,
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (subjectAltName), made with the
/// openssl CLI, so no code of ours is in it.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// As `openssl x509 -noout -serial` prints it: upper-case hex, `serial=` stripped.
    pub serial: String,
    pub cn: String,
}

/// Writes `<dir>/<name>.pem` and `<dir>/<name>.key`. `serial` should have an even number of hex
/// digits (0xA1B2), so openssl prints it back unpadded.
pub fn make_cert(dir: &Path, name: &str, cn: &str, serial: u64, kind: KeyKind) -> TestCert {
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-nodes", "-days", "3", "-newkey"]);
    match kind {
        KeyKind::EcP256 => cmd.args(["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
        KeyKind::Rsa2048 => cmd.args(["rsa:2048"]),
    };
    cmd.arg("-keyout").arg(&key).arg("-out").arg(&cert);
    cmd.args(["-subj", &format!("/CN={cn}"), "-set_serial", &format!("0x{serial:X}")]);
    cmd.args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]);
    cmd.args(["-addext", "basicConstraints=critical,CA:FALSE"]);
    cmd.args(["-addext", "extendedKeyUsage=serverAuth"]);
    let run = run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(run.status.success(), "openssl req failed:\n{}", run.stderr);
    TestCert { cert, key, serial: format!("{serial:X}"), cn: cn.to_string() }
}

/// What `openssl s_client` saw on one new TLS connection.
#[derive(Debug, Clone)]
pub struct ServedCert {
    /// `serial=` of the leaf certificate, upper-case hex; empty when the handshake failed.
    pub serial: String,
    /// `subject=` line of the leaf certificate.
    pub subject: String,
    /// The protocol ALPN agreed on (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// s_client's whole output, for messages.
    pub transcript: String,
}

/// Opens one TLS connection with `openssl s_client` (optionally sending SNI and offering ALPN
/// protocols, comma-separated) and reads the certificate the server presented.
pub fn served_cert(addr: SocketAddr, servername: Option<&str>, alpn: Option<&str>) -> ServedCert {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string()]);
    match servername {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    if let Some(alpn) = alpn {
        cmd.args(["-alpn", alpn]);
    }
    // stdin is /dev/null: s_client closes as soon as the handshake is done.
    let run = run_bounded(&mut cmd, Duration::from_secs(20));
    let transcript = format!("{}\n{}", run.stdout, run.stderr);
    let alpn =
        run.stdout.lines().find_map(|l| l.strip_prefix("ALPN protocol: ")).map(|s| s.trim().to_string());
    let pem: String = {
        let start = run.stdout.find("-----BEGIN CERTIFICATE-----");
        let end = run.stdout.find("-----END CERTIFICATE-----");
        match (start, end) {
            (Some(s), Some(e)) => run.stdout[s..e + "-----END CERTIFICATE-----".len()].to_string() + "\n",
            _ => String::new(),
        }
    };
    if pem.is_empty() {
        return ServedCert { serial: String::new(), subject: String::new(), alpn, transcript };
    }
    let mut x509 = Command::new("openssl");
    x509.args(["x509", "-noout", "-serial", "-subject"]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = x509.spawn().expect("openssl x509");
    child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).map(|s| s.trim().to_string()).unwrap_or_default()
    };
    ServedCert { serial: field("serial="), subject: field("subject="), alpn, transcript }
}

/// One curl transfer, as curl saw it.
#[derive(Debug, Clone)]
pub struct Curl {
    /// curl's exit code (0: the transfer completed).
    pub exit: Option<i32>,
    /// 0 when no response arrived.
    pub status: u16,
    /// `%{http_version}`: "2", "1.1", "0" when nothing was received.
    pub version: String,
    /// The final response's headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `%{time_total}` in seconds.
    pub time_total: f64,
    pub stderr: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl -sS <args> <url>` (at most `limit`) and reads back status, protocol version,
/// headers and body. Add `--http2` / `--http2-prior-knowledge` / `--http1.1`, `--cacert`, `-I`,
/// `-r`, `-H` etc. in `args`.
pub fn curl_with(args: &[&str], url: &str, limit: Duration) -> Curl {
    let dir = TempDir::new("curl");
    let headers_file = dir.join("headers");
    let body_file = dir.join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", &limit.as_secs().max(1).to_string()])
        .arg("-D")
        .arg(&headers_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code} %{http_version} %{time_total}"])
        .args(args)
        .arg(url);
    let run = run_bounded(&mut cmd, limit + Duration::from_secs(10));
    let mut w = run.stdout.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = w.next().unwrap_or("0").to_string();
    let time_total = w.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let head = std::fs::read_to_string(&headers_file).unwrap_or_default();
    // Interim (1xx) responses come first: keep the last block.
    let last = head.split("\r\n\r\n").filter(|b| !b.trim().is_empty()).last().unwrap_or("");
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        exit: run.status.code(),
        status,
        version,
        headers,
        body: std::fs::read(&body_file).unwrap_or_default(),
        time_total,
        stderr: run.stderr,
    }
}

/// [`curl_with`] with a 30 s limit.
pub fn curl(args: &[&str], url: &str) -> Curl {
    curl_with(args, url, Duration::from_secs(30))
}

/// The player page at `base` (`https://127.0.0.1:PORT`) for a signed playlist URL.
pub fn player_url_at(base: &str, src: &str) -> String {
    let src = percent_encoding::utf8_percent_encode(src, percent_encoding::NON_ALPHANUMERIC);
    format!("{base}/player.html?src={src}")
}

/// Extras for [`play_with`]: the options of `tests/js/play.mjs`.
#[derive(Debug, Clone, Default)]
pub struct PlayOptions {
    /// Chromium with `--ignore-certificate-errors` (a test certificate).
    pub ignore_https_errors: bool,
    /// JSON merged into the page's hls.js config, e.g. `{"lowLatencyMode":true}`.
    pub hls_config: Option<String>,
    /// Sample `hls.latency`, `hls.targetLatency` and the wall-clock latency every 200 ms.
    pub latency: bool,
    /// Report Resource Timing entries with their `nextHopProtocol`.
    pub resources: bool,
}

/// What play.mjs reported: the usual [`Playback`] plus its whole JSON line (`latency`,
/// `resources`, `lowLatencyMode` when asked for).
#[derive(Debug, Clone)]
pub struct PlayReport {
    pub playback: Playback,
    pub json: serde_json::Value,
    /// play.mjs's stderr (browser console, failed requests).
    pub stderr: String,
}

impl PlayReport {
    /// `(name, nextHopProtocol)` of every resource the page fetched.
    pub fn resources(&self) -> Vec<(String, String)> {
        self.json["resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap_or("").to_string(),
                            r["protocol"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The latency samples, as `(seconds since navigation, hls.latency, wall-clock latency, played)`.
    pub fn latency(&self) -> Vec<(f64, f64, Option<f64>, f64)> {
        self.json["latency"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["at"].as_f64().unwrap_or(0.0),
                            s["latency"].as_f64().unwrap_or(f64::NAN),
                            s["wall"].as_f64(),
                            s["played"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// As [`play`] / [`play_for`] (`until` is "currentTime" or "played"), with play.mjs options
/// and `timeout_s` for the page.
pub fn play_with(
    page_url: &str,
    seconds: f64,
    until: &str,
    timeout_s: u64,
    options: &PlayOptions,
) -> PlayReport {
    let script = repo_root().join("tests/js/play.mjs");
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &(timeout_s + 30).to_string(), "node"])
        .arg(&script)
        .arg(page_url)
        .arg(seconds.to_string())
        .arg(timeout_s.to_string())
        .arg(until);
    if options.ignore_https_errors {
        cmd.arg("--ignore-https-errors");
    }
    if let Some(config) = &options.hls_config {
        cmd.arg(format!("--hls-config={config}"));
    }
    if options.latency {
        cmd.arg("--latency");
    }
    if options.resources {
        cmd.arg("--resources");
    }
    let out =
        cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run node {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "play.mjs failed ({}):\n{stderr}", out.status);
    let line = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("play.mjs printed no JSON ({e}): {stdout:?}\nstderr:\n{stderr}"));
    let playback = Playback {
        current_time: json["currentTime"].as_f64().unwrap_or(0.0),
        played: json["played"].as_f64().unwrap_or(0.0),
        fatal: Some(json["fatal"].clone()).filter(|f| !f.is_null()),
        timed_out: json["timedOut"].as_bool().unwrap_or(false),
    };
    PlayReport { playback, json, stderr }
}

/// Min, median and max of some figures (for reports); NaNs are left out.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}
