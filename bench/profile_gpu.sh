#!/usr/bin/env bash
# Profiles attnc's kernels with Nsight Compute on the GPU machine, one launch
# each at L = 16k (B = 1, H = 16, D = 128, the suite's shapes), and prints
# what limits them: tensor-pipe (mma.sync and wgmma) and issue-slot
# utilisation, achieved occupancy and its register limit, local-memory
# (spill) traffic, and the warp stall reasons. Forward: the Hopper kernel
# (attn_fwd_wgmma) of causal, full, softcap and document-causal; backward:
# the kernels of causal's adjoint package (on sm_90a the fused dK/dV/dQ one).
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
)
# Warp stall reasons, in cycles per issued instruction.
for reason in long_scoreboard short_scoreboard mio_throttle math_pipe_throttle \
    wait barrier not_selected selected dispatch_stall lg_throttle no_instruction; do
  metrics+=("smsp__average_warps_issue_stalled_${reason}_per_issue_active.ratio")
done
# profile NAME KERNEL_REGEX PACKAGE [attnc-launch options]
profile() {
  local name=$1 kernel=$2 package=$3; shift 3
  ncu -k regex:"$kernel" -c 1 --section WarpStateStats \
    --metrics "$(IFS=,; echo "${metrics[*]}")" \
    "$launch" "$package" --dim B=1,H=16,M=16384,N=16384 "$@" \
    > "$out/ncu_$name.txt" 2>&1 || { tail -20 "$out/ncu_$name.txt"; return 0; }
  echo "== $name"
  grep -E "$(IFS='|'; echo "${metrics[*]}")|Warp Cycles Per Issued" \
    "$out/ncu_$name.txt" | sed 's/^ *//' | tr -s ' '
}
forward='^attn_fwd_wgmma$'
for variant in causal full softcap30-causal; do
  profile "$variant" "$forward" "$packages/suite/$variant.attnpkg"
done
profile document-causal "$forward" "$packages/suite/document-causal.attnpkg" \
  --input Doc="$out/doc16k.npy"
# The backward: on sm_90a one kernel computes dK, dV and dQ (a dQ kernel
# exists only in --deterministic packages); its L2 reductions are dQ's shares.
metrics+=(lts__t_sectors_op_red.sum lts__throughput.avg.pct_of_peak_sustained_elapsed)
for kernel in dkdv dq; do
  if grep -q "\"attn_bwd_$kernel\"" "$packages/suite-grad/causal.attnpkg"; then
    profile "causal-bwd-$kernel" "^attn_bwd_$kernel\$" \
      "$packages/suite-grad/causal.attnpkg"
  fi
done
