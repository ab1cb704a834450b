#!/usr/bin/env bash
# Fills the untracked corpus/ with seeds: the peer playlists from shared/ (read where they lie,
# never committed: they are other projects' files), the demo stream's playlists, and small
# hand-made queries and paths. Safe to rerun; libFuzzer adds its own finds beside these.
#
#   fuzz/seed.sh [PEER_PLAYLISTS_DIR]    default: <repo>/../shared/peer-playlists
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$fuzz")
peers=${1:-$repo/../shared/peer-playlists}
corpus=$fuzz/corpus

mkdir -p "$corpus/token_query" "$corpus/request_path" "$corpus/rewrite" "$corpus/client_ip"

# One seed file per line of stdin, named by its line number.
seed_lines() {
  local dir=$1 n=0
  while IFS= read -r line; do
    n=$((n + 1))
    printf '%s' "$line" >"$dir/hand-$n"
  done
}

seed_lines "$corpus/token_query" <<'QUERIES'
md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647
expires=2147483647&md5=_e4Nc3iduzkWRm01TBBNYw==
_HLS_msn=5&_HLS_part=1&md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647
md5=_e4Nc3iduzkWRm01TBBNYw%3D%3D&expires=%32147483647&x
st=_e4Nc3iduzkWRm01TBBNYw&e=9999999999999999999
md5=+e4Nc3iduzkWRm01TBBNYw&expires=0
md5&expires&&=&md%35=a
QUERIES

seed_lines "$corpus/request_path" <<'PATHS'
/demo/720p/index.m3u8
/demo/
/
/demo/seg%20one.ts
/demo/%252e%252e/x
/demo/%2e%2e/x
/demo/a%2fb
/demo//x.ts
/demo/%C3%A9t%C3%A9/p.m3u8
/demo/a%C2%85b
PATHS

# Forwarding headers, one seed per line, `\xNN` escapes expanded: two settings bytes (peer,
# trusted networks, header: see src/input.rs), then `X value` / `F value` header lines.
n=0
while IFS= read -r line; do
  n=$((n + 1))
  printf '%b' "$line" >"$corpus/client_ip/hand-$n"
done <<'HEADERS'
\x08\x00X 6.6.6.6, 203.0.113.5, 10.0.0.2
\x08\x00X \xff\xfe, 203.0.113.5\nX 10.0.0.3
\x08\x00X 203.0.113.5, nonsense
\x08\x01F for=6.6.6.6, For="[2001:db8:cafe::17]:4711";proto=https
\x08\x01F proto=http;for=198.51.100.7:80;by=10.0.0.1\nX 6.6.6.6
\x10\x00X 10.9.9.9, 2001:db8::7\nX 198.51.100.7:80,, ,
\x18\x01F for=unknown\nF for=1.2.3.4
\x08\x00X ::ffff:198.51.100.7\nF for=1.1.1.1
\x02\x00X 1.1.1.1
HEADERS

# Playlists go in as they are: the rewrite target reads settings only from leading bytes
# below 0x20. The flattened name keeps where each came from.
count=0
if [ -d "$peers/fixtures" ]; then
  while IFS= read -r -d '' file; do
    rel=${file#"$peers"/}
    cp "$file" "$corpus/rewrite/${rel//\//__}"
    count=$((count + 1))
  done < <(find "$peers" -type f -name '*.m3u8' -print0)
else
  echo "seed.sh: no peer playlists at $peers; seeding the demo stream only" >&2
fi
while IFS= read -r -d '' file; do
  rel=${file#"$repo"/}
  cp "$file" "$corpus/rewrite/${rel//\//__}"
done < <(find "$repo/streams" -type f -name '*.m3u8' -print0)

echo "seed.sh: $count peer playlists; corpus sizes:"
for target in token_query request_path rewrite client_ip; do
  echo "  $target $(find "$corpus/$target" -type f | wc -l)"
done
