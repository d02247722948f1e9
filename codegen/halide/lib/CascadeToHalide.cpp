//===- CascadeToHalide.cpp - An attn.kernel cascade as a Halide pipeline -===//

#include "CascadeToHalide.h"
#include "ScalarExprs.h"

#include "attn/Normalizer/Normalizer.h"

#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/TypeSwitch.h"

#include <functional>
#include <limits>

using namespace mlir;
using namespace mlir::attn;
using namespace ::attn::halide;
namespace HL = Halide;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

/// Calls a Func or an ImageParam with subscripts in the cascade's order
/// (row-major, innermost last).
using CallFn = std::function<HL::Expr(const std::vector<HL::Expr> &)>;

/// A cascade tensor in the pipeline.
struct LoweredTensor {
  CallFn values;
  /// Null when every entry is present.
  CallFn presence;
  /// The size of each axis, in the cascade's order.
  std::vector<HL::Expr> extents;
  HL::Type type;
  /// An input: the last coordinate of each axis of its buffer, which every
  /// read is clamped to. A schedule made for the estimates may compute
  /// whole tiles past the end of a smaller launch (the autoschedulers'
  /// ShiftInwards tails); reads there take the edge's value, which no
  /// output uses. (An empty input is passed as one entry, so that it has an
  /// edge: HalideEntry.cpp.) The clamps are not marked `likely`: the loop
  /// partitioning that would buy doubles the compile time and was measured
  /// to gain nothing at run time.
  std::vector<HL::Expr> bufferLast;
};

/// Halide's first dimension is the innermost: the cascade's subscripts,
/// reversed.
std::vector<HL::Expr> reversed(std::vector<HL::Expr> subscripts) {
  std::reverse(subscripts.begin(), subscripts.end());
  return subscripts;
}

CallFn callOf(HL::Func func) {
  return [func](const std::vector<HL::Expr> &subscripts) -> HL::Expr {
    HL::Func f = func;
    return f(reversed(subscripts));
  };
}

CallFn callOf(HL::ImageParam image) {
  return [image](const std::vector<HL::Expr> &subscripts) -> HL::Expr {
    return image(reversed(subscripts));
  };
}

/// A pure definition's left-hand side: vars in the cascade's order.
std::vector<HL::Var> makeVars(ArrayRef<StringRef> names) {
  std::vector<HL::Var> vars;
  for (StringRef name : names)
    vars.emplace_back(HL::Var("v_" + name.str()));
  return vars;
}

std::vector<HL::Var> reversedVars(std::vector<HL::Var> vars) {
  std::reverse(vars.begin(), vars.end());
  return vars;
}

std::vector<HL::Expr> asExprs(ArrayRef<HL::Var> vars) {
  return std::vector<HL::Expr>(vars.begin(), vars.end());
}

HL::Expr andAll(ArrayRef<HL::Expr> terms) {
  HL::Expr result;
  for (const HL::Expr &term : terms)
    result = result.defined() ? (result && term) : term;
  return result;
}

/// The identity of a reduction `kind` in `type`.
HL::Expr reductionIdentity(ReductionKind kind, HL::Type type) {
  double identity = getReductionIdentity(kind);
  if (type.is_float())
    return HL::cast(type, HL::Expr(identity));
  if (std::isinf(identity))
    return identity > 0 ? type.max() : type.min();
  return HL::cast(type, HL::Expr(identity));
}

class PipelineBuilder {
public:
  PipelineBuilder(KernelOp kernel, ArrayRef<int64_t> dimEstimates)
      : kernel(kernel), dimEstimates(dimEstimates) {}

  FailureOr<CascadePipeline> build();

private:
  LogicalResult bindArguments();
  LogicalResult lowerEinsum(EinsumOp op);
  LogicalResult lowerKeep(KeepOp op);
  LogicalResult lowerRowNormalizer(Operation *op, Value input, int64_t dim,
                                   Value sink,
                                   const NormalizerDefinition &normalizer);
  LogicalResult lowerReturn(ReturnOp op);

