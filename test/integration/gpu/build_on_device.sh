#!/usr/bin/env bash
# Builds the attnc runtime and its launcher on the GPU machine (CUDA 13, g++,
# cmake; no LLVM/MLIR needed) and runs the GPU integration checks:
#   1. the hand-written vadd2d package: launch, compare with numpy, time it;
#   2. a package with broken PTX: the driver's JIT log must reach the error;
#   3. every packages/NAME.attnpkg next to this script, launched with the
#      arguments in packages/NAME.args (one line of attnc-launch options),
#      inputs and outputs written to $RESULTS/NAME/*.npy for checking on the
#      build machine (same --seed gives the same inputs everywhere).
# Usage (from the repository root): test/integration/gpu/build_on_device.sh
# Environment: BUILD (build dir, default /tmp/attnc-build-rt), RESULTS (logs
# and .npy files, default /tmp/attnc-results), JOBS (default 8).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
BUILD=${BUILD:-/tmp/attnc-build-rt}
RESULTS=${RESULTS:-/tmp/attnc-results}
JOBS=${JOBS:-8}
mkdir -p "$RESULTS"
FAILS=0
step() { echo; echo "=== $*"; }
check() { if "$@"; then echo "PASS: $*"; else echo "FAIL: $*"; FAILS=$((FAILS + 1)); fi; }

step "configure + build (runtime only)"
cmake -S "$ROOT/runtime" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DATTN_RUNTIME_TESTS=ON > "$RESULTS/configure.log" 2>&1 || { cat "$RESULTS/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$JOBS" > "$RESULTS/build.log" 2>&1 || { tail -50 "$RESULTS/build.log"; exit 1; }
LAUNCH=$BUILD/bin/attnc-launch
PACK=$BUILD/bin/attnc-pack
nvidia-smi -L 2>/dev/null || true
"$LAUNCH" --devices

if [ -x "$BUILD/bin/attn-runtime-tests" ]; then
  step "runtime unit tests (GTest found)"
  check "$BUILD/bin/attn-runtime-tests" --gtest_brief=1
  check "$BUILD/bin/attn-runtime-fakecuda-tests" --gtest_brief=1
fi

step "vadd2d: C = A + alpha * B on the GPU"
V=$RESULTS/vadd2d
mkdir -p "$V"
check "$LAUNCH" "$HERE/Inputs/vadd2d.attnpkg" --dim R=37,N=1000 --param alpha=0.5 \
  --seed 3 --save-inputs --out-dir "$V"
check python3 - "$V" <<'PY'
import sys, numpy as np
d = sys.argv[1]
a, b, c = (np.load(f"{d}/{n}.npy") for n in "ABC")
ref = a.astype(np.float64) + 0.5 * b.astype(np.float64)
err = np.linalg.norm(c - ref) / np.linalg.norm(ref)
print(f"vadd2d shape {c.shape} rel err {err:.3e}")
sys.exit(0 if np.isfinite(c).all() and err < 1e-6 else 1)
PY
# Same seed, same inputs: the generator is reproducible across runs.
check "$LAUNCH" "$HERE/Inputs/vadd2d.attnpkg" --dim R=37,N=1000 --param alpha=0.5 \
  --seed 3 --save-inputs --out-dir "$RESULTS/vadd2d-again"
check cmp "$V/A.npy" "$RESULTS/vadd2d-again/A.npy"
# Inputs read back from .npy give the same output.
check "$LAUNCH" "$HERE/Inputs/vadd2d.attnpkg" --dim R=37,N=1000 --param alpha=0.5 \
  --input A="$V/A.npy" --input B="$V/B.npy" --out-dir "$RESULTS/vadd2d-npy"
check cmp "$V/C.npy" "$RESULTS/vadd2d-npy/C.npy"
step "vadd2d timing, 1024 x 65536 f32 (768 MiB moved per launch)"
check "$LAUNCH" "$HERE/Inputs/vadd2d.attnpkg" --dim R=1024,N=65536 --warmup 5 --repeat 20

step "broken PTX: the JIT log must be in the error"
sed 's/fma.rn.f32/fma.bogus.f32/' "$HERE/Inputs/vadd2d.ptx" > "$RESULTS/bad.ptx"
"$PACK" --manifest "$HERE/Inputs/vadd2d.json" --ptx vadd="$RESULTS/bad.ptx" -o "$RESULTS/bad.attnpkg"
"$LAUNCH" "$RESULTS/bad.attnpkg" --dim R=2,N=10 > "$RESULTS/bad.log" 2>&1
cat "$RESULTS/bad.log"
check grep -q "JIT log" "$RESULTS/bad.log"

step "argument errors on the GPU machine"
"$LAUNCH" "$HERE/Inputs/vadd2d.attnpkg" --dim R=2 2>&1 | tee "$RESULTS/arg.log"
check grep -q "dim 'N' is symbolic" "$RESULTS/arg.log"

shopt -s nullglob
for pkg in "$HERE"/packages/*.attnpkg; do
  name=$(basename "$pkg" .attnpkg)
  step "package $name"
  args=""
  [ -f "$HERE/packages/$name.args" ] && args=$(cat "$HERE/packages/$name.args")
  mkdir -p "$RESULTS/$name"
  "$LAUNCH" "$pkg" --info
  # shellcheck disable=SC2086
  check "$LAUNCH" "$pkg" $args --save-inputs --out-dir "$RESULTS/$name"
done

echo
if [ "$FAILS" -eq 0 ]; then echo "ALL GPU CHECKS PASSED"; else echo "$FAILS GPU CHECK(S) FAILED"; fi
exit "$FAILS"
