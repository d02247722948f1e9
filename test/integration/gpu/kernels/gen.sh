#!/bin/sh
# Regenerates the PTX and manifests of this directory from the *.mlir
# inputs with attn-gpu-gen (tools/attn-gpu-gen), then checks each
# with ptxas when it is available. Usage: ./gen.sh [BUILD_DIR]
set -e
cd "$(dirname "$0")"
GEN="${1:-../../../../build}/bin/attn-gpu-gen"
PTXAS="$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)"
gen() { # stem input block-m
  "$GEN" "$2" --chip=sm_90a --block-m="$3" -o "$1.ptx" --manifest="$1.json"
  "$GEN" "$2" --chip=sm_80 --block-m="$3" -o "$1.sm_80.ptx" \
    --manifest="$1.sm_80.json"
}
gen causal causal.mlir 64
gen causal_bm128 causal.mlir 128
gen plain plain.mlir 64
gen window_sink window_sink.mlir 64
gen softcap softcap.mlir 64
gen gqa gqa.mlir 64
if [ -x "$PTXAS" ]; then
  for f in *.ptx; do
    case "$f" in *.sm_80.ptx) arch=sm_80 ;; *) arch=sm_90a ;; esac
    printf '%-24s %-7s ' "$f" "$arch"
    "$PTXAS" -arch=$arch -v "$f" -o /dev/null 2>&1 |
      grep -E 'registers|spill' | tr -s ' \n' ' '
    echo
  done
fi
