#!/usr/bin/env bash
# Configures and builds attnc into build/ (or $ATTN_BUILD_DIR).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${ATTN_BUILD_DIR:-$root/build}"
llvm=/usr/lib/llvm-22

# Debian's interpreter: it has numpy, pytest and pybind11, which a python3
# earlier on PATH (pyenv, a venv) may not.
if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR="$llvm/lib/cmake/mlir" \
    -DLLVM_EXTERNAL_LIT="$llvm/bin/lit" \
    -DCMAKE_C_COMPILER="$llvm/bin/clang" \
    -DCMAKE_CXX_COMPILER="$llvm/bin/clang++" \
    -DPython3_EXECUTABLE=/usr/bin/python3 \
    "$@" >/dev/null
fi
ninja -C "$build" all
