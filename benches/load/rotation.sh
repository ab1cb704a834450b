#!/usr/bin/env bash
# Key rotation under load (issue 8): a request signed with the previous key stays valid across
# the SIGHUP that demotes that key to second place, and a broken config on reload changes nothing.
#
# Ten rotation steps, K0 .. K10 random keys, the server starting with keys = [K0]. Step i:
#   - wrk fetches four URLs (master, a media playlist, two segments) all signed with K(i-1), the
#     key that signs right now, bound to 127.0.0.1 with a 1 h TTL;
#   - 1 s into the run the script writes keys = [K(i), K(i-1)], sends SIGHUP and waits for the
#     "config reloaded" line; wrk keeps going for the rest of the step on the same URLs, which are
#     now signed with the *previous* key;
#   - asserted: every wrk request 2xx, no socket error, requests were served after the swap (from
#     /metrics), a K(i) URL -> 200, the playlist now issues URIs signed with K(i), and a K(i-2)
#     URL -> 403 (the key that fell off the list really is gone: the reload took effect).
# Then two broken configs under the same kind of load (URLs signed with both listed keys): a TOML
# syntax error and `keys = []`. Asserted: the refusal line, zero failed requests, both old keys
# still 200 afterwards. Last: /metrics counts 10 good and 2 refused reloads, the server is alive.
#
# Usage: benches/load/rotation.sh
# Knobs (environment): HLSGATE_BIN (default: build and use the debug binary), STEP_SECS (wrk
# seconds per step, default 3), ROTATIONS (default 10), CONNS (wrk connections, default 8).
# About 45 s with the defaults. Exits non-zero on any failure, after printing the table.
set -euo pipefail
cd "$(dirname "$0")/../.."

step_secs=${STEP_SECS:-3}
rotations=${ROTATIONS:-10}
conns=${CONNS:-8}
hup_after=1 # s into each wrk run

command -v wrk >/dev/null || scripts/test-deps.sh
if [[ -n ${HLSGATE_BIN:-} ]]; then
  bin=$HLSGATE_BIN
else
  cargo build --locked --bins >&2
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/hlsgate
fi
[[ -x $bin ]] || { echo "rotation: no executable at $bin" >&2; exit 2; }

work=$(mktemp -d)
server_pid=
wrk_pid=
failures=()
fail() { failures+=("$*"); echo "FAIL: $*" >&2; }

cleanup() {
  local rc=$?
  # Only the processes this script started, by PID.
  local pid
  for pid in $wrk_pid $server_pid; do kill "$pid" 2>/dev/null || true; done
  for pid in $wrk_pid $server_pid; do wait "$pid" 2>/dev/null || true; done
  if ((rc != 0)) && [[ -f $work/hlsgate.log ]]; then
    echo "--- last server log lines ---" >&2
    tail -n 20 "$work/hlsgate.log" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nonce=$(python3 -c 'import secrets; print(secrets.token_hex(6))')
keys=()
for i in $(seq 0 "$rotations"); do keys+=("rot-$nonce-k$i"); done

# The config is replaced by rename, so the server never reads half a file.
write_config() {
  local list
  list=$(printf '"%s", ' "$@")
  cat >"$work/hlsgate.toml.tmp" <<TOML
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
streams_dir = "$PWD/streams"

[streams.demo]
keys = [${list%, }]
simulate_live = true
live_window = 6
TOML
  mv "$work/hlsgate.toml.tmp" "$work/hlsgate.toml"
}
write_raw_config() { printf '%s\n' "$1" >"$work/hlsgate.toml.tmp" && mv "$work/hlsgate.toml.tmp" "$work/hlsgate.toml"; }

# Running and not a zombie (kill -0 succeeds on an exited child nobody has waited for yet).
running() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
alive() { running "$server_pid"; }

write_config "${keys[0]}"
NO_COLOR=1 RUST_LOG=info "$bin" serve --config "$work/hlsgate.toml" 2>"$work/hlsgate.log" &
server_pid=$!
for _ in $(seq 200); do
  grep -q 'hlsgate ready' "$work/hlsgate.log" && break
  alive || { echo "rotation: hlsgate exited before ready" >&2; exit 1; }
  sleep 0.1
done
ready=$(grep -m1 'hlsgate ready' "$work/hlsgate.log") || { echo "rotation: no ready line within 20 s" >&2; exit 1; }
viewers=$(grep -o 'viewers=[^ ]*' <<<"$ready" | cut -d= -f2 | tr -d '"')
admin=$(grep -o 'admin=[^ ]*' <<<"$ready" | cut -d= -f2 | tr -d '"')
base="http://$viewers"

sign() { "$bin" sign --key "$1" --path "$2" --ttl 3600 --ip 127.0.0.1; }
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base$1"; }
log_count() { grep -c -- "$1" "$work/hlsgate.log" || true; }
# Requests the server answered with outcome="ok", all streams and kinds.
served_ok() {
  curl -s --max-time 10 "http://$admin/metrics" |
    awk '/^hlsgate_requests_total\{/ && /outcome="ok"/ {n += $NF} END {print n + 0}'
}
# Waits until the log has more than $2 lines containing $1; prints the newest one.
wait_log() {
  local needle=$1 before=$2
  for _ in $(seq 100); do
    if (($(log_count "$needle") > before)); then grep -- "$needle" "$work/hlsgate.log" | tail -n1; return 0; fi
    sleep 0.1
  done
  return 1
}

# A wrk Lua script that round-robins the given paths and counts every non-2xx response itself
# (wrk's own "status" error counts only >= 400); done() prints one RESULT line.
write_lua() {
  {
    echo 'local paths = {'
    printf '  "%s",\n' "$@"
    cat <<'LUA'
}
local n = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function request()
  n = n % #paths + 1
  return wrk.format("GET", paths[n])
end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d non2xx=%d socket=%d (connect %d read %d write %d timeout %d)\n",
    summary.requests, b, e.connect + e.read + e.write + e.timeout, e.connect, e.read, e.write, e.timeout))
