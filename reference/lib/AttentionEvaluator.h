//===- AttentionEvaluator.h - attn.attention in the reference ---*- C++ -*-===//
//
// Internal to the reference evaluator. The structured op is evaluated
// straight from its definition in AttnOps.td, in float64 and in the same
// order of operations as the cascade it replaces, so that a raised kernel can
// be compared with its cascade to the last bit where the math allows.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_ATTENTIONEVALUATOR_H
#define ATTN_REFERENCE_LIB_ATTENTIONEVALUATOR_H

#include "BodyProgram.h"
#include "TensorValue.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include "llvm/ADT/SmallVector.h"

namespace attn::ref {

/// Evaluates `op` with its operands and the values its regions use from
/// above looked up in `env`. Gives O and, when the op has it, LSE (both
/// without absent entries), or reports the error on the op and fails.
mlir::FailureOr<llvm::SmallVector<TensorValue, 2>>
evaluateAttention(mlir::attn::AttentionOp op, const Environment &env);

/// Evaluates the backward of attention (see attn.attention_backward): dQ,
/// dK, dV and, with a sink, the sink's gradient, or reports the error on the
/// op and fails.
mlir::FailureOr<llvm::SmallVector<TensorValue, 4>>
evaluateAttentionBackward(mlir::attn::AttentionBackwardOp op,
                          const Environment &env);

/// Evaluates the tensor.collapse_shape attn-grad puts after the adjoint of
/// an expanded (MQA) key or value: the same entries under the source shape.
mlir::FailureOr<TensorValue>
evaluateCollapseShape(mlir::tensor::CollapseShapeOp op, const Environment &env);

/// Evaluates the tensor.expand_shape that attn-raise puts in front of a
/// shared (MQA) key or value, giving it a unit head axis: the same entries
/// under a new shape.
mlir::FailureOr<TensorValue> evaluateExpandShape(mlir::tensor::ExpandShapeOp op,
                                                 const Environment &env);

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_ATTENTIONEVALUATOR_H
