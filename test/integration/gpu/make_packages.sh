#!/usr/bin/env bash
# Builds, on the build machine (LLVM/MLIR), the kernel packages that
# bench/gpu_suite.py checks and times on the GPU machine:
#   build/gpu-packages/examples/NAME.attnpkg  every example the GPU backend
#                                             compiles (sm_90a, D = 128, bf16)
#   build/gpu-packages/suite/NAME.attnpkg     the benchmark suite
#   build/gpu-packages/unsupported.txt        examples it rejects, and why
# Packages are size-independent (B, H, M, N are bound at launch), so one
# package serves both the small correctness sizes and L = 16k.
# Usage (from anywhere): test/integration/gpu/make_packages.sh [BUILD_DIR]
# (default BUILD_DIR: build under the repository root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BUILD=${1:-$ROOT/build}
ATTNC=$BUILD/bin/attnc
OUT=$ROOT/build/gpu-packages
TARGET=${TARGET:-sm_90a}
rm -rf "$OUT"
mkdir -p "$OUT/examples" "$OUT/suite"
: > "$OUT/unsupported.txt"

# compile SPEC OUTPUT: bf16 whatever the spec declares for Q (specs declared
# bf16 or f16 keep their own types, so f32 side inputs such as ALiBi slopes
# stay f32).
compile() {
  local spec=$1 out=$2 dtype=()
  grep -qE '^\s*in\s+Q:\s*b?f16' "$spec" || dtype=(--dtype bf16)
  local shape=D=128
  grep -qE '^\s*dims .*\bE\b' "$spec" && shape=D=128,E=128
  grep -qE '^\s*dims .*\bD *= *[0-9]' "$spec" && shape=
  "$ATTNC" compile "$spec" --target "$TARGET" ${shape:+--shape $shape} \
    "${dtype[@]}" -o "$out"
}

# Every example, and the GPU checks' own specs (numerically hard rows).
for spec in "$ROOT"/examples/*.attn "$ROOT"/test/integration/gpu/Inputs/*.attn; do
  name=$(basename "$spec" .attn)
  if msg=$(compile "$spec" "$OUT/examples/$name.attnpkg" 2>&1); then
    echo "ok           $name"
  else
    echo "unsupported  $name: $(echo "$msg" | grep -m1 error)"
    echo "$name: $(echo "$msg" | grep -m1 error)" >> "$OUT/unsupported.txt"
  fi
done

# The suite: variant name -> spec (window and cap are launch-time params).
suite() { compile "$ROOT/examples/$2.attn" "$OUT/suite/$1.attnpkg"; echo "suite        $1 <- $2"; }
suite full bidirectional
suite causal causal
suite window1024 sliding_window
suite sink4+window1024 sinks_fixed
suite alibi-causal alibi
suite softcap30-causal softcap
suite document-causal document_mask
suite gqa32-8-causal gqa
