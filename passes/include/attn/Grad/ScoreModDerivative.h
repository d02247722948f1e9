//===- ScoreModDerivative.h - score_mod and its derivative ------*- C++ -*-===//
//
// The backward of attention multiplies the adjoint of each modified score by
// d score_mod / d score. Every backend that lowers attn.attention_backward
// emits the region once with this helper, in forward mode: the score
// argument has derivative 1, the indices and whatever the body reads from
// above (captured tensors, params) are constants, and each op's derivative
// comes from its rule in ScalarDerivatives.h.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_GRAD_SCOREMODDERIVATIVE_H
#define ATTN_GRAD_SCOREMODDERIVATIVE_H

#include "mlir/IR/Block.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

namespace mlir::attn {

/// A score_mod evaluated at one point.
struct ScoreModValues {
  /// score_mod(score, b, h, m, n).
  Value score;
  /// d score_mod / d score (f32); null when score_mod yields its score
  /// argument unchanged, so that the derivative is 1 without an op.
  Value derivative;
  /// d score_mod / d (the value of each requested attn.read), in the order
  /// requested (f32; the constant 0 where the result does not depend on it).
  SmallVector<Value> readDerivatives;
};

/// The attn.read ops of a score_mod block (or the tensor.extract ops a
/// backend replaced them with), in block order: what `readPositions` and
/// attn.attention_backward's `grad_reads` index.
SmallVector<Operation *> getScoreModReads(Block &scoreMod);

/// Clones the body of `scoreMod` (the score_mod block of an attn.attention
/// or attn.attention_backward) at `b`'s insertion point with `args`
/// (score, b, h, m, n) for its arguments, and builds the derivative of what
/// it yields with respect to the score next to it. A result that does not
/// depend on the score gets the constant 0. Values the body reads from
/// above are taken through `captures` where it maps them (a kernel whose
/// parameters stand for them). With `readPositions`, also the derivative
/// with respect to the value each of those reads (getScoreModReads) yields,
/// each a forward-mode tangent of its own over the one clone. Fails,
/// reporting on the op, on an op that has no derivative rule or that has
/// regions.
FailureOr<ScoreModValues>
emitScoreModDerivative(OpBuilder &b, Block &scoreMod, ValueRange args,
                       const IRMapping *captures = nullptr,
                       ArrayRef<int64_t> readPositions = {});

} // namespace mlir::attn

#endif // ATTN_GRAD_SCOREMODDERIVATIVE_H
