//! Shared harness for the integration tests: a raw HTTP/1.1 client that can pose as many
//! viewers, a guard around the real `hlsgate` binary, temp dirs, and token helpers.
//!
//! Every test binary includes this with `mod common;` and uses only part of it. The helpers
//! of the larger suites are modules of their own: `clients.rs` (hostile requests, many
//! clients), `origin.rs` (nginx and scripted origins), `edge.rs` (TLS, HTTP/2, LL-HLS), `fleet.rs`
//! (redis-server and `hlsgate keys`), `inproc.rs` (the server in the test's own process).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hlsgate::token::{sign, signed_url, Key, ParamNames};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

mod clients;
mod edge;
mod fleet;
mod inproc;
mod origin;
// Each test binary uses only part of the harness, as with `dead_code` above.
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use edge::*;
#[allow(unused_imports)]
pub use fleet::*;
#[allow(unused_imports)]
pub use inproc::*;
#[allow(unused_imports)]
pub use origin::*;

/// How long one request may take, connect to EOF. Generous for a loaded 2-core CI box.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may take to bind both listeners and log its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERM may take to stop the server before the guard uses SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------

/// One request, sent byte for byte as described: the target is never normalised, so tests
/// can send `..`, `%2e%2e`, `%2F`, `%00` and backslashes exactly as an attacker would.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// Where to connect.
    pub to: SocketAddr,
    /// Local address to bind before connecting: which viewer the server sees.
    pub from: IpAddr,
    /// Add `Host: <to>` unless the test set a Host header itself (or turned this off to
    /// test a request without one).
    pub auto_host: bool,
    pub timeout: Duration,
}

impl Request {
    pub fn new(method: &str, to: SocketAddr, target: &str) -> Self {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            to,
            from: IpAddr::from([127, 0, 0, 1]),
            auto_host: true,
            timeout: HTTP_TIMEOUT,
        }
    }

    pub fn get(to: SocketAddr, target: &str) -> Self {
        Self::new("GET", to, target)
    }

    pub fn head(to: SocketAddr, target: &str) -> Self {
        Self::new("HEAD", to, target)
    }

    pub fn options(to: SocketAddr, target: &str) -> Self {
        Self::new("OPTIONS", to, target)
    }

    /// Connect from this loopback address (127.0.0.2, 127.0.0.3, …) to act as another viewer.
    pub fn from(mut self, ip: &str) -> Self {
        self.from = ip.parse().unwrap_or_else(|e| panic!("bad local IP {ip:?}: {e}"));
        self
    }

    /// Adds a header; repeated names are sent repeatedly, in order.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends no Host header at all (unless one was added with [`Request::header`]).
    pub fn no_host(mut self) -> Self {
        self.auto_host = false;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The exact bytes put on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if self.auto_host && !self.has_header("host") {
            let _ = write!(head, "Host: {}\r\n", self.to);
        }
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        // One request per connection keeps reading simple: the response ends at EOF.
        if !self.has_header("connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Sends the request; panics with the request in the message on any I/O error or timeout.
    pub async fn send(&self) -> Response {
        match http(self).await {
            Ok(resp) => resp,
            Err(e) => panic!("{} {} from {} to {} failed: {e}", self.method, self.target, self.from, self.to),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In the order received, names as sent by the server.
    pub headers: Vec<(String, String)>,
    /// Decoded (chunked framing removed); empty for HEAD, 1xx, 204 and 304.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All values of a header that may repeat (Set-Cookie, Vary, …).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as text; invalid UTF-8 is replaced rather than failing the test here.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a fresh connection bound to `req.from` and reads the response to EOF.
pub async fn http(req: &Request) -> io::Result<Response> {
    let bytes = exchange(req.to, req.from, &req.to_bytes(), req.timeout).await?;
    parse_response(&bytes, req.method.eq_ignore_ascii_case("HEAD"))
}

/// Sends arbitrary bytes (malformed requests, pipelining, …) and returns everything the
/// server wrote until it closed the connection.
pub async fn raw(to: SocketAddr, from: &str, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let from: IpAddr = from.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    exchange(to, from, bytes, HTTP_TIMEOUT).await
}

async fn exchange(to: SocketAddr, from: IpAddr, bytes: &[u8], limit: Duration) -> io::Result<Vec<u8>> {
    let work = async {
        let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        // Port 0: the kernel picks one, so parallel tests never collide.
        socket.bind(SocketAddr::new(from, 0))?;
        let mut stream = socket.connect(to).await?;
        stream.write_all(bytes).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        Ok(out)
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no EOF from {to} within {limit:?}"))),
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses one HTTP/1.x response. `head_request` matters because a HEAD response announces a
/// Content-Length it does not send. Interim 1xx responses before the final one are skipped.
pub fn parse_response(mut bytes: &[u8], head_request: bool) -> io::Result<Response> {
    loop {
        let end = find(bytes, b"\r\n\r\n").ok_or_else(|| {
            bad(format!("no end of headers in {} bytes: {:?}", bytes.len(), String::from_utf8_lossy(bytes)))
        })?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|e| bad(format!("non-UTF-8 head: {e}")))?;
        let rest = &bytes[end + 4..];
        let mut lines = head.split("\r\n");
        let (status, reason) = parse_status_line(lines.next().unwrap_or(""))?;
        let headers = lines.map(parse_header_line).collect::<io::Result<Vec<_>>>()?;
        if (100..200).contains(&status) {
            bytes = rest;
            continue;
        }
        let mut resp = Response { status, reason, headers, body: Vec::new() };
        resp.body = read_body(&resp, rest, head_request)?;
        return Ok(resp);
    }
}

fn parse_status_line(line: &str) -> io::Result<(u16, String)> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("bad status line {line:?}")));
    }
    let status =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad(format!("bad status in {line:?}")))?;
    Ok((status, parts.next().unwrap_or("").to_string()))
}

