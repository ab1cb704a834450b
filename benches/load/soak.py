#!/usr/bin/env python3
"""Soak (issue 8): many viewers watch the demo live stream for a while, a restreamer replays
what they were given, and the server's memory and file descriptors must not creep.

Starts hlsgate on the committed demo (simulate_live, so the 8-segment VOD loops as live) and
runs, for --seconds:

- --viewers simulated players, each connecting from its own loopback address (127.0.0.2, .3,
  ...): an entry link to the master signed for that address, then the media playlist of one
  variant every target duration, fetching each segment that is new since the last reload (the
  first time, the last three, as hls.js starts), with a keep-alive connection, switching variant
  every 20-40 s as an ABR player would. Every fetch must be 200 with a real body (a playlist that
  starts #EXTM3U, a segment as long as the file on disk and starting with the TS sync byte), and
  the live window must keep moving.
- one restreamer at 127.0.1.1 that replays, --restream-rate times a second, URLs the viewers were
  just issued (entry links, variant playlists, segments), each on a new connection. Every one
  must be refused: 403 or 410.

Asserted: zero 5xx anywhere, zero restreamer successes, zero failed viewer fetches, the
server's own counters (/metrics on the admin port) equal to what the clients saw, and the
server's VmRSS and open fds (sampled after --warmup seconds, then every 5 s, and at the end)
within the tolerances below. Prints a summary table. Exit status 1 on any failure, 2 on bad
arguments or a server that does not start.

Tolerances, and why:
- RSS: end <= start + max(--rss-mib MiB [10], --rss-pct % [50] of start). Start is taken after
  warm-up, when the file cache holds all 16 demo segments (1.3 MiB) and every viewer's
  connection and buffers exist; from there the working set is fixed and a server without a
  leak stays flat: the debug build measured 13.3 MiB at start and moved by under 0.3 MiB over
  300 s (benches/load/README.md), so 10 MiB is 30x the noise while still catching a leak of
  ~0.6 KiB per request over a 300 s run (~17 000 requests), ~3 KiB per request over 60 s.
  The percentage only matters for a much larger baseline (many more viewers).
- fds: end <= start + --fd-slack [20] while loaded (each viewer holds one connection, the
  restreamer opens a new one per replay, so a few may be in flight; 20 leaves room for that and
  a leak of one fd per request or per restreamer connection passes it within seconds), and once
  every client has gone the count must fall back to within 2 of what it was before any client
  came (a leaked socket or file stays open forever).

Usage: benches/load/soak.py [--seconds 300] [--viewers 40] [--bin PATH]   (see --help)
The binary is --bin, else $HLSGATE_BIN, else target/debug/hlsgate after `cargo build --bins`.
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STREAM_DIR = REPO / "streams" / "demo"
RESTREAMER_IP = "127.0.1.1"
TS_SYNC = 0x47


def signed_url(path, secret, expires, ip=""):
    """The README's own Python signer (Gcore / nginx secure_link)."""
    digest = hashlib.md5(f"{expires}{path}{ip} {secret}".encode()).digest()
    token = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return f"{path}?md5={token}&expires={expires}"


def viewer_ip(index):
    # 127.0.0.2 .. 127.0.0.251; 127.0.1.x is the restreamer's.
    return f"127.0.0.{index + 2}"


# ---------------------------------------------------------------------------------------------
# A tiny HTTP/1.1 client: keep-alive, bound to a source address, Content-Length or chunked.
# ---------------------------------------------------------------------------------------------


class HttpError(Exception):
    pass


