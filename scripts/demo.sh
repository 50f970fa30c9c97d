#!/usr/bin/env bash
# The main job: runs the semantic-search plugin over examples/documents.txt with the
# real all-MiniLM-L6-v2, downloaded through Lantern's hub from a local HF-protocol mirror
# of the offline model files (the Hugging Face Hub itself is not needed).
#   scripts/demo.sh ["your query"]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
query="${1:-a kitten playing indoors}"
scripts/setup.sh
cargo build --locked --quiet -p lantern -p hubmirror
endpoint_file="$(mktemp)"
target/debug/hubmirror --repo "sentence-transformers/all-MiniLM-L6-v2=$root/.models/all-MiniLM-L6-v2" \
  --endpoint-file "$endpoint_file" >/dev/null &
mirror=$!
trap 'kill $mirror 2>/dev/null || true; rm -f "$endpoint_file"' EXIT
for _ in $(seq 100); do [ -s "$endpoint_file" ] && break; sleep 0.1; done
export HF_ENDPOINT="$(cat "$endpoint_file")" HF_HOME="$root/.models/hf-home"
target/debug/lantern run guests/target/wasm32-wasip2/release/semantic_search.wasm \
  --allow-model sentence-transformers/all-MiniLM-L6-v2 \
  --dir "$root/examples::/examples" \
  -- --docs /examples/documents.txt "$query"
