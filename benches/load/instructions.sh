#!/usr/bin/env bash
# Instructions per request, under valgrind's callgrind: a count, not a time, so it repeats on a
# busy machine (wall-clock load runs do not). Per case: hlsgate serves N requests on one
# keep-alive connection, and the count of a run with no requests is subtracted, leaving what
# one request costs. With --annotate, the functions that cost the most in the last case.
# Usage: benches/load/instructions.sh [N, default 2000] [--annotate]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2000}
annotate=${2:-}
key=bench-key

command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind" >&2; exit 1; }
# Line tables make the annotation readable and change nothing the count measures.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/profiling}
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked --bin hlsgate >&2
bin=$CARGO_TARGET_DIR/release/hlsgate

work=$(mktemp -d)
vg=
cleanup() { [[ -n $vg ]] && kill "$vg" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One run: start under callgrind, send `count` requests for `target`, stop; print Ir.
run() {
  local target=$1 count=$2 port aport out
  port=$(free_port); aport=$(free_port)
  cat >"$work/hlsgate.toml" <<TOML
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$aport"
streams_dir = "$PWD/streams"
[streams.demo]
keys = ["$key"]
TOML
  out=$work/callgrind.out
  RUST_LOG=warn TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" serve --config "$work/hlsgate.toml" 2>"$work/vg.log" &
  vg=$!
  python3 - "$port" "$target" "$count" <<'PY'
import socket, sys, time
port, target, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
deadline = time.time() + 60
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.2)
req = f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
buf = b""
for _ in range(count):
    s.sendall(req)
    # Read one response: headers, then Content-Length bytes.
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(buf) < length:
        buf += s.recv(65536)
    buf = buf[length:]
s.close()
PY
  kill -TERM "$vg"; wait "$vg" || true; vg=
  awk '/^summary:/ {print $2}' "$out"
}

sign() { "$bin" sign --key "$key" --path "$1" --ttl 3600 --ip 127.0.0.1; }
declare -A cases=(
  ["forged token 403"]="/demo/180p/seg_000.ts?md5=AAAAAAAAAAAAAAAAAAAAAA&expires=4000000000"
  ["segment 200"]="$(sign /demo/180p/seg_000.ts)"
  ["playlist 200 (8 segments, rewritten)"]="$(sign /demo/180p/index.m3u8)"
)
base=$(run "/" 0)
printf '%-40s %14s\n' case instructions/request
for name in "segment 200" "playlist 200 (8 segments, rewritten)" "forged token 403"; do
  total=$(run "${cases[$name]}" "$n")
  python3 -c "print(f'{\"$name\":40s} {($total-$base)/$n:14.0f}')"
done
if [[ $annotate == --annotate ]]; then
  callgrind_annotate "$work/callgrind.out" 2>/dev/null | grep -v "^-\|^Ir\|^$" | head -45
fi
