//===- Normalizers.h - attn.softmax and attn.normalize ----------*- C++ -*-===//
//
// Internal to the reference evaluator.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_NORMALIZERS_H
#define ATTN_REFERENCE_LIB_NORMALIZERS_H

#include "TensorValue.h"

#include <cstdint>

namespace attn::ref {

/// Softmax of `input` along `dimension` over its present entries. `sink`,
/// if given, has the input's shape without `dimension` (the caller checked)
/// and joins the max and the denominator but not the output. The result has
/// the input's presence: a row with no present entry stays absent.
TensorValue softmax(const TensorValue &input, int64_t dimension,
                    const TensorValue *sink);

/// `x / sum(x)` along `dimension` over present entries; presence as input.
TensorValue normalize(const TensorValue &input, int64_t dimension);

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_NORMALIZERS_H
