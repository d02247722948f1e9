//===- Accumulator.h - Reductions of the reference evaluator ----*- C++ -*-===//
//
// Internal to the reference evaluator.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_ACCUMULATOR_H
#define ATTN_REFERENCE_LIB_ACCUMULATOR_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace attn::ref {

/// Folds the present terms of one reduction. Absent terms are never added,
/// so a reduction over nothing yields the kind's identity (sum, mean: 0;
/// max, logsumexp: -inf; min: +inf). `mean` divides by the number of present
/// terms, so a mask means the same for it as for `sum`. NaN terms propagate.
class Accumulator {
public:
  explicit Accumulator(mlir::attn::ReductionKind kind) : kind(kind) { reset(); }

  void reset() {
    value = mlir::attn::getReductionIdentity(kind);
    scale = 0.0;
    count = 0;
  }

  /// Adds one present term. For max and min, returns whether `x` is now the
  /// result: reverse mode sends the adjoint to the last term for which this
  /// held, which is the first extreme term in iteration order, since a tie
  /// does not replace the running value. Other kinds return false.
  bool add(double x) {
    using K = mlir::attn::ReductionKind;
    ++count;
    switch (kind) {
    case K::None:
    case K::Sum:
    case K::Mean:
      value += x;
      return false;
    case K::Max:
      if (x > value || std::isnan(x)) {
        value = x;
        return true;
      }
      return false;
    case K::Min:
      if (x < value || std::isnan(x)) {
        value = x;
        return true;
      }
      return false;
    case K::LogSumExp:
      addLogSumExp(x);
      return false;
    }
    return false;
  }

  double result() const {
    using K = mlir::attn::ReductionKind;
    if (kind == K::Mean)
      return count == 0 ? 0.0 : value / static_cast<double>(count);
    if (kind == K::LogSumExp) {
      // `value` is the running max, `scale` the sum of exp(term - max).
      if (std::isnan(value) || std::isinf(value))
        return value;
      return value + std::log(scale);
    }
    return value;
  }

private:
  /// The numerically stable online form: keep the running max and the sum
  /// of exp(term - max), rescaling the sum when the max grows. -inf terms
  /// contribute nothing; a +inf term makes the result +inf; NaN sticks.
  void addLogSumExp(double x) {
    if (std::isnan(value))
      return;
    if (std::isnan(x)) {
      value = x;
      return;
    }
    if (x == -std::numeric_limits<double>::infinity() ||
        value == std::numeric_limits<double>::infinity())
      return;
    if (x > value) {
      scale = (value == -std::numeric_limits<double>::infinity()
                   ? 0.0
                   : scale * std::exp(value - x)) +
              1.0;
      value = x;
    } else {
      scale += std::exp(x - value);
    }
  }

  mlir::attn::ReductionKind kind;
  double value;
  double scale;
  int64_t count;
};

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_ACCUMULATOR_H
