#!/usr/bin/env bash
# Runs every test: installs what they need (the wasm32-wasip2 target, the model wheels),
# builds the guest plugins, then the whole Rust test suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
# A one-off run gains nothing from incremental state, and it costs gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked "$@"
