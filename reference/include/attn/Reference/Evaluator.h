//===- Evaluator.h - The float64 reference evaluator ------------*- C++ -*-===//
//
// The oracle for every backend: a plain interpreter of the attn cascade that
// defines the dialect's semantics (docs/cascade-ir.md). It evaluates each
// cascade op of a kernel in program order, in float64, with no tiling and no
// fusion, so that its only job is to be obviously right.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_EVALUATOR_H
#define ATTN_REFERENCE_EVALUATOR_H

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/Support/LLVM.h"

#include <cstdint>
#include <vector>

namespace attn::ref {

/// What a kernel is evaluated on.
struct KernelArguments {
  /// One size per kernel dim, in `dim_names` order.
  std::vector<int64_t> dims;
  /// One tensor per input, any dtype; the caller has checked that the shapes
  /// agree with `dims`.
  std::vector<const HostTensor *> inputs;
  /// One value per param; integer params hold integral values.
  std::vector<double> params;
};

/// Evaluates `kernel` in float64 and returns one F64 tensor per output, with
/// absent entries stored as 0. Reports errors (a subscript out of range, an
/// integer division by zero, an op outside the cascade contract, arguments
/// that do not match the signature) as diagnostics on the offending op and
/// returns failure(); it never crashes on verified IR.
mlir::FailureOr<std::vector<HostTensor>> evaluate(mlir::attn::KernelOp kernel,
                                                  const KernelArguments &args);

} // namespace attn::ref

#endif // ATTN_REFERENCE_EVALUATOR_H
