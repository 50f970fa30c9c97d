#!/usr/bin/env bash
# Runs every test: installs what they need (the wasm32-wasip2 target, the model wheels),
# builds the guest plugins, then the whole Rust test suite.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
cargo test --workspace --locked "$@"
