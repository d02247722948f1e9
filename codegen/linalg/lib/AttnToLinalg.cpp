//===- AttnToLinalg.cpp - attn cascades to linalg on tensors --------------===//
//
// The unfused lowering. Every cascade op of an attn.kernel becomes one or a
// few linalg.generic ops on dynamically sized tensors, in program order, so
// every spec the front end accepts runs, whatever the fused paths support.
//
// Absent entries are modelled by a companion i1 "presence" tensor that exists
// only where entries may be absent (results of attn.keep and of what reads
// them). See docs/cascade-ir.md for the semantics implemented here.
//
//===----------------------------------------------------------------------===//

#include "attn/Linalg/Passes.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SmallBitVector.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

namespace mlir::attn {
#define GEN_PASS_DEF_CONVERTATTNTOLINALG
#include "attn/Linalg/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// A cascade tensor after lowering: its values and, when some entries may be
/// absent, an i1 tensor of the same shape that is true where present.
struct LoweredTensor {
  Value values;
  /// Null when every entry is present.
  Value presence;
};

/// An input of a body generic that the caller adds besides the body's reads.
struct ExtraInput {
  Value tensor;
  AffineMap map;
};

/// What a cascade body computes at one point of a generic's iteration space.
struct BodyPoint {
  /// The scalar the body yields.
  Value value;
  /// The AND of the presence of every read; null when all are present.
  Value present;
  /// Block arguments of the caller's extra inputs, in order.
  ValueRange extraIns;
  /// Block arguments of the outputs (the accumulators of a reduction).
  ValueRange outs;
};

/// Builds the values a body generic yields from one point.
using FinishFn =
    function_ref<SmallVector<Value>(OpBuilder &, Location, const BodyPoint &)>;

/// Builds the values a plain generic yields from its block arguments.
using ScalarFn =
    function_ref<SmallVector<Value>(OpBuilder &, Location, ValueRange)>;

Value floatConst(OpBuilder &b, Location loc, Type type, double value) {
  return arith::ConstantOp::create(b, loc, b.getFloatAttr(type, value));
}

Value boolConst(OpBuilder &b, Location loc, bool value) {
  return arith::ConstantOp::create(b, loc, b.getBoolAttr(value));
}

/// The AND of the non-null `values`, or null when there are none.
Value andAll(OpBuilder &b, Location loc, ArrayRef<Value> values) {
  Value result;
  for (Value v : values)
    if (v)
      result =
          result ? arith::AndIOp::create(b, loc, result, v).getResult() : v;
  return result;
}

/// `select(cond, a, b)` when `cond` is set, else `a`.
Value selectIf(OpBuilder &b, Location loc, Value cond, Value a, Value other) {
  if (!cond)
    return a;
  return arith::SelectOp::create(b, loc, cond, a, other);
}

/// Converts a scalar to the element type an output is declared with.
FailureOr<Value> convertScalar(OpBuilder &b, Location loc, Value x, Type to) {
  Type from = x.getType();
  if (from == to)
    return x;
  auto fromFloat = dyn_cast<FloatType>(from);
  auto toFloat = dyn_cast<FloatType>(to);
  if (fromFloat && toFloat) {
    if (toFloat.getWidth() < fromFloat.getWidth() ||
        (toFloat.getWidth() == fromFloat.getWidth()))
      return arith::TruncFOp::create(b, loc, to, x).getResult();
    return arith::ExtFOp::create(b, loc, to, x).getResult();
  }
  auto fromInt = dyn_cast<IntegerType>(from);
  auto toInt = dyn_cast<IntegerType>(to);
  if (fromInt && toInt) {
    if (toInt.getWidth() < fromInt.getWidth())
      return arith::TruncIOp::create(b, loc, to, x).getResult();
    if (fromInt.getWidth() == 1)
      return arith::ExtUIOp::create(b, loc, to, x).getResult();
    return arith::ExtSIOp::create(b, loc, to, x).getResult();
  }
  if (fromInt && toFloat) {
    if (fromInt.getWidth() == 1)
      return arith::UIToFPOp::create(b, loc, to, x).getResult();
    return arith::SIToFPOp::create(b, loc, to, x).getResult();
  }
  if (fromFloat && toInt)
    return arith::FPToSIOp::create(b, loc, to, x).getResult();
  return failure();
}

/// The map of a read whose subscripts are distinct loop indices of `body`
/// (`Q[b, m, d]`), so the tensor can be a structured input of the generic
/// instead of a `tensor.extract` (which hides the access from linalg).
std::optional<AffineMap> getStructuredReadMap(ReadOp read, Block &body,
                                              unsigned numLoops) {
  SmallVector<AffineExpr> exprs;
  llvm::SmallBitVector seen(numLoops);
  for (Value subscript : read.getSubscripts()) {
    auto arg = dyn_cast<BlockArgument>(subscript);
    if (!arg || arg.getOwner() != &body || seen.test(arg.getArgNumber()))
      return std::nullopt;
    seen.set(arg.getArgNumber());
    exprs.push_back(getAffineDimExpr(arg.getArgNumber(), read.getContext()));
  }
  return AffineMap::get(numLoops, 0, exprs, read.getContext());
}

/// Lowers one attn.kernel into a func.func.
class KernelLowering {
public:
  KernelLowering(KernelOp kernel, bool emitCInterface, bool keepAttention)
      : kernel(kernel), emitCInterface(emitCInterface),
        keepAttention(keepAttention), builder(kernel.getContext()) {}

