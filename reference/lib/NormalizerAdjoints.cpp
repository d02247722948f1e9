//===- NormalizerAdjoints.cpp - Reverse mode of the normalizers -----------===//

#include "NormalizerAdjoints.h"

#include "Normalizers.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace ::attn::ref;
using mlir::attn::WeightMap;

void attn::ref::softmaxAdjoint(const TensorValue &input, int64_t dimension,
                               const TensorValue *sink,
                               const TensorValue &result,
                               const double *resultAdjoint,
                               double *inputAdjoint, double *sinkAdjoint) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  RowLayout rows(input, dimension);
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      SoftmaxRow row = analyzeSoftmaxRow(input, rows, o, i, sink);
      // A row without present entries has no output to depend on it; one
      // whose logits are all -inf gives zeros that a finite change of a
      // logit does not move.
      if (!row.anyPresent || row.max == kNegInf)
        continue;
      int64_t base = rows.base(o, i);
      double dot = 0.0;
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (input.isPresent(at))
          dot += result.data[at] * resultAdjoint[at];
      }
      if (inputAdjoint)
        for (int64_t k = 0; k < rows.length; ++k) {
          int64_t at = base + k * rows.inner;
          if (input.isPresent(at))
            inputAdjoint[at] += result.data[at] * (resultAdjoint[at] - dot);
        }
      if (row.hasSink && sinkAdjoint)
        sinkAdjoint[o * rows.inner + i] -= row.weight(row.sinkLogit) * dot;
    }
  }
}

void attn::ref::normalizeAdjoint(const TensorValue &input, int64_t dimension,
                                 WeightMap map, const TensorValue &result,
                                 const double *resultAdjoint,
                                 double *inputAdjoint) {
  if (!inputAdjoint)
    return;
  RowLayout rows(input, dimension);
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      int64_t base = rows.base(o, i);
      // The same sums, in the same order, as normalizeRow.
      double dot = 0.0, sum = 0.0;
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (!input.isPresent(at))
          continue;
        dot += result.data[at] * resultAdjoint[at];
        sum += input.data[at];
      }
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (!input.isPresent(at))
          continue;
        double centered = resultAdjoint[at] - dot;
        inputAdjoint[at] += map == WeightMap::Identity
                                ? centered / sum
                                : result.data[at] *
                                      mapLogDerivative(input.data[at], map) *
                                      centered;
      }
    }
  }
}
