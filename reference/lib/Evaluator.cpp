//===- Evaluator.cpp - The float64 reference evaluator --------------------===//
//
// Walks the top level of an attn.kernel in program order. Each cascade op
// becomes a TensorValue; each top-level scalar op (extent arithmetic) a
// scalar. Bodies are compiled once per op into a BodyProgram and run at
// every point, since walking MLIR per point would be far too slow.
//
//===----------------------------------------------------------------------===//

#include "attn/Reference/Evaluator.h"

#include "Accumulator.h"
#include "AttentionEvaluator.h"
#include "BodyProgram.h"
#include "KernelEvaluator.h"
#include "Normalizers.h"
#include "TensorValue.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <deque>
#include <optional>

using namespace mlir;
using namespace mlir::attn;
using ::attn::HostTensor;
using ::attn::ref::KernelArguments;

namespace attn::ref {
namespace {

/// The first NameLoc in `loc`, looking through fused and call-site locations.
static std::optional<StringRef> findName(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc))
    return name.getName().getValue();
  if (auto fused = dyn_cast<FusedLoc>(loc))
    for (Location inner : fused.getLocations())
      if (auto name = findName(inner))
        return name;
  if (auto call = dyn_cast<CallSiteLoc>(loc))
    return findName(call.getCallee());
  return std::nullopt;
}

} // namespace
} // namespace attn::ref

using namespace ::attn::ref;

void KernelEvaluator::define(Value value, TensorValue tensor) {
  storage.push_back(std::move(tensor));
  env.tensors[value] = &storage.back();
  std::string name;
  llvm::raw_string_ostream os(name);
  Operation *op = value.getDefiningOp();
  std::optional<StringRef> given = op ? findName(op->getLoc()) : std::nullopt;
  if (given)
    os << "'" << *given << "' (";
  value.printAsOperand(os, asmState);
  if (op)
    os << (given ? ", " : " (") << op->getName() << ")";
  env.names[value] = std::move(name);
}

LogicalResult KernelEvaluator::bindArguments() {
  if (args.dims.size() != kernel.getNumDims() ||
      args.inputs.size() != kernel.getNumInputs() ||
      args.params.size() != kernel.getNumParams())
    return kernel.emitError()
           << "reference evaluator: kernel takes " << kernel.getNumDims()
           << " dims, " << kernel.getNumInputs() << " inputs and "
           << kernel.getNumParams() << " params, but got " << args.dims.size()
           << ", " << args.inputs.size() << " and " << args.params.size();

  for (unsigned i = 0; i < kernel.getNumDims(); ++i) {
    StringRef name = cast<StringAttr>(kernel.getDimNames()[i]).getValue();
    int64_t size = args.dims[i];
    int64_t fixed = kernel.getDimSizes()[i];
    if (size < 0)
      return kernel.emitError() << "reference evaluator: dim " << name
                                << " has negative size " << size;
    if (!ShapedType::isDynamic(fixed) && fixed != size)
      return kernel.emitError()
             << "reference evaluator: dim " << name << " is fixed to " << fixed
             << " but " << size << " was given";
    Reg reg;
    reg.i = size;
    env.scalars[kernel.getDimArg(i)] = reg;
  }

  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    StringRef name = cast<StringAttr>(kernel.getInputNames()[i]).getValue();
    const HostTensor *host = args.inputs[i];
    Value arg = kernel.getInputArg(i);
    auto type = cast<RankedTensorType>(arg.getType());
    if (!host)
      return kernel.emitError()
             << "reference evaluator: input " << name << " is missing";
    if (host->getRank() != type.getRank())
      return kernel.emitError()
             << "reference evaluator: input " << name << " has rank "
             << host->getRank() << ", expected " << type.getRank();
    for (int64_t axis = 0; axis < type.getRank(); ++axis)
      if (!type.isDynamicDim(axis) &&
          type.getDimSize(axis) != host->getShape()[axis])
        return kernel.emitError()
               << "reference evaluator: input " << name << " axis " << axis
               << " has size " << host->getShape()[axis] << ", expected "
               << type.getDimSize(axis);
    if (countElements(host->getShape()) < 0)
      return kernel.emitError()
             << "reference evaluator: input " << name << " is too large";
    TensorValue tensor =
        makeTensor(host->getShape(), type.getElementType().isIntOrIndex());
    for (int64_t e = 0, n = tensor.getNumElements(); e < n; ++e)
      tensor.data[e] = host->getAsDouble(e);
    storage.push_back(std::move(tensor));
    env.tensors[arg] = &storage.back();
    env.names[arg] = ("input '" + name + "'").str();
  }

  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    Value arg = kernel.getParamArg(i);
    double value = args.params[i];
    Reg reg;
    if (arg.getType().isIntOrIndex()) {
      if (!std::isfinite(value) || std::fabs(value) > 9.0e18)
        return kernel.emitError()
               << "reference evaluator: integer param "
               << cast<StringAttr>(kernel.getParamNames()[i]).getValue()
               << " has value " << value;
      reg.i = static_cast<int64_t>(value);
    } else {
      reg.f = value;
    }
    env.scalars[arg] = reg;
  }
  return success();
}

