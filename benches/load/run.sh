#!/usr/bin/env bash
# Load run (issue 10): hlsgate against nginx `secure_link` on the same files and the same tokens, and
# against a minimal hyper server (benches/floor.rs) as the floor, in the same run on this machine.
# For every case x mode x concurrency: requests/s, p50/p99 latency, server CPU per request, non-2xx,
# and the ratios; then a summary in the form of the issue's table (benches/load/report.py).
# benches/load/README.md explains every column and knob.
#
#   benches/load/run.sh                                          # everything: ~7 min after the build
#   MODES=split CASES=1k,forged CONNS=64 benches/load/run.sh     # ~50 s
#
# Knobs (environment):
#   SECS (5)      measured seconds per case and server; a first argument sets it too (old usage)
#   WARMUP (1)    seconds of load before each measurement, not counted
#   MODES         split,shared
#                   split:  every server pinned to CPU 0 with one worker, wrk -t1 pinned to CPU 1,
#                           so the ratio is server CPU per request
#                   shared: two workers each, no pinning, wrk -t2 unpinned
#   CASES         1k,forged,playlist,256k,1m,segments,origin
#   CONNS         64,256      wrk connections
#   URLS (10000)  distinct signed URLs per case, round-robin (benches/load/urls.lua)
#   REPEAT (1)    runs per case and server, interleaved; the summary takes the median
#   NGINX_SENDFILE (on)  `sendfile` in nginx's config (Debian's stock nginx.conf has it on; nginx's
#                        built-in default is off)
#   NICE (0)      nice value for the servers and wrk (root: e.g. -10 to win the CPU from other
#                 work on a shared machine; the same for every server)
#   OUT           where results.tsv, the wrk outputs and the summary go (target/load/<date>)
#   HLSGATE_BIN, FLOOR_BIN  both set: use these binaries instead of building
#
# Loopback only, ports chosen free; every process this script starts is stopped by its PID on every
# exit path (normal end, failure, Ctrl-C, SIGTERM).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

SECS=${SECS:-${1:-5}}
WARMUP=${WARMUP:-1}
MODES=${MODES:-split,shared}
CASES=${CASES:-1k,forged,playlist,256k,1m,segments,origin}
CONNS=${CONNS:-64,256}
URLS=${URLS:-10000}
REPEAT=${REPEAT:-1}
NGINX_SENDFILE=${NGINX_SENDFILE:-on}
NICE=${NICE:-0}
OUT=${OUT:-target/load/$(date +%Y%m%d-%H%M%S)}
key=bench-key

die() { echo "run.sh: $*" >&2; exit 2; }
IFS=, read -r -a modes <<<"$MODES"
IFS=, read -r -a cases <<<"$CASES"
IFS=, read -r -a conns_list <<<"$CONNS"
for m in "${modes[@]}"; do [[ $m == split || $m == shared ]] || die "MODES: unknown mode '$m' (split, shared)"; done
for c in "${cases[@]}"; do
  [[ $c =~ ^(1k|forged|playlist|256k|1m|segments|origin)$ ]] ||
    die "CASES: unknown case '$c' (1k, forged, playlist, 256k, 1m, segments, origin)"
done
for n in "${conns_list[@]}"; do [[ $n =~ ^[1-9][0-9]*$ && $n -ge 2 ]] || die "CONNS: '$n' is not a number >= 2"; done
for v in SECS URLS REPEAT; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v: '${!v}' is not a positive number"; done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP: '$WARMUP' is not a number"
[[ $NICE =~ ^-?[0-9]+$ ]] || die "NICE: '$NICE' is not a number"
prio=()
[[ $NICE == 0 ]] || prio=(nice -n "$NICE")
[[ $NGINX_SENDFILE == on || $NGINX_SENDFILE == off ]] || die "NGINX_SENDFILE: on or off"
[[ $(nproc) -ge 2 ]] || die "split mode needs two CPUs (this machine has $(nproc))"