fn parse_header_line(line: &str) -> io::Result<(String, String)> {
    let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("bad header line {line:?}")))?;
    Ok((name.trim().to_string(), value.trim().to_string()))
}

fn read_body(resp: &Response, rest: &[u8], head_request: bool) -> io::Result<Vec<u8>> {
    if head_request || resp.status == 204 || resp.status == 304 {
        return Ok(Vec::new());
    }
    let chunked =
        resp.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return decode_chunked(rest);
    }
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        if rest.len() < len {
            return Err(bad(format!("body truncated: Content-Length {len}, got {}", rest.len())));
        }
        return Ok(rest[..len].to_vec());
    }
    // Neither: the body runs to EOF (HTTP/1.1 §6.3 rule 8).
    Ok(rest.to_vec())
}

/// Removes chunked framing; trailers are read past and dropped.
pub fn decode_chunked(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or_else(|| bad("chunk size line not terminated"))?;
        let line = std::str::from_utf8(&data[..line_end]).map_err(|_| bad("non-UTF-8 chunk size"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return Err(bad(format!("chunk of {size} bytes truncated or not followed by CRLF")));
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response read as it arrives rather than to EOF: for tests that must hold a download open
/// (read a little, let the token expire or the server drain, then read the rest).
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Body bytes received so far, framing untouched (the big-file path sends Content-Length).
    pub body: Vec<u8>,
    stream: tokio::net::TcpStream,
}

impl Streaming {
    /// Connects from `req.from`, sends the request and reads until the head is complete.
    pub async fn open(req: &Request) -> io::Result<Streaming> {
        let socket = if req.to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(req.from, 0))?;
        // A small fixed window (no autotuning): while the test does not read, the server
        // really cannot finish, however large loopback buffers may grow.
        socket.set_recv_buffer_size(64 << 10)?;
        let mut stream = within(req.timeout, socket.connect(req.to)).await??;
        stream.write_all(&req.to_bytes()).await?;
        let mut got = Vec::new();
        let end = loop {
            if let Some(end) = find(&got, b"\r\n\r\n") {
                break end;
            }
            let mut buf = [0u8; 4096];
            let n = within(req.timeout, stream.read(&mut buf)).await??;
            if n == 0 {
                return Err(bad("connection closed before the end of the response head"));
            }
            got.extend_from_slice(&buf[..n]);
        };
        let head = std::str::from_utf8(&got[..end]).map_err(|e| bad(format!("non-UTF-8 head: {e}")))?;
        let mut lines = head.split("\r\n");
        let (status, _) = parse_status_line(lines.next().unwrap_or(""))?;
        let headers = lines.map(parse_header_line).collect::<io::Result<Vec<_>>>()?;
        let body = got[end + 4..].to_vec();
        Ok(Streaming { status, headers, body, stream })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Reads until at least `n` body bytes have arrived (or EOF, which is an error).
    pub async fn read_at_least(&mut self, n: usize) -> io::Result<()> {
        let mut buf = vec![0u8; 64 << 10];
        while self.body.len() < n {
            let got = within(HTTP_TIMEOUT, self.stream.read(&mut buf)).await??;
            if got == 0 {
                return Err(bad(format!("EOF after {} of {n} body bytes", self.body.len())));
            }
            self.body.extend_from_slice(&buf[..got]);
        }
        Ok(())
    }

    /// Reads the rest of the body, to EOF (requests are sent with `Connection: close`).
    pub async fn read_to_end(&mut self) -> io::Result<()> {
        within(HTTP_TIMEOUT, self.stream.read_to_end(&mut self.body)).await??;
        Ok(())
    }
}

async fn within<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("nothing within {limit:?}")))
}

