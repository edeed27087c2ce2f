#!/usr/bin/env bash
# Build pc_ovseg._native in place (for working from a source tree: PYTHONPATH=$PWD pytest).
# `pip install .` does the same through scikit-build-core; this is the fast edit-compile loop.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build build/dev -j2
cp build/dev/_native*.so pc_ovseg/
echo "built $(ls pc_ovseg/_native*.so)"
