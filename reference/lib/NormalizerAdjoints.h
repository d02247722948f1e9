//===- NormalizerAdjoints.h - Reverse mode of the normalizers ---*- C++ -*-===//
//
// Internal to the reference evaluator. The adjoints of attn.softmax and
// attn.normalize, row by row over the present entries, using the same row
// quantities as the forward pass (Normalizers.h) so that the two agree on
// which entries take part and on the weights.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_NORMALIZERADJOINTS_H
#define ATTN_REFERENCE_LIB_NORMALIZERADJOINTS_H

#include "TensorValue.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <cstdint>

namespace attn::ref {

/// Adds the adjoint of `result = softmax(input, dimension, sink)` to
/// `inputAdjoint` and, where the sink joins a row, to `sinkAdjoint` (either
/// may be null to drop it). With g the adjoint of the result and p its
/// weights: dx_n = p_n (g_n - sum_k p_k g_k) and dsink = -p_sink sum_k p_k
/// g_k. Rows with no present entry, or whose logits are all -inf, give 0.
void softmaxAdjoint(const TensorValue &input, int64_t dimension,
                    const TensorValue *sink, const TensorValue &result,
                    const double *resultAdjoint, double *inputAdjoint,
                    double *sinkAdjoint);

/// Adds the adjoint of `result = normalize(input, dimension, map)` to
/// `inputAdjoint`: with P = f(x) / sum f(x), dx_n = f'(x_n) (g_n - sum_k P_k
/// g_k) / sum f, computed as P_n (f'/f)(x_n) (...) for the maps taken
/// relative to the row's max, so that it stays exact where f underflows.
void normalizeAdjoint(const TensorValue &input, int64_t dimension,
                      mlir::attn::WeightMap map, const TensorValue &result,
                      const double *resultAdjoint, double *inputAdjoint);

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_NORMALIZERADJOINTS_H
