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
