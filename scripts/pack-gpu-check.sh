#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has a CUDA driver but no
# Rust and no network: the `cuda` build's GPU test and benchmark binaries (stripped), the
# probe plugin, the two real test models, the fixtures the tests read, and gpu-check.sh,
# laid out as in the source tree. Called by `scripts/build-cuda.sh --pack DIR [--with-cuda-libs]`
# after the build, with the same environment (CARGO_TARGET_DIR, CUDA_HOME).
#
#   DIR/                  run DIR/gpu-check.sh there
#   DIR.tar.xz            the same, compressed, to carry
#
# --with-cuda-libs also copies the CUDA 13 runtime libraries the binaries link
# (cudart, cuBLAS, cuBLASLt, cuRAND, NVRTC: about 800 MB) into DIR/lib, for a machine
# that has the driver but no toolkit or PyTorch install providing them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
pack="${1:?usage: pack-gpu-check.sh DIR [--with-cuda-libs]}"
with_libs="${2:-}"
mkdir -p "$pack"
pack="$(cd "$pack" && pwd)"
rm -rf "$pack/bin" "$pack/lib" "$pack/guests" "$pack/tests" "$pack/.models"
mkdir -p "$pack/bin" "$pack/guests/target/wasm32-wasip2/release" "$pack/tests/fixtures" "$pack/.models"

# The executables of the cuda build, from cargo's own record of what it built (a no-op
# build after build-cuda.sh; only the four packed targets are asked for).
cargo build --release --locked -p lantern --features cuda --bin lantern --test gpu --bench embeddings --bench generation \
  --message-format=json 2>/dev/null |
  python3 -c '
import json, sys, shutil
wanted = {("test", "gpu"), ("bench", "embeddings"), ("bench", "generation"), ("bin", "lantern")}
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    target = message["target"]
    for kind in target["kind"]:
        if (kind, target["name"]) in wanted:
            shutil.copy(message["executable"], sys.argv[1] + "/" + target["name"])
' "$pack/bin"
for name in gpu embeddings generation lantern; do
  [[ -x "$pack/bin/$name" ]] || { echo "the cuda build made no $name executable" >&2; exit 1; }
  strip "$pack/bin/$name"
done

if [[ ! -f guests/target/wasm32-wasip2/release/probe.wasm ]]; then
  (cd guests && cargo build --release --locked --quiet)
fi
cp guests/target/wasm32-wasip2/release/probe.wasm "$pack/guests/target/wasm32-wasip2/release/"
cp tests/fixtures/minilm_reference.json tests/fixtures/smollm2_reference.json "$pack/tests/fixtures/"
models="${LANTERN_MODELS_DIR:-$root/.models}"
cp -r "$models/all-MiniLM-L6-v2" "$models/SmolLM2-135M-Instruct-GGUF" "$pack/.models/"
cp scripts/gpu-check.sh "$pack/"

if [[ "$with_libs" == "--with-cuda-libs" ]]; then
  mkdir -p "$pack/lib"
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libnvrtc-builtins.so.13.0; do
    cp "${CUDA_HOME:?CUDA_HOME is set by build-cuda.sh}/lib/$lib" "$pack/lib/"
  done
fi

tar -C "$(dirname "$pack")" -cf - "$(basename "$pack")" | xz -T0 -6 > "$pack.tar.xz"
du -sh "$pack" "$pack.tar.xz"
ls -la "$pack/bin"
