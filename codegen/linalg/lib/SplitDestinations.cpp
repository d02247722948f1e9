//===- SplitDestinations.cpp - One destination per linalg op --------------===//
//
// CSE merges the destinations of unrelated linalg ops (a tensor.empty, or a
// linalg.fill of one with the identity of a reduction) into one value.
// Empty-tensor elimination then replaces that value with the caller's
// output buffer for every op that used it, and two ops that fill different
// outputs (or a temporary and an output) write the same memory: a kernel
// with two outputs returned the second output's result for both. Giving
// every op its own destination first keeps the elimination to the op that
// fills the output.
//
//===----------------------------------------------------------------------===//

#include "attn/Linalg/Pipelines.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/DestinationStyleOpInterface.h"

using namespace mlir;

namespace {

struct SplitDestinationsPass
    : public PassWrapper<SplitDestinationsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(SplitDestinationsPass)

  StringRef getArgument() const override { return "attn-split-destinations"; }
  StringRef getDescription() const override {
    return "Gives every destination-style op its own tensor.empty (and "
           "linalg.fill) destination";
  }

  /// A copy of the destination `value` made by `empty` or by a fill of an
  /// empty, or null when it is made otherwise.
  static Value cloneDestination(OpBuilder &builder, Value value) {
    Operation *def = value.getDefiningOp();
    if (isa_and_nonnull<tensor::EmptyOp>(def))
      return builder.clone(*def)->getResult(0);
    auto fill = dyn_cast_or_null<linalg::FillOp>(def);
    if (!fill || !fill.hasPureTensorSemantics() ||
        !fill.getOutputs().front().getDefiningOp<tensor::EmptyOp>())
      return Value();
    Value empty = cloneDestination(builder, fill.getOutputs().front());
    IRMapping mapping;
    mapping.map(fill.getOutputs().front(), empty);
    return builder.clone(*fill, mapping)->getResult(0);
  }

  void runOnOperation() override {
    // The first op that writes into a destination keeps it; the others
    // get copies.
    SmallVector<OpOperand *> shared;
    DenseSet<Value> claimed;
    getOperation().walk([&](DestinationStyleOpInterface op) {
      for (OpOperand &init : op.getDpsInitsMutable())
        if (isa<RankedTensorType>(init.get().getType()) &&
            !claimed.insert(init.get()).second)
          shared.push_back(&init);
    });
    OpBuilder builder(&getContext());
    for (OpOperand *init : shared) {
      builder.setInsertionPoint(init->getOwner());
      if (Value own = cloneDestination(builder, init->get()))
        init->set(own);
    }
  }
};

} // namespace

std::unique_ptr<Pass> mlir::attn::createSplitDestinationsPass() {
  return std::make_unique<SplitDestinationsPass>();
}
