#!/usr/bin/env bash
# Builds the `cuda` feature (library, CLI, tests and benches) on a machine with no GPU and
# no system CUDA: the CUDA 13.0 compiler, headers and libraries come from NVIDIA's PyPI
# wheels, installed into a local venv (.cuda/venv, gitignored).
#
#   scripts/build-cuda.sh              build (release, --features cuda)
#   scripts/build-cuda.sh --pack DIR [--with-cuda-libs]
#                                      build, then pack what scripts/gpu-check.sh needs into DIR
#                                      and DIR.tar.xz (see scripts/pack-gpu-check.sh)
#
# Settings (environment):
#   CUDA_COMPUTE_CAP  GPU architecture the kernels are compiled for (default 90: H100/H200).
#                     candle compiles its kernels to PTX for this one architecture, so a
#                     build for 90 runs on sm_90 and newer only.
#   CARGO_TARGET_DIR  as usual (default target/).
#   PYTHON            the Python that creates the venv (default python3).
#
# The versions are pinned to one CUDA release (13.0 update 2) so the headers nvcc sees
# match the nvcc that compiles them; pip would otherwise pull the newest crt/nvvm.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

pack_dir=""
pack_libs=""
if [[ "${1:-}" == "--pack" ]]; then
  pack_dir="${2:?--pack needs a folder}"
  pack_libs="${3:-}"
fi

wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
)
venv="$root/.cuda/venv"
stamp="$root/.cuda/installed"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${wheels[*]}" ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${wheels[@]}"
  echo "${wheels[*]}" > "$stamp"
fi
cuda_home="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"

# The wheels ship only versioned sonames (libcublas.so.13); the linker wants the
# unversioned names a toolkit install has.
for lib in cudart cublas cublasLt curand nvrtc; do
  versioned="$(cd "$cuda_home/lib" && ls "lib$lib.so."* | grep -v builtins | head -1)"
  ln -sf "$versioned" "$cuda_home/lib/lib$lib.so"
done
# libcuda.so belongs to the driver, which this machine lacks. candle links cudarc with
# `dynamic-linking`, so the link needs the driver's symbols: a stub exporting every
# driver function cudarc declares stands in for it (as the toolkit's lib/stubs does);
# at run time the real libcuda.so.1 of the GPU machine's driver is loaded instead.
# Every stub function returns CUDA_ERROR_NO_DEVICE (100), so with the stub on
# LD_LIBRARY_PATH the cuda binaries also start here and take their no-GPU paths.
stubs="$cuda_home/lib/stubs"
if [[ ! -f "$stubs/libcuda.so.1" ]]; then
  mkdir -p "$stubs"
  cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)"
  if [[ -z "$cudarc" ]]; then
    cargo fetch --locked --quiet
    cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)"
  fi
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys/mod.rs" | awk '{print "int " $4 "(void) { return 100; }"}' | sort -u \
    > "$stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
  ln -sf libcuda.so "$stubs/libcuda.so.1"
fi

export CUDA_HOME="$cuda_home"
export PATH="$cuda_home/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
echo "nvcc: $(nvcc --version | tail -2 | head -1); kernels for sm_$CUDA_COMPUTE_CAP"

started=$(date +%s)
cargo build --release --locked -p lantern --features cuda --bins --tests --benches
echo "cuda build took $(( $(date +%s) - started )) s"

if [[ -n "$pack_dir" ]]; then
  scripts/pack-gpu-check.sh "$pack_dir" $pack_libs
fi
