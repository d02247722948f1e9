//===- Pipelines.h - Pass pipelines of the code generators ------*- C++ -*-===//

#ifndef ATTN_PIPELINES_PIPELINES_H
#define ATTN_PIPELINES_PIPELINES_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

#include <memory>

namespace mlir::attn {

/// attn kernels -> linalg on tensors (`convert-attn-to-linalg`, then
/// canonicalize and cse): what `attnc --emit=linalg` shows.
void buildAttnToLinalgPipeline(OpPassManager &pm);

/// `attn-unfused-cpu-pipeline`: attn kernels -> linalg on tensors ->
/// bufferized loops -> the LLVM dialect, ending with a check that nothing
/// else remains. The result translates to LLVM IR and runs in the JIT.
void buildUnfusedCpuPipeline(OpPassManager &pm);

/// A pass that fails, naming the first offender, when an op outside the
/// llvm dialect (and the enclosing builtin.module) remains.
std::unique_ptr<Pass> createCheckOnlyLLVMPass();

/// Registers `attn-unfused-cpu-pipeline` and `attn-check-only-llvm` with the
/// global pass registry (for attn-opt).
void registerAttnPipelines();

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

} // namespace mlir::attn

#endif // ATTN_PIPELINES_PIPELINES_H
