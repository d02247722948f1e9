//===- Passes.h - Transformations of the attn dialect -----------*- C++ -*-===//

#ifndef ATTN_TRANSFORMS_PASSES_H
#define ATTN_TRANSFORMS_PASSES_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace mlir::attn {

#define GEN_PASS_DECL
#include "attn/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "attn/Transforms/Passes.h.inc"

/// The adjoint kernel of `kernel` (see the `attn-grad` pass), built in a new
/// module of its own. The float inputs at `constantInputs` get no gradient
/// output and are not differentiated through. Reports on `kernel` and fails
/// on what it cannot differentiate.
FailureOr<OwningOpRef<ModuleOp>>
buildGradientModule(KernelOp kernel, ArrayRef<unsigned> constantInputs = {});

/// `attn-raise` then `attn-analyze-mask` on every attn.kernel: the
/// target-free start of every fused backend. `mask` carries what a backend's
/// kernels can use (the GPU kernels classify at most 4 summary tiles at a
/// time, so they want one sparse-table level).
void buildAttentionRecognitionPipeline(
    OpPassManager &pm, const AttnAnalyzeMaskOptions &mask = {});

} // namespace mlir::attn

#endif // ATTN_TRANSFORMS_PASSES_H