end
LUA
  } >"$work/urls.lua"
}

# The four URLs wrk fetches, signed with key $1.
urls_for() {
  sign "$1" /demo/master.m3u8
  sign "$1" /demo/180p/index.m3u8
  sign "$1" /demo/180p/seg_000.ts
  sign "$1" /demo/270p/seg_005.ts
}

rows=()
# One step: wrk on the URLs in $work/urls.lua; $hup_after s in, run "$@" (write a config), send
# SIGHUP and wait for a log line containing $needle. Sets: result, after_swap, swap_line.
step_under_load() {
  local needle=$1; shift
  local before ok_at_swap
  before=$(log_count "$needle")
  wrk -t1 -c"$conns" -d"${step_secs}s" --timeout 10s -s "$work/urls.lua" "$base/" >"$work/wrk.out" 2>&1 &
  wrk_pid=$!
  sleep "$hup_after"
  "$@"
  kill -HUP "$server_pid"
  swap_line=$(wait_log "$needle" "$before") || swap_line=
  ok_at_swap=$(served_ok)
  local wrk_running=1
  running "$wrk_pid" || wrk_running=0
  wait "$wrk_pid" || true
  wrk_pid=
  # hlsgate exits only on SIGTERM/SIGINT (its log then says "shutting down") or a crash.
  alive || { echo "rotation: hlsgate (pid $server_pid) exited during '$step_name'" >&2; exit 1; }
  after_swap=$(($(served_ok) - ok_at_swap))
  result=$(grep '^RESULT' "$work/wrk.out" || true)
  if [[ -z $swap_line ]]; then fail "$step_name: no log line containing '$needle' within 10 s of SIGHUP"; fi
  if [[ -z $result ]]; then fail "$step_name: wrk printed no result: $(tr '\n' ' ' <"$work/wrk.out")"; result="RESULT requests=0 non2xx=0 socket=0"; fi
  ((wrk_running)) || fail "$step_name: wrk had finished before the reload was seen (machine too slow for STEP_SECS=$step_secs?)"
  local reqs non2xx sock
  reqs=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")
  non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$result")
  sock=$(sed -E 's/.*socket=([0-9]+).*/\1/' <<<"$result")
  ((reqs > 0)) || fail "$step_name: wrk made no requests"
  ((non2xx == 0)) || fail "$step_name: $non2xx non-2xx responses"
  ((sock == 0)) || fail "$step_name: $sock socket errors: $result"
  ((after_swap > 0)) || fail "$step_name: no request was served after the swap"
  step_reqs=$reqs step_non2xx=$non2xx step_sock=$sock
}

expect() { # expect CODE PATH WHAT
  local got
  got=$(status "$2")
  [[ $got == "$1" ]] || fail "$step_name: $3: expected $1, got $got"
}