// ---------------------------------------------------------------------------------------
// Temp dirs and configs
// ---------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop. Unique per process and call so
/// tests in parallel (and leftovers of killed runs) never share one.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("hlsgate-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes a file (creating parent dirs) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed streams dir; fine for tests that only read.
pub fn repo_streams() -> PathBuf {
    repo_root().join("streams")
}

/// Copies the committed `streams/demo` into `<dir>/streams/demo` for tests that change,
/// add or delete files, and returns `<dir>/streams` (the value for `streams_dir`).
pub fn copy_demo(dir: &TempDir) -> PathBuf {
    let streams = dir.join("streams");
    copy_tree(&repo_streams().join("demo"), &streams.join("demo"));
    streams
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", entry.path().display(), target.display()));
        }
    }
}

/// A path as a TOML basic string, quotes included, for building config text.
pub fn toml_path(path: &Path) -> String {
    toml_str(&path.to_string_lossy())
}

/// Any text as a TOML basic string, quotes included.
pub fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------
// Child processes and their logs
// ---------------------------------------------------------------------------------------

/// Lines a child wrote, collected by a background thread for as long as the child runs.
pub type Lines = Arc<Mutex<Vec<String>>>;

/// Reads `reader` line by line on a thread: every line (ANSI colours stripped) goes into the
/// returned list, and every line is also offered to `on_line` (for ready detection).
pub fn collect_lines<R, F>(reader: R, on_line: F) -> Lines
where
    R: Read + Send + 'static,
    F: FnMut(&str) + Send + 'static,
{
    spawn_line_reader(reader, on_line).0
}

/// The reader thread behind [`collect_lines`]. A `\r` ends a line too: ffmpeg ends its progress
/// lines with one, and each piece should be a line of its own.
fn spawn_line_reader<R, F>(reader: R, mut on_line: F) -> (Lines, std::thread::JoinHandle<()>)
where
    R: Read + Send + 'static,
    F: FnMut(&str) + Send + 'static,
{
    let lines: Lines = Arc::default();
    let sink = Arc::clone(&lines);
    let handle = std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    for piece in text.split(['\r', '\n']).filter(|p| !p.is_empty()) {
                        let line = strip_ansi(piece);
                        on_line(&line);
                        sink.lock().unwrap().push(line);
                    }
                }
            }
        }
    });
    (lines, handle)
}

/// Removes ANSI escape sequences: tracing's fmt layer may colour field names, which would
/// split `viewers=` from its value.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn kill(pid: u32, signal: &str) -> io::Result<ExitStatus> {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).stderr(Stdio::null()).status()
}

