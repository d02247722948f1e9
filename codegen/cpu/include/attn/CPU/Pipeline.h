//===- Pipeline.h - The CPU pipeline the JIT uses ---------------*- C++ -*-===//

#ifndef ATTN_CPU_PIPELINE_H
#define ATTN_CPU_PIPELINE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlir::attn {

/// How buildCpuPipeline lowers attention.
struct CpuPipelineOptions {
  /// Lower every attn.attention with `attn-fuse-online` (one pass over the
  /// keys, O(L) memory); false gives the unfused pipeline.
  bool fused = true;
  /// Queries per tile of the fused loop nest (rows of the micro-kernel).
  int64_t queryTile = 16;
  /// Keys per tile of the fused loop nest (vector length along keys).
  int64_t keyTile = 32;
  /// attn-fuse-backward: queries (dQ pass) or keys (dK/dV pass) per tile,
  /// one per vector lane. 32 lanes (two zmm per row of the micro-kernels)
  /// halve the vector loads per FMA of 16; measured 1.25x faster on an
  /// AVX-512 Zen 5 at causal L = 4096, D = 128, and no slower with AVX2.
  int64_t backwardLaneTile = 32;
  /// attn-fuse-backward: keys (dQ pass) or queries (dK/dV pass) per inner
  /// tile (a multiple of 8).
  int64_t backwardRowTile = 32;

  /// Every field, as text, for the artifact cache's key: a new field must
  /// be added here.
  std::vector<std::string> describe() const;
};

/// `attn-cpu-pipeline`: the CPU pipeline the JIT uses. With
/// `options.fused`, attention cascades are raised to attn.attention, their
/// masks analysed and each attention fused into the online form, which runs
/// OpenMP-parallel over (batch, head, query tile); the rest of the kernel
/// follows the unfused path. Ends with attn-check-only-llvm.
void buildCpuPipeline(OpPassManager &pm, const CpuPipelineOptions &options);

/// `attn-cpu-approximate-math`: f32 exp, exp2 and log become polynomial
/// approximations, so that vector code stays vectorized.
std::unique_ptr<Pass> createApproximateMathPass();

/// Registers `attn-cpu-pipeline`, `attn-cpu-approximate-math`,
/// `attn-fuse-online` and `attn-fuse-backward` (for attn-opt).
void registerCpuPipeline();

/// Runs buildUnfusedCpuPipeline on `module` in place.
LogicalResult lowerToLLVMDialect(ModuleOp module);

/// Runs buildCpuPipeline(options) on `module` in place.
LogicalResult lowerToLLVMDialect(ModuleOp module,
                                 const CpuPipelineOptions &options);

} // namespace mlir::attn

#endif // ATTN_CPU_PIPELINE_H
