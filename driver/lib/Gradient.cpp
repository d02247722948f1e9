//===- Gradient.cpp - The adjoint kernel of a spec ------------------------===//

#include "attn/Driver/Gradient.h"

#include "attn/Reference/Gradient.h"
#include "attn/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

using namespace attn;

static llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// "Q: bf16[B, H, M, D]".
static std::string describeTensor(const KernelTensor &tensor) {
  std::string text = tensor.name + ": " + std::string(dtypeName(tensor.dtype));
  text += "[";
  for (auto [i, axis] : llvm::enumerate(tensor.axes))
    text +=
        (i ? ", " : "") + (axis.isDim() ? axis.dim : std::to_string(axis.size));
  return text + "]";
}

/// Whether `tensor` can hold the adjoint of `like`: f32 of its shape.
static bool isAdjointOf(const KernelTensor &tensor, const KernelTensor &like) {
  if (tensor.dtype != DType::F32 || tensor.axes.size() != like.axes.size())
    return false;
  for (auto [axis, expected] : llvm::zip(tensor.axes, like.axes))
    if (axis.dim != expected.dim ||
        (!axis.isDim() && axis.size != expected.size))
      return false;
  return true;
}

/// Checks that attn-grad kept the contract the front doors rely on to bind
/// the adjoint's arguments to the forward's: a mismatch would silently feed
/// one tensor as another.
static llvm::Error checkAdjointSignature(const KernelSignature &forward,
                                         const KernelSignature &adjoint,
                                         llvm::ArrayRef<unsigned> adjointed,
                                         llvm::ArrayRef<unsigned> inputs) {
  auto mismatch = [&](const llvm::Twine &what) {
    return makeError("attn-grad built an adjoint of '" + forward.name +
                     "' that breaks its contract: " + what);
  };
  if (adjoint.name != forward.name + "_grad")
    return mismatch("it is named '" + adjoint.name + "', expected '" +
                    forward.name + "_grad'");
  bool sameDims = adjoint.dims.size() == forward.dims.size();
  for (unsigned i = 0; sameDims && i < forward.dims.size(); ++i)
    sameDims = adjoint.dims[i].name == forward.dims[i].name &&
               adjoint.dims[i].size == forward.dims[i].size;
  if (!sameDims)
    return mismatch("its dims differ from the forward's");
  bool sameParams = adjoint.params.size() == forward.params.size();
  for (unsigned i = 0; sameParams && i < forward.params.size(); ++i)
    sameParams = adjoint.params[i].name == forward.params[i].name &&
                 adjoint.params[i].dtype == forward.params[i].dtype;
  if (!sameParams)
    return mismatch("its params differ from the forward's");

  size_t numForwardInputs = forward.inputs.size();
  bool inputsMatch =
      adjoint.inputs.size() == numForwardInputs + adjointed.size();
  for (unsigned i = 0; inputsMatch && i < numForwardInputs; ++i)
    inputsMatch =
        describeTensor(adjoint.inputs[i]) == describeTensor(forward.inputs[i]);
  for (auto [k, output] : llvm::enumerate(adjointed))
    inputsMatch =
        inputsMatch && isAdjointOf(adjoint.inputs[numForwardInputs + k],
                                   forward.outputs[output]);
  if (!inputsMatch)
    return mismatch(llvm::formatv("it takes {0} inputs, expected the "
                                  "forward's {1} and one f32 adjoint per "
                                  "float output ({2})",
                                  adjoint.inputs.size(), numForwardInputs,
                                  adjointed.size())
                        .str());
  bool outputsMatch = adjoint.outputs.size() == inputs.size();
  for (auto [k, input] : llvm::enumerate(inputs))
    outputsMatch =
        outputsMatch && isAdjointOf(adjoint.outputs[k], forward.inputs[input]);
  if (!outputsMatch) {
    std::string got;
    for (const KernelTensor &output : adjoint.outputs)
      got += (got.empty() ? "" : ", ") + describeTensor(output);
    return mismatch("its outputs are (" + got +
                    "), expected one f32 gradient per float input");
  }
  return llvm::Error::success();
}

/// The adjoint of `forward` raised first, so that its attentions get the
/// fused attn.attention_backward; failure (with a remark saying why, on the
/// forward kernel) where nothing is raised or the structured backward does
/// not apply, and the caller differentiates the cascade.
static mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
buildFusedGradientModule(const LoadedSpec &forward,
                         llvm::ArrayRef<unsigned> constantInputs) {
  mlir::OwningOpRef<mlir::ModuleOp> raised = forward.getModule().clone();
  mlir::MLIRContext *context = raised->getContext();
  std::string reason;
  {
    // The raise reports its own remarks when the forward compiles; here
    // only why the backward is not fused is worth a remark.
    mlir::ScopedDiagnosticHandler quiet(context, [&](mlir::Diagnostic &d) {
      if (d.getSeverity() == mlir::DiagnosticSeverity::Error && reason.empty())
        reason = d.str();
      return mlir::success();
    });
    mlir::PassManager pm(context);
    mlir::attn::buildAttentionRecognitionPipeline(pm);
    if (mlir::failed(pm.run(*raised)))
      return mlir::failure();
    bool hasAttention = false;
    raised->walk([&](mlir::attn::AttentionOp) { hasAttention = true; });
    if (!hasAttention)
      return mlir::failure();
    mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> adjoint =
        mlir::attn::buildGradientModule(
            *raised->getOps<mlir::attn::KernelOp>().begin(), constantInputs);
    if (mlir::succeeded(adjoint))
      return adjoint;
  }
  mlir::emitRemark(forward.getKernel().getLoc())
      << "the backward is not fused (it runs as a cascade): " << reason;
  return mlir::failure();
}

