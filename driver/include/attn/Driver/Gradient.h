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

/// The float64 reference gradients of `forward`'s cascade as written: one
/// F64 tensor per input, nullopt for integer inputs. `outputAdjoints` holds
/// one tensor (any float dtype, the output's shape) or null (a zero
/// adjoint) per forward output. Errors carry the evaluator's first
/// diagnostic.
llvm::Expected<std::vector<std::optional<HostTensor>>>
evaluateReferenceGradients(const LoadedSpec &forward,
                           llvm::ArrayRef<int64_t> dims,
                           llvm::ArrayRef<const HostTensor *> inputs,
                           llvm::ArrayRef<double> params,
                           llvm::ArrayRef<const HostTensor *> outputAdjoints);

/// The relative-error tolerance of gradients checked against the reference
/// when the forward's float inputs are `type`: the adjoint kernel reduces
/// over more terms than the forward and its errors compound through the
/// recomputed forward (fp32 1e-4, bf16 and f16 2e-2).
double getGradientCheckTolerance(DType type);

/// The error of `gradient` against its float64 reference `expected`: the
/// relative error ‖out − ref‖ / ‖ref‖ (relativeError), except for a gradient
/// that vanishes identically: a reference whose root mean square is below
/// kVanishingGradientRms (the reverse mode's rounding of a sum that cancels,
/// e.g. of a bias added to a whole softmax row, which the row's weights do
/// not depend on) is compared by the root mean square of the error, against
/// the same tolerance; relative to the reference's rounding noise, the
/// kernel's own rounding would look like an error of many orders of
/// magnitude.
struct GradientError {
  double error;
  /// Whether the reference vanishes (`error` is a root mean square).
  bool vanishes;
};
GradientError getGradientError(const HostTensor &gradient,
                               const HostTensor &expected);

/// A float64 reference gradient of O(1) random inputs and adjoints whose root
/// mean square is below this is taken to vanish: its rounding is at 1e-16
/// times the terms it sums, a gradient that does not vanish is at 1e-3 of
/// them or more.
constexpr double kVanishingGradientRms = 1e-9;

} // namespace attn

#endif // ATTN_DRIVER_GRADIENT_H