class Client:
    def __init__(self, host, port, source, keep_alive=True):
        self.host, self.port, self.source, self.keep_alive = host, port, source, keep_alive
        self.reader = self.writer = None
        self.connects = 0
        self.stale_retries = 0  # a kept-alive connection the server had closed: reconnect once

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=(self.source, 0)
        )
        self.connects += 1

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, target, timeout):
        """Returns (status, headers, body). Raises HttpError on anything but a whole response."""
        for _ in range(2):
            fresh = self.writer is None
            try:
                async with asyncio.timeout(timeout):
                    if fresh:
                        await self._connect()
                    connection = "" if self.keep_alive else "Connection: close\r\n"
                    head = f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    self.writer.write(f"{head}User-Agent: hlsgate-soak\r\n{connection}\r\n".encode())
                    await self.writer.drain()
                    line = await self.reader.readline()
                    if not line:
                        raise EOFError
                    status, headers, body = await self._read_rest(line)
            except EOFError:
                # Closed before a single byte of the response: a stale keep-alive connection.
                self.close()
                if fresh:
                    raise HttpError("connection closed before any response")
                self.stale_retries += 1
                continue
            except TimeoutError:
                self.close()
                raise HttpError(f"no complete response within {timeout} s")
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                self.close()
                raise HttpError(f"{type(e).__name__}: {e}")
            if not self.keep_alive or headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, body
        raise HttpError("connection closed before any response, twice")

    async def _read_rest(self, status_line):
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"bad status line {status_line!r}")
        status = int(parts[1])
        headers = {}
        while True:
            line = await self.reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            return status, headers, bytes(body)
        if "content-length" in headers:
            return status, headers, await self.reader.readexactly(int(headers["content-length"]))
        if status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        body = await self.reader.read()  # delimited by close
        self.close()
        return status, headers, body


# ---------------------------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------------------------


class Tally:
    """Requests by (role, kind): statuses, transport errors, latencies."""

    def __init__(self):
        self.status = collections.defaultdict(collections.Counter)
        self.errors = collections.Counter()
        self.latency = collections.defaultdict(list)
        self.failures = []  # (role, message), the first few of each kind are printed

    def record(self, role, kind, status, seconds):
        self.status[(role, kind)][status] += 1
        self.latency[(role, kind)].append(seconds)

    def error(self, role, kind, seconds):
        self.errors[(role, kind)] += 1
        self.latency[(role, kind)].append(seconds)

    def fail(self, role, message):
        self.failures.append((role, message))