printf 'hlsgate %s, viewers %s, admin %s; %d rotations, wrk -c%d %ss per step\n' \
  "$bin" "$viewers" "$admin" "$rotations" "$conns" "$step_secs"

for i in $(seq 1 "$rotations"); do
  step_name="rotation $i"
  prev=${keys[i - 1]} new=${keys[i]}
  mapfile -t urls < <(urls_for "$prev")
  ((${#urls[@]} == 4)) || { echo "rotation: hlsgate sign failed" >&2; exit 1; }
  write_lua "${urls[@]}"
  step_under_load "config reloaded" write_config "$new" "$prev"
  # After the swap: the new key opens, the previous one (wrk's) still does, the one before is gone.
  expect 200 "$(sign "$new" /demo/180p/seg_001.ts)" "URL signed with the new key"
  expect 200 "${urls[2]}" "URL signed with the previous key, after the load"
  if ((i >= 2)); then expect 403 "$(sign "${keys[i - 2]}" /demo/180p/seg_001.ts)" "URL signed with the dropped key"; fi
  # The playlist fetched with the previous key's link is rewritten with the new key.
  playlist=$(curl -s --max-time 10 "$base${urls[1]}")
  seg=$(grep -m1 '^seg_' <<<"$playlist" || true)
  if [[ -z $seg ]]; then
    fail "$step_name: no segment URI in the playlist: $playlist"
  else
    "$bin" verify --key "$new" --ip 127.0.0.1 "$base/demo/180p/$seg" >/dev/null ||
      fail "$step_name: issued URI $seg is not signed with the new key"
    expect 200 "/demo/180p/$seg" "segment URI issued after the swap"
  fi
  rows+=("$(printf '%-22s %-10s %-8s %9d %7d %7d %11d' "$step_name" "[k$i,k$((i - 1))]" "k$((i - 1))" \
    "$step_reqs" "$step_non2xx" "$step_sock" "$after_swap")")
done

# Broken configs under load: URLs signed with both listed keys; the config in force is
# [K(n), K(n-1)] and must stay so.
last=${keys[rotations]} second=${keys[rotations - 1]}
mapfile -t urls < <(urls_for "$last"; urls_for "$second")
write_lua "${urls[@]}"
for broken in syntax empty; do
  case $broken in
    syntax) step_name="broken: syntax error"; contents=$'[streams.demo]\nkeys = ["'"${keys[0]}"'"\nsimulate_live = true' ;;
    empty) step_name="broken: keys = []"; contents=$'[streams.demo]\nkeys = []' ;;
  esac
  step_under_load "config reload refused" write_raw_config "$contents"
  if [[ $broken == empty && $swap_line != *"streams.demo.keys"* ]]; then
    fail "$step_name: refusal line does not name the field: $swap_line"
  fi
  echo "$step_name refused: ${swap_line#*ERROR }"
  expect 200 "$(sign "$last" /demo/270p/seg_002.ts)" "newest key after the refused reload"
  expect 200 "$(sign "$second" /demo/270p/seg_002.ts)" "previous key after the refused reload"
  expect 403 "$(sign "${keys[0]}" /demo/270p/seg_002.ts)" "key from the broken file"
  rows+=("$(printf '%-22s %-10s %-8s %9d %7d %7d %11d' "$step_name" "(kept)" "k$rotations+k$((rotations - 1))" \
    "$step_reqs" "$step_non2xx" "$step_sock" "$after_swap")")
done

reloads=$(curl -s --max-time 10 "http://$admin/metrics" | grep '^hlsgate_config_reloads_total')
grep -q "result=\"ok\"} $rotations\$" <<<"$reloads" || fail "metrics: expected $rotations good reloads: $reloads"
grep -q 'result="error"} 2$' <<<"$reloads" || fail "metrics: expected 2 refused reloads: $reloads"
alive || fail "hlsgate is no longer running"

echo
printf '%-22s %-10s %-8s %9s %7s %7s %11s\n' step "config" "wrk key" requests non2xx socket after_swap
total=0
for r in "${rows[@]}"; do
  echo "$r"
  total=$((total + $(awk '{print $(NF-3)}' <<<"$r")))
done
echo "total requests: $total; after_swap = requests the server answered 200 between the reload line and the end of wrk"
if ((${#failures[@]})); then
  echo "rotation: ${#failures[@]} failure(s):" >&2
  printf '  %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "rotation: ok"