  /// Translates `body` with its arguments bound to `args`; the presence of
  /// every read of a tensor with absent entries is appended to `presences`.
  LogicalResult translateBody(Block &body, ArrayRef<HL::Expr> args,
                              std::vector<HL::Expr> &presences,
                              HL::Expr &result);
  HL::Func newFunc(StringRef what) {
    return HL::Func(what.str() + "_" + std::to_string(funcCount++));
  }
  void addStage(HL::Func func, bool reduces) {
    pipeline.stages.push_back({func, reduces});
  }
  /// The scalar arithmetic `emit` builds with the normalizer definitions, as
  /// an expression of `args`.
  FailureOr<HL::Expr>
  normalizerExpr(ArrayRef<HL::Expr> args,
                 function_ref<Value(OpBuilder &, Location, ValueRange)> emit);

  KernelOp kernel;
  ArrayRef<int64_t> dimEstimates;
  CascadePipeline pipeline;
  ScalarTranslator scalars;
  DenseMap<Value, LoweredTensor> tensors;
  /// Per output, the estimated region (Halide's order).
  std::vector<HL::Region> outputEstimates;
  unsigned funcCount = 0;
};

} // namespace

LogicalResult PipelineBuilder::bindArguments() {
  // Estimates are Halide coordinates: at least 1 (a schedule for nothing
  // is no schedule), at most 2^31 - 1.
  auto estimateOf = [&](unsigned dim) -> int64_t {
    int64_t size = dim < dimEstimates.size() ? dimEstimates[dim] : 64;
    return std::clamp<int64_t>(size, 1, std::numeric_limits<int32_t>::max());
  };
  std::vector<HL::Expr> dims;
  for (unsigned i = 0; i < kernel.getNumDims(); ++i) {
    std::string name =
        "dim_" + cast<StringAttr>(kernel.getDimNames()[i]).getValue().str();
    HL::Param<int32_t> param(name);
    param.set_estimate(static_cast<int32_t>(estimateOf(i)));
    param.set_range(0, HL::Int(32).max());
    HL::Expr wide = HL::cast<int64_t>(param);
    dims.push_back(wide);
    scalars.map(kernel.getDimArg(i), wide);
    pipeline.arguments.push_back(param);
  }
  auto axisExtent = [&](Attribute axis) -> std::pair<HL::Expr, int64_t> {
    if (auto name = dyn_cast<StringAttr>(axis)) {
      std::optional<unsigned> dim = kernel.lookupDim(name.getValue());
      if (dim)
        return {dims[*dim], estimateOf(*dim)};
    }
    int64_t size = cast<IntegerAttr>(axis).getInt();
    return {HL::Expr(size),
            std::clamp<int64_t>(size, 1, std::numeric_limits<int32_t>::max())};
  };

  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    BlockArgument arg = kernel.getInputArg(i);
    auto type = cast<RankedTensorType>(arg.getType());
    FailureOr<HL::Type> elementType = getHalideType(type.getElementType());
    if (failed(elementType))
      return kernel.emitOpError()
             << "input '" << kernel.getInputNames()[i]
             << "' has an element type the Halide backend does not support";
    std::string name =
        "in_" + cast<StringAttr>(kernel.getInputNames()[i]).getValue().str();
    HL::ImageParam image(*elementType, type.getRank(), name);
    ArrayAttr shape = kernel.getShapeOf(i);
    LoweredTensor lowered;
    HL::Region estimates;
    for (Attribute axis : shape) {
      auto [extent, estimate] = axisExtent(axis);
      lowered.extents.push_back(extent);
      estimates.push_back(HL::Range(0, static_cast<int32_t>(estimate)));
    }
    std::reverse(estimates.begin(), estimates.end());
    // Dense row-major tensors: the innermost axis has stride 1.
    if (type.getRank() > 0)
      image.dim(0).set_stride(1);
    image.set_estimates(estimates);
    lowered.values = callOf(image);
    for (int64_t k = type.getRank(); k-- > 0;)
      lowered.bufferLast.push_back(image.dim(k).max());
    lowered.type = *elementType;
    tensors[arg] = lowered;
    pipeline.arguments.push_back(image);
  }

  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    BlockArgument arg = kernel.getParamArg(i);
    FailureOr<HL::Type> type = getHalideType(arg.getType());
    if (failed(type))
      return kernel.emitOpError()
             << "param '" << kernel.getParamNames()[i]
             << "' has a type the Halide backend does not support";
    std::string name =
        "param_" + cast<StringAttr>(kernel.getParamNames()[i]).getValue().str();
    HL::Param<> param(*type, name);
    // The default as the estimate (Param<>'s typed setter refuses every
    // value).
    Attribute defaultValue = kernel.getParamDefaults()[i];
    double estimate = 0;
    if (auto f = dyn_cast<FloatAttr>(defaultValue))
      estimate = f.getValueAsDouble();
    else if (auto n = dyn_cast<IntegerAttr>(defaultValue))
      estimate = static_cast<double>(n.getInt());
    param.parameter().set_estimate(HL::cast(*type, HL::Expr(estimate)));
    scalars.map(arg, param);
    pipeline.arguments.push_back(param);
  }

  // Output estimates: the same sizes.
  unsigned numInputs = kernel.getNumInputs();
  for (unsigned o = 0; o < kernel.getNumOutputs(); ++o) {
    ArrayAttr shape = kernel.getShapeOf(numInputs + o);
    HL::Region estimates;
    for (Attribute axis : shape)
      estimates.push_back(
          HL::Range(0, static_cast<int32_t>(axisExtent(axis).second)));
    std::reverse(estimates.begin(), estimates.end());
    outputEstimates.push_back(estimates);
  }
  return success();
}

