#!/usr/bin/env bash
# Fleet load run (issue 12): requests/s of one hlsgate instance against two sharing one Redis, on
# this machine, same keys, same 10 000 distinct signed URLs (benches/load/urls.lua), same total
# wrk connections. Cases: the 1 KiB file and the 30-segment live playlist rewritten per viewer.
#
#   benches/load/fleet.sh            # ~1 min after the build; SECS (10), CONNS (64), HLSGATE_BIN
#
# Needs redis-server and wrk. Loopback only, ports chosen free; every process it starts is stopped
# by its PID on every exit path.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
SECS=${SECS:-10}
CONNS=${CONNS:-64}
key=fleet-bench-key

for cmd in redis-server redis-cli wrk python3; do
  command -v "$cmd" >/dev/null || { echo "fleet.sh: needs $cmd" >&2; exit 2; }
done
if [[ -z ${HLSGATE_BIN:-} ]]; then
  cargo build --release --locked --bin hlsgate >&2
  HLSGATE_BIN=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hlsgate
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The files: a 1 KiB file, and a 30-segment live playlist (no ENDLIST) over the demo's segments.
streams=$work/streams
mkdir -p "$streams/bench/live"
head -c 1024 /dev/urandom >"$streams/bench/1k.ts"
{
  printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1000\n'
  for i in $(seq 0 29); do printf '#EXTINF:2.000,\nseg_%03d.ts\n' "$i"; done
} >"$streams/bench/live/index.m3u8"

python3 - "$work" "$key" <<'PY'
import base64, hashlib, sys, time
out, key = sys.argv[1], sys.argv[2]
base = int(time.time()) + 86400
def sign(path, e):
    d = hashlib.md5(f"{e}{path}127.0.0.1 {key}".encode()).digest()
    return base64.urlsafe_b64encode(d).decode().rstrip("=")
for case, path in [("1k", "/bench/1k.ts"), ("playlist", "/bench/live/index.m3u8")]:
    with open(f"{out}/{case}.txt", "w") as f:
        for i in range(10000):
            f.write(f"{path}?md5={sign(path, base + i)}&expires={base + i}\n")
PY

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$HLSGATE_BIN" keys --redis "redis://127.0.0.1:$rport/0" add bench "$key" >/dev/null

# start_instance IP: starts one, prints "PID VIEWERS"
start_instance() {
  local ip=$1 dir=$work/$1
  mkdir -p "$dir"
  cat >"$dir/hlsgate.toml" <<TOML
listen = "$ip:0"
admin_listen = "127.0.0.1:0"
streams_dir = "$streams"
[keys]
source = "redis://127.0.0.1:$rport/0"
TOML
  RUST_LOG=warn,hlsgate::server=info "$HLSGATE_BIN" serve --config "$dir/hlsgate.toml" 2>"$dir/log" &
  local pid=$! addr=
  for _ in $(seq 200); do
    addr=$(grep -o 'viewers=[0-9.:]*' "$dir/log" | head -1 | cut -d= -f2) && [[ -n $addr ]] && break
    sleep 0.05
  done
  [[ -n $addr ]] || { echo "fleet.sh: instance on $ip never ready" >&2; cat "$dir/log" >&2; exit 1; }
  echo "$pid $addr"
}

# wrk_rps ADDR CASE CONNS THREADS: requests/s, or fails on any non-2xx
wrk_rps() {
  local out
  out=$(wrk -t "$4" -c "$3" -d "${SECS}s" -s "$repo/benches/load/urls.lua" "http://$1" -- "$work/$2.txt" "$4")
  grep -q "Non-2xx" <<<"$out" && { echo "fleet.sh: non-2xx answers from $1:" >&2; echo "$out" >&2; exit 1; }
  [[ -n ${FLEET_VERBOSE:-} ]] && echo "$out" >&2
  awk '/^Requests\/sec/ {print $2}' <<<"$out"
}

read -r p1 a1 < <(start_instance 127.0.0.11); pids+=("$p1")
read -r p2 a2 < <(start_instance 127.0.0.12); pids+=("$p2")
half=$((CONNS / 2))
hz=$(getconf CLK_TCK)
# CPU ticks (user + system) the instances have used so far.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done; echo "$t"; }
# A load generator on the same two CPUs takes a share of them that depends on how many threads
# are runnable, so requests/s alone says how the machine was split, not what an instance costs:
# the server CPU per request (us) does.
printf '%-10s %14s %10s %14s %10s %8s\n' case "one: req/s" "us/req" "two: req/s" "us/req" ratio
for case in 1k playlist; do
  wrk -t1 -c8 -d1s -s benches/load/urls.lua "http://$a1" -- "$work/$case.txt" 1 >/dev/null # warm-up
  c0=$(ticks "$p1")
  one=$(wrk_rps "$a1" "$case" "$CONNS" 2)
  c1=$(ticks "$p1")
  wrk_rps "$a1" "$case" "$half" 1 >"$work/r1" &
  w1=$!
  wrk_rps "$a2" "$case" "$half" 1 >"$work/r2" &
  w2=$!
  wait "$w1" "$w2"
  c2=$(ticks "$p1" "$p2")
  two=$(python3 -c "print(round($(cat "$work/r1") + $(cat "$work/r2")))")
  python3 - "$case" "$one" "$two" "$((c1 - c0))" "$((c2 - c1))" "$hz" "$SECS" <<'PY2'
import sys
case, one, two, t1, t2, hz, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
us = lambda ticks, rps: ticks / hz * 1e6 / (rps * secs)
print(f"{case:10s} {one:14.0f} {us(t1, one):10.2f} {two:14.0f} {us(t2, two):10.2f} {two/one:7.2f}x")
PY2
done
echo "machine: $(nproc) CPUs; each instance runs tokio's default workers (one per CPU); wrk shares the CPUs"
