//===- ReverseMode.cpp - Reverse mode of the reference evaluator ----------===//
//
// Runs the forward pass (KernelEvaluator keeps every intermediate tensor,
// with its absent entries), seeds the adjoints of the outputs and walks the
// kernel's ops in reverse program order, adding each op's contribution to
// the adjoints of the tensors it reads. Adjoints are float64 buffers laid out
// like their tensors; absent entries of a tensor never pass an adjoint on.
// Beside the adjoint of each float kernel input, a buffer sums the squares
// of the terms it receives, for Gradients::scales.
//
//===----------------------------------------------------------------------===//

#include "attn/Reference/Gradient.h"

#include "Accumulator.h"
#include "BodyAdjoint.h"
#include "BodyProgram.h"
#include "KernelEvaluator.h"
#include "NormalizerAdjoints.h"
#include "TensorValue.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <unordered_map>

using namespace mlir;
using namespace mlir::attn;
using ::attn::HostTensor;
using namespace ::attn::ref;

namespace {

/// Differentiates one kernel on one set of arguments.
class ReverseMode {
public:
  ReverseMode(KernelOp kernel, const KernelArguments &args)
      : kernel(kernel), forward(kernel, args) {}

  FailureOr<Gradients> run(ArrayRef<const HostTensor *> outputAdjoints);

private:
  LogicalResult checkCascadeLevel();
  LogicalResult seed(ArrayRef<const HostTensor *> outputAdjoints);
  LogicalResult reverse(Operation *op);
  LogicalResult reverseEinsum(EinsumOp op);
  void reverseKeep(KeepOp op);
  void reverseSoftmax(SoftmaxOp op);
  void reverseNormalize(NormalizeOp op);
  Gradients collectGradients(std::vector<HostTensor> outputs);

  /// Runs `accumulate`, which adds one op's contribution to the adjoints of
  /// `tensors`, and counts what it added to each entry of a kernel input
  /// among them as one term of that entry.
  void addAsOneTerm(ArrayRef<const TensorValue *> tensors,
                    llvm::function_ref<void()> accumulate);

  /// The adjoint of `tensor`, zeros until something adds to it; null for
  /// integer tensors, which have none.
  double *getAdjoint(const TensorValue *tensor);
  /// The adjoint of `tensor` if anything has added to it, else null: an op
  /// whose result has none needs no reverse step.
  const double *findAdjoint(const TensorValue *tensor) const {
    auto it = adjoints.find(tensor);
    return it == adjoints.end() ? nullptr : it->second.data();
  }

  /// The sum of the squares of the terms `tensor`'s adjoint received, for
  /// a float kernel input; null for any other tensor, whose terms nobody
  /// asks for.
  double *findSquares(const TensorValue *tensor) {
    auto it = squares.find(tensor);
    return it == squares.end() ? nullptr : it->second.data();
  }

  KernelOp kernel;
  KernelEvaluator forward;
  /// Node-based, so that a buffer stays put while others are added.
  std::unordered_map<const TensorValue *, std::vector<double>> adjoints;
  std::unordered_map<const TensorValue *, std::vector<double>> squares;
};

} // namespace

double *ReverseMode::getAdjoint(const TensorValue *tensor) {
  if (!tensor || tensor->isInteger)
    return nullptr;
  auto [it, inserted] = adjoints.try_emplace(tensor);
  if (inserted)
    it->second.assign(tensor->getNumElements(), 0.0);
  return it->second.data();
}

LogicalResult ReverseMode::checkCascadeLevel() {
  for (Operation &op : kernel.getEntryBlock())
    if (isa<AttentionOp, tensor::ExpandShapeOp>(op))
      return op.emitError() << "reference evaluator: reverse mode needs the "
                               "cascade (before attn-raise)";
  return success();
}

LogicalResult ReverseMode::seed(ArrayRef<const HostTensor *> outputAdjoints) {
  ValueRange returned = kernel.getReturnOp().getValues();
  if (outputAdjoints.size() != returned.size())
    return kernel.emitError()
           << "reference evaluator: kernel has " << returned.size()
           << " outputs, but " << outputAdjoints.size()
           << " output adjoints were given";
  for (auto [i, value, host] : llvm::enumerate(returned, outputAdjoints)) {
    if (!host)
      continue;
    const TensorValue *tensor = forward.lookupTensor(value);
    StringRef name = cast<StringAttr>(kernel.getOutputNames()[i]).getValue();
    if (host->getShape() != tensor->shape) {
      InFlightDiagnostic diag = kernel.emitError()
                                << "reference evaluator: the adjoint of output "
                                << name << " has shape [";
      llvm::interleaveComma(host->getShape(), diag);
      diag << "], expected [";
      llvm::interleaveComma(tensor->shape, diag);
      return diag << "]";
    }
    double *adjoint = getAdjoint(tensor);
    if (!adjoint)
      continue;
    // An input returned as it is: its output's adjoint is a term.
    double *inputSquares = findSquares(tensor);
    for (int64_t e = 0, n = tensor->getNumElements(); e < n; ++e) {
      double term = host->getAsDouble(e);
      adjoint[e] += term;
      if (inputSquares)
        inputSquares[e] += term * term;
    }
  }
  return success();
}

