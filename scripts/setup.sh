#!/usr/bin/env bash
# Installs what building and running need, reusing what is already there: the
# wasm32-wasip2 Rust target, the small offline models, and the guest plugins (Rust, and
# Python through componentize-py).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
scripts/fetch-models.sh
(cd guests && cargo build --release --locked --quiet)
scripts/python-plugins.sh