llvm::Expected<GradientSpec>
GradientSpec::build(const LoadedSpec &forward, bool fused,
                    llvm::ArrayRef<std::string> constants) {
  const KernelSignature &signature = forward.getSignature();
  std::vector<unsigned> constantInputs;
  for (const std::string &name : constants) {
    auto input = llvm::find_if(signature.inputs, [&](const KernelTensor &t) {
      return t.name == name;
    });
    if (input == signature.inputs.end() || !isFloatDType(input->dtype)) {
      std::string floats;
      for (const KernelTensor &t : signature.inputs)
        if (isFloatDType(t.dtype))
          floats += (floats.empty() ? "" : ", ") + t.name;
      return makeError("'" + name + "' is not a float input of kernel '" +
                       signature.name + "' (its float inputs: " + floats +
                       "), so it cannot be a constant of the gradient");
    }
    constantInputs.push_back(input - signature.inputs.begin());
  }
  std::vector<unsigned> adjointed, differentiated;
  for (auto [i, output] : llvm::enumerate(signature.outputs))
    if (isFloatDType(output.dtype))
      adjointed.push_back(i);
  for (auto [i, input] : llvm::enumerate(signature.inputs))
    if (isFloatDType(input.dtype) && !llvm::is_contained(constantInputs, i))
      differentiated.push_back(i);
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
      mlir::failure();
  if (fused)
    module = buildFusedGradientModule(forward, constantInputs);
  if (mlir::failed(module))
    module =
        mlir::attn::buildGradientModule(forward.getKernel(), constantInputs);
  if (mlir::failed(module))
    return makeError("cannot differentiate kernel '" + signature.name + "'");
  llvm::Expected<LoadedSpec> adjoint =
      LoadedSpec::fromModule(std::move(*module));
  if (!adjoint)
    return adjoint.takeError();
  if (llvm::Error error = checkAdjointSignature(
          signature, adjoint->getSignature(), adjointed, differentiated))
    return std::move(error);
  return GradientSpec(std::move(*adjoint), std::move(adjointed),
                      std::move(differentiated));
}

std::vector<HostTensor>
attn::makeRandomOutputAdjoints(const LoadedSpec &forward,
                               llvm::ArrayRef<int64_t> dims, uint64_t seed) {
  mlir::attn::KernelOp kernel = forward.getKernel();
  const KernelSignature &signature = forward.getSignature();
  // A stream of its own: the inputs draw from mt19937_64(seed).
  std::mt19937_64 generator(seed ^ 0x9e3779b97f4a7c15ull);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<HostTensor> adjoints;
  for (auto [i, output] : llvm::enumerate(signature.outputs)) {
    if (!isFloatDType(output.dtype))
      continue;
    HostTensor adjoint(
        DType::F32, getTensorShape(kernel, signature.inputs.size() + i, dims));
    for (int64_t e = 0; e < adjoint.getNumElements(); ++e)
      adjoint.setFromDouble(e, normal(generator));
    adjoints.push_back(std::move(adjoint));
  }
  return adjoints;
}

llvm::Expected<ReferenceGradients> attn::evaluateReferenceGradients(
    const LoadedSpec &forward, llvm::ArrayRef<int64_t> dims,
    llvm::ArrayRef<const HostTensor *> inputs, llvm::ArrayRef<double> params,
    llvm::ArrayRef<const HostTensor *> outputAdjoints) {
  ref::KernelArguments arguments;
  arguments.dims.assign(dims.begin(), dims.end());
  arguments.inputs.assign(inputs.begin(), inputs.end());
  arguments.params.assign(params.begin(), params.end());
  std::string message;
  mlir::ScopedDiagnosticHandler handler(forward.getModule().getContext(),
                                        [&](mlir::Diagnostic &diag) {
                                          if (message.empty())
                                            message = diag.str();
                                          return mlir::success();
                                        });
  mlir::FailureOr<ref::Gradients> gradients =
      ref::evaluateGradients(forward.getKernel(), arguments, outputAdjoints);
  if (mlir::failed(gradients))
    return makeError("the reference gradients failed" +
                     (message.empty() ? "" : ": " + message));
  return ReferenceGradients{std::move(gradients->inputs),
                            std::move(gradients->scales)};
}

double attn::getGradientCheckTolerance(DType type) {
  return type == DType::BF16 || type == DType::F16 ? 2e-2 : 1e-4;
}

GradientError attn::getGradientError(const HostTensor &gradient,
                                     const HostTensor &expected,
                                     const HostTensor &scale) {
  constexpr double kInfinity = std::numeric_limits<double>::infinity();
  int64_t count = expected.getNumElements();
  if (gradient.getNumElements() != count || scale.getNumElements() != count)
    return {kInfinity, false};
  double difference = 0, reference = 0, terms = 0;
  for (int64_t i = 0; i < count; ++i) {
    double want = expected.getAsDouble(i), got = gradient.getAsDouble(i);
    // The same non-finite value agrees, as in relativeError.
    if ((std::isinf(want) && got == want) ||
        (std::isnan(want) && std::isnan(got)))
      continue;
    if (!std::isfinite(want) || !std::isfinite(got))
      return {kInfinity, false};
    difference += (got - want) * (got - want);
    reference += want * want;
    // A scale that overflowed would excuse any error.
    if (double term = scale.getAsDouble(i); std::isfinite(term))
      terms += term * term;
  }
  double referenceNorm = std::sqrt(reference), scaleNorm = std::sqrt(terms);
  double denominator = std::max(referenceNorm, scaleNorm);
  double error = std::sqrt(difference);
  return {denominator > 0 ? error / denominator : error,
          referenceNorm < kCancellingReferenceRatio * scaleNorm};
}
