#!/usr/bin/env bash
# Load run: hlsgate against nginx on this machine, in this run, on the same files and the same
# tokens (nginx checks them with secure_link). Prints requests/s and server CPU per request for
# each, and the ratios. Usage: benches/load/run.sh [seconds per case, default 10]
#
# Both servers get two workers (nginx worker_processes 2, tokio's default of one per core).
# wrk shares the same two cores, so absolute numbers are low; the ratios are the point.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
conns=32
key=bench-key

command -v wrk >/dev/null && command -v nginx >/dev/null || scripts/test-deps.sh
cargo build --release --locked --bin hlsgate >&2
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hlsgate

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hport=$(free_port); aport=$(free_port); nport=$(free_port); oport=$(free_port); pport=$(free_port)
streams=$PWD/streams

cat >"$work/hlsgate.toml" <<TOML
listen = "127.0.0.1:$hport"
admin_listen = "127.0.0.1:$aport"
streams_dir = "$streams"
[streams.demo]
keys = ["$key"]

# Origin mode: the same files, fetched over HTTP from a plain nginx (the "packager").
[streams.odemo]
keys = ["$key"]
origin = "http://127.0.0.1:$oport/demo/"
TOML

# The packager's HTTP server: a plain nginx serving the demo folder.
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
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
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

RUST_LOG=warn "$bin" serve --config "$work/hlsgate.toml" 2>"$work/hlsgate.log" &
pids+=($!); hpid=$!
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!); npid=$!
nginx -c "$work/origin.conf" -p "$work" &
pids+=($!)
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$hport/" && curl -s -o /dev/null "http://127.0.0.1:$nport/" && break
  sleep 0.1
done

sign() { "$bin" sign --key "$key" --path "$1" --ttl 3600 --ip 127.0.0.1; }
segment=$(sign /demo/180p/seg_000.ts)
playlist=$(sign /demo/180p/index.m3u8)
forged="/demo/180p/seg_000.ts?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=4000000000"
origin_segment=$(sign /odemo/180p/seg_000.ts)

# CPU seconds (user+system) a process and its children have used so far.
cpu() {
  local total=0
  for p in $(pgrep -P "$1") "$1"; do
    read -r ut st < <(awk '{print $14, $15}' "/proc/$p/stat")
    total=$((total + ut + st))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

# One case against one server: prints "rps cpu_us_per_request".
measure() {
  local pid=$1 url=$2 before after out rps reqs
  before=$(cpu "$pid")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$url")
  after=$(cpu "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  python3 -c "print(f'{$rps:.0f} {($after-$before)/$hz/$reqs*1e6:.1f}')"
}

printf '%-34s %12s %12s %12s %12s %8s %8s\n' case hlsgate_rps nginx_rps hlsgate_cpu nginx_cpu rps_x cpu_x
for case in "segment 200:$segment" "playlist 200 (hlsgate rewrites):$playlist" "forged token 403:$forged" \
  "origin mode: segment 200 (cached):$origin_segment"; do
  name=${case%%:*}; path=${case#*:}
  # Origin mode runs against nginx's proxy_cache server; the others against its folder server.
  port=$nport; [[ $name == origin* ]] && port=$pport
  read -r hr hc < <(measure "$hpid" "http://127.0.0.1:$hport$path")
  read -r nr nc < <(measure "$npid" "http://127.0.0.1:$port$path")
  python3 -c "print(f'{\"$name\":34s} {$hr:12.0f} {$nr:12.0f} {$hc:10.1f}us {$nc:10.1f}us {$hr/$nr:8.2f} {$hc/$nc:8.2f}')"
done
echo "rps_x = hlsgate/nginx requests per second (higher is better for hlsgate);"
echo "cpu_x = hlsgate/nginx server CPU per request (lower is better for hlsgate); $conns connections, ${secs}s per case."
