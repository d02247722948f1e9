//===- IntegerInputs.h - Random data for integer inputs ---------*- C++ -*-===//
//
// Random integer data exercises a spec only if it is drawn for what the
// cascade does with it. A length compared with a key index (`n < Len[b]`)
// needs values over the whole axis, ends included, so that rows are fully
// kept, partly kept and fully masked; document ids compared with each other
// need runs of equal ids of several lengths; a gather index must stay inside
// the axis it indexes; a divisor must not be 0. The plan reads those roles
// off the cascade, and the fill draws data to match.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_INTEGERINPUTS_H
#define ATTN_DRIVER_INTEGERINPUTS_H

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Runtime/Tensor.h"

#include "llvm/ADT/ArrayRef.h"

#include <optional>
#include <random>

namespace attn {

/// What the cascade does with an integer input, in the order of precedence
/// when it does several things: a subscript must stay in range whatever else
/// holds, a divisor must not be 0, and the rest only shape the spread.
enum class IntegerRole {
  /// Indexes a tensor (a gather: page tables, block maps).
  Subscript,
  /// Divides an integer (a per-head width, a block size).
  Divisor,
  /// Is compared with an index or a dim (a length, a start, a window).
  Bound,
  /// Is compared with entries of integer inputs (document ids, labels).
  Id,
  /// None of these (booleans, values compared with params only).
  Other,
};

/// How random data of one integer input is drawn.
struct IntegerInputPlan {
  IntegerRole role = IntegerRole::Other;
  /// Every value drawn lies in it.
  mlir::attn::Interval range;
};

/// The plan for input `i` of `kernel` at `dims`; nullopt for float inputs.
std::optional<IntegerInputPlan> planIntegerInput(mlir::attn::KernelOp kernel,
                                                 unsigned i,
                                                 llvm::ArrayRef<int64_t> dims);

/// Fills `tensor` (an integer or i1 tensor) by `plan`: bounds uniform over
/// their range with both ends present once there are two entries (a length
/// of 0 masks whole rows, a length of the full axis keeps them); ids as a
/// few runs of increasing ids along the last axis, of random lengths;
/// everything else uniform over its range.
void fillIntegerInput(HostTensor &tensor, const IntegerInputPlan &plan,
                      std::mt19937_64 &generator);

} // namespace attn

#endif // ATTN_DRIVER_INTEGERINPUTS_H