  /// Creates the function next to the kernel; the caller erases the kernel.
  FailureOr<func::FuncOp> run();

private:
  LogicalResult lowerEinsum(EinsumOp op);
  LogicalResult lowerKeep(KeepOp op);
  LogicalResult lowerSoftmax(SoftmaxOp op);
  LogicalResult lowerNormalize(NormalizeOp op);
  /// The weights of `normalizer` along `dim` of `input` (with the sink
  /// logits `sink` of softmax) as the lowered value of `result`.
  LogicalResult lowerRowNormalizer(Value result, Value input, int64_t dim,
                                   Value sink,
                                   const NormalizerDefinition &normalizer);
  LogicalResult lowerReturn(ReturnOp op, func::FuncOp func);
  /// Copies an attn.attention or attn.attention_backward into the function
  /// unchanged but for its operands and the values its regions capture
  /// (keep-attention).
  LogicalResult copyAttention(Operation *op);
  /// Copies a reshape of a fully present tensor (attn-raise gives rank-3
  /// MQA keys and values a unit head axis).
  LogicalResult copyReshape(Operation *reshape);

  /// Emits a generic whose body is a clone of `body` (one loop per body
  /// argument, in order). Reads of distinct loop indices become structured
  /// inputs, other reads `tensor.extract`s; `finish` turns what the body
  /// computes into the values yielded to `outs`.
  FailureOr<linalg::GenericOp> emitBodyGeneric(
      Location loc, Block &body, ArrayRef<utils::IteratorType> iterators,
      ArrayRef<Value> loopExtents, ArrayRef<ExtraInput> extras, ValueRange outs,
      ArrayRef<AffineMap> outMaps, FinishFn finish);

  /// Emits a generic over the full iteration space of `init` with identity
  /// maps, all loops parallel.
  Value emitElementwise(Location loc, ValueRange ins, Value init, ScalarFn fn);

  /// One value per axis of `tensor`: its size, as a constant when static.
  SmallVector<Value> getAxisSizes(Location loc, Value tensor);
  /// A `tensor.empty` of `type` whose axes have the sizes `axisSizes`.
  Value createEmpty(Location loc, RankedTensorType type,
                    ArrayRef<Value> axisSizes);
  Value createFilled(Location loc, RankedTensorType type,
                     ArrayRef<Value> axisSizes, double value);
  /// A tensor of `type` filled with the scalar `value`.
  Value createFilled(Location loc, RankedTensorType type,
                     ArrayRef<Value> axisSizes, Value value);
  /// Whether some read in `body` reads a tensor that may have absent entries.
  bool readsAbsent(Block &body);

  KernelOp kernel;
  bool emitCInterface;
  bool keepAttention;
  OpBuilder builder;
  /// Kernel scalars (dims, params, top-level scalar ops) -> function values.
  IRMapping scalars;
  /// Kernel tensors -> their lowering.
  DenseMap<Value, LoweredTensor> tensors;
};

} // namespace

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

SmallVector<Value> KernelLowering::getAxisSizes(Location loc, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  SmallVector<Value> sizes;
  for (int64_t i = 0; i < type.getRank(); ++i) {
    if (type.isDynamicDim(i))
      sizes.push_back(tensor::DimOp::create(builder, loc, tensor, i));
    else
      sizes.push_back(
          arith::ConstantIndexOp::create(builder, loc, type.getDimSize(i)));
  }
  return sizes;
}

Value KernelLowering::createEmpty(Location loc, RankedTensorType type,
                                  ArrayRef<Value> axisSizes) {
  SmallVector<Value> dynamic;
  for (int64_t i = 0; i < type.getRank(); ++i)
    if (type.isDynamicDim(i))
      dynamic.push_back(axisSizes[i]);
  return tensor::EmptyOp::create(builder, loc, type.getShape(),
                                 type.getElementType(), dynamic);
}

Value KernelLowering::createFilled(Location loc, RankedTensorType type,
                                   ArrayRef<Value> axisSizes, double value) {
  return createFilled(loc, type, axisSizes,
                      floatConst(builder, loc, type.getElementType(), value));
}

