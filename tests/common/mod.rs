//! Shared harness for the integration tests: a raw HTTP/1.1 client that can pose as many
//! viewers, a guard around the real `hlsgate` binary, temp dirs, and token helpers.
//!
//! Every test binary includes this with `mod common;` and uses only part of it.
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

pub async fn get(server: &Server, target: &str, from: &str) -> Response {
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

// ---------------------------------------------------------------------------------------
// Hostile and many clients (tests/hostile.rs, tests/clients.rs)
// ---------------------------------------------------------------------------------------

/// Sends `bytes` while reading, and returns everything the server wrote before it closed the
/// connection, by FIN or by reset. For requests the server refuses before reading them whole
/// (a 1 MiB query, a header flood): it answers, then closes with our bytes still unread, so
/// our write fails and the close may come as a reset after the answer. Errs on a failed
/// connect, or when the server neither answers nor closes within `limit`.
pub async fn raw_until_closed(
    to: SocketAddr,
    from: &str,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<Vec<u8>> {
    let from: IpAddr = from.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = within(limit, socket.connect(to)).await??;
    let (mut reader, mut writer) = stream.into_split();
    let bytes = bytes.to_vec();
    // The write may never finish (the server stops reading): it is dropped with the task.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        // Keep our half open: a FIN could make the server stop before it answers.
        std::future::pending::<()>().await;
    });
    let mut out = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let finished = tokio::time::timeout(limit, read).await;
    write.abort();
    match finished {
        Ok(()) => Ok(out),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{to} neither closed nor finished within {limit:?}; got {} bytes", out.len()),
        )),
    }
}

/// Parses every response in `bytes`, in order (pipelining): each body is delimited by its
/// Content-Length or chunked framing. Responses to HEAD requests are not supported. Errs on
/// trailing bytes that are not a whole response.
pub fn parse_responses(mut bytes: &[u8]) -> io::Result<Vec<Response>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = find(bytes, b"\r\n\r\n")
            .ok_or_else(|| bad(format!("trailing bytes: {:?}", String::from_utf8_lossy(bytes))))?;
        let head = std::str::from_utf8(&bytes[..end]).map_err(|e| bad(format!("non-UTF-8 head: {e}")))?;
        let mut lines = head.split("\r\n");
        let (status, reason) = parse_status_line(lines.next().unwrap_or(""))?;
        let headers = lines.map(parse_header_line).collect::<io::Result<Vec<_>>>()?;
        let mut resp = Response { status, reason, headers, body: Vec::new() };
        let rest = &bytes[end + 4..];
        let chunked =
            resp.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let used = if (100..200).contains(&status) || status == 204 || status == 304 {
            0
        } else if chunked {
            let used = chunked_len(rest)?;
            resp.body = decode_chunked(&rest[..used])?;
            used
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
            if rest.len() < len {
                return Err(bad(format!("body truncated: Content-Length {len}, got {}", rest.len())));
            }
            resp.body = rest[..len].to_vec();
            len
        } else {
            // Runs to EOF: nothing can follow it.
            resp.body = rest.to_vec();
            rest.len()
        };
        bytes = &rest[used..];
        if !(100..200).contains(&status) {
            out.push(resp);
        }
    }
    Ok(out)
}

/// How many bytes a chunked body (with its last chunk and trailers) takes at the start of `data`.
fn chunked_len(data: &[u8]) -> io::Result<usize> {
    let mut at = 0;
    loop {
        let line_end = find(&data[at..], b"\r\n").ok_or_else(|| bad("chunk size line not terminated"))?;
        let line = std::str::from_utf8(&data[at..at + line_end]).map_err(|_| bad("non-UTF-8 chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let end = find(&data[at..], b"\r\n").ok_or_else(|| bad("chunked body not terminated"))?;
            if end == 0 {
                return Ok(at + 2);
            }
            let end = find(&data[at..], b"\r\n\r\n").ok_or_else(|| bad("trailers not terminated"))?;
            return Ok(at + end + 4);
        }
        at += size + 2;
        if at > data.len() {
            return Err(bad("chunk truncated"));
        }
    }
}

/// Opens a TCP connection from `from` (port 0) to `to` and returns it unused: an idle client.
pub async fn connect_from(to: SocketAddr, from: IpAddr) -> io::Result<tokio::net::TcpStream> {
    let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(from, 0))?;
    within(HTTP_TIMEOUT, socket.connect(to)).await?
}

