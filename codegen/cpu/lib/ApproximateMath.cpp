//===- ApproximateMath.cpp - Polynomial exp/log for vector code -----------===//
//
// math.exp on vectors otherwise becomes llvm.intr.exp, which the x86 back end
// scalarizes into one expf call per lane: in the fused attention loop that
// is most of the time. MLIR's polynomial approximations (a few ulp) keep the
// code in vector registers.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/Pipeline.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

using namespace mlir;

namespace {

struct ApproximateMathPass
    : public PassWrapper<ApproximateMathPass, OperationPass<>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(ApproximateMathPass)

  StringRef getArgument() const override {
    return "attn-cpu-approximate-math";
  }
  StringRef getDescription() const override {
    return "Replaces f32 exp, exp2, log and log1p by polynomial "
           "approximations that stay vectorized";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<arith::ArithDialect, math::MathDialect,
                    vector::VectorDialect>();
  }

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    // Scalars are approximated too: a few ulp, and no libm call.
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) {
          // log1p as log(u) x / (u - 1), u = 1 + x: accurate for small x,
          // where math-to-llvm's log(1 + x) is not.
          return name == math::ExpOp::getOperationName() ||
                 name == math::Exp2Op::getOperationName() ||
                 name == math::LogOp::getOperationName() ||
                 name == math::Log1pOp::getOperationName();
        });
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

std::unique_ptr<Pass> mlir::attn::createApproximateMathPass() {
  return std::make_unique<ApproximateMathPass>();
}
