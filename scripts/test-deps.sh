#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain. Idempotent and cheap when
# everything is there: apt is touched only for missing commands, npm only when the
# installed tree does not match the pinned package.json/package-lock.json.
# Debian 12, as root (CI and dev machines run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive

# command that proves it is installed -> Debian package that provides it
declare -A PKG_FOR=(
  [ffmpeg]=ffmpeg          # ffmpeg + ffprobe: demo stream checks, live packager tests
  [ffprobe]=ffmpeg
  [nginx]=nginx-light      # reference secure_link implementation to compare against
  [chromium]=chromium      # real-browser playback (tests/js/play.mjs)
  [php]=php-cli            # Gcore's PHP signing example, as an independent signer
  [wrk]=wrk                # load tests
  [python3]=python3        # harness self-test runs python's http.server
  [openssl]=openssl        # independent MD5 check of the token signer; test certificates
  [redis-server]=redis-server  # the fleet tests' shared key store (issue 12)
  [curl]=curl              # HTTP/2 and TLS checks (Debian's curl speaks h2 through nghttp2)
  [node]=nodejs
  [npm]=npm
)

missing=()
for cmd in "${!PKG_FOR[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done

if ((${#missing[@]})); then
  # Deduplicate (ffmpeg provides two commands).
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "test-deps: installing ${missing[*]}"
  # Keep package scripts from starting services (nginx would grab port 80) in a
  # container without an init system; only if no policy is in place already.
  policy=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    added_policy=1
  fi
  trap '((added_policy)) && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# playwright-core needs node >= 20; Debian 12's own nodejs is 18.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  echo "test-deps: node $(node --version) is too old for playwright-core (needs >= 20)" >&2
  exit 1
fi

# `npm ls` fails when node_modules is missing or differs from the exact pins.
if ! (cd tests/js && npm ls --all >/dev/null 2>&1); then
  echo "test-deps: npm ci in tests/js"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "test-deps: ok"