/// One `Name: value` field of `/proc/<pid>/status`, in kB (VmRSS, VmHWM, …).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.split_whitespace().next()?.parse().ok()
}

/// User plus system CPU time of a process so far, in clock ticks (`utime` + `stime` of
/// `/proc/<pid>/stat`; 100 a second on Linux).
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after its last `)`.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After `)`: state is field 3 of the line, so utime (14) and stime (15) are 11 and 12 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// How many file descriptors a process has open (`/proc/<pid>/fd`).
pub fn proc_open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit, and returns the limit
/// now in force. A server started afterwards inherits it.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0, "getrlimit");
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0, "setrlimit {}", limit.rlim_max);
        }
    }
    limit.rlim_cur
}

/// Reads one response from a kept-alive connection: up to the end of its body, which must be
/// framed by Content-Length or chunked (hlsgate's always are). Errs on EOF before that, or
/// when it has not all arrived within `limit`.
pub async fn read_response(stream: &mut tokio::net::TcpStream, limit: Duration) -> io::Result<Response> {
    let work = async {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if find(&got, b"\r\n\r\n").is_some() {
                if let Ok(mut responses) = parse_responses(&got) {
                    if !responses.is_empty() {
                        return Ok(responses.remove(0));
                    }
                }
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(bad(format!("EOF after {} bytes of a response", got.len())));
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    within(limit, work).await?
}

// ---------------------------------------------------------------------------------------
// Upstream origins (tests/origin.rs, tests/origin_faults.rs): a real nginx, scripted Python
// origins, live packagers
// ---------------------------------------------------------------------------------------

/// A loopback port that was free a moment ago: bound to port 0, then released. For servers
/// that must be told their port up front (nginx) or restarted on the same one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`, or `limit` passes.
pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// One line of [`Nginx`]'s access log (`log_format origin` below).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLine {
    /// Unix time in seconds (with ms) when the request was logged.
    pub msec: f64,
    pub method: String,
    /// The path, decoded.
    pub uri: String,
    /// The query exactly as it arrived (`-` for none, as nginx writes it).
    pub args: String,
    pub status: u16,
    pub bytes: u64,
    /// The `X-Origin-Auth` header as it arrived (`-` for none).
    pub auth: String,
    /// The `Range` header (`-` for none).
    pub range: String,
}

impl AccessLine {
    fn parse(line: &str) -> Option<AccessLine> {
        let f: Vec<&str> = line.split('|').collect();
        let [msec, method, uri, args, status, bytes, auth, range] = f.as_slice() else { return None };
        Some(AccessLine {
            msec: msec.parse().ok()?,
            method: method.to_string(),
            uri: uri.to_string(),
            args: args.to_string(),
            status: status.parse().ok()?,
            bytes: bytes.parse().ok()?,
            auth: auth.to_string(),
            range: range.to_string(),
        })
    }
}

/// Debian's nginx, run by the test in the foreground as one process (`master_process off`:
/// one PID to kill, no orphaned worker), with its own config, prefix and logs in a temp dir,
/// on a fixed loopback port so it can be killed and started again on the same one. Killed
/// (SIGKILL) and reaped on drop.
pub struct Nginx {
    child: Option<Child>,
    port: u16,
    prefix: TempDir,
    conf: PathBuf,
}

impl Nginx {
    /// Serves `locations` (the body of a `server {}` block: `location` blocks) on a free port.
    /// `$port` in `locations` is replaced by the port.
    pub fn start(locations: &str) -> Nginx {
        Self::start_on(free_port(), locations)
    }

    pub fn start_on(port: u16, locations: &str) -> Nginx {
        Self::start_with(port, "", locations)
    }

    /// As [`Nginx::start_on`], with options for the `listen` directive (`sndbuf=64k`, …).
    pub fn start_with(port: u16, listen_options: &str, locations: &str) -> Nginx {
        let prefix = TempDir::new("nginx");
        let p = prefix.path().display().to_string();
        let locations = locations.replace("$port", &port.to_string());
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_rlimit_nofile 8192;\npid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/iso.segment m4s; video/mp4 mp4; }}\n\
               default_type application/octet-stream;\n\
               log_format origin '$msec|$request_method|$uri|$args|$status|$body_bytes_sent|$http_x_origin_auth|$http_range';\n\
               access_log {p}/access.log origin;\n\
               client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n\
               uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
               keepalive_timeout 75s;\n\
               server {{\n  listen 127.0.0.1:{port} {listen_options};\n{locations}\n}}\n\
             }}\n"
        );
        let conf_path = prefix.write("nginx.conf", conf);
        let mut nginx = Nginx { child: None, port, prefix, conf: conf_path };
        nginx.restart();
        nginx
    }

    /// (Re)starts the process on the same port and config; the access log goes on.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "nginx on {} is already running", self.port);
        let p = self.prefix.path();
        let mut cmd = Command::new("nginx");
        cmd.arg("-p").arg(p).arg("-c").arg(&self.conf).arg("-e").arg(p.join("error.log"));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = cmd.spawn().expect("nginx must be installed (scripts/test-deps.sh)");
            if wait_for_port(self.port, Duration::from_secs(5)) {
                self.child = Some(child);
                return;
            }
            // It exited (the port was taken a moment ago, say) or never listened: again.
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {} within 20 s; error.log:\n{}",
                self.port,
                std::fs::read_to_string(p.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the process (SIGKILL: a crash, no goodbye to open connections) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request nginx has logged so far.
    pub fn access(&self) -> Vec<AccessLine> {
        let text = std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default();
        text.lines()
            .map(|l| AccessLine::parse(l).unwrap_or_else(|| panic!("access log line {l:?}")))
            .collect()
    }

    /// The raw access log, for failure messages and secret checks.
    pub fn access_text(&self) -> String {
        std::fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An origin written in Python for faults nginx will not commit: it answers by the first
/// path segment, logs `REQ <target> auth=<X-Origin-Auth>` per request on stdout, one
/// connection per request (`Connection: close`). See [`SCRIPTED_ORIGIN`].
pub struct Scripted {
    child: Bounded,
    port: u16,
    _dir: TempDir,
}

/// The modes, by first path segment (the rest of the path picks the body: `.m3u8` a live
/// playlist with TARGETDURATION 2, anything else bytes of `b"s"`):
/// - `/ok/…`: 200 at once, 1000 bytes for a segment;
/// - `/sleep/<seconds>/…`: 200 after sleeping;
/// - `/hold/…`: reads the request and never answers (the connection stays open);
/// - `/trunc/…`: `Content-Length: 1000`, 500 bytes, close;
/// - `/stall/…`: `Content-Length: 100000`, 1000 bytes, then silence with the connection open;
/// - `/ll/…`: a playlist; with `_HLS_msn` in the query held 0.5 s first (a blocking reload);
/// - `/count/…`: playlist whose MEDIA-SEQUENCE is the number of requests so far.
pub const SCRIPTED_ORIGIN: &str = r##"
import socket, sys, threading, time

count = 0
lock = threading.Lock()

def playlist(seq):
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:%d\n"
            "#EXTINF:2.0,\nseg%d.ts\n#EXTINF:2.0,\nseg%d.ts\n" % (seq, seq, seq + 1)).encode()

def answer(conn, body, length=None):
    length = len(body) if length is None else length
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length + body)

