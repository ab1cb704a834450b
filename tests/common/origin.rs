//! Upstream origins for tests/origin.rs and tests/origin_faults.rs: a real nginx, scripted Python origins, a cheap packager, ffmpeg as packager and player.

use super::*;

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
