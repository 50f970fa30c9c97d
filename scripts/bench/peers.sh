#!/usr/bin/env bash
# Installs the benchmarks' peers into a bench-only venv (.venv-peers, or $PEERS_VENV):
# PyTorch + sentence-transformers (host/benches/embeddings.rs) and llama-cpp-python compiled
# for this CPU with -DGGML_NATIVE=ON (host/benches/generation.rs). Nothing in the test suite
# needs it; the benchmarks find it at .venv-peers/bin/python (or $PEERS_PYTHON /
# $LLAMACPP_PYTHON) and say so in their tables when it is missing.
# Takes a few minutes (llama.cpp compiles from source) and ~4 GB (PyPI's torch wheel).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${PEERS_VENV:-$root/.venv-peers}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch sentence-transformers cmake ninja
# Built here, not a prebuilt wheel: GGML_NATIVE compiles for this CPU's instruction set
# (AVX-512, VNNI), as a user building llama.cpp for speed would.
CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==0.3.36"
"$venv/bin/pip" install --quiet "llama-cpp-python==0.3.36"
"$venv/bin/python" - <<'PY'
import llama_cpp, sentence_transformers, torch
print("peers ready:", "torch", torch.__version__, "| sentence-transformers", sentence_transformers.__version__,
      "| llama-cpp-python", llama_cpp.__version__)
print(llama_cpp.llama_print_system_info().decode())
PY