Value KernelLowering::createFilled(Location loc, RankedTensorType type,
                                   ArrayRef<Value> axisSizes, Value value) {
  Value empty = createEmpty(loc, type, axisSizes);
  return linalg::FillOp::create(builder, loc, ValueRange{value},
                                ValueRange{empty})
      .getResult(0);
}

bool KernelLowering::readsAbsent(Block &body) {
  for (Operation &op : body)
    if (auto read = dyn_cast<ReadOp>(op))
      if (tensors.lookup(read.getTensor()).presence)
        return true;
  return false;
}

Value KernelLowering::emitElementwise(Location loc, ValueRange ins, Value init,
                                      ScalarFn fn) {
  auto type = cast<RankedTensorType>(init.getType());
  AffineMap identity = builder.getMultiDimIdentityMap(type.getRank());
  SmallVector<AffineMap> maps(ins.size() + 1, identity);
  SmallVector<utils::IteratorType> iterators(type.getRank(),
                                             utils::IteratorType::parallel);
  auto generic = linalg::GenericOp::create(
      builder, loc, TypeRange{type}, ins, ValueRange{init}, maps, iterators,
      [&](OpBuilder &b, Location l, ValueRange args) {
        linalg::YieldOp::create(b, l, fn(b, l, args));
      });
  return generic.getResult(0);
}

FailureOr<linalg::GenericOp> KernelLowering::emitBodyGeneric(
    Location loc, Block &body, ArrayRef<utils::IteratorType> iterators,
    ArrayRef<Value> loopExtents, ArrayRef<ExtraInput> extras, ValueRange outs,
    ArrayRef<AffineMap> outMaps, FinishFn finish) {
  unsigned numLoops = iterators.size();
  SmallVector<Value> inputs;
  SmallVector<AffineMap> maps;
  for (const ExtraInput &extra : extras) {
    inputs.push_back(extra.tensor);
    maps.push_back(extra.map);
  }
  unsigned numExtras = inputs.size();
  auto addInput = [&](Value tensor, AffineMap map) -> int {
    for (unsigned i = numExtras; i < inputs.size(); ++i)
      if (inputs[i] == tensor && maps[i] == map)
        return i;
    inputs.push_back(tensor);
    maps.push_back(map);
    return inputs.size() - 1;
  };

  /// Where a structured read finds its values and presence in the block.
  struct ReadSlots {
    int values = -1;
    int presence = -1;
  };
  DenseMap<Operation *, ReadSlots> structured;
  for (Operation &op : body.without_terminator()) {
    auto read = dyn_cast<ReadOp>(op);
    if (!read)
      continue;
    auto it = tensors.find(read.getTensor());
    if (it == tensors.end())
      return read.emitOpError("reads a tensor the lowering does not know");
    std::optional<AffineMap> map = getStructuredReadMap(read, body, numLoops);
    if (!map)
      continue;
    ReadSlots slots;
    slots.values = addInput(it->second.values, *map);
    if (it->second.presence)
      slots.presence = addInput(it->second.presence, *map);
    structured[read] = slots;
  }

  // linalg derives loop ranges from operand shapes, so every loop must be an
  // axis of some operand; a loop seen only through gathers gets a shape
  // carrier that the body never reads (canonicalization keeps it only while
  // needed).
  llvm::SmallBitVector covered(numLoops);
  auto cover = [&](AffineMap map) {
    for (AffineExpr expr : map.getResults())
      if (auto dim = dyn_cast<AffineDimExpr>(expr))
        covered.set(dim.getPosition());
  };
  llvm::for_each(maps, cover);
  llvm::for_each(outMaps, cover);
  for (unsigned i = 0; i < numLoops; ++i) {
    if (covered.test(i))
      continue;
    auto carrierType =
        RankedTensorType::get({ShapedType::kDynamic}, builder.getI8Type());
    inputs.push_back(tensor::EmptyOp::create(
        builder, loc, carrierType.getShape(), builder.getI8Type(),
        ValueRange{loopExtents[i]}));
    maps.push_back(
        AffineMap::get(numLoops, 0, getAffineDimExpr(i, builder.getContext())));
  }
  unsigned numInputs = inputs.size();
  llvm::append_range(maps, outMaps);

  SmallVector<Type> resultTypes;
  for (Value out : outs)
    resultTypes.push_back(out.getType());
  auto generic = linalg::GenericOp::create(
      builder, loc, resultTypes, inputs, outs, maps, iterators,
      [&](OpBuilder &b, Location l, ValueRange args) {
        IRMapping mapping = scalars;
        for (unsigned i = 0; i < numLoops; ++i)
          if (!body.getArgument(i).use_empty())
            mapping.map(body.getArgument(i),
                        linalg::IndexOp::create(b, l, i).getResult());
        SmallVector<Value> presences;
        for (Operation &op : body.without_terminator()) {
          auto read = dyn_cast<ReadOp>(op);
          if (!read) {
            b.clone(op, mapping);
            continue;
          }
          auto it = structured.find(read);
          if (it != structured.end()) {
            mapping.map(read.getResult(), args[it->second.values]);
            if (it->second.presence >= 0)
              presences.push_back(args[it->second.presence]);
            continue;
          }
          const LoweredTensor &source = tensors[read.getTensor()];
          SmallVector<Value> subscripts;
          for (Value s : read.getSubscripts())
            subscripts.push_back(mapping.lookupOrDefault(s));
          mapping.map(read.getResult(),
                      tensor::ExtractOp::create(b, l, source.values, subscripts)
                          .getResult());
          if (source.presence)
            presences.push_back(
                tensor::ExtractOp::create(b, l, source.presence, subscripts));
        }
        BodyPoint point;
        Value yielded = cast<YieldOp>(body.getTerminator()).getValues().front();
        point.value = mapping.lookupOrDefault(yielded);
        point.present = andAll(b, l, presences);
        point.extraIns = args.take_front(numExtras);
        point.outs = args.drop_front(numInputs);
        linalg::YieldOp::create(b, l, finish(b, l, point));
      });
  return generic;
}