LogicalResult PipelineBuilder::translateBody(Block &body,
                                             ArrayRef<HL::Expr> args,
                                             std::vector<HL::Expr> &presences,
                                             HL::Expr &result) {
  auto read = [&](ReadOp op,
                  ArrayRef<HL::Expr> subscripts) -> FailureOr<HL::Expr> {
    auto it = tensors.find(op.getTensor());
    if (it == tensors.end())
      return op.emitOpError()
             << "reads a tensor the Halide backend does not know";
    const LoweredTensor &tensor = it->second;
    // A subscript that is not a loop index (a gather, an affine shift) is
    // clamped into its axis, which the launch already proved it stays in:
    // Halide then bounds every region it computes, whatever the data.
    std::vector<HL::Expr> at;
    for (auto [i, subscript] : llvm::enumerate(op.getSubscripts())) {
      auto arg = dyn_cast<BlockArgument>(subscript);
      if (arg && arg.getOwner() == &body) {
        HL::Expr index = args[arg.getArgNumber()];
        if (!tensor.bufferLast.empty())
          index = HL::clamp(index, 0, tensor.bufferLast[i]);
        at.push_back(index);
        continue;
      }
      HL::Expr s = HL::cast<int64_t>(subscripts[i]);
      HL::Expr last =
          tensor.bufferLast.empty()
              ? HL::max(tensor.extents[i] - 1, HL::cast<int64_t>(0))
              : HL::cast<int64_t>(tensor.bufferLast[i]);
      at.push_back(HL::cast<int32_t>(HL::clamp(s, HL::cast<int64_t>(0), last)));
    }
    if (tensor.presence)
      presences.push_back(tensor.presence(at));
    return tensor.values(at);
  };
  ScalarTranslator translator(read, &scalars);
  // Loop indices are Int(32) coordinates; as values they are `index`.
  for (auto [arg, expr] : llvm::zip_equal(body.getArguments(), args))
    translator.map(arg, HL::cast<int64_t>(expr));
  if (failed(translator.translateBody(body)))
    return failure();
  FailureOr<HL::Expr> yielded =
      translator.lookup(body.getTerminator()->getOperand(0),
                        body.getTerminator());
  if (failed(yielded))
    return failure();
  result = *yielded;
  return success();
}

FailureOr<HL::Expr> PipelineBuilder::normalizerExpr(
    ArrayRef<HL::Expr> args,
    function_ref<Value(OpBuilder &, Location, ValueRange)> emit) {
  ScalarTemplate scratch(kernel.getContext(), args.size());
  SmallVector<Value> values;
  for (unsigned i = 0; i < args.size(); ++i)
    values.push_back(scratch.getArg(i));
  Value result = emit(scratch.getBuilder(), scratch.getLoc(), values);
  return scratch.instantiate(result, args);
}

