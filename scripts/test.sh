#!/usr/bin/env bash
# Runs every test: unit tests (gtest), lit tests, the Python package's tests,
# a bounded fuzzing run of the front end, a bounded differential fuzzing run
# of the whole compiler, and the unit tests again under ASan + UBSan.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${ATTN_BUILD_DIR:-$root/build}"
fuzz_seconds="${ATTN_FUZZ_SECONDS:-60}"
spec_fuzz_seconds="${ATTN_SPEC_FUZZ_SECONDS:-120}"
jobs="$(nproc)"

echo "== unit tests"
ctest --test-dir "$build" --output-on-failure -j "$jobs"

echo "== lit tests"
/usr/lib/llvm-22/bin/lit -sv "$build/test"

echo "== python tests"
PYTHONPATH="$build/python" /usr/bin/python3 -m pytest -q -p no:cacheprovider "$root/test/python"

echo "== fuzzing the front end for ${fuzz_seconds}s"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp "$root"/examples/*.attn "$corpus"/
"$build/bin/attn-fuzz-dsl" -max_total_time="$fuzz_seconds" -timeout=10 \
  -rss_limit_mb=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -n 15

echo "== differential fuzzing for ${spec_fuzz_seconds}s"
# Random valid specs, fused and unfused CPU runs against the reference, and
# GPU packages assembled by ptxas where it is installed. The seed comes from
# the clock unless ATTN_SPEC_FUZZ_SEED is set; the fuzzer prints it, and
# failing specs go to $build/spec-fuzz-failures.
spec_fuzz_seed="${ATTN_SPEC_FUZZ_SEED:-$(($(date +%s) % 2147483648))}"
echo "seed ${spec_fuzz_seed} (ATTN_SPEC_FUZZ_SEED=${spec_fuzz_seed} repeats this run)"
/usr/bin/python3 "$root/test/fuzz/spec_fuzzer.py" --attnc "$build/bin/attnc" \
  --seconds "$spec_fuzz_seconds" --seed "$spec_fuzz_seed" \
  --out "$build/spec-fuzz-failures"

echo "== unit tests under ASan + UBSan"
asan="${build}-asan"
ATTN_BUILD_DIR="$asan" "$root/scripts/build.sh" -DATTN_ENABLE_SANITIZERS=ON \
  -DATTN_ENABLE_FUZZER=OFF -DATTN_ENABLE_PYTHON=OFF >"$asan.log" 2>&1 ||
  { tail -n 40 "$asan.log"; echo "the sanitizer build failed (log: $asan.log)"; exit 1; }
# LLVM's headers poison and unpoison allocator slabs when compiled with ASan,
# but the LLVM/MLIR libraries they pair with are not instrumented; that
# mismatch reports false use-after-poison errors, so manual poisoning is off.
ASAN_OPTIONS=detect_leaks=1:allow_user_poisoning=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir "$asan" --output-on-failure -j "$jobs"
echo "== all tests passed"