//===----------------------------------------------------------------------===//
// Cascade ops
//===----------------------------------------------------------------------===//

LogicalResult KernelLowering::lowerEinsum(EinsumOp op) {
  Location loc = op.getLoc();
  auto type = cast<RankedTensorType>(op.getType());
  Type elementType = type.getElementType();
  unsigned numOut = op.getNumOutputIndices();
  unsigned numLoops = numOut + op.getNumReducedIndices();
  SmallVector<Value> extents;
  for (Value extent : op.getExtents())
    extents.push_back(scalars.lookupOrDefault(extent));
  ArrayRef<Value> outSizes = ArrayRef<Value>(extents).take_front(numOut);

  SmallVector<utils::IteratorType> iterators(numOut,
                                             utils::IteratorType::parallel);
  iterators.append(op.getNumReducedIndices(), utils::IteratorType::reduction);
  SmallVector<AffineExpr> outExprs;
  for (unsigned i = 0; i < numOut; ++i)
    outExprs.push_back(builder.getAffineDimExpr(i));
  AffineMap outMap = AffineMap::get(numLoops, 0, outExprs, op.getContext());
  Block &body = op.getBodyBlock();

  if (op.getKind() == ReductionKind::None) {
    bool hasPresence = readsAbsent(body);
    SmallVector<Value> outs = {createEmpty(loc, type, outSizes)};
    if (hasPresence)
      outs.push_back(createEmpty(
          loc, RankedTensorType::get(type.getShape(), builder.getI1Type()),
          outSizes));
    SmallVector<AffineMap> outMaps(outs.size(), outMap);
    FailureOr<linalg::GenericOp> generic = emitBodyGeneric(
        loc, body, iterators, extents, {}, outs, outMaps,
        [&](OpBuilder &b, Location l, const BodyPoint &p) {
          SmallVector<Value> yields = {p.value};
          if (hasPresence)
            yields.push_back(p.present ? p.present : boolConst(b, l, true));
          return yields;
        });
    if (failed(generic))
      return failure();
    tensors[op.getResult()] = {generic->getResult(0),
                               hasPresence ? generic->getResult(1) : Value()};
    return success();
  }

  ReductionKind kind = op.getKind();
  // logsumexp is softmax's statistic: one online pass of its state.
  NormalizerDefinition softmax(Normalizer::Softmax, /*hasSink=*/false);
  SmallVector<Value> outs;
  switch (kind) {
  case ReductionKind::Mean:
    // Running sum and count of present terms.
    outs = {createFilled(loc, type, outSizes, 0.0),
            createFilled(loc, type, outSizes, 0.0)};
    break;
  case ReductionKind::LogSumExp: {
    NormalizerState init = softmax.getInitialState(builder, loc, elementType);
    outs = {createFilled(loc, type, outSizes, init.max),
            createFilled(loc, type, outSizes, init.sum)};
    break;
  }
  default:
    outs = {createFilled(loc, type, outSizes, getReductionIdentity(kind))};
    break;
  }
  SmallVector<AffineMap> outMaps(outs.size(), outMap);
  FailureOr<linalg::GenericOp> generic = emitBodyGeneric(
      loc, body, iterators, extents, {}, outs, outMaps,
      [&](OpBuilder &b, Location l, const BodyPoint &p) -> SmallVector<Value> {
        Value t = p.value;
        Value acc = p.outs[0];
        switch (kind) {
        case ReductionKind::Sum:
          return {selectIf(b, l, p.present, arith::AddFOp::create(b, l, acc, t),
                           acc)};
        case ReductionKind::Max:
          return {selectIf(b, l, p.present,
                           arith::MaximumFOp::create(b, l, acc, t), acc)};
        case ReductionKind::Min:
          return {selectIf(b, l, p.present,
                           arith::MinimumFOp::create(b, l, acc, t), acc)};
        case ReductionKind::Mean: {
          Value count = p.outs[1];
          Value one = floatConst(b, l, elementType, 1.0);
          return {selectIf(b, l, p.present, arith::AddFOp::create(b, l, acc, t),
                           acc),
                  selectIf(b, l, p.present,
                           arith::AddFOp::create(b, l, count, one), count)};
        }
        case ReductionKind::LogSumExp: {
          // The update of the softmax state by a block of one term.
          NormalizerState state;
          state.max = acc;
          state.sum = p.outs[1];
          BlockShift shift = softmax.beginBlock(b, l, state, t);
          Value sum =
              softmax.accumulate(b, l, softmax.rescale(b, l, state.sum, shift),
                                 softmax.weight(b, l, shift, t));
          NormalizerState next = softmax.endBlock(shift, sum, Value());
          return {selectIf(b, l, p.present, next.max, state.max),
                  selectIf(b, l, p.present, next.sum, state.sum)};
        }
        case ReductionKind::None:
          break;
        }
        llvm_unreachable("elementwise einsums are handled above");
      });
  if (failed(generic))
    return failure();

  Value result = generic->getResult(0);
  if (kind == ReductionKind::Mean) {
    // An empty mean is 0, not 0 / 0.
    result = emitElementwise(
        loc, generic->getResults(), createEmpty(loc, type, outSizes),
        [&](OpBuilder &b, Location l, ValueRange args) -> SmallVector<Value> {
          Value zero = floatConst(b, l, elementType, 0.0);
          Value empty = arith::CmpFOp::create(b, l, arith::CmpFPredicate::OEQ,
                                              args[1], zero);
          Value mean = arith::DivFOp::create(b, l, args[0], args[1]);
          return {arith::SelectOp::create(b, l, empty, zero, mean)};
        });
  } else if (kind == ReductionKind::LogSumExp) {
    result = emitElementwise(
        loc, generic->getResults(), createEmpty(loc, type, outSizes),
        [&](OpBuilder &b, Location l, ValueRange args) -> SmallVector<Value> {
          return {softmax.getStatistic(
              b, l, softmax.unflattenState(args.take_front(2)))};
        });
  }
  tensors[op.getResult()] = {result, Value()};
  return success();
}

