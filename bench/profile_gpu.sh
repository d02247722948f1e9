#!/usr/bin/env bash
# Profiles attnc's kernels with Nsight Compute on the GPU machine, one launch
# each as bench/gpu_suite.py times it (B·L = 16k, H = 16, D = 128, GQA 32/8,
# the variant's params and side inputs), and
# prints what limits them: tensor-pipe (mma.sync and wgmma) and issue-slot
# utilisation, achieved occupancy and its register limit, local-memory
# (spill) traffic, the L2 hit rate and DRAM reads, how evenly the SMs were
# busy (cycles active: min, mean, max over SMs), and the warp stall reasons.
# Forward: the Hopper kernel (attn_fwd_wgmma) of each variant and length,
# with ONE_CTA_PER_TILE=1 also launched one CTA per tile (its manifest
# without "persistent", bench/gpu_ab.py's DIR:one-cta-per-tile); decode: the
# split-key kernel of GQA 32/8 at the suite's decode shape (1 query, 32k
# keys, B = 8); backward: the kernels of each adjoint package in BACKWARD
# (on sm_90a the fused dK/dV/dQ one).
# Usage: bench/profile_gpu.sh LAUNCH PACKAGES OUT_DIR
#   LAUNCH    attnc-launch built on that machine (runtime/, cmake)
#   PACKAGES  build/gpu-packages (test/integration/gpu/make_packages.sh)
#   OUT_DIR   where the full ncu reports (.txt) go
# Environment (defaults in brackets): VARIANTS [causal,full,softcap30-causal,
# document-causal,gqa32-8-causal], LENGTHS [16384], ONE_CTA_PER_TILE [1],
# DECODE [1], BACKWARD [causal] (adjoint variants at L = 16k; empty: none),
# SOURCE [0] (1: also each kernel's per-instruction page, OUT_DIR/source_NAME.csv.gz,
# summarised by bench/ncu_source_summary.py; a full ncu set, slower).
set -euo pipefail
launch=$1 packages=$2 out=$3
root=$(cd "$(dirname "$0")/.." && pwd)
variants=${VARIANTS:-causal,full,softcap30-causal,document-causal,gqa32-8-causal}
lengths=${LENGTHS:-16384}
backward=${BACKWARD-causal}
mkdir -p "$out"

metrics=(
  gpu__time_duration.sum
  sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
  sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active
  smsp__issue_active.avg.pct_of_peak_sustained_active
  sm__warps_active.avg.pct_of_peak_sustained_active
  launch__registers_per_thread
  launch__occupancy_limit_registers
  launch__occupancy_limit_shared_mem
  l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum
  l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum
  lts__t_sector_hit_rate.pct
  dram__bytes_read.sum
  dram__throughput.avg.pct_of_peak_sustained_elapsed
  sm__cycles_active.min
  sm__cycles_active.avg
  sm__cycles_active.max
)
# Warp stall reasons, in cycles per issued instruction.
for reason in long_scoreboard short_scoreboard mio_throttle math_pipe_throttle \
    wait barrier not_selected selected dispatch_stall lg_throttle no_instruction; do
  metrics+=("smsp__average_warps_issue_stalled_${reason}_per_issue_active.ratio")
done
# profile NAME KERNEL_REGEX PACKAGE VARIANT L: one launch of PACKAGE at the
# suite's timing shape of VARIANT at length L (or L = decode), with the
# suite's params and side inputs (bench/gpu_suite.py --launch-args).
profile() {
  local name=$1 kernel=$2 package=$3 variant=$4 L=$5 args
  mapfile -t args < <(python3 "$root/bench/gpu_suite.py" --launch-args \
    "$variant" "$L" "$package" "$out/inputs-$name")
  ncu -k regex:"$kernel" -c 1 --section WarpStateStats \
    --metrics "$(IFS=,; echo "${metrics[*]}")" \
    "$launch" "$package" "${args[@]}" \
    > "$out/ncu_$name.txt" 2>&1 || { tail -20 "$out/ncu_$name.txt"; return 0; }
  echo "== $name"
  grep -E "$(IFS='|'; echo "${metrics[*]}")|Warp Cycles Per Issued" \
    "$out/ncu_$name.txt" | sed 's/^ *//' | tr -s ' '
  # Per-instruction counts and stall samples (bench/ncu_source_summary.py).
  if [ "${SOURCE:-0}" = 1 ]; then
    ncu -k regex:"$kernel" -c 1 --set full --import-source no \
      -o "$out/report_$name" -f "$launch" "$package" "${args[@]}" \
      > "$out/ncu_source_$name.log" 2>&1 || { tail -5 "$out/ncu_source_$name.log"; return 0; }
    ncu -i "$out/report_$name.ncu-rep" --page source --csv --print-source sass \
      | gzip > "$out/source_$name.csv.gz"
    rm -f "$out/report_$name.ncu-rep"
    python3 "$root/bench/ncu_source_summary.py" --opcodes 12 --top 6 \
      "$out/source_$name.csv.gz"
  fi
}
forward='^attn_fwd_wgmma$'
dirs=("$packages/suite")
if [ "${ONE_CTA_PER_TILE:-1}" = 1 ]; then
  python3 - "$packages/suite" "$out/one-cta-per-tile" <<EOF
import os, sys
sys.path.insert(0, "$root/bench")
import gpu_ab
os.makedirs(sys.argv[2], exist_ok=True)
for name in os.listdir(sys.argv[1]):
    gpu_ab.without_persistence(os.path.join(sys.argv[1], name),
                               os.path.join(sys.argv[2], name))
EOF
  dirs+=("$out/one-cta-per-tile")
fi
for dir in "${dirs[@]}"; do
  tag=$([ "$dir" = "$packages/suite" ] || echo "-one-cta-per-tile")
  for variant in ${variants//,/ }; do
    for L in ${lengths//,/ }; do
      profile "$variant-$L$tag" "$forward" "$dir/$variant.attnpkg" \
        "$variant" "$L"
    done
  done
done
if [ "${DECODE:-1}" = 1 ]; then
  profile decode '^attn_fwd_decode$' \
    "$packages/suite/gqa32-8-causal.attnpkg" gqa32-8-causal decode
fi
# The backward: on sm_90a one kernel computes dK, dV and dQ (a dQ kernel
# exists only in --deterministic packages); its L2 reductions are dQ's shares.
metrics+=(lts__t_sectors_op_red.sum lts__throughput.avg.pct_of_peak_sustained_elapsed)
for variant in ${backward//,/ }; do
  for kernel in dkdv dq; do
    if grep -q "\"attn_bwd_$kernel\"" "$packages/suite-grad/$variant.attnpkg"; then
      profile "$variant-bwd-$kernel" "^attn_bwd_$kernel\$" \
        "$packages/suite-grad/$variant.attnpkg" "$variant" 16384
    fi
  done
done