LogicalResult PipelineBuilder::lowerEinsum(EinsumOp op) {
  auto resultType = cast<RankedTensorType>(op.getType());
  FailureOr<HL::Type> type = getHalideType(resultType.getElementType());
  if (failed(type))
    return op.emitOpError()
           << "has an element type the Halide backend does not support";
  unsigned numOut = op.getNumOutputIndices();
  std::vector<HL::Expr> extents;
  for (Value extent : op.getExtents()) {
    FailureOr<HL::Expr> e = scalars.lookup(extent, op);
    if (failed(e))
      return failure();
    extents.push_back(*e);
  }
  SmallVector<StringRef> names;
  for (Attribute name : op.getIndices())
    names.push_back(cast<StringAttr>(name).getValue());
  std::vector<HL::Var> vars = makeVars(names);
  std::vector<HL::Var> lhs = reversedVars(vars);
  std::vector<HL::Expr> args = asExprs(vars);

  LoweredTensor lowered;
  lowered.extents.assign(extents.begin(), extents.begin() + numOut);
  lowered.type = *type;
  Block &body = op.getBodyBlock();
  ReductionKind kind = op.getKind();

  if (kind == ReductionKind::None) {
    std::vector<HL::Expr> presences;
    HL::Expr value;
    if (failed(translateBody(body, args, presences, value)))
      return failure();
    HL::Func values = newFunc("einsum");
    values(lhs) = HL::cast(*type, value);
    addStage(values, /*reduces=*/false);
    lowered.values = callOf(values);
    if (!presences.empty()) {
      HL::Func presence = newFunc("present");
      presence(lhs) = andAll(presences);
      addStage(presence, /*reduces=*/false);
      lowered.presence = callOf(presence);
    }
    tensors[op.getResult()] = lowered;
    return success();
  }

  // The reduced indices, innermost last as in the cascade (an RDom's first
  // variable is its innermost loop).
  HL::Region domain;
  for (unsigned i = extents.size(); i-- > numOut;)
    domain.push_back(HL::Range(0, HL::cast<int32_t>(extents[i])));
  HL::RDom rdom(domain, "r_" + std::to_string(funcCount));
  unsigned numReduced = extents.size() - numOut;
  for (unsigned i = 0; i < numReduced; ++i)
    args.push_back(rdom[numReduced - 1 - i]);
  std::vector<HL::Expr> presences;
  HL::Expr term;
  if (failed(translateBody(body, args, presences, term)))
    return failure();
  term = HL::cast(*type, term);
  HL::Expr present = andAll(presences);
  auto onlyPresent = [&](HL::Expr x, HL::Expr otherwise) {
    return present.defined() ? HL::select(present, x, otherwise) : x;
  };

  HL::Func result = newFunc(stringifyReductionKind(kind).str());
  HL::Expr identity = reductionIdentity(kind, *type);
  std::vector<HL::Expr> at = asExprs(lhs);
  switch (kind) {
  case ReductionKind::Sum:
    result(lhs) = identity;
    result(lhs) += onlyPresent(term, identity);
    addStage(result, /*reduces=*/true);
    break;
  case ReductionKind::Max:
    result(lhs) = identity;
    result(lhs) = HL::max(result(at), onlyPresent(term, identity));
    addStage(result, /*reduces=*/true);
    break;
  case ReductionKind::Min:
    result(lhs) = identity;
    result(lhs) = HL::min(result(at), onlyPresent(term, identity));
    addStage(result, /*reduces=*/true);
    break;
  case ReductionKind::Mean: {
    // Over the present terms; an empty mean is 0.
    HL::Func sum = newFunc("mean_sum"), count = newFunc("mean_count");
    sum(lhs) = HL::cast(*type, 0);
    sum(lhs) += onlyPresent(term, HL::cast(*type, 0));
    count(lhs) = HL::cast(*type, 0);
    count(lhs) += onlyPresent(HL::cast(*type, 1), HL::cast(*type, 0));
    addStage(sum, true);
    addStage(count, true);
    result(lhs) = HL::select(count(at) == 0, HL::cast(*type, 0),
                             sum(at) / count(at));
    addStage(result, false);
    break;
  }
  case ReductionKind::LogSumExp: {
    // softmax's statistic, in two passes: the max of the present terms,
    // then the sum of their weights relative to it.
    NormalizerDefinition softmax(Normalizer::Softmax, /*hasSink=*/false);
    HL::Func max = newFunc("lse_max"), sum = newFunc("lse_sum");
    max(lhs) = HL::cast(*type, -kInf);
    max(lhs) = HL::max(max(at), onlyPresent(term, HL::cast(*type, -kInf)));
    FailureOr<HL::Expr> weight = normalizerExpr(
        {term, max(at)}, [&](OpBuilder &b, Location l, ValueRange v) {
          return softmax.weight(b, l, softmax.shiftFor(b, l, v[1]), v[0]);
        });
    if (failed(weight))
      return failure();
    sum(lhs) = HL::cast(*type, 0);
    sum(lhs) += onlyPresent(*weight, HL::cast(*type, 0));
    FailureOr<HL::Expr> statistic = normalizerExpr(
        {max(at), sum(at)}, [&](OpBuilder &b, Location l, ValueRange v) {
          NormalizerState state;
          state.max = v[0];
          state.sum = v[1];
          return softmax.getStatistic(b, l, state);
        });
    if (failed(statistic))
      return failure();
    addStage(max, true);
    addStage(sum, true);
    result(lhs) = *statistic;
    addStage(result, false);
    break;
  }
  case ReductionKind::None:
    break;
  }
  lowered.values = callOf(result);
  tensors[op.getResult()] = lowered;
  return success();
}