LogicalResult KernelLowering::lowerKeep(KeepOp op) {
  Location loc = op.getLoc();
  LoweredTensor input = tensors.lookup(op.getInput());
  auto type = cast<RankedTensorType>(input.values.getType());
  unsigned rank = type.getRank();
  SmallVector<Value> sizes = getAxisSizes(loc, input.values);
  AffineMap identity = builder.getMultiDimIdentityMap(rank);
  SmallVector<ExtraInput> extras;
  if (input.presence)
    extras.push_back({input.presence, identity});
  Value init = createEmpty(
      loc, RankedTensorType::get(type.getShape(), builder.getI1Type()), sizes);
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  FailureOr<linalg::GenericOp> generic = emitBodyGeneric(
      loc, op.getBodyBlock(), iterators, sizes, extras, ValueRange{init},
      {identity},
      [&](OpBuilder &b, Location l, const BodyPoint &p) -> SmallVector<Value> {
        SmallVector<Value> terms = {p.value};
        if (p.present)
          terms.push_back(p.present);
        if (input.presence)
          terms.push_back(p.extraIns[0]);
        return {andAll(b, l, terms)};
      });
  if (failed(generic))
    return failure();
  tensors[op.getResult()] = {input.values, generic->getResult(0)};
  return success();
}

LogicalResult KernelLowering::lowerSoftmax(SoftmaxOp op) {
  return lowerRowNormalizer(
      op.getResult(), op.getInput(), op.getDimension(), op.getSink(),
      NormalizerDefinition(Normalizer::Softmax, bool(op.getSink())));
}

LogicalResult KernelLowering::lowerNormalize(NormalizeOp op) {
  return lowerRowNormalizer(
      op.getResult(), op.getInput(), op.getDimension(), Value(),
      NormalizerDefinition(Normalizer::Normalize, /*hasSink=*/false,
                           NormalizerMath(), op.getMap()));
}