/// Waits for the child to exit, up to `limit`.
fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaps, so no zombie outlives the test.
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = kill(child.id(), "TERM");
    if let Some(status) = wait_timeout(child, STOP_TIMEOUT) {
        return Some(status);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

// ---------------------------------------------------------------------------------------
// The hlsgate server under test
// ---------------------------------------------------------------------------------------

/// The real `hlsgate` binary, running `serve --config <dir>/hlsgate.toml`, killed on drop.
///
/// Contract with the server: it logs to stderr with tracing's fmt formatter and, once both
/// listeners are bound, logs an INFO line containing `hlsgate ready` with the fields
/// `viewers=IP:PORT admin=IP:PORT`. Configs use `listen = "127.0.0.1:0"` and
/// `admin_listen = "127.0.0.1:0"` so parallel tests never fight over ports.
pub struct Server {
    child: Child,
    viewers: SocketAddr,
    admin: SocketAddr,
    logs: Lines,
    config: PathBuf,
    // Dropped after the process is stopped (field order), so the server never sees its
    // streams vanish while still running.
    dir: TempDir,
}

impl Server {
    /// Starts with this config in a fresh temp dir.
    pub fn start(config: &str) -> Server {
        Self::start_in(TempDir::new("server"), config, &[])
    }

    /// Starts with this config written to `<dir>/hlsgate.toml`; the server owns `dir` from
    /// now on (put copied streams there first with [`copy_demo`]). `env` adds variables,
    /// e.g. `RUST_LOG`.
    pub fn start_in(dir: TempDir, config: &str, env: &[(&str, &str)]) -> Server {
        Self::start_program(Path::new(env!("CARGO_BIN_EXE_hlsgate")), dir, config, env)
    }

    /// As [`Server::start_in`] but runs `program serve --config <path>`: lets the harness
    /// self-test check this guard with a stand-in script.
    pub fn start_program(program: &Path, dir: TempDir, config: &str, env: &[(&str, &str)]) -> Server {
        let config_path = dir.write("hlsgate.toml", config);
        let mut cmd = Command::new(program);
        cmd.args(["serve", "--config"]).arg(&config_path);
        // Plain text logs are easier to match; strip_ansi covers a server that colours anyway.
        cmd.env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stderr: ChildStderr = child.stderr.take().unwrap();

        let (ready_tx, ready_rx) = mpsc::channel();
        let logs = collect_lines(stderr, move |line| {
            if let Some(addrs) = parse_ready_line(line) {
                let _ = ready_tx.send(addrs);
            }
        });

        let (viewers, admin) = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(addrs) => addrs,
            Err(why) => {
                let status = terminate(&mut child);
                let what = match why {
                    mpsc::RecvTimeoutError::Timeout => format!("no ready line within {READY_TIMEOUT:?}"),
                    mpsc::RecvTimeoutError::Disconnected => format!("exited before ready ({status:?})"),
                };
                // Give the reader thread a moment to store the last lines it read.
                std::thread::sleep(Duration::from_millis(50));
                let logs = logs.lock().unwrap().join("\n");
                panic!("hlsgate {what}\nconfig:\n{config}\nstderr:\n{logs}");
            }
        };
        Server { child, viewers, admin, logs, config: config_path, dir }
    }

    pub fn viewer_addr(&self) -> SocketAddr {
        self.viewers
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir the config (and any copied streams) live in.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Every stderr line so far, ANSI stripped.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle` and returns it; panics with all logs after
    /// `limit`. For effects that show in the log asynchronously (reloads, shutdown).
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.logs.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no log line containing {needle:?} within {limit:?}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name ("HUP", "TERM", "INT", …) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = kill(self.pid(), signal).unwrap_or_else(|e| panic!("run kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed: {status}", self.pid());
    }

    /// Asks for a config reload (SIGHUP).
    pub fn reload(&self) {
        self.signal("HUP");
    }

    /// Replaces the config file (e.g. before [`Server::reload`]).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(&self.config, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", self.config.display()));
    }

    /// Sends SIGTERM and returns the exit status; panics if it takes longer than
    /// [`STOP_TIMEOUT`]. For tests of graceful shutdown.
    pub fn stop(mut self) -> ExitStatus {
        let _ = kill(self.pid(), "TERM");
        match wait_timeout(&mut self.child, STOP_TIMEOUT) {
            Some(status) => status,
            None => panic!(
                "hlsgate did not exit within {STOP_TIMEOUT:?} of SIGTERM; logs:\n{}",
                self.logs().join("\n")
            ),
        }
    }

    /// Has the process exited (without waiting)?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Finds `viewers=` and `admin=` in the ready line. Tolerates quoted values and a line that
/// carries other fields too.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("hlsgate ready") {
        return None;
    }
    Some((field_addr(line, "viewers")?, field_addr(line, "admin")?))
}

fn field_addr(line: &str, name: &str) -> Option<SocketAddr> {
    let key = format!("{name}=");
    let at = line.split(' ').find_map(|word| word.strip_prefix(key.as_str()))?;
    at.trim_matches('"').parse().ok()
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_secs()
}

/// `path?md5=TOKEN&expires=EXPIRES` signed with the crate's own signer. Tests about
/// signing itself check against an independent MD5 (openssl) instead.
pub fn signed(path: &str, key: &str, ip: Option<&str>, expires: u64) -> String {
    let token = sign(expires, path, ip, &Key::new(key));
    signed_url(path, &token, expires, &ParamNames::default())
}

// ---------------------------------------------------------------------------------------
// Browser playback (tests/js/play.mjs)
// ---------------------------------------------------------------------------------------

/// The player page on `viewers` for a (signed) master URL. `src` is percent-encoded: its own
/// `?md5=…&expires=…` would otherwise be read as parameters of the page.
pub fn player_url(viewers: SocketAddr, src: &str) -> String {
    let src = percent_encoding::utf8_percent_encode(src, percent_encoding::NON_ALPHANUMERIC);
    format!("http://{viewers}/player.html?src={src}")
}

/// What `tests/js/play.mjs` reported for one page.
#[derive(Debug, Clone)]
pub struct Playback {
    pub current_time: f64,
    /// Seconds of media actually played (the sum of `video.played`); on a live stream
    /// `current_time` starts far from 0, so this is what says playback went on.
    pub played: f64,
    /// `{type, details, status}` from hls.js (or `navigation`/`page` from the script).
    pub fatal: Option<serde_json::Value>,
    pub timed_out: bool,
}

impl Playback {
    /// The HTTP status of the fatal error, if hls.js saw one.
    pub fn fatal_status(&self) -> Option<u64> {
        self.fatal.as_ref()?.get("status")?.as_u64()
    }
}

/// Opens `page_url` in headless Chromium and waits until playback passes `seconds`, a
/// fatal error, or 60 s. Blocking (a few seconds): call it from `spawn_blocking` in async
/// tests, or from a plain `#[test]`. Needs `scripts/test-deps.sh` to have run.
pub fn play(page_url: &str, seconds: f64) -> Playback {
    run_play(page_url, seconds, "currentTime")
}

/// As [`play`], but waits until `seconds` of media have actually played (for live streams).
pub fn play_for(page_url: &str, seconds: f64) -> Playback {
    run_play(page_url, seconds, "played")
}

/// play.mjs's own limit on one page; node is killed a margin after it if it hangs anyway.
/// Generous: on a 2-core machine loaded by other tests (and other work), Chromium has been seen
/// to take over 60 s of wall clock to play 17 s of video.
const PLAY_TIMEOUT_S: u64 = 120;

fn run_play(page_url: &str, seconds: f64, until: &str) -> Playback {
    let script = repo_root().join("tests/js/play.mjs");
    let out = Command::new("timeout")
        .args(["-k", "5", &(PLAY_TIMEOUT_S + 30).to_string(), "node"])
        .arg(&script)
        .arg(page_url)
        .arg(seconds.to_string())
        .arg(PLAY_TIMEOUT_S.to_string())
        .arg(until)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run node {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "play.mjs failed ({}):\n{stderr}", out.status);
    let line = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("play.mjs printed no JSON ({e}): {stdout:?}\nstderr:\n{stderr}"));
    Playback {
        current_time: json["currentTime"].as_f64().unwrap_or(0.0),
        played: json["played"].as_f64().unwrap_or(0.0),
        fatal: Some(json["fatal"].clone()).filter(|f| !f.is_null()),
        timed_out: json["timedOut"].as_bool().unwrap_or(false),
    }
}

// ---------------------------------------------------------------------------------------
// Real clients: ffmpeg, ffprobe and other child processes with a deadline
// ---------------------------------------------------------------------------------------

/// A child process (ffmpeg, a packager, …) whose stdout and stderr are collected line by line
/// while it runs. Dropping it stops it by PID (SIGTERM, then SIGKILL) and reaps it, so a test
/// that panics never leaves one behind.
pub struct Bounded {
    child: Child,
    what: String,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How a [`Bounded`] child ended, with everything it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Bounded {
    /// Spawns `cmd` with stdin closed and both outputs piped.
    pub fn spawn(cmd: &mut Command) -> Bounded {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (stdout, out_reader) = spawn_line_reader(child.stdout.take().unwrap(), |_| {});
        let (stderr, err_reader) = spawn_line_reader(child.stderr.take().unwrap(), |_| {});
        Bounded { child, what, stdout, stderr, readers: vec![out_reader, err_reader] }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits up to `limit` for the child to exit by itself; panics (after killing it, with
    /// its output in the message) if it does not.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let status = wait_timeout(&mut self.child, limit);
        let Some(status) = status else {
            terminate(&mut self.child);
            self.join_readers();
            panic!(
                "{} still running after {limit:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                self.what,
                self.stdout.lock().unwrap().join("\n"),
                self.stderr_text()
            );
        };
        self.join_readers();
        Finished { status, stdout: self.stdout.lock().unwrap().join("\n"), stderr: self.stderr_text() }
    }

    /// Stops the child now (SIGTERM, then SIGKILL) and returns what it wrote.
    pub fn stop(mut self) -> String {
        terminate(&mut self.child);
        self.join_readers();
        self.stderr_text()
    }

    fn join_readers(&mut self) {
        // The pipes close when the child is gone, so the readers end.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Runs `cmd` to completion within `limit` (killed by PID and the test failed otherwise).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Finished {
    Bounded::spawn(cmd).finish(limit)
}

/// The URL of the signed link `hlsgate serve` logged for `stream` at start
/// (`signed link for this machine … stream=NAME url=http://…`).
pub fn logged_link(server: &Server, stream: &str) -> String {
    let line = server.wait_for_log(&format!("stream={stream} url="), Duration::from_secs(5));
    assert!(line.contains("signed link for this machine"), "unexpected announcement: {line}");
    log_field(&line, "url").unwrap_or_else(|| panic!("no url= in {line:?}"))
}

/// A `name=value` field of a tracing text line (values never contain spaces here).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    line.split(' ').find_map(|word| word.strip_prefix(key.as_str())).map(|v| v.trim_matches('"').to_string())
}

/// Seconds of media ffmpeg wrote, from the last `out_time_us=` of `-progress pipe:1`.
pub fn ffmpeg_out_seconds(progress: &str) -> f64 {
    progress
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .find_map(|v| v.trim().parse::<i64>().ok())
        .map_or(0.0, |us| us as f64 / 1e6)
}

/// The URLs ffmpeg opened, in order, from its `Opening '…' for reading` lines (log level info).
pub fn ffmpeg_opened(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            l.split_once("Opening '")?.1.split_once("' for reading").map(|(url, _)| url.to_string())
        })
        .collect()
}

/// A token computed with no code of ours in it: `openssl dgst -md5`, then base64url written out
/// here rather than the crate's. `ip` is the binding text ("" for an IP-less token).
pub fn openssl_token(expires: u64, path: &str, ip: &str, key: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-md5", "-binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl must be installed (scripts/test-deps.sh)");
    child.stdin.take().unwrap().write_all(format!("{expires}{path}{ip} {key}").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    b64url(&out.stdout)
}

/// Base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// A server on a temp dir of streams, and the requests most tests send it
// ---------------------------------------------------------------------------------------

/// A temp dir with `streams/` in it, to be filled before the server starts.
pub struct Setup {
    pub dir: TempDir,
}

impl Setup {
    pub fn new(label: &str) -> Setup {
        let dir = TempDir::new(label);
        std::fs::create_dir_all(dir.join("streams")).unwrap();
        Setup { dir }
    }

    pub fn streams(&self) -> PathBuf {
        self.dir.join("streams")
    }

    /// Writes `streams/<rel>`.
    pub fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Self {
        self.dir.write(Path::new("streams").join(rel), contents);
        self
    }

    /// Starts the server with `top` (top-level fields) and `streams` (`[streams.*]` tables).
    pub fn start(self, top: &str, streams: &str) -> Server {
        self.start_env(top, streams, &[])
    }

    pub fn start_env(self, top: &str, streams: &str, env: &[(&str, &str)]) -> Server {
        let config = config_text(&self.streams(), top, streams);
        Server::start_in(self.dir, &config, env)
    }
}

pub fn config_text(streams_dir: &Path, top: &str, streams: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{top}\n{streams}\n",
        toml_path(streams_dir)
    )
}

pub async fn get(server: &(impl Serving + ?Sized), target: &str, from: &str) -> Response {
    Request::get(server.viewer_addr(), target).from(from).send().await
}

pub async fn admin(server: &Server, target: &str) -> Response {
    Request::get(server.admin_addr(), target).send().await
}

/// A short refusal body: one line, no key, no token.
pub fn assert_short_reason(resp: &Response, secrets: &[&str]) {
    let text = resp.text();
    assert!(text.len() < 80, "reason too long: {text:?}");
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
    assert!(text.ends_with('\n'), "{text:?}");
    for secret in secrets {
        assert!(!text.contains(secret), "body {text:?} names a secret");
    }
}

pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs `hlsgate serve` directly on a config and returns (exit code, stderr).
pub fn serve_once(config: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("badconfig");
    let path = dir.write("hlsgate.toml", config);
    let out = Command::new(env!("CARGO_BIN_EXE_hlsgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), strip_ansi(&String::from_utf8_lossy(&out.stderr)))
}