LogicalResult PipelineBuilder::lowerKeep(KeepOp op) {
  auto it = tensors.find(op.getInput());
  if (it == tensors.end())
    return op.emitOpError() << "keeps a tensor the Halide backend does not know";
  LoweredTensor lowered = it->second;
  SmallVector<StringRef> names;
  for (Attribute name : op.getIndices())
    names.push_back(cast<StringAttr>(name).getValue());
  std::vector<HL::Var> vars = makeVars(names);
  std::vector<HL::Expr> args = asExprs(vars);
  std::vector<HL::Expr> presences;
  HL::Expr predicate;
  if (failed(translateBody(op.getBodyBlock(), args, presences, predicate)))
    return failure();
  presences.push_back(predicate);
  if (lowered.presence)
    presences.push_back(lowered.presence(args));
  HL::Func presence = newFunc("keep");
  presence(reversedVars(vars)) = andAll(presences);
  addStage(presence, /*reduces=*/false);
  lowered.presence = callOf(presence);
  tensors[op.getResult()] = lowered;
  return success();
}

LogicalResult PipelineBuilder::lowerRowNormalizer(
    Operation *op, Value inputValue, int64_t dim, Value sinkValue,
    const NormalizerDefinition &normalizer) {
  auto it = tensors.find(inputValue);
  if (it == tensors.end())
    return op->emitOpError()
           << "normalizes a tensor the Halide backend does not know";
  LoweredTensor input = it->second;
  unsigned rank = input.extents.size();
  SmallVector<std::string> names;
  for (unsigned i = 0; i < rank; ++i)
    names.push_back("a" + std::to_string(i));
  std::vector<HL::Var> vars;
  for (const std::string &name : names)
    vars.emplace_back("v_" + name + "_" + std::to_string(funcCount));
  std::vector<HL::Var> rowVars = vars;
  rowVars.erase(rowVars.begin() + dim);
  std::vector<HL::Var> rowLhs = reversedVars(rowVars);
  std::vector<HL::Expr> rowAt = asExprs(rowLhs);
  HL::RDom r(0, HL::cast<int32_t>(input.extents[dim]),
            "r_" + std::to_string(funcCount));
  std::vector<HL::Expr> alongRow = asExprs(vars);
  alongRow[dim] = r.x;
  std::vector<HL::Expr> full = asExprs(vars);

  HL::Expr xRow = input.values(alongRow);
  HL::Expr presentRow =
      input.presence ? input.presence(alongRow) : HL::Expr();
  auto onlyPresent = [&](HL::Expr x, HL::Expr otherwise) {
    return presentRow.defined() ? HL::select(presentRow, x, otherwise) : x;
  };

  // The initial state's constants.
  auto constant = [&](auto field) -> FailureOr<HL::Expr> {
    return normalizerExpr({}, [&](OpBuilder &b, Location l, ValueRange) {
      NormalizerState init = normalizer.getInitialState(b, l, b.getF32Type());
      return field(init);
    });
  };

  // Two passes over each row, so that the max is known before any weight.
  HL::Func rowMax;
  if (normalizer.hasMax()) {
    FailureOr<HL::Expr> init =
        constant([](const NormalizerState &s) { return s.max; });
    if (failed(init))
      return failure();
    rowMax = newFunc("row_max");
    rowMax(rowLhs) = *init;
    FailureOr<HL::Expr> next = normalizerExpr(
        {rowMax(rowAt), xRow}, [&](OpBuilder &b, Location l, ValueRange v) {
          return normalizer.maxOf(b, l, v[0], v[1]);
        });
    if (failed(next))
      return failure();
    rowMax(rowLhs) = onlyPresent(*next, rowMax(rowAt));
    addStage(rowMax, true);
  }
  auto weightOf = [&](HL::Expr x, HL::Expr max) -> FailureOr<HL::Expr> {
    if (!max.defined())
      return normalizerExpr({x}, [&](OpBuilder &b, Location l, ValueRange v) {
        return normalizer.weight(b, l, BlockShift(), v[0]);
      });
    return normalizerExpr({x, max}, [&](OpBuilder &b, Location l,
                                        ValueRange v) {
      return normalizer.weight(b, l, normalizer.shiftFor(b, l, v[1]), v[0]);
    });
  };
  HL::Expr maxAt = normalizer.hasMax() ? HL::Expr(rowMax(rowAt)) : HL::Expr();

  FailureOr<HL::Expr> sumInit =
      constant([](const NormalizerState &s) { return s.sum; });
  FailureOr<HL::Expr> weight = weightOf(xRow, maxAt);
  if (failed(sumInit) || failed(weight))
    return failure();
  HL::Func rowSum = newFunc("row_sum");
  rowSum(rowLhs) = *sumInit;
  FailureOr<HL::Expr> added = normalizerExpr(
      {rowSum(rowAt), *weight}, [&](OpBuilder &b, Location l, ValueRange v) {
        return normalizer.accumulate(b, l, v[0], v[1]);
      });
  if (failed(added))
    return failure();
  rowSum(rowLhs) = onlyPresent(*added, rowSum(rowAt));
  addStage(rowSum, true);

  HL::Func rowCount;
  if (normalizer.hasKeptCount()) {
    FailureOr<HL::Expr> init =
        constant([](const NormalizerState &s) { return s.keptCount; });
    if (failed(init))
      return failure();
    rowCount = newFunc("row_count");
    rowCount(rowLhs) = *init;
    FailureOr<HL::Expr> counted = normalizerExpr(
        {rowCount(rowAt)}, [&](OpBuilder &b, Location l, ValueRange v) {
          Value keep = arith::ConstantOp::create(b, l, b.getBoolAttr(true));
          return normalizer.countKept(b, l, v[0], keep);
        });
    if (failed(counted))
      return failure();
    rowCount(rowLhs) = onlyPresent(*counted, rowCount(rowAt));
    addStage(rowCount, true);
  }

  // The factor of each row; the sink joins the denominator (an absent sink
  // counts as -inf).
  std::vector<HL::Expr> stateArgs;
  if (normalizer.hasMax())
    stateArgs.push_back(rowMax(rowAt));
  stateArgs.push_back(rowSum(rowAt));
  if (normalizer.hasKeptCount())
    stateArgs.push_back(rowCount(rowAt));
  unsigned numFields = stateArgs.size();
  if (sinkValue) {
    auto sinkIt = tensors.find(sinkValue);
    if (sinkIt == tensors.end())
      return op->emitOpError()
             << "reads a sink the Halide backend does not know";
    std::vector<HL::Expr> rowSubscripts = asExprs(rowVars);
    HL::Expr sink = sinkIt->second.values(rowSubscripts);
    if (sinkIt->second.presence)
      sink = HL::select(sinkIt->second.presence(rowSubscripts), sink, -kInf);
    stateArgs.push_back(sink);
  }
  FailureOr<HL::Expr> factor = normalizerExpr(
      stateArgs, [&](OpBuilder &b, Location l, ValueRange v) {
        NormalizerState state = normalizer.unflattenState(v.take_front(numFields));
        Value sink = sinkValue ? v[numFields] : Value();
        return normalizer.getOutputFactor(b, l, state, sink);
      });
  if (failed(factor))
    return failure();
  HL::Func rowFactor = newFunc("row_factor");
  rowFactor(rowLhs) = *factor;
  addStage(rowFactor, false);

  // Weights times the factor; 0 at absent entries.
  FailureOr<HL::Expr> finalWeight = weightOf(
      input.values(full), normalizer.hasMax() ? HL::Expr(rowMax(rowAt))
                                              : HL::Expr());
  if (failed(finalWeight))
    return failure();
  HL::Expr p = *finalWeight * rowFactor(rowAt);
  if (input.presence)
    p = HL::select(input.presence(full), p, 0.0f);
  HL::Func result = newFunc("normalized");
  result(reversedVars(vars)) = p;
  addStage(result, false);
  LoweredTensor lowered = input;
  lowered.values = callOf(result);
  lowered.type = HL::Float(32);
  tensors[op->getResult(0)] = lowered;
  return success();
}