LogicalResult
KernelLowering::lowerRowNormalizer(Value resultValue, Value inputValue,
                                   int64_t dim, Value sinkValue,
                                   const NormalizerDefinition &normalizer) {
  Location loc = resultValue.getLoc();
  LoweredTensor input = tensors.lookup(inputValue);
  Value x = input.values;
  Value present = input.presence;
  auto type = cast<RankedTensorType>(x.getType());
  Type elementType = type.getElementType();
  int64_t rank = type.getRank();
  SmallVector<Value> sizes = getAxisSizes(loc, x);
  SmallVector<Value> rowSizes = sizes;
  rowSizes.erase(rowSizes.begin() + dim);
  SmallVector<int64_t> rowShape(type.getShape());
  rowShape.erase(rowShape.begin() + dim);
  auto rowType = RankedTensorType::get(rowShape, elementType);
  AffineMap full = builder.getMultiDimIdentityMap(rank);
  AffineMap row = full.dropResult(dim);
  SmallVector<utils::IteratorType> reduceIterators(
      rank, utils::IteratorType::parallel);
  reduceIterators[dim] = utils::IteratorType::reduction;
  SmallVector<utils::IteratorType> parallel(rank,
                                            utils::IteratorType::parallel);
  Value zero = floatConst(builder, loc, elementType, 0.0);
  NormalizerState init = normalizer.getInitialState(builder, loc, elementType);

  // The sink joins the denominator at the end; an absent sink counts as
  // -inf.
  Value sink;
  if (sinkValue) {
    LoweredTensor lowered = tensors.lookup(sinkValue);
    sink = lowered.values;
    if (lowered.presence) {
      Value negInf = floatConst(builder, loc, elementType, -kInf);
      sink = emitElementwise(
          loc, {lowered.values, lowered.presence},
          createEmpty(loc, rowType, rowSizes),
          [&](OpBuilder &b, Location l, ValueRange args) -> SmallVector<Value> {
            return {arith::SelectOp::create(b, l, args[1], args[0], negInf)};
          });
    }
  }

  SmallVector<Value> xIns = {x};
  SmallVector<AffineMap> xMaps = {full};
  if (present) {
    xIns.push_back(present);
    xMaps.push_back(full);
  }

  // With a max, two passes over each row, so that the max is known before
  // any weight: the max over present entries, then the sum of their
  // weights.
  Value rowMax;
  if (normalizer.hasMax()) {
    SmallVector<AffineMap> maxMaps = xMaps;
    maxMaps.push_back(row);
    rowMax =
        linalg::GenericOp::create(
            builder, loc, TypeRange{rowType}, xIns,
            ValueRange{createFilled(loc, rowType, rowSizes, init.max)},
            maxMaps, reduceIterators,
            [&](OpBuilder &b, Location l, ValueRange args) {
              Value acc = args.back();
              Value m = normalizer.maxOf(b, l, acc, args[0]);
              linalg::YieldOp::create(
                  b, l, selectIf(b, l, present ? args[1] : Value(), m, acc));
            })
            .getResult(0);
  }
  auto weightOf = [&](OpBuilder &b, Location l, Value v, Value max) {
    BlockShift shift = max ? normalizer.shiftFor(b, l, max) : BlockShift();
    return normalizer.weight(b, l, shift, v);
  };

  // The sum of the weights and, where the sum cannot tell an empty row, the
  // count of present entries.
  SmallVector<Value> sumIns = xIns;
  SmallVector<AffineMap> sumMaps = xMaps;
  if (rowMax) {
    sumIns.push_back(rowMax);
    sumMaps.push_back(row);
  }
  SmallVector<Value> sumOuts = {
      createFilled(loc, rowType, rowSizes, init.sum)};
  SmallVector<Type> sumTypes = {rowType};
  if (normalizer.hasKeptCount()) {
    sumOuts.push_back(createFilled(loc, rowType, rowSizes, init.keptCount));
    sumTypes.push_back(rowType);
  }
  sumMaps.append(sumOuts.size(), row);
  linalg::GenericOp sums = linalg::GenericOp::create(
      builder, loc, sumTypes, sumIns, sumOuts, sumMaps, reduceIterators,
      [&](OpBuilder &b, Location l, ValueRange args) {
        ValueRange accs = args.take_back(sumOuts.size());
        Value m = rowMax ? args[xIns.size()] : Value();
        Value sum = normalizer.accumulate(b, l, accs[0],
                                          weightOf(b, l, args[0], m));
        SmallVector<Value> next = {
            selectIf(b, l, present ? args[1] : Value(), sum, accs[0])};
        if (normalizer.hasKeptCount())
          next.push_back(normalizer.countKept(
              b, l, accs[1], present ? args[1] : boolConst(b, l, true)));
        linalg::YieldOp::create(b, l, next);
      });

  // The finalisation's factor per row (0 for a row without present entries).
  SmallVector<Value> rowIns;
  if (rowMax)
    rowIns.push_back(rowMax);
  llvm::append_range(rowIns, sums.getResults());
  unsigned numFields = rowIns.size();
  if (sink)
    rowIns.push_back(sink);
  Value factor = emitElementwise(
      loc, rowIns, createEmpty(loc, rowType, rowSizes),
      [&](OpBuilder &b, Location l, ValueRange args) -> SmallVector<Value> {
        NormalizerState state =
            normalizer.unflattenState(args.take_front(numFields));
        Value sinkLogit = sink ? args[numFields] : Value();
        return {normalizer.getOutputFactor(b, l, state, sinkLogit)};
      });

  // Weights times the factor; 0 at absent entries.
  SmallVector<Value> scaleIns = xIns;
  SmallVector<AffineMap> scaleMaps = xMaps;
  if (rowMax) {
    scaleIns.push_back(rowMax);
    scaleMaps.push_back(row);
  }
  scaleIns.push_back(factor);
  scaleMaps.append({row, full});
  Value result =
      linalg::GenericOp::create(
          builder, loc, TypeRange{type}, scaleIns,
          ValueRange{createEmpty(loc, type, sizes)}, scaleMaps, parallel,
          [&](OpBuilder &b, Location l, ValueRange args) {
            Value m = rowMax ? args[xIns.size()] : Value();
            Value f = args[args.size() - 2];
            Value p =
                arith::MulFOp::create(b, l, weightOf(b, l, args[0], m), f);
            linalg::YieldOp::create(
                b, l, selectIf(b, l, present ? args[1] : Value(), p, zero));
          })
          .getResult(0);
  tensors[resultValue] = {result, present};
  return success();
}

