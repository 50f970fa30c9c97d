#!/usr/bin/env bash
# The image workflow on TINY RANDOM CHECKPOINTS (no registry ships SD 3.5, CLIP or LLaVA
# weights): the image-workflow plugin generates an image with Stable Diffusion 3.5 Large
# Turbo's tiny stand-in, scores it against captions with CLIP and asks LLaVA to describe it,
# all downloaded through Lantern's hub from a local HF-protocol mirror. The picture is
# noise-like and the description is random tokens: the tiny models are random; the path
# (download, load, steps, PNG, scores, streamed answer, report) is the real one.
#   scripts/image-demo.sh ["prompt"] [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
prompt="${1:-a red cat on the dog}"
out="${2:-$root/.models/image-demo-out}"
scripts/setup.sh
cargo build --locked --quiet --release -p lantern -p hubmirror
repos="$root/.models/tiny-image-repos"
if [ ! -f "$repos.complete" ]; then
  rm -rf "$repos" && mkdir -p "$repos"
  LANTERN_TINY_REPOS="$repos" cargo test --locked --quiet --release -p lantern --test images -- --ignored \
    write_tiny_image_repos --nocapture | grep '^REPO ' | sed 's/^REPO //' > "$repos/list"
  touch "$repos.complete"
fi
mirror_args=()
while IFS= read -r line; do mirror_args+=(--repo "$line"); done < "$repos/list"
endpoint_file="$(mktemp)"
target/release/hubmirror "${mirror_args[@]}" --endpoint-file "$endpoint_file" >/dev/null &
mirror=$!
trap 'kill $mirror 2>/dev/null || true; rm -f "$endpoint_file"' EXIT
for _ in $(seq 100); do [ -s "$endpoint_file" ] && break; sleep 0.1; done
export HF_ENDPOINT="$(cat "$endpoint_file")" HF_HOME="$root/.models/hf-home"
mkdir -p "$out"
target/release/lantern run guests/target/wasm32-wasip2/release/image_workflow.wasm \
  --dir-rw "$out::/out" \
  --allow-model stabilityai/stable-diffusion-3.5-large-turbo \
  --allow-model openai/clip-vit-base-patch32 \
  --allow-model llava-hf/llava-1.5-7b-hf \
  -- "$prompt" --alt "a bowl of fruit" --alt "a city at night" --size 128 --seed 7
echo "open $out/image.png and $out/report.json"
