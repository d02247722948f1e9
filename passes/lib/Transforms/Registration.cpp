//===- Registration.cpp - The passes of the attn dialect, together --------===//
//
// The pass registration functions are generated inline in Passes.h; this
// file holds what combines the passes.
//
//===----------------------------------------------------------------------===//

#include "attn/Transforms/Passes.h"

void mlir::attn::buildAttentionRecognitionPipeline(
    OpPassManager &pm, const AttnAnalyzeMaskOptions &mask) {
  OpPassManager &kernels = pm.nest<KernelOp>();
  kernels.addPass(createAttnRaise());
  kernels.addPass(createAttnAnalyzeMask(mask));
  kernels.addPass(createAttnGuardIntegerDivision());
}