def pctl(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---------------------------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args, port, key):
        self.args, self.port, self.key = args, port, key
        self.tally = Tally()
        self.stop = asyncio.Event()
        self.issued = collections.deque(maxlen=500)  # (kind, target) recently given to viewers
        self.seg_size = {p.relative_to(STREAM_DIR).as_posix(): p.stat().st_size for p in STREAM_DIR.glob("*/*.ts")}
        self.segments_played = 0
        self.max_lag = 0.0  # longest this process's own event loop was late (host stalls)
        self.connects = 0  # viewer connections opened
        self.stale = 0  # viewer requests retried on a kept-alive connection the server had closed

    async def fetch(self, client, role, kind, target):
        t0 = time.monotonic()
        try:
            status, headers, body = await client.get(target, self.args.timeout)
        except HttpError as e:
            self.tally.error(role, kind, time.monotonic() - t0)
            if role == "viewer":
                self.tally.fail(role, f"{kind} {target.split('?')[0]} from {client.source}: {e}")
            return None, None
        self.tally.record(role, kind, status, time.monotonic() - t0)
        if status >= 500:
            self.tally.fail(role, f"{status} on {kind} {target.split('?')[0]} from {client.source}")
        return status, body

    async def sleep(self, seconds):
        try:
            await asyncio.wait_for(self.stop.wait(), max(0.0, seconds))
        except TimeoutError:
            pass

    async def viewer(self, index):
        ip = viewer_ip(index)
        client = Client("127.0.0.1", self.port, ip)
        rnd = random.Random(index)
        try:
            await self.sleep(rnd.uniform(0, 2))  # players do not all press play at once
            entry = signed_url("/demo/master.m3u8", self.key, int(time.time()) + 120, ip)
            status, body = await self.fetch(client, "viewer", "master", entry)
            if status is None:
                return
            if status != 200 or not body.startswith(b"#EXTM3U"):
                self.tally.fail("viewer", f"master from {ip}: {status} {body[:80]!r}")
                return
            self.issued.append(("master", entry))
            variants = [
                "/demo/" + line
                for line in body.decode().splitlines()
                if line and not line.startswith("#")
            ]
            if not variants:
                self.tally.fail("viewer", f"master from {ip} lists no variants")
                return
            choice = index % len(variants)
            next_switch = time.monotonic() + rnd.uniform(20, 40)
            last_seq = None
            last_seq0 = 0
            last_progress = time.monotonic()
            while not self.stop.is_set():
                started = time.monotonic()
                if started >= next_switch:
                    choice = (choice + 1) % len(variants)
                    next_switch = started + rnd.uniform(20, 40)
                playlist = variants[choice]
                self.issued.append(("playlist", playlist))
                status, body = await self.fetch(client, "viewer", "playlist", playlist)
                if status is None:
                    await self.sleep(1)
                    continue
                text = body.decode("utf-8", "replace")
                if status != 200 or not text.startswith("#EXTM3U"):
                    self.tally.fail("viewer", f"playlist {playlist.split('?')[0]} from {ip}: {status} {text[:80]!r}")
                    await self.sleep(1)
                    continue
                if "#EXT-X-ENDLIST" in text:
                    self.tally.fail("viewer", "the live playlist ended (EXT-X-ENDLIST)")
                m = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
                t = re.search(r"#EXT-X-TARGETDURATION:(\d+)", text)
                target = int(t.group(1)) if t else 2
                seq0 = int(m.group(1)) if m else 0
                uris = [line for line in text.splitlines() if line and not line.startswith("#")]
                base = playlist.split("?")[0].rsplit("/", 1)[0]
                window = list(enumerate(uris, start=seq0))
                new = window[-3:] if last_seq is None else [(s, u) for s, u in window if s > last_seq]
                for seq, uri in new:
                    if self.stop.is_set():
                        break
                    segment = f"{base}/{uri}"
                    self.issued.append(("segment", segment))
                    status, body = await self.fetch(client, "viewer", "segment", segment)
                    if status is None:
                        continue
                    name = segment.split("?")[0][len("/demo/"):]
                    want = self.seg_size.get(name)
                    if status != 200 or len(body) != want or body[:1] != bytes([TS_SYNC]):
                        self.tally.fail(
                            "viewer", f"segment {name} from {ip}: {status}, {len(body)} bytes (file: {want})"
                        )
                    else:
                        self.segments_played += 1
                    last_seq = seq
                    last_progress = time.monotonic()
                if seq0 < last_seq0:
                    self.tally.fail("viewer", f"media sequence went backwards for {ip}: {last_seq0} -> {seq0}")
                last_seq0 = seq0
                if time.monotonic() - last_progress > 4 * target + 2:
                    self.tally.fail("viewer", f"no new segment for {ip} in {4 * target + 2} s: the live window stopped")
                    last_progress = time.monotonic()
                await self.sleep(target - (time.monotonic() - started))
        finally:
            client.close()
            self.connects += client.connects
            self.stale += client.stale_retries

    async def lag_monitor(self):
        """How late a 0.2 s sleep wakes up: when the host itself stalls (CPU starvation, memory
        pressure), the clients stall too, and failures then say more about the host."""
        while not self.stop.is_set():
            t = time.monotonic()
            await asyncio.sleep(0.2)
            self.max_lag = max(self.max_lag, time.monotonic() - t - 0.2)

    async def restreamer(self):
        # A new connection for every replay: connection churn next to the viewers' kept-alive
        # ones, so a socket leaked per connection shows under load, not only once idle.
        client = Client("127.0.0.1", self.port, RESTREAMER_IP, keep_alive=False)
        rnd = random.Random(0)
        try:
            while not self.stop.is_set():
                if self.issued:
                    # Mostly what was handed out in the last second or two, sometimes older.
                    recent = list(self.issued)[-60:] if rnd.random() < 0.8 else list(self.issued)
                    kind, target = rnd.choice(recent)
                    status, _ = await self.fetch(client, "restreamer", kind, target)
                    if status is not None and status not in (403, 410):
                        self.tally.fail("restreamer", f"{kind} {target.split('?')[0]} answered {status}, not 403/410")
                await self.sleep(1 / self.args.restream_rate)
        finally:
            client.close()


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def find_binary(args):
    if args.bin:
        return Path(args.bin)
    if os.environ.get("HLSGATE_BIN"):
        return Path(os.environ["HLSGATE_BIN"])
    subprocess.run(["cargo", "build", "--locked", "--bins"], cwd=REPO, check=True, stdout=sys.stderr)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO, check=True, capture_output=True
    )
    return Path(json.loads(meta.stdout)["target_directory"]) / "debug" / "hlsgate"


