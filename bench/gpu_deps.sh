#!/usr/bin/env bash
# Build .gpudeps/: the pure-Python packages (and pydantic-core for the GPU machine's Python) that
# the GPU machine lacks but mgkd and the GPU tests import. That machine has torch and no registry;
# the folder travels with the working tree (carry it: it is git-ignored) and bench/gpu_verify.sh
# puts it first on PYTHONPATH. Versions are this venv's, so both machines run the same ones.
#
#     bash bench/gpu_deps.sh              # GPU machine's Python 3.11 (the default)
#     GPU_PYTHON=3.12 bash bench/gpu_deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=.venv/bin/pip
GPU_PYTHON=${GPU_PYTHON:-3.11}
PURE="pydantic annotated-types typing-extensions typing-inspection PyYAML pytest pluggy iniconfig
      packaging Pygments"

pinned() {  # "name==version" as installed in .venv
    "$PIP" show "$1" 2>/dev/null | awk -v n="$1" '/^Version:/ {print n "==" $2}'
}

specs=()
for name in $PURE; do
    spec=$(pinned "$name")
    [ -n "$spec" ] || { echo "gpu_deps.sh: $name is not installed in .venv; run make install" >&2; exit 2; }
    specs+=("$spec")
done
rm -rf .gpudeps
"$PIP" install -q --target .gpudeps --no-deps "${specs[@]}"
# Compiled: must match the GPU machine's Python, whatever this machine runs.
"$PIP" install -q --target .gpudeps --no-deps --only-binary=:all: --implementation cp \
    --python-version "$GPU_PYTHON" --platform manylinux2014_x86_64 "$(pinned pydantic-core)"
echo "gpu_deps.sh: .gpudeps ($(du -sh .gpudeps | cut -f1)) for Python $GPU_PYTHON: ${specs[*]} $(pinned pydantic-core)"
