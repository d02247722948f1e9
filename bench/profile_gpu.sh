#!/usr/bin/env bash
# Profiles attnc's kernels with Nsight Compute on the GPU machine, one launch
# each at L = 16k (B = 1, H = 16, D = 128, the suite's shapes), and prints
# what limits them: tensor-pipe (mma.sync and wgmma) and issue-slot
# utilisation, achieved occupancy and its register limit, local-memory
# (spill) traffic, the L2 hit rate and DRAM reads, how evenly the SMs were
# busy (cycles active: min, mean, max over SMs), and the warp stall reasons.
# Forward: the Hopper kernel (attn_fwd_wgmma) of causal, full, softcap,
# document-causal and GQA 32/8, each also launched one CTA per tile (its
# manifest without "persistent", bench/gpu_ab.py's DIR:one-cta-per-tile);
# backward: the kernels of causal's adjoint package (on sm_90a the fused
# dK/dV/dQ one).
# Usage: bench/profile_gpu.sh LAUNCH PACKAGES OUT_DIR
#   LAUNCH    attnc-launch built on that machine (runtime/, cmake)
#   PACKAGES  build/gpu-packages (test/integration/gpu/make_packages.sh)
#   OUT_DIR   where the full ncu reports (.txt) go
set -euo pipefail
launch=$1 packages=$2 out=$3
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"

# The suite's document ids for L = 16k (bench/gpu_suite.py).
python3 - "$out/doc16k.npy" <<EOF
import importlib.util, sys, numpy as np
spec = importlib.util.spec_from_file_location("suite", "$root/bench/gpu_suite.py")
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
np.save(sys.argv[1], suite.doc_ids(16384).numpy().astype(np.int32)[None, :])
EOF

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
  sm__cycles_active.min
  sm__cycles_active.avg
  sm__cycles_active.max
)
# Warp stall reasons, in cycles per issued instruction.
for reason in long_scoreboard short_scoreboard mio_throttle math_pipe_throttle \
    wait barrier not_selected selected dispatch_stall lg_throttle no_instruction; do
  metrics+=("smsp__average_warps_issue_stalled_${reason}_per_issue_active.ratio")
done
# profile NAME KERNEL_REGEX PACKAGE [attnc-launch options] (DIMS: the dims)
profile() {
  local name=$1 kernel=$2 package=$3; shift 3
  ncu -k regex:"$kernel" -c 1 --section WarpStateStats \
    --metrics "$(IFS=,; echo "${metrics[*]}")" \
    "$launch" "$package" --dim "${DIMS:-B=1,H=16,M=16384,N=16384}" "$@" \
    > "$out/ncu_$name.txt" 2>&1 || { tail -20 "$out/ncu_$name.txt"; return 0; }
  echo "== $name"
  grep -E "$(IFS='|'; echo "${metrics[*]}")|Warp Cycles Per Issued" \
    "$out/ncu_$name.txt" | sed 's/^ *//' | tr -s ' '
}
forward='^attn_fwd_wgmma$'
python3 - "$packages/suite" "$out/one-cta-per-tile" <<EOF
import os, sys
sys.path.insert(0, "$root/bench")
import gpu_ab
os.makedirs(sys.argv[2], exist_ok=True)
for name in os.listdir(sys.argv[1]):
    gpu_ab.without_persistence(os.path.join(sys.argv[1], name),
                               os.path.join(sys.argv[2], name))
EOF
for dir in "$packages/suite" "$out/one-cta-per-tile"; do
  tag=$([ "$dir" = "$packages/suite" ] || echo "-one-cta-per-tile")
  for variant in causal full softcap30-causal; do
    profile "$variant$tag" "$forward" "$dir/$variant.attnpkg"
  done
  profile "document-causal$tag" "$forward" "$dir/document-causal.attnpkg" \
    --input Doc="$out/doc16k.npy"
  DIMS=B=1,H=32,G=8,M=16384,N=16384 profile "gqa32-8-causal$tag" "$forward" \
    "$dir/gqa32-8-causal.attnpkg"
done
# The backward: on sm_90a one kernel computes dK, dV and dQ (a dQ kernel
# exists only in --deterministic packages); its L2 reductions are dQ's shares.
metrics+=(lts__t_sectors_op_red.sum lts__throughput.avg.pct_of_peak_sustained_elapsed)
for kernel in dkdv dq; do
  if grep -q "\"attn_bwd_$kernel\"" "$packages/suite-grad/causal.attnpkg"; then
    profile "causal-bwd-$kernel" "^attn_bwd_$kernel\$" \
      "$packages/suite-grad/causal.attnpkg"
  fi
done