FailureOr<std::vector<int64_t>>
KernelEvaluator::evaluateExtents(Operation *op, ValueRange extents) {
  std::vector<int64_t> sizes;
  for (Value extent : extents) {
    auto it = env.scalars.find(extent);
    if (it == env.scalars.end())
      return op->emitError() << "reference evaluator: an extent is not a "
                                "scalar computed at the kernel's top level";
    if (it->second.i < 0)
      return op->emitError() << "reference evaluator: extent #" << sizes.size()
                             << " is negative (" << it->second.i << ")";
    sizes.push_back(it->second.i);
  }
  return sizes;
}

FailureOr<BodyProgram> KernelEvaluator::compileBody(Block &block) {
  SmallVector<Operation *> ops;
  for (Operation &op : block)
    ops.push_back(&op);
  Value result = cast<YieldOp>(block.getTerminator()).getValues().front();
  return BodyProgram::compile(block.getArguments(), ops, result, env);
}

LogicalResult KernelEvaluator::reportFault(const Fault &fault,
                                           Operation *cascadeOp,
                                           ArrayRef<Attribute> indexNames,
                                           const Reg *regs) {
  InFlightDiagnostic diag = fault.op->emitError() << fault.message;
  diag << " at point (";
  for (auto [i, name] : llvm::enumerate(indexNames))
    diag << (i ? ", " : "") << cast<StringAttr>(name).getValue() << "="
         << regs[i].i;
  diag << ")";
  diag.attachNote(cascadeOp->getLoc())
      << "while evaluating this " << cascadeOp->getName();
  return failure();
}

LogicalResult KernelEvaluator::evaluateScalar(Operation *op) {
  if (op->getNumResults() != 1)
    return op->emitError() << "reference evaluator does not support op '"
                           << op->getName() << "'";
  FailureOr<BodyProgram> program =
      BodyProgram::compile({}, {op}, op->getResult(0), env);
  if (failed(program))
    return failure();
  std::vector<Reg> regs = program->makeRegisters();
  Fault fault;
  if (program->run(regs.data(), fault) != BodyProgram::Status::Present)
    return fault.op->emitError() << fault.message;
  env.scalars[op->getResult(0)] = regs[program->getResultRegister()];
  return success();
}

