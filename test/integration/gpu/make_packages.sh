#!/usr/bin/env bash
# Builds, on the build machine (LLVM/MLIR), the kernel packages that
# bench/gpu_suite.py checks and times on the GPU machine:
#   build/gpu-packages/examples/NAME.attnpkg  every example the GPU backend
#                                             compiles (sm_90a, D = 128, bf16)
#   build/gpu-packages/suite/NAME.attnpkg     the benchmark suite
#   build/gpu-packages/unsupported.txt        examples it rejects, and why
#   build/gpu-packages/examples-grad/NAME.attnpkg  the adjoint kernel NAME_grad
#                                             of every example (attnc compile
#                                             --grad): forward recomputed, then
#                                             the backward; dQ, dK, dV, ...
#   build/gpu-packages/suite-grad/NAME.attnpkg     the suite's adjoints
#   build/gpu-packages/unsupported-grad.txt   adjoints it rejects, and why
#                                             (suite ones as "suite NAME: ...")
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
mkdir -p "$OUT/examples" "$OUT/suite" "$OUT/examples-grad" "$OUT/suite-grad"
: > "$OUT/unsupported.txt"
: > "$OUT/unsupported-grad.txt"

# compile SPEC OUTPUT [OPTION...]: bf16 whatever the spec declares for Q
# (specs declared bf16 or f16 keep their own types, so f32 side inputs such
# as ALiBi slopes stay f32); extra options (--grad) go to attnc compile.
compile() {
  local spec=$1 out=$2 dtype=()
  shift 2
  grep -qE '^\s*in\s+Q:\s*b?f16' "$spec" || dtype=(--dtype bf16)
  local shape=D=128
  grep -qE '^\s*dims .*\bE\b' "$spec" && shape=D=128,E=128
  grep -qE '^\s*dims .*\bD *= *[0-9]' "$spec" && shape=
  "$ATTNC" compile "$spec" --target "$TARGET" ${shape:+--shape $shape} \
    "${dtype[@]}" "$@" -o "$out"
}

# The first error line of a failed compile (else its first line: option
# parsing errors say "Unknown command line argument").
first_error() {
  local line
  line=$(echo "$1" | grep -m1 error || true)
  echo "${line:-$(echo "$1" | head -n1)}"
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

# The adjoint kernels (attnc compile --grad: NAME_grad, inputs as the forward
# then dO, outputs dQ, dK, dV, ...) of every example and of the suite, with
# the same types and shapes as the forward packages. A spec whose adjoint
# does not compile is recorded in unsupported-grad.txt, suite ones too (the
# forward packages above are built whatever happens here).
for spec in "$ROOT"/examples/*.attn "$ROOT"/test/integration/gpu/Inputs/*.attn; do
  name=$(basename "$spec" .attn)
  if msg=$(compile "$spec" "$OUT/examples-grad/$name.attnpkg" --grad 2>&1); then
    echo "ok-grad      $name"
  else
    rm -f "$OUT/examples-grad/$name.attnpkg"
    echo "unsupported  $name (grad): $(first_error "$msg")"
    echo "$name: $(first_error "$msg")" >> "$OUT/unsupported-grad.txt"
  fi
done

# suite_grad VARIANT EXAMPLE [OPTION...]
suite_grad() {
  local msg
  if msg=$(compile "$ROOT/examples/$2.attn" "$OUT/suite-grad/$1.attnpkg" --grad "${@:3}" 2>&1); then
    echo "suite-grad   $1 <- $2"
  else
    rm -f "$OUT/suite-grad/$1.attnpkg"
    echo "unsupported  suite $1 (grad): $(first_error "$msg")"
    echo "suite $1: $(first_error "$msg")" >> "$OUT/unsupported-grad.txt"
  fi
}
suite_grad full bidirectional
suite_grad causal causal
suite_grad window1024 sliding_window
suite_grad sink4+window1024 sinks_fixed
# As the forward suite and FlexAttention's timing run it: fixed slopes, the
# gradients of Q, K and V.
suite_grad alibi-causal alibi --grad-constant Slopes
suite_grad softcap30-causal softcap
suite_grad document-causal document_mask
suite_grad gqa32-8-causal gqa