LogicalResult KernelLowering::lowerReturn(ReturnOp op, func::FuncOp func) {
  Location loc = op.getLoc();
  unsigned firstOutput =
      kernel.getNumDims() + kernel.getNumInputs() + kernel.getNumParams();
  for (auto [i, value] : llvm::enumerate(op.getValues())) {
    LoweredTensor lowered = tensors.lookup(value);
    if (!lowered.values)
      return op.emitOpError() << "returns a value the lowering does not know";
    auto type = cast<RankedTensorType>(lowered.values.getType());
    Type declared = cast<TypeAttr>(kernel.getOutputTypes()[i]).getValue();
    Value stored = lowered.values;
    if (lowered.presence || declared != type.getElementType()) {
      // Absent entries are stored as 0; rounding happens once, here.
      auto storedType = RankedTensorType::get(type.getShape(), declared);
      SmallVector<Value> ins = {lowered.values};
      if (lowered.presence)
        ins.push_back(lowered.presence);
      bool converted = true;
      stored = emitElementwise(
          loc, ins,
          createEmpty(loc, storedType, getAxisSizes(loc, lowered.values)),
          [&](OpBuilder &b, Location l, ValueRange args) -> SmallVector<Value> {
            Value v = args[0];
            if (lowered.presence)
              v = arith::SelectOp::create(
                  b, l, args[1], v,
                  arith::ConstantOp::create(b, l, b.getZeroAttr(v.getType())));
            FailureOr<Value> c = convertScalar(b, l, v, declared);
            if (failed(c)) {
              converted = false;
              return {arith::ConstantOp::create(b, l, b.getZeroAttr(declared))
                          .getResult()};
            }
            return {*c};
          });
      if (!converted)
        return op.emitOpError()
               << "cannot store " << type.getElementType() << " as output #"
               << i << " of type " << declared;
    }
    bufferization::MaterializeInDestinationOp::create(
        builder, loc, Type(), stored, func.getArgument(firstOutput + i),
        /*restrict=*/true, /*writable=*/true);
  }
  return success();
}

LogicalResult KernelLowering::copyReshape(Operation *reshape) {
  LoweredTensor source = tensors.lookup(reshape->getOperand(0));
  if (!source.values || source.presence)
    return reshape->emitOpError()
           << "reshapes a tensor the lowering does not know or one with "
              "absent entries";
  IRMapping mapping = scalars;
  mapping.map(reshape->getOperand(0), source.values);
  Operation *copy = builder.clone(*reshape, mapping);
  LoweredTensor result;
  result.values = copy->getResult(0);
  tensors[reshape->getResult(0)] = result;
  return success();
}