LogicalResult KernelEvaluator::evaluateEinsum(EinsumOp op) {
  FailureOr<std::vector<int64_t>> outShape =
      evaluateExtents(op, op.getOutputExtents());
  FailureOr<std::vector<int64_t>> reducedShape =
      evaluateExtents(op, op.getReducedExtents());
  if (failed(outShape) || failed(reducedShape))
    return failure();
  if (countElements(*outShape) < 0)
    return op->emitError() << "reference evaluator: result is too large";
  FailureOr<BodyProgram> program = compileBody(op.getBodyBlock());
  if (failed(program))
    return failure();

  Type elementType = cast<RankedTensorType>(op.getType()).getElementType();
  TensorValue result = makeTensor(*outShape, elementType.isIntOrIndex());
  bool elementwise = op.getKind() == ReductionKind::None;
  if (elementwise)
    result.present.assign(result.getNumElements(), 1);

  SmallVector<Attribute> indexNames(op.getIndices().begin(),
                                    op.getIndices().end());
  llvm::append_range(indexNames, op.getReduced());
  std::vector<Reg> regs = program->makeRegisters();
  Reg *r = regs.data();
  const int64_t numOut = outShape->size();
  const int64_t numReduced = reducedShape->size();
  bool emptyReduction = countElements(*reducedShape) == 0;
  Accumulator accumulator(op.getKind());
  Fault fault;

  for (int64_t k = 0; k < numOut + numReduced; ++k)
    r[k].i = 0;
  for (int64_t point = 0, n = result.getNumElements(); point < n; ++point) {
    if (elementwise) {
      BodyProgram::Status status = program->run(r, fault);
      if (status == BodyProgram::Status::Error)
        return reportFault(fault, op, indexNames, r);
      if (status == BodyProgram::Status::Absent)
        result.present[point] = 0;
      else
        result.data[point] = program->getResult(r);
    } else {
      accumulator.reset();
      if (!emptyReduction) {
        // The reduced indices count like an odometer in registers
        // numOut..numOut+numReduced-1, and wrap back to all zeros.
        while (true) {
          BodyProgram::Status status = program->run(r, fault);
          if (status == BodyProgram::Status::Error)
            return reportFault(fault, op, indexNames, r);
          if (status == BodyProgram::Status::Present)
            accumulator.add(program->getResult(r));
          int64_t k = numOut + numReduced - 1;
          for (; k >= numOut; --k) {
            if (++r[k].i < (*reducedShape)[k - numOut])
              break;
            r[k].i = 0;
          }
          if (k < numOut)
            break;
        }
      }
      result.data[point] = accumulator.result();
    }
    for (int64_t k = numOut - 1; k >= 0; --k) {
      if (++r[k].i < (*outShape)[k])
        break;
      r[k].i = 0;
    }
  }
  result.compactPresence();
  define(op.getResult(), std::move(result));
  return success();
}

LogicalResult KernelEvaluator::evaluateKeep(KeepOp op) {
  const TensorValue *input = lookupTensor(op.getInput());
  if (!input)
    return op->emitError() << "reference evaluator: keeps an unknown tensor";
  FailureOr<BodyProgram> program = compileBody(op.getBodyBlock());
  if (failed(program))
    return failure();
  TensorValue result = *input;
  if (result.present.empty())
    result.present.assign(result.getNumElements(), 1);

  SmallVector<Attribute> indexNames(op.getIndices().begin(),
                                    op.getIndices().end());
  std::vector<Reg> regs = program->makeRegisters();
  Reg *r = regs.data();
  const int64_t rank = input->getRank();
  Fault fault;
  for (int64_t k = 0; k < rank; ++k)
    r[k].i = 0;
  for (int64_t point = 0, n = result.getNumElements(); point < n; ++point) {
    if (result.present[point]) {
      BodyProgram::Status status = program->run(r, fault);
      if (status == BodyProgram::Status::Error)
        return reportFault(fault, op, indexNames, r);
      // A predicate that reads an absent entry cannot say "keep".
      bool keep = status == BodyProgram::Status::Present &&
                  r[program->getResultRegister()].i != 0;
      if (!keep) {
        result.present[point] = 0;
        result.data[point] = 0.0;
      }
    }
    for (int64_t k = rank - 1; k >= 0; --k) {
      if (++r[k].i < input->shape[k])
        break;
      r[k].i = 0;
    }
  }
  result.compactPresence();
  define(op.getResult(), std::move(result));
  return success();
}