for tool in wrk nginx taskset curl python3 timeout; do
  command -v "$tool" >/dev/null || { scripts/test-deps.sh; break; }
done

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as nobody when the script runs as root
pids=()

# Stops one process this script started: SIGTERM, up to 5 s, then SIGKILL; reaps it.
stop() {
  local p=$1 state
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do
    state=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1) || state=
    [[ -n $state && $state != Z ]] || break
    sleep 0.1
  done
  if [[ -n ${state:-} && $state != Z ]]; then kill -KILL "$p" 2>/dev/null || true; fi
  wait "$p" 2>/dev/null || true
}
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}
stop_all() {
  local p
  for p in "${pids[@]}"; do stop "$p"; done
  pids=()
}
cleanup() {
  stop_all
  # The servers' logs (both modes, appended) stay with the results.
  [[ -d $OUT ]] && for f in "$work"/*.log; do [[ -e $f ]] && cp "$f" "$OUT/"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries: one release build (hlsgate and the floor), unless both are given ------------------
if [[ -n ${HLSGATE_BIN:-} && -n ${FLOOR_BIN:-} ]]; then
  bin=$HLSGATE_BIN floor=$FLOOR_BIN
else
  echo "building hlsgate and the floor (release) ..." >&2
  cargo build --release --locked --bin hlsgate --bench floor --message-format=json-render-diagnostics \
    >"$work/build.jsonl"
  read -r bin floor < <(python3 - "$work/build.jsonl" <<'PY'
import json, sys
exe = {}
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        exe[m["target"]["name"]] = m["executable"]
print(exe["hlsgate"], exe["floor"])
PY
  )
fi
[[ -x $bin && -x $floor ]] || die "no binaries ($bin, $floor)"

mkdir -p "$OUT/wrk"
OUT=$(cd "$OUT" && pwd)
lua=$repo/benches/load/urls.lua

# --- the files: one streams_dir for both servers -------------------------------------------------
# bench/1k.ts, 256k.ts, 1m.ts: synthetic; bench/live/: a 30-segment live playlist (no ENDLIST)
# whose segments exist (copies of the demo's); demo/: the committed demo, for real segments and as
# the origin's folder in origin mode.
streams=$work/streams
mkdir -p "$streams/bench/live"
cp -r streams/demo "$streams/demo"
head -c 1024 /dev/urandom >"$streams/bench/1k.ts"
head -c $((256 * 1024)) /dev/urandom >"$streams/bench/256k.ts"
head -c $((1024 * 1024)) /dev/urandom >"$streams/bench/1m.ts"
demo_segments=("$streams"/demo/180p/seg_*.ts)
{
  printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1000\n'
  for i in $(seq 0 29); do
    seg=$(printf 'seg_%03d.ts' "$i")
    cp "${demo_segments[i % ${#demo_segments[@]}]}" "$streams/bench/live/$seg"
    printf '#EXTINF:2.000,\n%s\n' "$seg"
  done
} >"$streams/bench/live/index.m3u8"

# --- the URLs: URLS distinct paths per case, signed for 127.0.0.1 with distinct expiries ---------
mkdir -p "$work/paths"
python3 - "$work/paths" "$key" "$URLS" "${#demo_segments[@]}" <<'PY'
import base64, hashlib, os, sys, time
out, key, n, segments = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
base = int(time.time()) + 86400  # valid for a day, every one a different expiry

def sign(path, expires):
    digest = hashlib.md5(f"{expires}{path}127.0.0.1 {key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")

def write(case, path_of):
    with open(f"{out}/{case}.txt", "w") as f:
        for i in range(n):
            path, e = path_of(i), base + i
            f.write(f"{path}?md5={sign(path, e)}&expires={e}\n")

write("1k", lambda i: "/bench/1k.ts")
write("playlist", lambda i: "/bench/live/index.m3u8")
write("256k", lambda i: "/bench/256k.ts")
write("1m", lambda i: "/bench/1m.ts")
write("segments", lambda i: f"/demo/180p/seg_{i % segments:03d}.ts")
write("origin", lambda i: f"/odemo/180p/seg_{i % segments:03d}.ts")
# Forged: well-formed (22 characters, 16 bytes) random tokens with valid expiries, so every
# server does the whole check (a malformed token could be refused before hashing).
with open(f"{out}/forged.txt", "w") as f:
    for i in range(n):
        token = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        f.write(f"/bench/1k.ts?md5={token}&expires={base + i}\n")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hz=$(getconf CLK_TCK)

# CPU ticks (user+system) a process and its direct children (nginx's workers) have used so far;
# a process's /proc/PID/stat counts all of its threads.
cpu_ticks() {
  local total=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# Nanoseconds the threads of a process and of its direct children have waited, runnable, for a
# CPU (/proc/PID/task/TID/schedstat, second field): on a quiet machine in split mode next to
# nothing; it is the direct measure of how much other work kept the server from running.
run_wait_ns() {
  local p
  for p in "$1" $(pgrep -P "$1" || true); do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
    awk '{n += $2} END {printf "%.0f\n", n}'
}
# Busy ticks of all CPUs and of CPU 0: "processes all, interrupts all, processes 0, interrupts 0",
# processes = user + nice + system + steal, interrupts = irq + softirq (loopback TCP's receive
# path runs there, charged to no process when the kernel accounts interrupt time apart).
cpu_busy() {
  awk '$1 == "cpu" || $1 == "cpu0" {printf "%.0f %.0f ", $2 + $3 + $4 + $9, $7 + $8} END {print ""}' /proc/stat
}
# CPU ticks of this shell's waited-for children (wrk, through timeout and taskset).
child_ticks() { sed 's/.*) //' /proc/$$/stat | awk '{print $14 + $15}'; }

# Who serves which case: nginx and hlsgate always, the floor on the two cases it implements.
servers_for() { case $1 in 1k | forged) echo nginx hlsgate floor ;; *) echo nginx hlsgate ;; esac; }
port_of() {
  case $1 in
    nginx) if [[ $2 == origin ]]; then echo "$pport"; else echo "$nport"; fi ;;
    hlsgate) echo "$hport" ;;
    floor) echo "$fport" ;;
  esac
}
pid_of() { case $1 in nginx) echo "$npid" ;; hlsgate) echo "$hpid" ;; floor) echo "$fpid" ;; esac; }

start_mode() {
  local mode=$1 workers
  if [[ $mode == split ]]; then
    workers=1 pin=(taskset -c 0) wrk_pin=(taskset -c 1) wrk_threads=1
  else
    workers=2 pin=() wrk_pin=() wrk_threads=2
  fi
  hport=$(free_port) aport=$(free_port) nport=$(free_port) pport=$(free_port) oport=$(free_port)
  fport=$(free_port)
  rm -rf "$work/cache" "$work"/*.pid

  cat >"$work/hlsgate.toml" <<TOML
listen = "127.0.0.1:$hport"
admin_listen = "127.0.0.1:$aport"
streams_dir = "$streams"
[streams.bench]
keys = ["$key"]
[streams.demo]
keys = ["$key"]
# Origin mode: the demo fetched over HTTP from a plain nginx (the "packager").
[streams.odemo]
keys = ["$key"]
origin = "http://127.0.0.1:$oport/demo/"
TOML

  # The packager's HTTP server: a plain nginx serving the same folder.
  cat >"$work/origin.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/origin.pid;
error_log $work/origin-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$oport; root $streams; }
}
NGINX

  cat >"$work/nginx.conf" <<NGINX
daemon off;
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile $NGINX_SENDFILE;
  include /etc/nginx/mime.types;
  server {
    listen 127.0.0.1:$nport;
    root $streams;
    location / {
      secure_link \$arg_md5,\$arg_expires;
      secure_link_md5 "\$secure_link_expires\$uri\$remote_addr $key";
      if (\$secure_link = "") { return 403; }
      if (\$secure_link = "0") { return 410; }
    }
  }
  # Origin mode: nginx's answer to hlsgate's, secure_link and proxy_cache in front of the same
  # origin, with the cache lock (nginx's request collapsing).
  proxy_cache_path $work/cache levels=1:2 keys_zone=hls:10m max_size=256m inactive=60s use_temp_path=off;
  server {
    listen 127.0.0.1:$pport;
    location /odemo/ {
      secure_link \$arg_md5,\$arg_expires;
      secure_link_md5 "\$secure_link_expires\$uri\$remote_addr $key";
      if (\$secure_link = "") { return 403; }
      if (\$secure_link = "0") { return 410; }
      proxy_cache hls;
      proxy_cache_key \$uri;
      proxy_cache_valid 200 30s;
      proxy_cache_lock on;
      proxy_pass http://127.0.0.1:$oport/demo/;
    }
  }
}
NGINX

  # `nice`, `taskset` and the variable assignments exec the server itself: $! is the server's PID.
  "${prio[@]}" "${pin[@]}" nginx -c "$work/origin.conf" -p "$work" 2>>"$work/origin-error.log" &
  opid=$!
  pids+=("$opid")
  "${prio[@]}" "${pin[@]}" nginx -c "$work/nginx.conf" -p "$work" 2>>"$work/nginx-error.log" &
  npid=$!
  pids+=("$npid")
  TOKIO_WORKER_THREADS=$workers RUST_LOG=warn "${prio[@]}" "${pin[@]}" "$bin" serve --config "$work/hlsgate.toml" \
    2>>"$work/hlsgate.log" &
  hpid=$!
  pids+=("$hpid")
  TOKIO_WORKER_THREADS=$workers "${prio[@]}" "${pin[@]}" "$floor" --listen "127.0.0.1:$fport" --key "$key" \
    2>>"$work/floor.log" &
  fpid=$!
  pids+=("$fpid")

  local port ok
  for port in "$oport" "$nport" "$pport" "$hport" "$fport"; do
    ok=
    for _ in $(seq 100); do
      curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && { ok=1; break; }
      sleep 0.1
    done
    if [[ -z $ok ]]; then
      tail -n 20 "$work"/*.log >&2
      die "$mode: nothing answers on port $port after 10 s"
    fi
  done

  # What really runs: affinity, nginx workers, tokio threads (workers, plus any blocking-pool
  # threads, which carry the same name).
  local p n
  for p in "$npid" "$hpid" "$fpid"; do
    [[ $(taskset -pc "$p" | sed 's/.*: //') == "$([[ $mode == split ]] && echo 0 || echo 0,1)" ]] ||
      die "$mode: PID $p runs on CPUs $(taskset -pc "$p" | sed 's/.*: //')"
  done
  n=$(pgrep -P "$npid" -f "worker process" | wc -l)
  [[ $n == "$workers" ]] || die "$mode: nginx has $n worker processes, not $workers"
  echo "$mode: nginx $workers worker(s), hlsgate and floor TOKIO_WORKER_THREADS=$workers" \
    "(tokio threads now: hlsgate $(cat /proc/"$hpid"/task/*/comm | grep -c '^tokio-' || true)," \
    "floor $(cat /proc/"$fpid"/task/*/comm | grep -c '^tokio-' || true))," \
    "CPUs $(taskset -pc "$hpid" | sed 's/.*: //'); wrk -t$wrk_threads${wrk_pin[*]:+ on CPU 1}" >&2
}

# Before any load: sample URLs of every case answer exactly what they must, from every server.
precheck() {
  local mode=$1 case server port i path file line want size got code bytes n fails=0
  for case in "${cases[@]}"; do
    for server in $(servers_for "$case"); do
      port=$(port_of "$server" "$case")
      for i in 1 $((URLS / 2 + 1)) "$URLS"; do
        path=$(sed -n "${i}p" "$work/paths/$case.txt")
        read -r code bytes < <(curl -s -o "$work/body" -w '%{http_code} %{size_download}\n' --max-time 5 \
          "http://127.0.0.1:$port$path" || echo "000 0")
        want=200 size=
        case $case in
          forged) want=403 ;;
          playlist) [[ $server == hlsgate ]] || size=$(stat -c %s "$streams/bench/live/index.m3u8") ;;
          origin) file=${path%%\?*} && size=$(stat -c %s "$streams/demo/${file#/odemo/}") ;;
          *) size=$(stat -c %s "$streams${path%%\?*}") ;;
        esac
        if [[ $code != "$want" || (-n $size && $bytes != "$size") ]]; then
          echo "precheck $mode $case $server: $path -> $code, $bytes bytes (want $want${size:+, $size bytes})" >&2
          fails=$((fails + 1))
        elif [[ $case == playlist && $server == hlsgate ]]; then
          # The per-viewer rewrite: 30 signed segment URIs, the first of them fetchable.
          n=$(grep -c 'md5=' "$work/body" || true)
          line=$(grep -v '^#' "$work/body" | head -n 1)
          [[ $line == /* ]] || line=/bench/live/$line
          got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port$line" || true)
          if [[ $n != 30 || $got != 200 ]]; then
            echo "precheck $mode playlist hlsgate: $n signed URIs (want 30), first one -> $got" >&2
            fails=$((fails + 1))
          fi
        fi
      done
    done
  done
  [[ $fails == 0 ]] || die "$mode: $fails precheck failure(s): the servers do not answer what the cases need"
}

# One wrk run: wrk_run CONNS SECONDS PORT CASE OUTFILE. wrk runs under `timeout` (a bound if it
# hangs), in the background so that a signal reaches the traps, which stop it by PID.
wrk_run() {
  local w rc=0
  timeout -k 5 $(($2 + 30)) "${prio[@]}" "${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$1" -d"$2s" --latency -s "$lua" \
    "http://127.0.0.1:$3" -- "$work/paths/$4.txt" "$wrk_threads" >"$5" 2>&1 &
  w=$!
  pids+=("$w")
  wait "$w" || rc=$?
  forget "$w"
  [[ $rc == 0 ]] || { cat "$5" >&2; die "wrk exited with $rc"; }
}

# measure MODE CONNS CASE SERVER REP: warm-up, then one measured run; appends a row to results.tsv.
measure() {
  local mode=$1 conns=$2 case=$3 server=$4 rep=$5 port pid raw
  port=$(port_of "$server" "$case") pid=$(pid_of "$server")
  raw=$OUT/wrk/$mode-c$conns-$case-$server-$rep.txt
  [[ $WARMUP == 0 ]] || wrk_run "$conns" "$WARMUP" "$port" "$case" "$work/warmup.txt"
  kill -0 "$pid" 2>/dev/null || die "$server (PID $pid) is gone; its log: $(tail -n 5 "$work/$server.log" 2>/dev/null)"
  local c0 b0 t0 w0 q0 c1 b1 t1 w1 q1
  q0=$(run_wait_ns "$pid") c0=$(cpu_ticks "$pid") b0=$(cpu_busy) t0=$(date +%s%N) w0=$(child_ticks)
  wrk_run "$conns" "$SECS" "$port" "$case" "$raw"
  w1=$(child_ticks) t1=$(date +%s%N) b1=$(cpu_busy) c1=$(cpu_ticks "$pid") q1=$(run_wait_ns "$pid")
  kill -0 "$pid" 2>/dev/null || die "$server (PID $pid) died during $case"
  grep -q '^RESULT ' "$raw" || die "no RESULT line from wrk in $raw"
  # One TSV row; report.py explains the columns.
  awk -v mode="$mode" -v conns="$conns" -v case_="$case" -v server="$server" -v rep="$rep" -v hz="$hz" \
    -v srv="$((c1 - c0))" -v wrk="$((w1 - w0))" -v wall_ns="$((t1 - t0))" -v wait_ns="$((q1 - q0))" -v b0="$b0" -v b1="$b1" '
    /^RESULT / {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
      split(b0, x, " "); split(b1, y, " ")
      wall = wall_ns / 1e9
      s = srv / hz; w = wrk / hz
      # Process time on CPU 0 (split) or on both CPUs (shared) not charged to the measured
      # server (nor, in shared mode, to wrk): other processes on the machine, and steal. Interrupt
      # and softirq time on the same CPUs goes in its own column.
      if (mode == "split") { other = (y[3] - x[3]) / hz - s; irq = (y[4] - x[4]) / hz }
      else { other = (y[1] - x[1]) / hz - s - w; irq = (y[2] - x[2]) / hz }
      bad = (case_ == "forged") ? r["requests"] - r["status_ge_400"] : r["status_ge_400"]
      sock = r["connect"] + r["read"] + r["write"] + r["timeout"]
      printf "%s\t%d\t%s\t%s\t%d\t%d\t%.0f\t%.1f\t%d\t%d\t%.2f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%.0f\n",
        mode, conns, case_, server, rep, r["requests"], r["requests"] / (r["duration_us"] / 1e6),
        s / r["requests"] * 1e6, r["p50_us"], r["p99_us"], wall, s / wall, w / wall, wait_ns / wall_ns, other / wall, irq / wall,
        bad, sock, r["bytes"] / r["requests"]
    }' "$raw" >>"$OUT/results.tsv"
  tail -n 1 "$OUT/results.tsv" | awk -F'\t' '{
    printf "%-6s c%-4s %-9s %-8s %7.0f rps  p50 %6.2f ms  p99 %7.2f ms  %6.1f us/req  cores: server %.2f wrk %.2f  server waited %.2f  others %.2f irq %.2f  non-2xx %d  sock-err %d  %d B/resp\n",
      $1, $2, $3, $4, $7, $9 / 1000, $10 / 1000, $8, $12, $13, $14, $15, $16, $17, $18, $19 }' >&2
}

runs=0
for case in "${cases[@]}"; do runs=$((runs + $(servers_for "$case" | wc -w))); done
runs=$((runs * ${#modes[@]} * ${#conns_list[@]} * REPEAT))
echo "$runs runs of ${WARMUP}+${SECS} s: about $(((runs * (2 * (SECS + WARMUP) + 1) / 2 + 10 * ${#modes[@]} + 30) / 60)) min;" \
  "results in $OUT" >&2
printf 'mode\tconns\tcase\tserver\trep\trequests\trps\tcpu_us_per_req\tp50_us\tp99_us\twall_s\tserver_cores\twrk_cores\tserver_waited\tother_cores\tirq_cores\tnon_ok\tsocket_errors\tbytes_per_resp\n' \
  >"$OUT/results.tsv"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "hlsgate: $bin"
  echo "floor: $floor"
  echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'), sendfile $NGINX_SENDFILE; wrk: $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
  echo "SECS=$SECS WARMUP=$WARMUP MODES=$MODES CASES=$CASES CONNS=$CONNS URLS=$URLS REPEAT=$REPEAT NICE=$NICE"
} >"$OUT/run.txt"

for mode in "${modes[@]}"; do
  start_mode "$mode"
  precheck "$mode"
  for conns in "${conns_list[@]}"; do
    for case in "${cases[@]}"; do
      for rep in $(seq "$REPEAT"); do
        for server in $(servers_for "$case"); do
          measure "$mode" "$conns" "$case" "$server" "$rep"
        done
      done
    done
  done
  stop_all
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/run.txt"

python3 benches/load/report.py "$OUT/results.tsv" "$OUT/run.txt" | tee "$OUT/summary.md"
