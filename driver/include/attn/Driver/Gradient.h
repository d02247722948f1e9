//===- Gradient.h - The adjoint kernel of a spec ----------------*- C++ -*-===//
//
// What `attnc compile --emit=grad`, `attnc run --grad` and the Python
// module's vjp share: the adjoint kernel attn-grad builds from a spec's
// kernel, held like a spec (so that it compiles through the same artifact
// cache and its launches are checked the same way), how its arguments
// correspond to the forward kernel's, random output adjoints, and the
// float64 reference gradients it is checked against.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_GRADIENT_H
#define ATTN_DRIVER_GRADIENT_H

#include "attn/Driver/Spec.h"
#include "attn/Runtime/Tensor.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace attn {

/// The adjoint kernel `<name>_grad` of a spec's kernel. Its dims and params
/// are the forward's; its inputs are the forward's inputs, then the adjoint
/// of every float output (f32, the output's shape); its outputs are the
/// gradients of L = sum over outputs of <adjoint, output> with respect to
/// every float input not held constant (f32, the input's shape), in input
/// order. Adjoints and gradients are named "d" and the tensor's name ("dO",
/// "dLSE", "dQ", "dSlopes"), with a suffix where the spec already uses that
/// name.
class GradientSpec {
public:
  /// Builds the adjoint of `forward`'s kernel with attn-grad. With `fused`,
  /// of the kernel raised first, so that each attention gets the fused
  /// attn.attention_backward; where that does not apply (nothing raised,
  /// the normalize normalizer, a captured tensor that needs a gradient), a
  /// remark says why and the cascade is differentiated instead. What cannot
  /// be differentiated at all (an op without a derivative rule, a kernel
  /// without a float input or output) is reported as diagnostics on the
  /// forward kernel's ops, through the context's handlers, before the
  /// returned error. The float inputs named in `constants` are held
  /// constant: no gradient, and nothing that depends on them alone is
  /// differentiated (so a score_mod that reads a captured table nobody
  /// trains keeps the fused backward).
  static llvm::Expected<GradientSpec>
  build(const LoadedSpec &forward, bool fused = true,
        llvm::ArrayRef<std::string> constants = {});

  /// The adjoint kernel at cascade level.
  const LoadedSpec &getAdjoint() const { return adjoint; }

  /// The forward outputs that have an adjoint input (the float ones), in
  /// the order of those inputs, which follow the forward's inputs.
  llvm::ArrayRef<unsigned> getAdjointedOutputs() const {
    return adjointedOutputs;
  }
  /// The forward inputs that have a gradient (the float ones not held
  /// constant), in the order of the adjoint kernel's outputs.
  llvm::ArrayRef<unsigned> getDifferentiatedInputs() const {
    return differentiatedInputs;
  }

private:
  GradientSpec(LoadedSpec adjoint, std::vector<unsigned> adjointedOutputs,
               std::vector<unsigned> differentiatedInputs)
      : adjoint(std::move(adjoint)),
        adjointedOutputs(std::move(adjointedOutputs)),
        differentiatedInputs(std::move(differentiatedInputs)) {}

  LoadedSpec adjoint;
  std::vector<unsigned> adjointedOutputs;
  std::vector<unsigned> differentiatedInputs;
};

/// Random output adjoints for a gradient launch of `forward` at `dims`: one
/// f32 tensor of N(0, 1) entries per float output (dO, dLSE), in output
/// order. Drawn from a stream of its own, so that they are not the values
/// makeRandomInputs draws for the same seed.
std::vector<HostTensor> makeRandomOutputAdjoints(const LoadedSpec &forward,
                                                 llvm::ArrayRef<int64_t> dims,
                                                 uint64_t seed);

/// What the float64 reference's reverse mode gives for a launch: one entry
/// per forward input, nullopt for integer inputs.
struct ReferenceGradients {
  /// The gradients (F64, the input's shape).
  std::vector<std::optional<HostTensor>> gradients;
  /// Per element, the root of the sum of squares of the terms its gradient
  /// sums (ref::Gradients::scales): what getGradientError measures an error
  /// against where the terms cancel.
  std::vector<std::optional<HostTensor>> scales;
};

/// The float64 reference gradients of `forward`'s cascade as written.
/// `outputAdjoints` holds one tensor (any float dtype, the output's shape)
/// or null (a zero adjoint) per forward output. Errors carry the
/// evaluator's first diagnostic.
llvm::Expected<ReferenceGradients> evaluateReferenceGradients(
    const LoadedSpec &forward, llvm::ArrayRef<int64_t> dims,
    llvm::ArrayRef<const HostTensor *> inputs, llvm::ArrayRef<double> params,
    llvm::ArrayRef<const HostTensor *> outputAdjoints);

/// The relative-error tolerance of gradients checked against the reference
/// when the forward's float inputs are `type`: the adjoint kernel reduces
/// over more terms than the forward and its errors compound through the
/// recomputed forward (fp32 1e-4, bf16 and f16 2e-2).
double getGradientCheckTolerance(DType type);

/// The error of `gradient` against its float64 reference `expected`, whose
/// terms have the size `scale` (ReferenceGradients::scales):
/// ‖g − ref‖ / max(‖ref‖, ‖scale‖), norms over the tensor. A float gradient
/// is off by the rounding of the terms it sums, about u·|t| each, not by
/// that of its value. With terms of one sign ‖ref‖ ≥ ‖scale‖ and this is
/// the relative error; with terms of random sign the two are of the same
/// order. Where the terms cancel, by structure (the adjoint dS of a softmax
/// row sums to 0, so a bias added to the whole row gets nothing, and ALiBi's
/// slope, linear in the key position, little) or by chance (one entry that
/// sums many terms of random sign), ‖ref‖ is orders of magnitude below
/// ‖scale‖, down to the float64 reference's own rounding: relative to it,
/// the kernel's rounding of the terms would look like a wrong gradient. A
/// wrong kernel still shows: dropping or flipping one of n similar terms is
/// an error of about 1/sqrt(n) of the scale. NaN where the reference is not
/// NaN, or an infinity the reference does not have, is an infinite error,
/// as in relativeError.
struct GradientError {
  double error;
  /// Whether the reference cancels: ‖ref‖ is below kCancellingReferenceRatio
  /// times ‖scale‖, so that the terms' scale decided the error.
  bool cancels;
};
GradientError getGradientError(const HostTensor &gradient,
                               const HostTensor &expected,
                               const HostTensor &scale);

/// A reference gradient below this fraction of its terms' scale is reported
/// as cancelling. Over a tensor of many entries, sums of terms of random
/// sign come within a small factor of their scale (dQ, dK, dV: 0.9 to 1.1);
/// a sum that cancels falls far below it, by structure (ALiBi's slopes:
/// 1e-2; a row bias: the float64 rounding, 1e-15) or by chance (a gradient
/// of one nonzero entry: test/tools/Inputs/paged-position-bias.attn, 3e-3).
/// It only labels the output: the error is measured the same either way.
constexpr double kCancellingReferenceRatio = 0.1;

} // namespace attn

#endif // ATTN_DRIVER_GRADIENT_H
