#!/usr/bin/env bash
# Builds attnc._launcher (the native launch path of GPU kernels, see
# frontends/python/src/Launcher.cpp) into frontends/python/attnc/ for the
# python3 on PATH, for a machine that runs the Python package from the source
# tree with only the runtime built (PYTHONPATH=frontends/python). It needs a
# C++17 compiler, Python's headers and the runtime's C header, nothing else. The main build and
# `pip install ./frontends/python` build it themselves.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
read -r INCLUDE SUFFIX < <("$PYTHON" -c 'import sysconfig as s; print(s.get_paths()["include"], s.get_config_var("EXT_SUFFIX"))')
${CXX:-c++} -O2 -std=c++17 -shared -fPIC -fvisibility=hidden -I"$INCLUDE" \
  -I"$ROOT/runtime/include" \
  "$ROOT/frontends/python/src/Launcher.cpp" \
  -o "$ROOT/frontends/python/attnc/_launcher$SUFFIX"
echo "built frontends/python/attnc/_launcher$SUFFIX"