LogicalResult ReverseMode::reverseEinsum(EinsumOp op) {
  const TensorValue *result = forward.lookupTensor(op.getResult());
  const double *resultAdjoint = findAdjoint(result);
  if (!resultAdjoint)
    return success();
  FailureOr<std::vector<int64_t>> outShape =
      forward.evaluateExtents(op, op.getOutputExtents());
  FailureOr<std::vector<int64_t>> reducedShape =
      forward.evaluateExtents(op, op.getReducedExtents());
  if (failed(outShape) || failed(reducedShape))
    return failure();
  FailureOr<BodyProgram> program = forward.compileBody(op.getBodyBlock());
  if (failed(program))
    return failure();
  BodyAdjoint body(*program);
  for (auto [i, site] : llvm::enumerate(program->getReadSites()))
    if (!site.integer)
      body.setReadAdjoint(i, getAdjoint(site.tensor), findSquares(site.tensor));

  SmallVector<Attribute> indexNames(op.getIndices().begin(),
                                    op.getIndices().end());
  llvm::append_range(indexNames, op.getReduced());
  std::vector<Reg> regs = program->makeRegisters();
  Reg *r = regs.data();
  const int64_t numOut = outShape->size();
  const int64_t numTerms = countElements(*reducedShape);
  const ReductionKind kind = op.getKind();
  Fault fault;

  // Registers 0..numOut-1 hold the output point and the rest the reduced
  // point, as in the forward pass; both are decoded from row-major indices.
  auto setPoint = [&](int64_t first, ArrayRef<int64_t> shape, int64_t linear) {
    for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
      r[first + k].i = linear % shape[k];
      linear /= shape[k];
    }
  };
  // Runs the body at the point in the registers: whether it is present.
  auto runBody = [&]() -> FailureOr<bool> {
    BodyProgram::Status status = program->run(r, fault);
    if (status == BodyProgram::Status::Error)
      return forward.reportFault(fault, op, indexNames, r);
    return status == BodyProgram::Status::Present;
  };

  struct Term {
    int64_t point;
    double value;
  };
  std::vector<Term> terms;
  for (int64_t point = 0, n = result->getNumElements(); point < n; ++point) {
    double g = resultAdjoint[point];
    if (g == 0.0 || !result->isPresent(point))
      continue;
    setPoint(0, *outShape, point);
    if (kind == ReductionKind::None) {
      setPoint(numOut, *reducedShape, 0);
      FailureOr<bool> present = runBody();
      if (failed(present))
        return failure();
      if (*present)
        body.propagate(r, g);
      continue;
    }

    // The present terms, in the forward pass's order.
    terms.clear();
    for (int64_t term = 0; term < numTerms; ++term) {
      setPoint(numOut, *reducedShape, term);
      FailureOr<bool> present = runBody();
      if (failed(present))
        return failure();
      if (*present)
        terms.push_back({term, program->getResult(r)});
    }
    if (terms.empty())
      continue;

    // The derivative of the reduction with respect to each term.
    auto propagateAt = [&](int64_t term, double adjoint) -> LogicalResult {
      setPoint(numOut, *reducedShape, term);
      if (failed(runBody()))
        return failure();
      body.propagate(r, adjoint);
      return success();
    };
    switch (kind) {
    case ReductionKind::None:
    case ReductionKind::Sum:
    case ReductionKind::Mean: {
      double adjoint = kind == ReductionKind::Mean
                           ? g / static_cast<double>(terms.size())
                           : g;
      for (const Term &term : terms)
        if (failed(propagateAt(term.point, adjoint)))
          return failure();
      break;
    }
    case ReductionKind::Max:
    case ReductionKind::Min: {
      // The term the forward pass's accumulator ended on; none when every
      // term is the identity (a max over -inf terms).
      Accumulator accumulator(kind);
      const Term *chosen = nullptr;
      for (const Term &term : terms)
        if (accumulator.add(term.value))
          chosen = &term;
      if (chosen && failed(propagateAt(chosen->point, g)))
        return failure();
      break;
    }
    case ReductionKind::LogSumExp: {
      // d lse / d x_j = exp(x_j - lse): the softmax of the terms. An
      // infinite lse (every term -inf, or one +inf) has no finite
      // derivative to give.
      double lse = result->data[point];
      if (!std::isfinite(lse))
        break;
      for (const Term &term : terms)
        if (failed(propagateAt(term.point, g * std::exp(term.value - lse))))
          return failure();
      break;
    }
    }
  }
  return success();
}