def wait_ready(server, log_path, limit=20.0):
    """(viewer port, admin port) from the ready line."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        m = re.search(r"hlsgate ready viewers=\"?([\d.]+):(\d+)\"? admin=\"?([\d.]+):(\d+)", text)
        if m:
            return int(m.group(2)), int(m.group(4))
        if server.poll() is not None:
            raise RuntimeError(f"hlsgate exited ({server.returncode}) before ready:\n{text}")
        time.sleep(0.05)
    raise RuntimeError(f"no ready line within {limit} s:\n{log_path.read_text(errors='replace')}")


async def server_outcomes(admin_port, timeout):
    """hlsgate_requests_total summed by outcome, from the admin port."""
    client = Client("127.0.0.1", admin_port, "127.0.0.1", keep_alive=False)
    status, _, body = await client.get("/metrics", timeout)
    if status != 200:
        raise HttpError(f"/metrics answered {status}")
    outcomes = collections.Counter()
    for line in body.decode().splitlines():
        m = re.match(r'hlsgate_requests_total\{.*outcome="(\w+)".*\}\s+(\d+)', line)
        if m:
            outcomes[m.group(1)] += int(m.group(2))
    return outcomes


class ServerGone(Exception):
    pass


async def soak(args, server, port, admin_port, key):
    run = Run(args, port, key)
    samples = []  # (t, rss KiB, fds)
    t0 = time.monotonic()

    def sample():
        try:
            samples.append((time.monotonic() - t0, proc_rss_kib(server.pid), proc_fds(server.pid)))
        except (OSError, RuntimeError):
            pass  # gone, or a zombie (no VmRSS)
        if server.poll() is not None:
            raise ServerGone
        return samples[-1]

    idle_before = sample()
    tasks = [asyncio.create_task(run.viewer(i)) for i in range(args.viewers)]
    tasks.append(asyncio.create_task(run.restreamer()))
    tasks.append(asyncio.create_task(run.lag_monitor()))
    end = t0 + args.seconds
    try:
        await asyncio.sleep(min(args.warmup, args.seconds))
        start = sample()
        while time.monotonic() < end - 0.5:
            await asyncio.sleep(min(5.0, max(0.0, end - 0.5 - time.monotonic())))
            sample()
            if all(t.done() for t in tasks):
                break
    finally:
        run.stop.set()
        await asyncio.gather(*tasks, return_exceptions=False)
    finish = samples[-1]
    run.server_outcomes = await server_outcomes(admin_port, args.timeout)
    # Every client has closed its connection: the server must let go of all of them.
    deadline = time.monotonic() + 5
    idle_after = sample()
    while idle_after[2] > idle_before[2] + 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        idle_after = sample()
    return run, samples, idle_before, start, finish, idle_after


def report(args, run, samples, idle_before, start, finish, idle_after, elapsed):
    tally = run.tally
    failures = list(tally.failures)
    print()
    print(f"{'role':<11} {'kind':<9} {'requests':>8} {'200':>7} {'403':>6} {'410':>6} {'other':>6} "
          f"{'5xx':>4} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    total = 0
    for role, kinds in (("viewer", ("master", "playlist", "segment")), ("restreamer", ("master", "playlist", "segment"))):
        for kind in kinds:
            st = tally.status[(role, kind)]
            n = sum(st.values()) + tally.errors[(role, kind)]
            total += n
            lat = tally.latency[(role, kind)]
            other = sum(c for s, c in st.items() if s not in (200, 403, 410))
            fivexx = sum(c for s, c in st.items() if s >= 500)
            print(f"{role:<11} {kind:<9} {n:>8} {st[200]:>7} {st[403]:>6} {st[410]:>6} {other:>6} {fivexx:>4} "
                  f"{tally.errors[(role, kind)]:>6} {pctl(lat, 50) * 1e3:>7.1f} {pctl(lat, 99) * 1e3:>7.1f} "
                  f"{max(lat, default=0) * 1e3:>7.1f}")
    print(f"{total} requests in {elapsed:.0f} s ({total / max(elapsed, 1e-9):.0f}/s); {args.viewers} viewers played "
          f"{run.segments_played} segments; viewer connections opened {run.connects} "
          f"(stale keep-alive retries {run.stale}); this client's event loop was at most {run.max_lag:.2f} s late")

    rss_limit = start[1] + max(args.rss_mib * 1024, start[1] * args.rss_pct / 100)
    fd_limit = start[2] + args.fd_slack
    print()
    print(f"{'server':<26} {'RSS KiB':>9} {'fds':>5}")
    print(f"{'idle, before any client':<26} {idle_before[1]:>9} {idle_before[2]:>5}")
    print(f"{'start (after %gs warm-up)' % args.warmup:<26} {start[1]:>9} {start[2]:>5}")
    print(f"{'end of load (t=%.0fs)' % finish[0]:<26} {finish[1]:>9} {finish[2]:>5}")
    print(f"{'idle, clients gone':<26} {idle_after[1]:>9} {idle_after[2]:>5}")
    loaded = [s for s in samples if start[0] <= s[0] <= finish[0]]
    print(f"while loaded: RSS {min(s[1] for s in loaded)}..{max(s[1] for s in loaded)} KiB, "
          f"fds {min(s[2] for s in loaded)}..{max(s[2] for s in loaded)} ({len(loaded)} samples)")
    print(f"limits: RSS end <= {rss_limit:.0f} KiB (start + max({args.rss_mib} MiB, {args.rss_pct}%)); "
          f"fds end <= {fd_limit}; idle fds after <= {idle_before[2] + 2}")

    if finish[1] > rss_limit:
        failures.append(("server", f"RSS grew from {start[1]} to {finish[1]} KiB (limit {rss_limit:.0f})"))
    if finish[2] > fd_limit:
        failures.append(("server", f"fds grew from {start[2]} to {finish[2]} (limit {fd_limit})"))
    if idle_after[2] > idle_before[2] + 2:
        failures.append(("server", f"{idle_after[2]} fds open once every client had gone, {idle_before[2]} before"))
    for kind in ("master", "playlist", "segment"):
        st = tally.status[("restreamer", kind)]
        wins = sum(c for s, c in st.items() if 200 <= s < 300)
        if wins:
            failures.append(("restreamer", f"{wins} restreamer {kind} fetches succeeded"))
    if sum(sum(st.values()) for (role, _), st in tally.status.items() if role == "restreamer") == 0:
        failures.append(("restreamer", "the restreamer made no request"))
    if run.segments_played == 0:
        failures.append(("viewer", "no viewer played a segment"))

    # The server's own count of what it answered must match the clients' (when no request was
    # lost in transit, which would leave the two legitimately apart).
    seen = collections.Counter()
    for st in tally.status.values():
        seen["ok"] += sum(c for s, c in st.items() if 200 <= s < 300)
        seen["forbidden"] += st[403]
        seen["expired"] += st[410]
        seen["other"] += sum(c for s, c in st.items() if not (200 <= s < 300) and s not in (403, 410))
    server = run.server_outcomes
    server_view = {"ok": server["ok"], "forbidden": server["forbidden"], "expired": server["expired"],
                   "other": sum(c for o, c in server.items() if o not in ("ok", "forbidden", "expired"))}
    print(f"server /metrics: {server_view}; clients saw: {dict(seen)}")
    if not sum(tally.errors.values()) and server_view != {k: seen[k] for k in server_view}:
        failures.append(("server", f"/metrics counts {server_view}, the clients saw {dict(seen)}"))
    if failures and run.max_lag > 2:
        print(f"note: this client itself stalled for up to {run.max_lag:.1f} s (the host was starved: CPU or "
              f"memory pressure); timeouts and stalls above may be the host's, not the server's", file=sys.stderr)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="length of the run, warm-up included (default 300)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds before the start sample (default 10)")
    ap.add_argument("--viewers", type=int, default=40, help="simulated viewers, 1..250 (default 40)")
    ap.add_argument("--restream-rate", type=float, default=20, help="restreamer replays per second (default 20)")
    ap.add_argument("--timeout", type=float, default=10, help="seconds one request may take (default 10)")
    ap.add_argument("--rss-mib", type=float, default=10, help="RSS growth allowed, MiB (default 10) ...")
    ap.add_argument("--rss-pct", type=float, default=50, help="... or percent of start, whichever is larger (default 50)")
    ap.add_argument("--fd-slack", type=int, default=20, help="fd growth allowed under load (default 20)")
    ap.add_argument("--bin", help="hlsgate binary (default $HLSGATE_BIN, else the debug build)")
    args = ap.parse_args()
    if not 1 <= args.viewers <= 250 or args.seconds <= args.warmup or args.restream_rate <= 0:
        ap.error("need 1 <= --viewers <= 250, --seconds > --warmup, --restream-rate > 0")

    binary = find_binary(args)
    if not os.access(binary, os.X_OK):
        print(f"soak: no executable at {binary}", file=sys.stderr)
        return 2

    # SIGTERM (CI's timeout, say) unwinds through the finally below like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="hlsgate-soak-"))
    server = None
    failed = True
    try:
        key = "soak-" + secrets.token_hex(8)
        config = work / "hlsgate.toml"
        config.write_text(
            'listen = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n'
            f'streams_dir = "{REPO / "streams"}"\n\n'
            f'[streams.demo]\nkeys = ["{key}"]\nsimulate_live = true\nlive_window = 6\n'
        )
        log_path = work / "hlsgate.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [str(binary), "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, "NO_COLOR": "1", "RUST_LOG": os.environ.get("RUST_LOG", "info")},
            )
        try:
            port, admin_port = wait_ready(server, log_path)
        except RuntimeError as e:
            print(f"soak: {e}", file=sys.stderr)
            return 2
        print(f"soak: hlsgate {binary} pid {server.pid} on 127.0.0.1:{port}; {args.viewers} viewers "
              f"(127.0.0.2..{viewer_ip(args.viewers - 1)}), restreamer {RESTREAMER_IP} at "
              f"{args.restream_rate:g}/s, {args.seconds:g} s", flush=True)
        began = time.monotonic()
        try:
            results = asyncio.run(soak(args, server, port, admin_port, key))
        except ServerGone:
            results = None
        elapsed = time.monotonic() - began
        if results is None or server.poll() is not None:
            # hlsgate exits only on SIGTERM/SIGINT (logged "shutting down") or a crash.
            print(f"soak: hlsgate (pid {server.pid}) exited {elapsed:.0f} s into the run, status "
                  f"{server.returncode}; see its log below", file=sys.stderr)
            return 1
        failures = report(args, *results, elapsed)
        print()
        if failures:
            shown = collections.Counter()
            print(f"soak: {len(failures)} failure(s):", file=sys.stderr)
            for role, message in failures:
                shown[role] += 1
                if shown[role] <= 10:
                    print(f"  {role}: {message}", file=sys.stderr)
            for role, n in shown.items():
                if n > 10:
                    print(f"  {role}: ... and {n - 10} more", file=sys.stderr)
            return 1
        failed = False
        print("soak: ok")
        return 0
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=35)  # the drain deadline is 30 s
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if failed and (work / "hlsgate.log").exists():
            lines = (work / "hlsgate.log").read_text(errors="replace").splitlines()
            interesting = [l for l in lines if " refused " not in l or "status=5" in l]
            print("--- server log (refusals left out) ---", file=sys.stderr)
            print("\n".join(interesting[-20:]), file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
