//===- Gradient.h - Reverse mode of the reference evaluator -----*- C++ -*-===//
//
// The oracle for training: float64 gradients of a kernel's cascade, computed
// by reverse mode over the same interpretation evaluate() performs. Every
// adjoint kernel attn-grad produces, and every backward backend, is checked
// against it; it is itself checked against finite differences.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_GRADIENT_H
#define ATTN_REFERENCE_GRADIENT_H

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/Support/LLVM.h"

#include <optional>
#include <vector>

namespace attn::ref {

/// What reverse mode gives back.
struct Gradients {
  /// One entry per kernel input: an F64 tensor of the input's shape holding
  /// dL/dinput, or std::nullopt for an integer (or i1) input, which has no
  /// gradient. A float input the cascade never reads gets zeros.
  std::vector<std::optional<HostTensor>> inputs;
  /// Beside each entry of `inputs`, the size of what that gradient sums: per
  /// element, sqrt(sum of t^2) over the terms t its adjoint received (one per
  /// body evaluation that read the element, one per keep, softmax or
  /// normalize that passed its adjoint to the input directly). A gradient
  /// computed in low precision is off by the rounding of its terms, not of
  /// its value: where the terms cancel (by structure, as for a bias added to
  /// a whole softmax row, whose adjoint sums to 0 over the row, or by
  /// chance), the value is far below them, and only this says how large an
  /// error is acceptable.
  std::vector<std::optional<HostTensor>> scales;
  /// The kernel's outputs, as evaluate() gives them: reverse mode runs the
  /// forward pass anyway, and callers checking a backward pass need both.
  std::vector<HostTensor> outputs;
};

/// Evaluates `kernel` on `args` and the gradient, with respect to every
/// float input, of L = sum over outputs o of <outputAdjoints[o], o>.
/// `outputAdjoints` holds one tensor per output (dO, dLSE, ...), of any
/// dtype and the output's shape, or null for an output whose adjoint is
/// zero. Params are not differentiated.
///
/// Absent entries contribute nothing, so a fully masked row contributes a
/// zero gradient, never NaN (a softmax over nothing, a logsumexp or max over
/// nothing). A max or min sends its adjoint to the first extreme term in
/// iteration order; a logsumexp to its terms by their softmax weights; a
/// mean divides it by the number of present terms. Each read of a float
/// tensor accumulates its adjoint at the entry read, whatever the subscript
/// (affine, modular, a gather through an integer table).
///
/// The kernel must be at cascade level: an attn.attention (after attn-raise)
/// is reported as an error. Other errors are reported as evaluate() reports
/// them, as diagnostics with failure(); it never crashes on verified IR.
mlir::FailureOr<Gradients>
evaluateGradients(mlir::attn::KernelOp kernel, const KernelArguments &args,
                  llvm::ArrayRef<const HostTensor *> outputAdjoints);

} // namespace attn::ref

#endif // ATTN_REFERENCE_GRADIENT_H
