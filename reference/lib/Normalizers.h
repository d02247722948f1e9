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

#include <cstdint>

namespace attn::ref {

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
/// rows whose map underflows even in f64 stay exact.
void normalizeRow(llvm::MutableArrayRef<double> row, mlir::attn::WeightMap map);

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_NORMALIZERS_H
