//===- CheckOnlyLLVM.cpp - Fail when non-LLVM ops remain ------------------===//
//
// Partial conversions fail silently (a leftover vector.multi_reduction or
// memref.alloc only shows up when translation to LLVM IR gives up), so every
// pipeline that targets LLVM ends with this check.
//
//===----------------------------------------------------------------------===//

#include "attn/Linalg/Pipelines.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/OpenMP/OpenMPDialect.h"

using namespace mlir;

namespace {

struct CheckOnlyLLVMPass
    : public PassWrapper<CheckOnlyLLVMPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CheckOnlyLLVMPass)

  StringRef getArgument() const override { return "attn-check-only-llvm"; }
  StringRef getDescription() const override {
    return "Fails when an op outside the llvm dialect remains";
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    WalkResult result = module.walk([&](Operation *op) {
      // omp ops are translated to LLVM IR (runtime calls) directly.
      if (op == module.getOperation() ||
          isa<LLVM::LLVMDialect, omp::OpenMPDialect>(op->getDialect()))
        return WalkResult::advance();
      op->emitError() << "'" << op->getName()
                      << "' was not lowered to the llvm dialect";
      return WalkResult::interrupt();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace

std::unique_ptr<Pass> mlir::attn::createCheckOnlyLLVMPass() {
  return std::make_unique<CheckOnlyLLVMPass>();
}