void ReverseMode::addAsOneTerm(ArrayRef<const TensorValue *> tensors,
                               llvm::function_ref<void()> accumulate) {
  struct Counted {
    const double *adjoint;
    double *squares;
    std::vector<double> before;
  };
  SmallVector<Counted, 2> counted;
  for (const TensorValue *tensor : tensors) {
    double *tensorSquares = findSquares(tensor);
    if (!tensorSquares || llvm::any_of(counted, [&](const Counted &c) {
          return c.squares == tensorSquares;
        }))
      continue;
    const double *adjoint = getAdjoint(tensor);
    counted.push_back(
        {adjoint, tensorSquares,
         std::vector<double>(adjoint, adjoint + tensor->getNumElements())});
  }
  accumulate();
  for (Counted &c : counted)
    for (size_t e = 0; e < c.before.size(); ++e) {
      double term = c.adjoint[e] - c.before[e];
      c.squares[e] += term * term;
    }
}

void ReverseMode::reverseKeep(KeepOp op) {
  const TensorValue *result = forward.lookupTensor(op.getResult());
  const double *resultAdjoint = findAdjoint(result);
  const TensorValue *input = forward.lookupTensor(op.getInput());
  double *inputAdjoint = getAdjoint(input);
  if (!resultAdjoint || !inputAdjoint)
    return;
  // The kept entries are the input's; the dropped ones pass nothing back.
  addAsOneTerm(input, [&] {
    for (int64_t i = 0, n = result->getNumElements(); i < n; ++i)
      if (result->isPresent(i))
        inputAdjoint[i] += resultAdjoint[i];
  });
}

void ReverseMode::reverseSoftmax(SoftmaxOp op) {
  const TensorValue *result = forward.lookupTensor(op.getResult());
  const double *resultAdjoint = findAdjoint(result);
  if (!resultAdjoint)
    return;
  const TensorValue *input = forward.lookupTensor(op.getInput());
  const TensorValue *sink =
      op.getSink() ? forward.lookupTensor(op.getSink()) : nullptr;
  addAsOneTerm({input, sink}, [&] {
    softmaxAdjoint(*input, op.getDimension(), sink, *result, resultAdjoint,
                   getAdjoint(input), getAdjoint(sink));
  });
}

void ReverseMode::reverseNormalize(NormalizeOp op) {
  const TensorValue *result = forward.lookupTensor(op.getResult());
  const double *resultAdjoint = findAdjoint(result);
  if (!resultAdjoint)
    return;
  const TensorValue *input = forward.lookupTensor(op.getInput());
  addAsOneTerm(input, [&] {
    normalizeAdjoint(*input, op.getDimension(), op.getMap(), *result,
                     resultAdjoint, getAdjoint(input));
  });
}

LogicalResult ReverseMode::reverse(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](EinsumOp einsum) { return reverseEinsum(einsum); })
      .Case([&](KeepOp keep) {
        reverseKeep(keep);
        return success();
      })
      .Case([&](SoftmaxOp softmax) {
        reverseSoftmax(softmax);
        return success();
      })
      .Case([&](NormalizeOp normalize) {
        reverseNormalize(normalize);
        return success();
      })
      // Top-level scalars are dims, params and arithmetic on them: nothing
      // to differentiate.
      .Default([](Operation *) { return success(); });
}

Gradients ReverseMode::collectGradients(std::vector<HostTensor> outputs) {
  Gradients gradients;
  gradients.outputs = std::move(outputs);
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    const TensorValue *input = forward.lookupTensor(kernel.getInputArg(i));
    if (input->isInteger) {
      gradients.inputs.push_back(std::nullopt);
      gradients.scales.push_back(std::nullopt);
      continue;
    }
    HostTensor gradient(::attn::DType::F64, input->shape);
    HostTensor scale(::attn::DType::F64, input->shape);
    auto *data = static_cast<double *>(gradient.data());
    auto *scaleData = static_cast<double *>(scale.data());
    const double *adjoint = findAdjoint(input);
    const double *inputSquares = findSquares(input);
    for (int64_t e = 0, n = input->getNumElements(); e < n; ++e) {
      data[e] = adjoint ? adjoint[e] : 0.0;
      scaleData[e] = std::sqrt(inputSquares[e]);
    }
    gradients.inputs.push_back(std::move(gradient));
    gradients.scales.push_back(std::move(scale));
  }
  return gradients;
}

FailureOr<Gradients>
ReverseMode::run(ArrayRef<const HostTensor *> outputAdjoints) {
  if (failed(checkCascadeLevel()) || failed(forward.evaluateAll()))
    return failure();
  FailureOr<std::vector<HostTensor>> outputs = forward.collectOutputs();
  if (failed(outputs))
    return failure();
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    const TensorValue *input = forward.lookupTensor(kernel.getInputArg(i));
    if (!input->isInteger)
      squares[input].assign(input->getNumElements(), 0.0);
  }
  if (failed(seed(outputAdjoints)))
    return failure();
  for (Operation &op : llvm::reverse(kernel.getEntryBlock()))
    if (failed(reverse(&op)))
      return failure();
  return collectGradients(std::move(*outputs));
}

namespace attn::ref {
FailureOr<Gradients>
evaluateGradients(KernelOp kernel, const KernelArguments &args,
                  ArrayRef<const HostTensor *> outputAdjoints) {
  ReverseMode reverseMode(kernel, args);
  return reverseMode.run(outputAdjoints);
}
} // namespace attn::ref
