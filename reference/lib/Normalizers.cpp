//===- Normalizers.cpp - attn.softmax and attn.normalize ------------------===//

#include "Normalizers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

using namespace ::attn::ref;

SoftmaxRow attn::ref::analyzeSoftmaxRow(const TensorValue &input,
                                        const RowLayout &rows, int64_t o,
                                        int64_t i, const TensorValue *sink) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  SoftmaxRow row;
  int64_t base = rows.base(o, i);
  row.max = kNegInf;
  for (int64_t k = 0; k < rows.length; ++k) {
    int64_t at = base + k * rows.inner;
    if (!input.isPresent(at))
      continue;
    row.anyPresent = true;
    double x = input.data[at];
    if (x > row.max || std::isnan(x))
      row.max = x;
  }
  if (!row.anyPresent)
    return row;
  int64_t sinkAt = o * rows.inner + i;
  row.hasSink = sink && sink->isPresent(sinkAt);
  row.sinkLogit = row.hasSink ? sink->data[sinkAt] : kNegInf;
  if (row.sinkLogit > row.max || std::isnan(row.sinkLogit))
    row.max = row.sinkLogit;
  if (row.max == kNegInf)
    return row;
  row.denominator = row.hasSink ? std::exp(row.sinkLogit - row.max) : 0.0;
  for (int64_t k = 0; k < rows.length; ++k) {
    int64_t at = base + k * rows.inner;
    if (input.isPresent(at))
      row.denominator += std::exp(input.data[at] - row.max);
  }
  return row;
}

TensorValue attn::ref::softmax(const TensorValue &input, int64_t dimension,
                               const TensorValue *sink) {
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  TensorValue result = input;
  RowLayout rows(input, dimension);
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      int64_t base = rows.base(o, i);
      SoftmaxRow row = analyzeSoftmaxRow(input, rows, o, i, sink);
      // Absent entries stay absent, so a row without one has nothing to
      // write, sink or no sink.
      if (!row.anyPresent)
        continue;
      // Every present logit (and the sink) is -inf: the limit is undefined;
      // give 0, as FlashAttention's guarded online softmax does, not NaN.
      if (row.max == kNegInf) {
        for (int64_t k = 0; k < rows.length; ++k)
          result.data[base + k * rows.inner] = 0.0;
        continue;
      }
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        result.data[at] =
            input.isPresent(at) ? row.weight(input.data[at]) : 0.0;
      }
    }
  }
  return result;
}

/// map(x) for softplus and sigmoid.
static double applyMap(double x, mlir::attn::WeightMap map) {
  if (map == mlir::attn::WeightMap::Softplus)
    return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
  return 1.0 / (1.0 + std::exp(-x));
}

double attn::ref::normalizeRow(llvm::MutableArrayRef<double> row,
                               mlir::attn::WeightMap map) {
  using mlir::attn::WeightMap;
  if (map == WeightMap::Identity) {
    double sum = 0.0;
    for (double x : row)
      sum += x;
    for (double &x : row)
      x /= sum;
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (row.empty())
    return -std::numeric_limits<double>::infinity();
  // Every weight is taken relative to e^shift: the row's max for exp, and
  // for softplus and sigmoid (which are below e^x and never overflow) the
  // max clamped to 0, so that rows with a large entry are computed as
  // written.
  double max = row.front();
  for (double x : row)
    if (x > max || std::isnan(x))
      max = x;
  double shift = map == WeightMap::Exp ? max : std::min(max, 0.0);
  if (std::isinf(shift) && shift < 0)
    shift = 0.0;
  double scale = std::exp(-std::max(shift, kExpTail));
  auto weight = [&](double x) {
    if (map == WeightMap::Exp || x < kExpTail)
      return std::exp(x - shift);
    return applyMap(x, map) * scale;
  };
  double sum = 0.0;
  for (double &x : row) {
    x = weight(x);
    sum += x;
  }
  for (double &x : row)
    x /= sum;
  return shift + std::log(sum);
}

double attn::ref::normalizedWeight(double x, double logDenominator,
                                   mlir::attn::WeightMap map) {
  if (map == mlir::attn::WeightMap::Exp || x < kExpTail)
    return std::exp(x - logDenominator);
  return applyMap(x, map) * std::exp(-logDenominator);
}

double attn::ref::mapLogDerivative(double x, mlir::attn::WeightMap map) {
  using mlir::attn::WeightMap;
  if (map == WeightMap::Exp || x < kExpTail)
    return 1.0;
  if (map == WeightMap::Sigmoid)
    return 1.0 / (1.0 + std::exp(x)); // 1 - sigmoid(x)
  return 1.0 / (1.0 + std::exp(-x)) / applyMap(x, map);
}

TensorValue attn::ref::normalize(const TensorValue &input, int64_t dimension,
                                 mlir::attn::WeightMap map) {
  TensorValue result = input;
  RowLayout rows(input, dimension);
  std::vector<double> row;
  for (int64_t o = 0; o < rows.outer; ++o) {
    for (int64_t i = 0; i < rows.inner; ++i) {
      int64_t base = rows.base(o, i);
      row.clear();
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        if (input.isPresent(at))
          row.push_back(input.data[at]);
      }
      normalizeRow(row, map);
      auto next = row.begin();
      for (int64_t k = 0; k < rows.length; ++k) {
        int64_t at = base + k * rows.inner;
        result.data[at] = input.isPresent(at) ? *next++ : 0.0;
      }
    }
  }
  return result;
}