def serve(conn):
    global count
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            got = conn.recv(65536)
            if not got:
                return
            data += got
        head = data.split(b"\r\n\r\n")[0].decode("latin-1")
        lines = head.split("\r\n")
        target = lines[0].split(" ")[1]
        auth = "-"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "x-origin-auth":
                auth = value.strip()
        # One write per line, under the lock: print() from threads can interleave two lines.
        with lock:
            count += 1
            n = count
            sys.stdout.write("REQ %s auth=%s\n" % (target, auth))
            sys.stdout.flush()
        path, _, query = target.partition("?")
        parts = path.split("/")
        mode = parts[1] if len(parts) > 1 else ""
        is_playlist = path.endswith(".m3u8")
        body = playlist(0) if is_playlist else b"s" * 1000
        if mode == "ok":
            answer(conn, body)
        elif mode == "sleep":
            time.sleep(float(parts[2]))
            answer(conn, body)
        elif mode == "hold":
            time.sleep(120)
        elif mode == "trunc":
            answer(conn, body[:500] if not is_playlist else body[: len(body) // 2], length=1000)
        elif mode == "stall":
            answer(conn, b"s" * 1000, length=100000)
            time.sleep(120)
        elif mode == "ll":
            if "_HLS_msn=" in query:
                time.sleep(0.5)
            answer(conn, body)
        elif mode == "count":
            answer(conn, playlist(n))
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    finally:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.close()

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(512)
print("PORT %d" % server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"##;

impl Scripted {
    pub fn start() -> Scripted {
        let dir = TempDir::new("scripted");
        let script = dir.write("origin.py", SCRIPTED_ORIGIN);
        let child = Bounded::spawn(Command::new("python3").arg("-u").arg(&script));
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Some(port) =
                child.stdout_lines().iter().find_map(|l| l.strip_prefix("PORT ")?.trim().parse().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "the scripted origin did not start:\n{}", child.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        };
        Scripted { child, port, _dir: dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The request targets (path and query) it has received so far, in order. Waits until
    /// its output has been quiet for 100 ms: the script logs a request before answering it, but
    /// the line may still be in the pipe when the answer has already arrived.
    pub fn requests(&self) -> Vec<String> {
        let mut seen = self.child.stdout_lines().len();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.child.stdout_lines().len();
            if now == seen {
                break;
            }
            seen = now;
        }
        self.child
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("REQ ")?.rsplit_once(" auth=").map(|(t, _)| t.to_string()))
            .collect()
    }

    /// How many requests for targets starting with `prefix` it has received.
    pub fn count(&self, prefix: &str) -> usize {
        self.requests().iter().filter(|t| t.starts_with(prefix)).count()
    }
}

impl Bounded {
    /// Stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }
}

/// A live packager of our own: every `segment_s` seconds it writes `seg_N.ts` (`size` bytes
/// that begin with `seg N|`) and renames a new `index.m3u8` listing the last `window` segments
/// into place, as ffmpeg's `temp_file` does. Cheap (no encoding), and its segment names are
/// predictable. Stops (and joins its thread) on drop.
pub struct FakePackager {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The bytes of the fake packager's segment `n`.
pub fn fake_segment(n: u64, size: usize) -> Vec<u8> {
    let mut bytes = format!("seg {n}|").into_bytes();
    bytes.resize(size.max(bytes.len()), b'.');
    bytes
}

impl FakePackager {
    /// Writes the first `window` segments at once, then one more every `segment_s` seconds.
    pub fn start(folder: &Path, segment_s: u64, window: u64, size: usize) -> FakePackager {
        std::fs::create_dir_all(folder).unwrap();
        let folder = folder.to_path_buf();
        let write = move |newest: u64| {
            std::fs::write(folder.join(format!("seg_{newest}.ts")), fake_segment(newest, size)).unwrap();
            let first = newest.saturating_sub(window - 1);
            let mut text = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{segment_s}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
            );
            for n in first..=newest {
                let _ = write!(text, "#EXTINF:{segment_s}.0,\nseg_{n}.ts\n");
            }
            let tmp = folder.join("index.m3u8.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, folder.join("index.m3u8")).unwrap();
        };
        for n in 0..window {
            write(n);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut newest = window - 1;
            let mut next = Instant::now() + Duration::from_secs(segment_s);
            while !stopped.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    newest += 1;
                    write(newest);
                    next += Duration::from_secs(segment_s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        FakePackager { stop, thread: Some(thread) }
    }
}

impl Drop for FakePackager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A real live packager: ffmpeg encoding a test pattern into `folder/index.m3u8` with
/// 1-second segments (`seg_%05d.ts`), 6 listed, old ones deleted, `temp_file` renames. Small
/// and fast (160x90, ultrafast) to spare a shared CI box; `-t 120` caps it even if the guard
/// were never dropped. Returns once the playlist lists `ready_segments` segments.
pub fn live_packager(folder: &Path, ready_segments: usize) -> Bounded {
    std::fs::create_dir_all(folder).unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "100k"])
        .args(["-c:a", "aac", "-b:a", "32k", "-ac", "1", "-t", "120"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "6"])
        .args(["-hls_flags", "delete_segments+temp_file", "-hls_segment_filename"])
        .arg(folder.join("seg_%05d.ts"))
        .arg(folder.join("index.m3u8"));
    let packager = Bounded::spawn(&mut cmd);
    let playlist = folder.join("index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&playlist).unwrap_or_default();
        if text.matches("#EXTINF").count() >= ready_segments {
            return packager;
        }
        assert!(
            Instant::now() < deadline,
            "the packager wrote no {ready_segments}-segment playlist within 30 s; its stderr:\n{}",
            packager.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// ffmpeg as a strict player of `url`: decodes everything (a broken segment is an error too),
/// `-xerror` (without it ffmpeg skips a refused segment and exits 0), stops after `seconds` of
/// media; `-progress pipe:1` reports the media time read, `-v info` keeps `Opening '…'` lines.
pub fn ffmpeg_player(url: &str, seconds: u32) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "info", "-nostats", "-xerror"])
        .args(["-rw_timeout", "10000000"])
        .args(["-i", url, "-map", "0:p:0?", "-t", &seconds.to_string()])
        .args(["-progress", "pipe:1", "-f", "null", "-"]);
    cmd
}

/// The URI lines of a playlist (tags and blank lines skipped), as written.
pub fn uri_lines(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A URI of a playlist served at `playlist_path` as a request target for the same server:
/// absolute URLs lose their scheme and host, relative ones are put beside the playlist.
pub fn target_beside(playlist_path: &str, uri: &str) -> String {
    if let Some((_, rest)) = uri.split_once("://") {
        return rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string());
    }
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let dir = &playlist_path[..playlist_path.rfind('/').map_or(0, |i| i + 1)];
    format!("{dir}{uri}")
}

/// Held by the tests that load the whole machine (hundreds of slow readers filling socket
/// buffers, gigabytes of RSS): nextest runs tests in parallel, and two of these at once would
/// fail each other (the kernel's TCP memory is one pool). An exclusive `flock` on a file in the
/// temp dir, across test processes; released when dropped (the process exiting releases it too).
pub struct HeavyTestLock(std::fs::File);

pub fn heavy_test_lock() -> HeavyTestLock {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("hlsgate-heavy-tests.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {}: {}", path.display(), io::Error::last_os_error());
    HeavyTestLock(file)
}

// ---------------------------------------------------------------------------------------
// TLS, HTTP/2 and LL-HLS (issue 11: tests/edge.rs, tests/llhls.rs)
// ---------------------------------------------------------------------------------------

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
