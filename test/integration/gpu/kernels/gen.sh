#!/bin/sh
# Regenerates the PTX and manifests of this directory from the *.mlir
# inputs with attn-gpu-gen (tools/attn-gpu-gen), then checks each
# with ptxas when it is available. Usage: ./gen.sh [BUILD_DIR]
set -e
cd "$(dirname "$0")"
GEN="${1:-../../../../build}/bin/attn-gpu-gen"
PTXAS="$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)"
gen() { # stem input [tile options]
  stem=$1 input=$2
  shift 2
  "$GEN" "$input" --chip=sm_90a "$@" -o "$stem.ptx" --manifest="$stem.json"
  "$GEN" "$input" --chip=sm_80 "$@" -o "$stem.sm_80.ptx" \
    --manifest="$stem.sm_80.json"
}
gen causal causal.mlir
gen causal_bm64 causal.mlir --block-m=64 --block-n=64 --warp-rows=16
gen causal_bn32 causal.mlir --block-n=32
gen plain plain.mlir
gen window_sink window_sink.mlir
gen softcap softcap.mlir
gen gqa gqa.mlir
if [ -x "$PTXAS" ]; then
  for f in *.ptx; do
    case "$f" in *.sm_80.ptx) arch=sm_80 ;; *) arch=sm_90a ;; esac
    printf '%-24s %-7s ' "$f" "$arch"
    "$PTXAS" -arch=$arch -v "$f" -o /dev/null 2>&1 |
      grep -E 'registers|spill' | tr -s ' \n' ' '
    echo
  done
fi
