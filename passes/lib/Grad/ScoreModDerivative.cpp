//===- ScoreModDerivative.cpp - score_mod and its derivative --------------===//

#include "attn/Grad/ScoreModDerivative.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Grad/ScalarDerivatives.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;
using namespace mlir::attn;

SmallVector<Operation *> mlir::attn::getScoreModReads(Block &scoreMod) {
  // A backend that passes the tensors as kernel parameters has turned each
  // attn.read into a tensor.extract in place: the order is the same.
  SmallVector<Operation *> reads;
  for (Operation &op : scoreMod)
    if (isa<ReadOp, tensor::ExtractOp>(op))
      reads.push_back(&op);
  return reads;
}

FailureOr<ScoreModValues>
mlir::attn::emitScoreModDerivative(OpBuilder &b, Block &scoreMod,
                                   ValueRange args, const IRMapping *captures,
                                   ArrayRef<int64_t> readPositions) {
  assert(args.size() == scoreMod.getNumArguments() &&
         "one value per score_mod argument");
  auto yield = cast<YieldOp>(scoreMod.getTerminator());
  if (yield.getValues().size() != 1)
    return yield.emitOpError() << "must yield one value";
  Value yielded = yield.getValues().front();
  BlockArgument score = scoreMod.getArgument(0);
  auto zero = [&] {
    return arith::ConstantOp::create(b, yield.getLoc(),
                                     b.getF32FloatAttr(0.0f));
  };
  if (yielded == score) {
    ScoreModValues values{args.front(), Value(), {}};
    for (size_t i = 0; i < readPositions.size(); ++i)
      values.readDerivatives.push_back(zero());
    return values;
  }

  IRMapping mapping = captures ? *captures : IRMapping();
  mapping.map(scoreMod.getArguments(), args);
  // One tangent per seed: the score, then each requested read. Derivatives
  // of the body's values are keyed by the original values; a missing entry
  // means the value does not depend on the seed.
  SmallVector<Operation *> reads = getScoreModReads(scoreMod);
  SmallVector<DenseMap<Value, Value>> tangents(1 + readPositions.size());
  tangents[0][score] = arith::ConstantOp::create(b, score.getLoc(),
                                                 b.getF32FloatAttr(1.0f));
  DenseMap<Operation *, unsigned> seedOf;
  for (auto [i, position] : llvm::enumerate(readPositions)) {
    assert(position >= 0 && position < static_cast<int64_t>(reads.size()) &&
           "a read of the block");
    seedOf[reads[position]] = 1 + i;
  }
  for (Operation &op : scoreMod.without_terminator()) {
    if (op.getNumRegions() != 0)
      return op.emitOpError() << "has regions; score_mod cannot be "
                                 "differentiated";
    Operation *copy = b.clone(op, mapping);
    if (auto seed = seedOf.find(&op); seed != seedOf.end())
      tangents[seed->second][op.getResult(0)] = arith::ConstantOp::create(
          b, op.getLoc(), b.getF32FloatAttr(1.0f));
    if (isa<ReadOp, tensor::ExtractOp>(op))
      continue;
    for (DenseMap<Value, Value> &derivatives : tangents) {
      SmallVector<Value> operandDerivatives = llvm::map_to_vector(
          op.getOperands(), [&](Value v) { return derivatives.lookup(v); });
      FailureOr<Value> derivative =
          differentiateScalarOp(b, copy, operandDerivatives);
      if (failed(derivative))
        return failure();
      if (*derivative)
        derivatives[op.getResult(0)] = *derivative;
    }
  }
  ScoreModValues values;
  values.score = mapping.lookupOrDefault(yielded);
  for (auto [i, derivatives] : llvm::enumerate(tangents)) {
    Value derivative = derivatives.lookup(yielded);
    if (!derivative)
      derivative = zero();
    if (i == 0)
      values.derivative = derivative;
    else
      values.readDerivatives.push_back(derivative);
  }
  return values;
}
