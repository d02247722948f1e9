//===- Normalizers.h - attn.softmax and attn.normalize ----------*- C++ -*-===//
//
// Internal to the reference evaluator.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_NORMALIZERS_H
#define ATTN_REFERENCE_LIB_NORMALIZERS_H

#include "TensorValue.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "llvm/ADT/ArrayRef.h"

#include <cmath>
#include <cstdint>

namespace attn::ref {

/// The rows of a tensor along one axis: entry `k` of row (outer, inner) is at
/// `base(outer, inner) + k * inner`, row-major.
struct RowLayout {
  int64_t outer = 1, length = 1, inner = 1;

  RowLayout(const TensorValue &tensor, int64_t dimension) {
    for (int64_t i = 0; i < tensor.getRank(); ++i) {
      if (i < dimension)
        outer *= tensor.shape[i];
      else if (i > dimension)
        inner *= tensor.shape[i];
    }
    length = tensor.shape[dimension];
  }
  int64_t base(int64_t o, int64_t i) const { return o * length * inner + i; }
};

/// What one softmax row is divided by: the largest of its present logits and
/// the sink, and the sum of exp(x - max) over both. Shared by the forward
/// pass and its adjoint, which needs the sink's weight exactly.
struct SoftmaxRow {
  /// Whether the row has a present entry; a row without one stays absent.
  bool anyPresent = false;
  /// Whether the sink joins this row (it is given and present there).
  bool hasSink = false;
  double sinkLogit = 0.0;
  double max = 0.0;
  double denominator = 0.0;

  /// The weight of logit `x`; only when `max` is finite or NaN.
  double weight(double x) const { return std::exp(x - max) / denominator; }
};

/// The row (o, i) of `rows` over `input`, with `sink` as for `softmax`.
SoftmaxRow analyzeSoftmaxRow(const TensorValue &input, const RowLayout &rows,
                             int64_t o, int64_t i, const TensorValue *sink);

/// Below this argument softplus(x) and sigmoid(x) equal e^x to f64
/// precision (their relative difference is about e^x), and the normalize
/// weights use e^x.
inline constexpr double kExpTail = -40.0;

/// Softmax of `input` along `dimension` over its present entries. `sink`,
/// if given, has the input's shape without `dimension` (the caller checked)
/// and joins the max and the denominator but not the output. The result has
/// the input's presence: a row with no present entry stays absent.
TensorValue softmax(const TensorValue &input, int64_t dimension,
                    const TensorValue *sink);

/// `map(x) / sum(map(x))` along `dimension` over present entries; presence
/// as input.
TensorValue normalize(const TensorValue &input, int64_t dimension,
                      mlir::attn::WeightMap map);

/// The same for one row of present entries, in place. A known map is
/// computed relative to the row's largest entry, as the kernels do, so that
/// rows whose map underflows even in f64 stay exact. Returns the log of the
/// row's denominator, log sum map(x) (-inf for an empty row), for a known
/// map; NaN for the identity.
double normalizeRow(llvm::MutableArrayRef<double> row,
                    mlir::attn::WeightMap map);

/// The weight normalizeRow gives `x` in a row whose denominator has the log
/// `logDenominator` (a known map): map(x) e^-logDenominator, with e^x for
/// map(x) below kExpTail.
double normalizedWeight(double x, double logDenominator,
                        mlir::attn::WeightMap map);

/// map'(x) / map(x) for the weight normalizeRow gives x: 1 below kExpTail,
/// where e^x stands in for softplus and sigmoid.
double mapLogDerivative(double x, mlir::attn::WeightMap map);

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_NORMALIZERS_H
