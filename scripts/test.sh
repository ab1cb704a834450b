#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, one build of the binary, then every
# test (unit, integration, browser, doc). Fails on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

# Style and lints first: they are the cheapest failures to read.
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

# Build the server binary first so the integration tests (which run it via
# CARGO_BIN_EXE_hlsgate) do not race each other into the build, and a compile error
# shows up on its own.
cargo build --locked --bins

# The crate docs are the map a newcomer reads first: a broken link in them is a failure.
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib

# --- Load: "prove it holds" (issue 8) --------------------------------------------------------
# Against the debug binary built above (CI builds only debug), before the test runner so its
# summary stays CI's closing lines; a failure here fails the run after the tests have run:
# - benches/load/rotation.sh (~45 s): ten SIGHUP key rotations under wrk, each demoting the key
#   wrk's URLs are signed with to second place, then a TOML syntax error and `keys = []` on
#   reload; zero non-2xx, zero socket errors, the refusal logged, the old keys still valid.
# - benches/load/soak.py --seconds 60: 40 viewers, each on its own loopback address, play the
#   demo live stream while a restreamer at 127.0.1.1 replays their URLs; zero 5xx, every viewer
#   fetch 200, every restreamer fetch 403/410, server RSS and fds flat (see benches/load/README.md).
# Both run to the end even if the first fails, each under a hard time limit so a hang cannot eat
# CI's budget (on SIGTERM each stops its own server and wrk).
load_bin=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/hlsgate
load_failed=()
HLSGATE_BIN=$load_bin timeout -k 10 180 benches/load/rotation.sh || load_failed+=(rotation.sh)
HLSGATE_BIN=$load_bin timeout -k 10 180 python3 benches/load/soak.py --seconds 60 || load_failed+=(soak.py)
((${#load_failed[@]})) || echo "test.sh: load checks passed (rotation.sh, soak.py)"

# Doctests first: CI reads the runner's closing lines, and a doctest run with no doctests
# ("0 passed") last would read as a suite that ran nothing.
cargo test --locked --workspace --doc

if cargo nextest --version >/dev/null 2>&1; then
  # One process per test: a server that hangs or crashes takes down only its test.
  cargo nextest run --locked --workspace --no-fail-fast
else
  echo "test.sh: cargo-nextest not found, using cargo test" >&2
  cargo test --locked --workspace --lib --bins --tests --no-fail-fast
fi

if ((${#load_failed[@]})); then
  echo "test.sh: load checks failed: ${load_failed[*]} (their output is above the tests')" >&2
  exit 1
fi
