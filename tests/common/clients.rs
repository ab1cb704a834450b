//! Helpers for the hostile-request and many-clients suites (tests/hostile.rs, tests/clients.rs).

use super::*;

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
