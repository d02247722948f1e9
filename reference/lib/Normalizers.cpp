//===- Normalizers.cpp - attn.softmax and attn.normalize ------------------===//

#include "Normalizers.h"

#include <cmath>
#include <limits>

using namespace ::attn::ref;

namespace {
/// The rows of a tensor along one axis: entry `k` of row (outer, inner) is at
/// `outer * length * inner + k * inner + inner`, row-major.
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
} // namespace

TensorValue attn::ref::softmax(const TensorValue &input, int64_t dimension,
                               const TensorValue *sink) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  TensorValue result = input;
  RowLayout rows(input, dimension);
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      int64_t base = rows.base(o, i);
      double max = kNegInf;
      bool anyPresent = false;
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (!input.isPresent(at))
          continue;
        anyPresent = true;
        double x = input.data[at];
        if (x > max || std::isnan(x))
          max = x;
      }
      // Absent entries stay absent, so a row without one has nothing to
      // write, sink or no sink.
      if (!anyPresent)
        continue;
      int64_t sinkAt = o * rows.inner + i;
      bool hasSink = sink && sink->isPresent(sinkAt);
      double sinkLogit = hasSink ? sink->data[sinkAt] : kNegInf;
      if (sinkLogit > max || std::isnan(sinkLogit))
        max = sinkLogit;
      // Every present logit (and the sink) is -inf: the limit is undefined;
      // give 0, as FlashAttention's guarded online softmax does, not NaN.
      if (max == kNegInf) {
        for (int64_t k = 0; k < rows.length; ++k)
          result.data[base + k * rows.inner] = 0.0;
        continue;
      }
      double denominator = hasSink ? std::exp(sinkLogit - max) : 0.0;
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (input.isPresent(at))
          denominator += std::exp(input.data[at] - max);
      }
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        result.data[at] = input.isPresent(at)
                              ? std::exp(input.data[at] - max) / denominator
                              : 0.0;
      }
    }
  }
  return result;
}

TensorValue attn::ref::normalize(const TensorValue &input, int64_t dimension) {
  TensorValue result = input;
  RowLayout rows(input, dimension);
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      int64_t base = rows.base(o, i);
      double sum = 0.0;
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (input.isPresent(at))
          sum += input.data[at];
      }
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        result.data[at] = input.isPresent(at) ? input.data[at] / sum : 0.0;
      }
    }
  }
  return result;
}
