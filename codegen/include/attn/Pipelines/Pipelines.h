//===- Pipelines.h - Pass pipelines of the code generators ------*- C++ -*-===//

#ifndef ATTN_PIPELINES_PIPELINES_H
#define ATTN_PIPELINES_PIPELINES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <cstdint>
#include <memory>

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
};

/// attn kernels -> linalg on tensors (`convert-attn-to-linalg`, then
/// canonicalize and cse): what `attnc --emit=linalg` shows.
void buildAttnToLinalgPipeline(OpPassManager &pm);

/// Bufferizes a function of linalg on tensors (outputs written into the
/// caller's buffers, identity layouts at the boundary) and lowers linalg to
/// loops; shared by the fused and the unfused CPU pipelines.
void buildBufferizeToLoopsPipeline(OpPassManager &pm);

/// `attn-unfused-cpu-pipeline`: attn kernels -> linalg on tensors ->
/// bufferized loops -> the LLVM dialect, ending with a check that nothing
/// else remains. The result translates to LLVM IR and runs in the JIT.
void buildUnfusedCpuPipeline(OpPassManager &pm);

/// `attn-cpu-pipeline`: the CPU pipeline the JIT uses. With
/// `options.fused`, attention cascades are raised to attn.attention, their
/// masks analysed and each attention fused into the online form, which runs
/// OpenMP-parallel over (batch, head, query tile); the rest of the kernel
/// follows the unfused path. Ends with attn-check-only-llvm.
void buildCpuPipeline(OpPassManager &pm, const CpuPipelineOptions &options);

/// `attn-cpu-approximate-math`: f32 exp, exp2 and log become polynomial
/// approximations, so that vector code stays vectorized.
std::unique_ptr<Pass> createApproximateMathPass();

/// A pass that fails, naming the first offender, when an op outside the
/// llvm dialect (and the enclosing builtin.module) remains.
std::unique_ptr<Pass> createCheckOnlyLLVMPass();

/// Registers `attn-unfused-cpu-pipeline`, `attn-cpu-pipeline` and
/// `attn-check-only-llvm` with the
/// global pass registry (for attn-opt).
void registerAttnPipelines();

/// Registers `attn-cpu-pipeline` alone (registerAttnPipelines calls it).
void registerCpuPipeline();

/// The dialects and interface implementations (bufferization, deallocation,
/// LLVM IR translation) the pipelines need, for contexts that do not load
/// everything.
void registerCodegenDialects(DialectRegistry &registry);

/// Runs buildAttnToLinalgPipeline on `module` in place. Diagnostics go to the
/// context's handlers.
LogicalResult lowerToLinalg(ModuleOp module);

/// Makes lowerToLinalg / lowerToLLVMDialect (and so the JIT) print the time
/// of each pass to stderr.
void enablePipelineTiming(bool enable);

/// Runs buildUnfusedCpuPipeline on `module` in place.
LogicalResult lowerToLLVMDialect(ModuleOp module);

/// Runs buildCpuPipeline(options) on `module` in place.
LogicalResult lowerToLLVMDialect(ModuleOp module,
                                 const CpuPipelineOptions &options);

} // namespace mlir::attn

#endif // ATTN_PIPELINES_PIPELINES_H
