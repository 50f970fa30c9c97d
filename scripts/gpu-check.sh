#!/usr/bin/env bash
# Checks a `cuda` build on a GPU machine that has the NVIDIA driver but no Rust and no
# network. Runs from a pack made on the build machine:
#
#   build machine:  scripts/build-cuda.sh --pack /tmp/gpu-pack [--with-cuda-libs]
#   GPU machine:    tar xJf gpu-pack.tar.xz && gpu-pack/gpu-check.sh [OUT]
#
# The tests and benchmarks serve the packed models from a local HF-protocol mirror inside
# their own process (hubmirror on 127.0.0.1), so nothing is downloaded. Writes into OUT
# (default: OUT/ next to this script): nvidia-smi.txt, gpu-tests.txt, and the MiniLM and
# SmolLM2 benchmarks on the GPU and, for comparison, on the same machine's CPU.
# Exits non-zero when a GPU test fails or the binaries cannot start.
#
# The binaries link the CUDA 13 runtime libraries (libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13) and the driver's libcuda.so.1.
# They are looked for in the pack's lib/ (--with-cuda-libs), then $CUDA_LIBS, then a
# Python install's nvidia/cu13/lib (PyPI wheels or PyTorch), then the system paths.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/OUT}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

extra=()
[[ -d "$here/lib" ]] && extra+=("$here/lib")
[[ -n "${CUDA_LIBS:-}" ]] && extra+=("$CUDA_LIBS")
for python in python3 python; do
  if command -v "$python" >/dev/null; then
    dir="$("$python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)"
    [[ -n "$dir" && -d "$dir" ]] && extra+=("$dir")
    break
  fi
done
for dir in /usr/local/cuda/lib64 /usr/local/cuda-13.0/lib64 /usr/lib/x86_64-linux-gnu; do
  [[ -d "$dir" ]] && extra+=("$dir")
done
LD_LIBRARY_PATH="$(IFS=:; echo "${extra[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH

{ nvidia-smi || echo "nvidia-smi failed: is the NVIDIA driver installed?"; } > "$out/nvidia-smi.txt" 2>&1
missing="$(ldd "$here/bin/gpu" | grep 'not found' || true)"
if [[ -n "$missing" ]]; then
  echo "the binaries cannot start; missing libraries:" | tee "$out/gpu-tests.txt" >&2
  echo "$missing" | tee -a "$out/gpu-tests.txt" >&2
  echo "carry them with scripts/build-cuda.sh --pack DIR --with-cuda-libs, or set CUDA_LIBS to a folder holding them" >&2
  exit 1
fi

# The binaries read fixtures, guests and models from the pack (see tests/support/mod.rs).
export LANTERN_ROOT="$here" LANTERN_MODELS_DIR="$here/.models" RUST_BACKTRACE=1
export RUST_LOG="${RUST_LOG:-warn,lantern=info}"
cd "$here"

# One test at a time: each opens the device, and their timings stay apart.
"$here/bin/gpu" --test-threads=1 --nocapture 2>&1 | tee "$out/gpu-tests.txt"
status=${PIPESTATUS[0]}
if grep -q "^skipped" "$out/gpu-tests.txt"; then
  echo "GPU tests were skipped: no CUDA device answered (see $out/gpu-tests.txt)" >&2
  status=1
fi

for device in cuda cpu; do
  LANTERN_DEVICE=$device "$here/bin/embeddings" > "$out/bench-embeddings-$device.txt" 2>&1 ||
    echo "embeddings benchmark on $device failed (see $out/bench-embeddings-$device.txt)" >&2
  LANTERN_DEVICE=$device "$here/bin/generation" > "$out/bench-generation-$device.txt" 2>&1 ||
    echo "generation benchmark on $device failed (see $out/bench-generation-$device.txt)" >&2
done
echo "results in $out"
exit "$status"
