#!/usr/bin/env bash
# Builds the Python plugins (guests/python/NAME/app.py -> guests/target/python/NAME.wasm)
# with componentize-py, against the same wit/ world as the Rust plugins. componentize-py
# comes from PyPI at a pinned version into .venv-plugins/ (a pip --target folder rather
# than a venv, because a fresh Debian/Ubuntu has pip but often not python3-venv).
# A plugin is rebuilt only when its inputs changed: its own files, the Python SDK
# (guests/python/sdk), wit/, or the componentize-py version.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
version=0.25.1
tool="$root/.venv-plugins"
out="$root/guests/target/python"

installed() {
  PYTHONPATH="$tool" python3 -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null || true
}

if [ "$(installed)" != "$version" ]; then
  echo "python-plugins: installing componentize-py $version from PyPI" >&2
  rm -rf "$tool.partial"
  # Binary wheels only: building componentize-py from source needs a Rust toolchain and
  # minutes; a platform without a wheel should fail here, plainly.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    --target "$tool.partial" "componentize-py==$version"
  rm -rf "$tool"
  mv "$tool.partial" "$tool"
fi

componentize_py() {
  PYTHONPATH="$tool" python3 -c \
    'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "$@"
}

# inputs_hash DIR: one hash over the tool version and every input file's path and content
# (not the __pycache__ files componentize-py leaves next to the sources).
inputs_hash() {
  {
    echo "componentize-py $version"
    find wit guests/python/sdk "$1" -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

mkdir -p "$out"
for app in guests/python/*/app.py; do
  dir="$(dirname "$app")"
  name="$(basename "$dir")"
  [ "$name" = sdk ] && continue
  hash="$(inputs_hash "$dir")"
  if [ -f "$out/$name.wasm" ] && [ "$(cat "$out/$name.inputs" 2>/dev/null)" = "$hash" ]; then
    continue
  fi
  echo "python-plugins: building $out/$name.wasm" >&2
  componentize_py --quiet -d wit -w lantern:ai/pipeline componentize app \
    -p "$dir" -p guests/python/sdk -o "$out/$name.wasm.partial"
  mv "$out/$name.wasm.partial" "$out/$name.wasm"
  echo "$hash" > "$out/$name.inputs"
done