LogicalResult KernelEvaluator::evaluateSoftmax(SoftmaxOp op) {
  const TensorValue *input = lookupTensor(op.getInput());
  if (!input)
    return op->emitError() << "reference evaluator: softmax of an unknown "
                              "tensor";
  const TensorValue *sink = nullptr;
  if (Value sinkValue = op.getSink()) {
    sink = lookupTensor(sinkValue);
    if (!sink)
      return op->emitError() << "reference evaluator: unknown sink tensor";
    std::vector<int64_t> expected = input->shape;
    expected.erase(expected.begin() + op.getDimension());
    if (sink->shape != expected) {
      InFlightDiagnostic diag = op->emitError()
                                << "reference evaluator: the sink has shape [";
      llvm::interleaveComma(sink->shape, diag);
      diag << "], expected [";
      llvm::interleaveComma(expected, diag);
      return diag << "] (the input without dimension " << op.getDimension()
                  << ")";
    }
  }
  define(op.getResult(), softmax(*input, op.getDimension(), sink));
  return success();
}

LogicalResult KernelEvaluator::evaluateNormalize(NormalizeOp op) {
  const TensorValue *input = lookupTensor(op.getInput());
  if (!input)
    return op->emitError() << "reference evaluator: normalizes an unknown "
                              "tensor";
  define(op.getResult(), normalize(*input, op.getDimension(), op.getMap()));
  return success();
}

LogicalResult KernelEvaluator::evaluate(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](EinsumOp einsum) { return evaluateEinsum(einsum); })
      .Case([&](KeepOp keep) { return evaluateKeep(keep); })
      .Case([&](SoftmaxOp softmax) { return evaluateSoftmax(softmax); })
      .Case([&](NormalizeOp normalize) { return evaluateNormalize(normalize); })
      .Case([&](AttentionOp attention) -> LogicalResult {
        FailureOr<SmallVector<TensorValue, 2>> results =
            evaluateAttention(attention, env);
        if (failed(results))
          return failure();
        for (auto [value, tensor] :
             llvm::zip(attention->getResults(), *results))
          define(value, std::move(tensor));
        return success();
      })
      .Case([&](AttentionBackwardOp backward) -> LogicalResult {
        FailureOr<SmallVector<TensorValue, 4>> results =
            evaluateAttentionBackward(backward, env);
        if (failed(results))
          return failure();
        for (auto [value, tensor] :
             llvm::zip(backward->getResults(), *results))
          define(value, std::move(tensor));
        return success();
      })
      .Case([&](tensor::CollapseShapeOp collapse) -> LogicalResult {
        FailureOr<TensorValue> result = evaluateCollapseShape(collapse, env);
        if (failed(result))
          return failure();
        define(collapse.getResult(), std::move(*result));
        return success();
      })
      .Case([&](tensor::ExpandShapeOp expand) -> LogicalResult {
        FailureOr<TensorValue> result = evaluateExpandShape(expand, env);
        if (failed(result))
          return failure();
        define(expand.getResult(), std::move(*result));
        return success();
      })
      .Case([&](ReturnOp) { return success(); })
      .Default([&](Operation *other) { return evaluateScalar(other); });
}

FailureOr<std::vector<HostTensor>> KernelEvaluator::collectOutputs() {
  std::vector<HostTensor> outputs;
  for (Value value : kernel.getReturnOp().getValues()) {
    const TensorValue *tensor = lookupTensor(value);
    if (!tensor)
      return kernel.getReturnOp()->emitError()
             << "reference evaluator: returns a tensor it did not compute";
    HostTensor host(::attn::DType::F64, tensor->shape);
    auto *data = static_cast<double *>(host.data());
    for (int64_t i = 0, n = tensor->getNumElements(); i < n; ++i)
      data[i] = tensor->isPresent(i) ? tensor->data[i] : 0.0;
    outputs.push_back(std::move(host));
  }
  return outputs;
}

LogicalResult KernelEvaluator::evaluateAll() {
  if (failed(bindArguments()))
    return failure();
  for (Operation &op : kernel.getEntryBlock())
    if (failed(evaluate(&op)))
      return failure();
  return success();
}

FailureOr<std::vector<HostTensor>> KernelEvaluator::run() {
  if (failed(evaluateAll()))
    return failure();
  return collectOutputs();
}

namespace attn::ref {
FailureOr<std::vector<HostTensor>> evaluate(KernelOp kernel,
                                            const KernelArguments &args) {
  KernelEvaluator evaluator(kernel, args);
  return evaluator.run();
}
} // namespace attn::ref
