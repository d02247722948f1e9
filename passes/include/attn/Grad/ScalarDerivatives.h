//===- ScalarDerivatives.h - One derivative rule per scalar op --*- C++ -*-===//
//
// The derivative rules attn-grad differentiates cascade bodies with, in one
// place: forward mode over a body's ops, from one read (whose derivative is
// 1) to the value the body yields. Each rule builds the derivative of an
// op's result from its operands and their derivatives, with the same ops
// the body is made of, so that the adjoint is itself a cascade body.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_GRAD_SCALARDERIVATIVES_H
#define ATTN_GRAD_SCALARDERIVATIVES_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Operation.h"

namespace mlir::attn {

/// The derivative of `op`'s (one) result, built at `b`'s insertion point,
/// given the derivative of each operand (`operandDerivatives`, parallel to
/// the operands; null where an operand does not depend on the variable).
/// Returns null when the result does not depend on it (integer results,
/// comparisons, floor and ceil, conversions from integers). Derivatives are
/// f32 whatever the operand's float type (bf16 reads are widened by extf,
/// whose derivative is its operand's). Fails, reporting on `op`, on an op
/// with no rule.
FailureOr<Value> differentiateScalarOp(OpBuilder &b, Operation *op,
                                       ArrayRef<Value> operandDerivatives);

} // namespace mlir::attn

#endif // ATTN_GRAD_SCALARDERIVATIVES_H
