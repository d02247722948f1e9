//===- ScoreModDerivative.cpp - score_mod and its derivative --------------===//

#include "attn/Grad/ScoreModDerivative.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Grad/ScalarDerivatives.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace mlir::attn;

FailureOr<ScoreModValues>
mlir::attn::emitScoreModDerivative(OpBuilder &b, Block &scoreMod,
                                   ValueRange args,
                                   const IRMapping *captures) {
  assert(args.size() == scoreMod.getNumArguments() &&
         "one value per score_mod argument");
  auto yield = cast<YieldOp>(scoreMod.getTerminator());
  if (yield.getValues().size() != 1)
    return yield.emitOpError() << "must yield one value";
  Value yielded = yield.getValues().front();
  BlockArgument score = scoreMod.getArgument(0);
  if (yielded == score)
    return ScoreModValues{args.front(), Value()};

  IRMapping mapping = captures ? *captures : IRMapping();
  mapping.map(scoreMod.getArguments(), args);
  // Derivatives of the body's values, keyed by the original values; a
  // missing entry means the value does not depend on the score.
  DenseMap<Value, Value> derivatives;
  derivatives[score] = arith::ConstantOp::create(b, score.getLoc(),
                                                 b.getF32FloatAttr(1.0f));
  for (Operation &op : scoreMod.without_terminator()) {
    if (op.getNumRegions() != 0)
      return op.emitOpError() << "has regions; score_mod cannot be "
                                 "differentiated";
    Operation *copy = b.clone(op, mapping);
    SmallVector<Value> operandDerivatives = llvm::map_to_vector(
        op.getOperands(), [&](Value v) { return derivatives.lookup(v); });
    FailureOr<Value> derivative =
        differentiateScalarOp(b, copy, operandDerivatives);
    if (failed(derivative))
      return failure();
    if (*derivative)
      derivatives[op.getResult(0)] = *derivative;
  }
  Value derivative = derivatives.lookup(yielded);
  if (!derivative)
    derivative = arith::ConstantOp::create(b, yield.getLoc(),
                                           b.getF32FloatAttr(0.0f));
  return ScoreModValues{mapping.lookupOrDefault(yielded), derivative};
}