LogicalResult PipelineBuilder::lowerReturn(ReturnOp op) {
  for (auto [i, value] : llvm::enumerate(op.getValues())) {
    auto it = tensors.find(value);
    if (it == tensors.end())
      return op.emitOpError()
             << "returns a value the Halide backend does not know";
    const LoweredTensor &tensor = it->second;
    Type declared = cast<TypeAttr>(kernel.getOutputTypes()[i]).getValue();
    FailureOr<HL::Type> type = getHalideType(declared);
    if (failed(type))
      return op.emitOpError() << "output #" << i << " has a type ("
                              << declared
                              << ") the Halide backend does not support";
    unsigned rank = tensor.extents.size();
    std::vector<HL::Var> vars;
    for (unsigned d = 0; d < rank; ++d)
      vars.emplace_back("o" + std::to_string(i) + "_" + std::to_string(d));
    std::vector<HL::Expr> at = asExprs(vars);
    // Absent entries are stored as 0; rounding happens once, here.
    HL::Expr v = tensor.values(at);
    if (tensor.presence)
      v = HL::select(tensor.presence(at), v, HL::cast(v.type(), 0));
    std::string name =
        cast<StringAttr>(kernel.getOutputNames()[i]).getValue().str();
    HL::Func output("result_" + name);
    output(reversedVars(vars)) = HL::cast(*type, v);
    output.set_estimates(outputEstimates[i]);
    pipeline.outputs.push_back(output);
    pipeline.outputNames.push_back("out_" + name);
  }
  return success();
}