LogicalResult KernelLowering::copyAttention(Operation *op) {
  IRMapping mapping = scalars;
  auto mapTensor = [&](Value value) -> LogicalResult {
    LoweredTensor lowered = tensors.lookup(value);
    if (!lowered.values)
      return op->emitOpError() << "uses a tensor the lowering does not know";
    // attn.attention has no notion of absent entries in its operands.
    if (lowered.presence)
      return op->emitOpError()
             << "reads a tensor with absent entries, which the fused paths "
                "cannot represent";
    mapping.map(value, lowered.values);
    return success();
  };
  for (Value operand : op->getOperands())
    if (isa<RankedTensorType>(operand.getType()) && failed(mapTensor(operand)))
      return failure();
  WalkResult captured = op->walk([&](Operation *inner) {
    for (Value operand : inner->getOperands()) {
      if (op->isAncestor(operand.getParentRegion()->getParentOp()) ||
          mapping.contains(operand))
        continue;
      if (isa<RankedTensorType>(operand.getType()) &&
          failed(mapTensor(operand)))
        return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  if (captured.wasInterrupted())
    return failure();
  Operation *copy = builder.clone(*op, mapping);
  for (auto [result, copied] :
       llvm::zip_equal(op->getResults(), copy->getResults()))
    tensors[result] = {copied, Value()};
  return success();
}

//===----------------------------------------------------------------------===//
// Kernel
//===----------------------------------------------------------------------===//

FailureOr<func::FuncOp> KernelLowering::run() {
  Location loc = kernel.getLoc();
  Block &entry = kernel.getEntryBlock();
  auto ret = cast<ReturnOp>(entry.getTerminator());
  unsigned numArgs = entry.getNumArguments();

  SmallVector<Type> argTypes(entry.getArgumentTypes());
  for (auto [i, value] : llvm::enumerate(ret.getValues())) {
    auto type = cast<RankedTensorType>(value.getType());
    Type declared = cast<TypeAttr>(kernel.getOutputTypes()[i]).getValue();
    argTypes.push_back(MemRefType::get(type.getShape(), declared));
  }
  builder.setInsertionPointAfter(kernel);
  auto func = func::FuncOp::create(builder, loc, kernel.getSymName(),
                                   builder.getFunctionType(argTypes, {}));
  if (emitCInterface)
    func->setAttr("llvm.emit_c_interface", builder.getUnitAttr());
  Block *block = func.addEntryBlock();
  builder.setInsertionPointToStart(block);

  for (unsigned i = 0; i < numArgs; ++i) {
    BlockArgument arg = entry.getArgument(i);
    if (isa<RankedTensorType>(arg.getType())) {
      // The caller's inputs are read-only: bufferization must copy before it
      // would write into one.
      func.setArgAttr(i, bufferization::BufferizationDialect::kWritableAttrName,
                      builder.getBoolAttr(false));
      tensors[arg] = {block->getArgument(i), Value()};
    } else {
      scalars.map(arg, block->getArgument(i));
    }
  }

  for (Operation &op : entry.without_terminator()) {
    LogicalResult status =
        llvm::TypeSwitch<Operation *, LogicalResult>(&op)
            .Case<EinsumOp>([&](EinsumOp o) { return lowerEinsum(o); })
            .Case<KeepOp>([&](KeepOp o) { return lowerKeep(o); })
            .Case<SoftmaxOp>([&](SoftmaxOp o) { return lowerSoftmax(o); })
            .Case<NormalizeOp>([&](NormalizeOp o) { return lowerNormalize(o); })
            .Case<AttentionOp>([&](AttentionOp o) -> LogicalResult {
              if (!keepAttention)
                return o.emitOpError()
                       << "is lowered by attn-fuse-online; run "
                          "convert-attn-to-linalg with keep-attention";
              return copyAttention(o);
            })
            .Case<AttentionBackwardOp>(
                [&](AttentionBackwardOp o) -> LogicalResult {
                  if (!keepAttention)
                    return o.emitOpError()
                           << "is lowered by attn-fuse-backward; run "
                              "convert-attn-to-linalg with keep-attention";
                  return copyAttention(o);
                })
            .Case<tensor::ExpandShapeOp, tensor::CollapseShapeOp>(
                [&](Operation *reshape) { return copyReshape(reshape); })
            .Default([&](Operation *other) -> LogicalResult {
              // Top-level scalar computations (extents, constants).
              if (other->getNumRegions() != 0 ||
                  llvm::any_of(other->getResultTypes(),
                               [](Type t) { return isa<ShapedType>(t); }))
                return other->emitOpError()
                       << "is not supported at the top level of a kernel by "
                          "convert-attn-to-linalg";
              builder.clone(*other, scalars);
              return success();
            });
    if (failed(status)) {
      func.erase();
      return failure();
    }
  }
  if (failed(lowerReturn(ret, func))) {
    func.erase();
    return failure();
  }
  func::ReturnOp::create(builder, loc);
  return func;
}

namespace mlir::attn {
namespace {

struct ConvertAttnToLinalg
    : impl::ConvertAttnToLinalgBase<ConvertAttnToLinalg> {
  using Base::Base;

  void runOnOperation() override {
    SmallVector<KernelOp> kernels;
    getOperation().walk([&](KernelOp kernel) { kernels.push_back(kernel); });
    for (KernelOp kernel : kernels) {
      KernelLowering lowering(kernel, emitCInterface, keepAttention);
      if (failed(lowering.run()))
        return signalPassFailure();
      kernel.erase();
    }
  }
};

} // namespace
} // namespace mlir::attn
