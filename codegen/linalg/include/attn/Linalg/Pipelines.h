//===- Pipelines.h - The unfused lowering and what others share -*- C++ -*-===//
//
// The always-correct path of every cascade: attn kernels -> linalg on
// tensors -> bufferized loops -> the LLVM dialect. The CPU pipeline reuses
// its bufferization half and its final check.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_LINALG_PIPELINES_H
#define ATTN_LINALG_PIPELINES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <memory>

namespace mlir::attn {

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

/// A pass that fails, naming the first offender, when an op outside the
/// llvm dialect (and the enclosing builtin.module) remains.
std::unique_ptr<Pass> createCheckOnlyLLVMPass();

/// `attn-split-destinations`: a pass that gives every destination-style op
/// its own tensor.empty (or fill of one) destination, so that empty-tensor
/// elimination, which replaces a tensor.empty with an output buffer, changes
/// only the op that fills that output.
std::unique_ptr<Pass> createSplitDestinationsPass();

/// Registers `attn-unfused-cpu-pipeline`, `attn-check-only-llvm` and
/// `attn-split-destinations` with the global pass registry (for attn-opt).
void registerLinalgPipelines();

/// The dialects and interface implementations (bufferization, deallocation,
/// LLVM IR translation) the CPU pipelines need, for contexts that do not
/// load everything.
void registerCodegenDialects(DialectRegistry &registry);

/// Makes runPipeline (and so every lowering helper and the JIT) print the
/// time of each pass to stderr.
void enablePipelineTiming(bool enable);

/// Runs `build`'s pipeline on `module` in place after making sure the
/// context knows every interface it needs. Diagnostics go to the context's
/// handlers.
LogicalResult runPipeline(ModuleOp module,
                          llvm::function_ref<void(OpPassManager &)> build);

/// Runs buildAttnToLinalgPipeline on `module` in place.
LogicalResult lowerToLinalg(ModuleOp module);

} // namespace mlir::attn

#endif // ATTN_LINALG_PIPELINES_H