FailureOr<CascadePipeline> PipelineBuilder::build() {
  if (failed(bindArguments()))
    return failure();
  Block &entry = kernel.getEntryBlock();
  for (Operation &op : entry.without_terminator()) {
    LogicalResult status =
        llvm::TypeSwitch<Operation *, LogicalResult>(&op)
            .Case<EinsumOp>([&](EinsumOp o) { return lowerEinsum(o); })
            .Case<KeepOp>([&](KeepOp o) { return lowerKeep(o); })
            .Case<SoftmaxOp>([&](SoftmaxOp o) {
              return lowerRowNormalizer(
                  o, o.getInput(), o.getDimension(), o.getSink(),
                  NormalizerDefinition(Normalizer::Softmax,
                                       bool(o.getSink())));
            })
            .Case<NormalizeOp>([&](NormalizeOp o) {
              return lowerRowNormalizer(
                  o, o.getInput(), o.getDimension(), Value(),
                  NormalizerDefinition(Normalizer::Normalize,
                                       /*hasSink=*/false, NormalizerMath(),
                                       o.getMap()));
            })
            .Default([&](Operation *other) -> LogicalResult {
              // Top-level scalar computations (extents, constants).
              if (other->getNumRegions() != 0 ||
                  llvm::any_of(other->getResultTypes(),
                               [](Type t) { return isa<ShapedType>(t); }))
                return other->emitOpError()
                       << "is not supported by the Halide backend, which "
                          "takes cascades (einsum, keep, softmax, normalize)";
              return scalars.translate(*other);
            });
    if (failed(status))
      return failure();
  }
  if (failed(lowerReturn(cast<ReturnOp>(entry.getTerminator()))))
    return failure();
  return std::move(pipeline);
}

namespace attn::halide {

FailureOr<CascadePipeline>
buildCascadePipeline(KernelOp kernel, ArrayRef<int64_t> dimEstimates) {
  return PipelineBuilder(kernel, dimEstimates).build();
}

} // namespace attn::halide
