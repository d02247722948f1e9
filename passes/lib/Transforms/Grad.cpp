//===- Grad.cpp - The adjoint of a kernel, as a kernel --------------------===//
//
// attn-grad builds `<name>_grad` (see Passes.td) in three steps:
//
//  1. The forward cascade is cloned into the new kernel: the adjoint reads
//     the forward's tensors (scores, weights, reductions), recomputed.
//  2. Reverse sweep: the adjoint of each tensor is the sum of its
//     contributions, one per use. A use is a read in an einsum body (its
//     contribution is an einsum over the read tensor's axes), the input of a
//     keep (the adjoint passes through), or the input or sink of a
//     normalizer (the normalizer definition's adjoint, written as einsums).
//  3. The gradients of the float inputs are returned.
//
// A kernel that attn-raise has already raised differentiates the same way,
// with two more rules: the adjoint of an attn.attention is an
// attn.attention_backward (the fused backward every backend lowers; the
// recomputed forward gets an LSE result for it), and the adjoint of the
// tensor.expand_shape the raise puts on a shared (MQA) key or value is the
// collapse_shape of its adjoint. The adjoint of an LSE result the forward
// returns (or reads further) is the backward's lse_grad. What the
// structured op cannot differentiate (normalize without a map, a score_mod
// or mask that reads a tensor that needs a gradient) is reported with the
// reason, and the caller differentiates the cascade instead.
//
// Every contribution is a `sum` einsum (over the read tensor's axes, with a
// one-point reduction where nothing else is reduced), so adjoints have no
// absent entries: an absent point of the forward reads an absent entry in
// the contribution's body too, and the sum skips it. A fully masked row so
// contributes 0, never NaN.
//
// The contribution of a read X[s_0, .., s_k] in the body of
//   T[i] = reduce over r of y(i, r)
// is
//   dX[x_0, .., x_k] += sum over the other indices of
//                       w(i, r) * dy/dX[s] * (s_a == x_a for every guarded a)
// where an axis whose subscript is a plain index of the body (the first time
// it is met) is that index itself, any other axis (h / (H / G), n / 16, a
// gather) a fresh index with a guard; w is dT[i] for sum and none, dT[i] /
// count for mean, dT[i] at the first extreme term for max and min, and
// dT[i] exp(y - T[i]) for logsumexp. dy/dX comes from forward-mode
// derivatives of the body, one rule per scalar op (ScalarDerivatives.h).
//
//===----------------------------------------------------------------------===//

#include "attn/Grad/ScalarDerivatives.h"
#include "attn/Grad/ScoreModDerivative.h"
#include "attn/Normalizer/Normalizer.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"

#include <limits>
#include <string>

namespace mlir::attn {

#define GEN_PASS_DEF_ATTNGRAD
#include "attn/Transforms/Passes.h.inc"

namespace {

/// `base`, or `base` with a suffix, not in `taken` (then taken).
std::string takeFreshName(const std::string &base, llvm::StringSet<> &taken) {
  std::string name = base;
  for (unsigned i = 0; taken.contains(name); ++i)
    name = base + "_" + std::to_string(i);
  taken.insert(name);
  return name;
}

SmallVector<StringRef> toRefs(ArrayRef<std::string> strings) {
  return llvm::map_to_vector(strings,
                             [](const std::string &s) { return StringRef(s); });
}

class GradientBuilder {
public:
  GradientBuilder(KernelOp forward, ArrayRef<unsigned> constantInputs)
      : forward(forward), b(forward.getContext()),
        constantInputs(constantInputs.begin(), constantInputs.end()) {}

  FailureOr<OwningOpRef<ModuleOp>> build();

private:
  //===--- Kernel-level helpers ------------------------------------------===//

  /// A builder at the end of the adjoint kernel's body, where cascade ops
  /// and the values their extents need go.
  OpBuilder atTop() {
    OpBuilder top(b.getContext());
    top.setInsertionPointToEnd(entry);
    return top;
  }
  Value indexConstant(int64_t value) {
    OpBuilder top = atTop();
    return arith::ConstantIndexOp::create(top, forward.getLoc(), value);
  }
  /// The size of each axis of `tensor` (a value of the adjoint kernel), as
  /// kernel-level index values.
  SmallVector<Value> axisSizes(Value tensor);
  /// The f32 tensor type of `tensor`'s shape: the type of its adjoint.
  static RankedTensorType adjointType(Value tensor) {
    auto type = cast<RankedTensorType>(tensor.getType());
    return RankedTensorType::get(type.getShape(),
                                 Float32Type::get(type.getContext()));
  }
  /// A new einsum at the end of the kernel; its body is empty but for the
  /// index arguments.
  EinsumOp createEinsum(Location loc, RankedTensorType type,
                        ReductionKind kind, ArrayRef<std::string> indices,
                        ArrayRef<std::string> reduced, ValueRange extents);

  /// An f32 tensor of zeros of `tensor`'s shape: the adjoint of what no
  /// output reaches.
  Value zerosLike(Location loc, Value tensor) {
    return zeros(loc, adjointType(tensor), axisSizes(tensor));
  }
  Value zeros(Location loc, RankedTensorType type, ValueRange sizes);

  /// The adjoint of `tensor` (the sum of its contributions), null if none.
  Value adjointOf(Value tensor);
  void contribute(Value tensor, Value adjoint) {
    if (active.contains(tensor))
      contributions[tensor].push_back(adjoint);
  }

  //===--- Body helpers (at `b`'s insertion point) -----------------------===//

  Value f32(Location loc, double value) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
  }
  /// `indices` (with their extents) flattened row-major, as an f32 (exact
  /// below 2^24 points): the position of a term within its reduction.
  Value linearPosition(Location loc, ValueRange indices, ValueRange extents);
  /// tensor[at], an entry of a tensor the body reads.
  Value readAt(Location loc, Value tensor, ValueRange at) {
    Type element = cast<RankedTensorType>(tensor.getType()).getElementType();
    return ReadOp::create(b, loc, element, tensor, at);
  }
  /// `condition ? value : 0`.
  Value keepIf(Location loc, Value condition, Value value) {
    return arith::SelectOp::create(b, loc, condition, value, f32(loc, 0.0));
  }
  /// The conjunction of `conditions` (null when empty).
  Value allOf(Location loc, ArrayRef<Value> conditions);

  //===--- The adjoint of each cascade op --------------------------------===//

  LogicalResult differentiate(EinsumOp einsum, Value adjoint);
  LogicalResult differentiateRead(EinsumOp einsum, ReadOp read, Value adjoint,
                                  Value count, Value extremePosition);
  LogicalResult differentiateNormalizer(Operation *op, Value adjoint);
  LogicalResult differentiateAttention(AttentionOp attention);
  /// The contribution to the tensor `read` (an attn.read of `attention`'s
  /// score_mod at a position of (b, h, m)) reads: the per-row sums
  /// `rowSums` [B, H, M] of the backward's read gradient, scattered onto
  /// the tensor's entries.
  void contributeRowSums(AttentionOp attention, ReadOp read, Value rowSums);

  /// Gives every softmax attn.attention of the recomputed forward an LSE
  /// result, which its backward reads (in `cascade`, the ops replaced).
  void addStatistics(SmallVectorImpl<Operation *> &cascade);
  void findActiveTensors();

  /// Whether forward input `i` is differentiated: a float input the caller
  /// did not declare constant.
  bool isDifferentiated(unsigned i) {
    auto type = cast<RankedTensorType>(forward.getInputArg(i).getType());
    return isa<FloatType>(type.getElementType()) &&
           !constantInputs.contains(i);
  }

  KernelOp forward;
  KernelOp grad;
  OpBuilder b;
  /// Float inputs treated as constants: no gradient, and what depends on
  /// them alone has no adjoint (a captured bias table nobody trains).
  llvm::SmallDenseSet<unsigned> constantInputs;
  Block *entry = nullptr;
  /// Tensors that depend on a float input: the only ones with adjoints.
  llvm::DenseSet<Value> active;
  llvm::DenseMap<Value, SmallVector<Value>> contributions;
  /// Outputs of the recomputed forward that addStatistics replaced.
  llvm::DenseMap<Value, Value> replacedOutputs;
};

SmallVector<Value> GradientBuilder::axisSizes(Value tensor) {
  if (auto arg = dyn_cast<BlockArgument>(tensor)) {
    assert(arg.getOwner() == entry && "a tensor of the adjoint kernel");
    unsigned input = arg.getArgNumber() - grad.getNumDims();
    SmallVector<Value> sizes;
    for (Attribute axis : grad.getShapeOf(input)) {
      if (auto size = dyn_cast<IntegerAttr>(axis)) {
        sizes.push_back(indexConstant(size.getInt()));
        continue;
      }
      std::optional<unsigned> dim =
          grad.lookupDim(cast<StringAttr>(axis).getValue());
      assert(dim && "shapes name the kernel's dims");
      sizes.push_back(grad.getDimArg(*dim));
    }
    return sizes;
  }
  Operation *def = tensor.getDefiningOp();
  if (auto einsum = dyn_cast<EinsumOp>(def))
    return SmallVector<Value>(einsum.getOutputExtents());
  if (auto attention = dyn_cast<AttentionOp>(def)) {
    // O is [B, H, M, E] and LSE [B, H, M]: Q's leading axes, V's last.
    SmallVector<Value> sizes = axisSizes(attention.getQuery());
    sizes.pop_back();
    if (tensor == attention.getOutput())
      sizes.push_back(axisSizes(attention.getValue()).back());
    return sizes;
  }
  // keep, softmax, normalize: the shape of their input.
  return axisSizes(def->getOperand(0));
}

EinsumOp GradientBuilder::createEinsum(Location loc, RankedTensorType type,
                                       ReductionKind kind,
                                       ArrayRef<std::string> indices,
                                       ArrayRef<std::string> reduced,
                                       ValueRange extents) {
  OpBuilder top = atTop();
  return EinsumOp::create(top, loc, type, kind, toRefs(indices),
                          toRefs(reduced), extents);
}

Value GradientBuilder::zeros(Location loc, RankedTensorType type,
                             ValueRange sizes) {
  SmallVector<std::string> names;
  for (int64_t a = 0; a < type.getRank(); ++a)
    names.push_back("i" + std::to_string(a));
  EinsumOp zeros =
      createEinsum(loc, type, ReductionKind::None, names, {}, sizes);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&zeros.getBodyBlock());
  YieldOp::create(b, loc, f32(loc, 0.0));
  return zeros.getResult();
}

Value GradientBuilder::adjointOf(Value tensor) {
  auto it = contributions.find(tensor);
  if (it == contributions.end() || it->second.empty())
    return Value();
  SmallVector<Value> &parts = it->second;
  if (parts.size() == 1)
    return parts.front();
  // Contributions are dense: their elementwise sum.
  Location loc = tensor.getLoc();
  auto rank = cast<RankedTensorType>(tensor.getType()).getRank();
  SmallVector<std::string> names;
  for (int64_t a = 0; a < rank; ++a)
    names.push_back("i" + std::to_string(a));
  EinsumOp sum = createEinsum(loc, adjointType(tensor), ReductionKind::None,
                              names, {}, axisSizes(tensor));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&sum.getBodyBlock());
  ValueRange at = sum.getBodyBlock().getArguments();
  Value total;
  for (Value part : parts) {
    Value value = readAt(loc, part, at);
    total = total ? arith::AddFOp::create(b, loc, total, value).getResult()
                  : value;
  }
  YieldOp::create(b, loc, total);
  parts.assign({sum.getResult()});
  return sum.getResult();
}

Value GradientBuilder::linearPosition(Location loc, ValueRange indices,
                                      ValueRange extents) {
  Value position = arith::ConstantIndexOp::create(b, loc, 0);
  for (auto [index, extent] : llvm::zip(indices, extents))
    position = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, position, extent), index);
  Value wide = arith::IndexCastOp::create(b, loc, b.getI64Type(), position);
  return arith::SIToFPOp::create(b, loc, b.getF32Type(), wide);
}

Value GradientBuilder::allOf(Location loc, ArrayRef<Value> conditions) {
  Value all;
  for (Value condition : conditions)
    all = all ? arith::AndIOp::create(b, loc, all, condition).getResult()
              : condition;
  return all;
}

void GradientBuilder::findActiveTensors() {
  for (unsigned i = 0; i < forward.getNumInputs(); ++i)
    if (isDifferentiated(i))
      active.insert(grad.getInputArg(i));
  auto isFloatTensor = [](Value value) {
    auto type = dyn_cast<RankedTensorType>(value.getType());
    return type && isa<FloatType>(type.getElementType());
  };
  for (Operation &op : entry->getOperations()) {
    bool dependsOnInput = false;
    if (auto einsum = dyn_cast<EinsumOp>(op)) {
      einsum.getBodyBlock().walk([&](ReadOp read) {
        dependsOnInput |= active.contains(read.getTensor());
      });
    } else {
      dependsOnInput = llvm::any_of(op.getOperands(), [&](Value operand) {
        return active.contains(operand);
      });
    }
    if (!dependsOnInput)
      continue;
    for (Value result : op.getResults())
      if (isFloatTensor(result))
        active.insert(result);
  }
}

LogicalResult GradientBuilder::differentiate(EinsumOp einsum, Value adjoint) {
  Location loc = einsum.getLoc();
  ReductionKind kind = einsum.getKind();
  auto names = [](ArrayAttr attr) {
    return llvm::map_to_vector(attr, [](Attribute name) {
      return cast<StringAttr>(name).getValue().str();
    });
  };
  // What the kinds that weigh their terms need, once per einsum: the count
  // of present terms (mean), the position of the first extreme term (max,
  // min), each a reduction like the forward's over a copy of its body.
  Value count, extremePosition;
  if (kind == ReductionKind::Mean || kind == ReductionKind::Max ||
      kind == ReductionKind::Min) {
    bool isMean = kind == ReductionKind::Mean;
    EinsumOp helper = createEinsum(
        loc, adjointType(einsum.getResult()),
        isMean ? ReductionKind::Sum : ReductionKind::Min,
        names(einsum.getIndices()), names(einsum.getReduced()),
        einsum.getExtents());
    OpBuilder::InsertionGuard guard(b);
    Block &body = helper.getBodyBlock();
    b.setInsertionPointToStart(&body);
    IRMapping mapping;
    mapping.map(einsum.getBodyBlock().getArguments(), body.getArguments());
    for (Operation &op : einsum.getBodyBlock().without_terminator())
      b.clone(op, mapping);
    Value term = mapping.lookup(einsum.getYieldedValue());
    Value yielded;
    if (isMean) {
      // term * 0 + 1: 1 for each present term, and it keeps every read.
      yielded = arith::AddFOp::create(
          b, loc, arith::MulFOp::create(b, loc, term, f32(loc, 0.0)),
          f32(loc, 1.0));
    } else {
      Value extreme =
          readAt(loc, einsum.getResult(),
                         body.getArguments().take_front(
                             einsum.getNumOutputIndices()));
      Value isExtreme = arith::CmpFOp::create(
          b, loc, arith::CmpFPredicate::OEQ, term, extreme);
      Value position = linearPosition(
          loc, body.getArguments().drop_front(einsum.getNumOutputIndices()),
          einsum.getReducedExtents());
      yielded = arith::SelectOp::create(
          b, loc, isExtreme, position,
          f32(loc, std::numeric_limits<double>::infinity()));
    }
    YieldOp::create(b, loc, yielded);
    (isMean ? count : extremePosition) = helper.getResult();
  }
  SmallVector<ReadOp> reads;
  for (Operation &op : einsum.getBodyBlock())
    if (auto read = dyn_cast<ReadOp>(op); read && active.contains(read.getTensor()))
      reads.push_back(read);
  for (ReadOp read : reads)
    if (failed(differentiateRead(einsum, read, adjoint, count,
                                 extremePosition)))
      return failure();
  return success();
}

LogicalResult GradientBuilder::differentiateRead(EinsumOp einsum, ReadOp read,
                                                 Value adjoint, Value count,
                                                 Value extremePosition) {
  Location loc = read.getLoc();
  Value tensor = read.getTensor();
  Block &forwardBody = einsum.getBodyBlock();
  unsigned numForwardIndices = forwardBody.getNumArguments();
  SmallVector<std::string> forwardNames;
  for (Attribute name : einsum.getIndices())
    forwardNames.push_back(cast<StringAttr>(name).getValue().str());
  for (Attribute name : einsum.getReduced())
    forwardNames.push_back(cast<StringAttr>(name).getValue().str());
  llvm::StringSet<> taken;
  for (const std::string &name : forwardNames)
    taken.insert(name);

  // The adjoint's output indices are the read tensor's axes: a plain index
  // of the body where the subscript is one, else a fresh index and a guard.
  SmallVector<std::optional<unsigned>> axisOf(numForwardIndices);
  SmallVector<std::string> outputNames;
  SmallVector<unsigned> guardedAxes;
  for (auto [axis, subscript] : llvm::enumerate(read.getSubscripts())) {
    auto arg = dyn_cast<BlockArgument>(subscript);
    if (arg && arg.getOwner() == &forwardBody &&
        !axisOf[arg.getArgNumber()]) {
      axisOf[arg.getArgNumber()] = axis;
      outputNames.push_back(forwardNames[arg.getArgNumber()]);
      continue;
    }
    outputNames.push_back(takeFreshName("x" + std::to_string(axis), taken));
    guardedAxes.push_back(axis);
  }
  // The forward's other indices are summed over.
  SmallVector<std::string> reducedNames;
  SmallVector<Value> extents = axisSizes(tensor);
  SmallVector<unsigned> reducedOf(numForwardIndices);
  for (unsigned k = 0; k < numForwardIndices; ++k) {
    if (axisOf[k])
      continue;
    reducedOf[k] = reducedNames.size();
    reducedNames.push_back(forwardNames[k]);
    extents.push_back(einsum.getExtents()[k]);
  }
  bool onePoint = reducedNames.empty();
  if (onePoint) {
    reducedNames.push_back(takeFreshName("z", taken));
    extents.push_back(indexConstant(1));
  }
  EinsumOp contribution = createEinsum(loc, adjointType(tensor),
                                       ReductionKind::Sum, outputNames,
                                       reducedNames, extents);
  Block &body = contribution.getBodyBlock();
  unsigned numOutputs = outputNames.size();
  IRMapping mapping;
  for (unsigned k = 0; k < numForwardIndices; ++k)
    mapping.map(forwardBody.getArgument(k),
                axisOf[k] ? body.getArgument(*axisOf[k])
                          : body.getArgument(numOutputs + reducedOf[k]));

  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&body);
  SmallVector<Operation *> cloned;
  for (Operation &op : forwardBody.without_terminator())
    cloned.push_back(b.clone(op, mapping));

  // Forward mode from the read to what the body yields.
  llvm::DenseMap<Value, Value> derivative;
  Value seed = mapping.lookup(read.getResult());
  derivative[seed] = f32(loc, 1.0);
  for (Operation *op : cloned) {
    if (op == seed.getDefiningOp() || isa<ReadOp>(op))
      continue;
    SmallVector<Value> operandDerivatives = llvm::map_to_vector(
        op->getOperands(), [&](Value v) { return derivative.lookup(v); });
    FailureOr<Value> d = differentiateScalarOp(b, op, operandDerivatives);
    if (failed(d))
      return failure();
    if (*d)
      derivative[op->getResult(0)] = *d;
  }
  Value term = mapping.lookup(einsum.getYieldedValue());
  Value dTerm = derivative.lookup(term);
  if (!dTerm) {
    // The yield does not depend on this read (it only decides absence).
    contribution.erase();
    return success();
  }

  // The weight of the term.
  SmallVector<Value> at = llvm::map_to_vector(
      forwardBody.getArguments().take_front(einsum.getNumOutputIndices()),
      [&](BlockArgument arg) { return mapping.lookup(arg); });
  Value weight = readAt(loc, adjoint, at);
  switch (einsum.getKind()) {
  case ReductionKind::None:
  case ReductionKind::Sum:
    break;
  case ReductionKind::Mean:
    weight = arith::DivFOp::create(b, loc, weight,
                                   readAt(loc, count, at));
    break;
  case ReductionKind::Max:
  case ReductionKind::Min: {
    SmallVector<Value> reducedAt = llvm::map_to_vector(
        forwardBody.getArguments().drop_front(einsum.getNumOutputIndices()),
        [&](BlockArgument arg) { return mapping.lookup(arg); });
    Value position = linearPosition(loc, reducedAt, einsum.getReducedExtents());
    Value isFirstExtreme = arith::CmpFOp::create(
        b, loc, arith::CmpFPredicate::OEQ, position,
        readAt(loc, extremePosition, at));
    weight = keepIf(loc, isFirstExtreme, weight);
    break;
  }
  case ReductionKind::LogSumExp: {
    Value total = readAt(loc, einsum.getResult(), at);
    weight = arith::MulFOp::create(
        b, loc, weight,
        math::ExpOp::create(b, loc,
                            arith::SubFOp::create(b, loc, term, total)));
    break;
  }
  }
  // A zero weight contributes 0 even where the derivative is not finite.
  Value value = arith::MulFOp::create(b, loc, weight, dTerm);
  Value zeroWeight = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                           weight, f32(loc, 0.0));
  value = arith::SelectOp::create(b, loc, zeroWeight, f32(loc, 0.0), value);

  SmallVector<Value> conditions;
  for (unsigned axis : guardedAxes)
    conditions.push_back(arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::eq,
        mapping.lookup(read.getSubscripts()[axis]), body.getArgument(axis)));
  // An index the body does not use (a broadcast) is summed over all the
  // same; the verifier wants every reduced index used.
  Value zeroIndex = arith::ConstantIndexOp::create(b, loc, 0);
  for (BlockArgument reduced : body.getArguments().drop_front(numOutputs))
    if (reduced.use_empty())
      conditions.push_back(arith::CmpIOp::create(
          b, loc,
          onePoint ? arith::CmpIPredicate::eq : arith::CmpIPredicate::sge,
          reduced, zeroIndex));
  if (Value all = allOf(loc, conditions))
    value = keepIf(loc, all, value);
  YieldOp::create(b, loc, value);
  contribute(tensor, contribution.getResult());
  return success();
}

LogicalResult GradientBuilder::differentiateNormalizer(Operation *op,
                                                       Value adjoint) {
  Location loc = op->getLoc();
  Value weights = op->getResult(0);
  Value scores = op->getOperand(0);
  auto softmax = dyn_cast<SoftmaxOp>(op);
  auto normalize = dyn_cast<NormalizeOp>(op);
  int64_t dimension = softmax ? softmax.getDimension() : normalize.getDimension();
  Value sink = softmax ? softmax.getSink() : Value();
  NormalizerDefinition definition =
      softmax ? NormalizerDefinition(Normalizer::Softmax, !!sink)
              : NormalizerDefinition(Normalizer::Normalize, false, {},
                                     normalize.getMap());
  int64_t rank = cast<RankedTensorType>(weights.getType()).getRank();
  SmallVector<Value> sizes = axisSizes(weights);
  SmallVector<std::string> names, rowNames;
  SmallVector<Value> rowSizes;
  for (int64_t a = 0; a < rank; ++a) {
    names.push_back("i" + std::to_string(a));
    if (a != dimension) {
      rowNames.push_back(names.back());
      rowSizes.push_back(sizes[a]);
    }
  }
  auto rowType = [&](Value like) {
    SmallVector<int64_t> shape;
    auto type = cast<RankedTensorType>(like.getType());
    for (int64_t a = 0; a < rank; ++a)
      if (a != dimension)
        shape.push_back(type.getDimSize(a));
    return RankedTensorType::get(shape, b.getF32Type());
  };
  SmallVector<Value> rowExtents(rowSizes);
  rowExtents.push_back(sizes[dimension]);
  /// Indices of a whole point from a row's indices and the reduced one.
  auto pointOf = [&](Block &body) {
    SmallVector<Value> point(body.getArguments().take_front(rank - 1));
    point.insert(point.begin() + dimension, body.getArgument(rank - 1));
    return point;
  };
  /// A row reduction of `build(point)` over the normalized axis.
  auto reduceRows = [&](ReductionKind kind, RankedTensorType type,
                        function_ref<Value(ValueRange)> build) {
    EinsumOp row = createEinsum(loc, type, kind, rowNames,
                                {names[dimension]}, rowExtents);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(&row.getBodyBlock());
    YieldOp::create(b, loc, build(pointOf(row.getBodyBlock())));
    return row.getResult();
  };
  // Delta = sum over the row of P dP.
  Value delta = reduceRows(ReductionKind::Sum, rowType(weights),
                           [&](ValueRange point) -> Value {
    return arith::MulFOp::create(b, loc, readAt(loc, weights, point),
                                 readAt(loc, adjoint, point));
  });
  // normalize without a map: (dP - Delta) / the row's sum.
  Value rowSum;
  if (!softmax && normalize.getMap() == WeightMap::Identity)
    rowSum = reduceRows(ReductionKind::Sum, rowType(weights),
                        [&](ValueRange point) -> Value {
      return readAt(loc, scores, point);
    });

  // The scores' adjoint, point by point over a one-point reduction.
  SmallVector<std::string> pointNames(names);
  pointNames.push_back("z");
  SmallVector<Value> pointExtents(sizes);
  pointExtents.push_back(indexConstant(1));
  auto pointwise = [&](Value like, ArrayRef<std::string> indexNames,
                       ArrayRef<Value> indexExtents,
                       function_ref<Value(Block &)> build) {
    EinsumOp each = createEinsum(
        loc, RankedTensorType::get(cast<RankedTensorType>(like.getType())
                                       .getShape(),
                                   b.getF32Type()),
        ReductionKind::Sum, indexNames.drop_back(), {indexNames.back()},
        indexExtents);
    OpBuilder::InsertionGuard guard(b);
    Block &body = each.getBodyBlock();
    b.setInsertionPointToStart(&body);
    Value value = build(body);
    Value onePoint = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::eq, body.getArguments().back(),
        arith::ConstantIndexOp::create(b, loc, 0));
    YieldOp::create(b, loc, keepIf(loc, onePoint, value));
    return each.getResult();
  };
  if (active.contains(scores)) {
    Value dScores = pointwise(scores, pointNames, pointExtents,
                              [&](Block &body) -> Value {
      ValueRange point = body.getArguments().drop_back();
      SmallVector<Value> row;
      for (int64_t a = 0; a < rank; ++a)
        if (a != dimension)
          row.push_back(point[a]);
      Value p = readAt(loc, weights, point);
      Value g = readAt(loc, adjoint, point);
      Value centred = arith::SubFOp::create(
          b, loc, g, readAt(loc, delta, row));
      if (rowSum) {
        // 1 / sum, taken as P / s where s != 0, which also keeps the read
        // of P that makes masked points absent.
        Value s = readAt(loc, scores, point);
        Value inverse = arith::DivFOp::create(
            b, loc, f32(loc, 1.0), readAt(loc, rowSum, row));
        Value isZero = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                             s, f32(loc, 0.0));
        Value ratio = arith::SelectOp::create(
            b, loc, isZero, inverse, arith::DivFOp::create(b, loc, p, s));
        return arith::MulFOp::create(b, loc, ratio, centred);
      }
      Value factor = definition.getScoreAdjointFactor(
          b, loc, readAt(loc, scores, point));
      return arith::MulFOp::create(b, loc, arith::MulFOp::create(b, loc, p, factor),
                                   centred);
    });
    contribute(scores, dScores);
  }
  if (sink && active.contains(sink)) {
    // dz = -P_z Delta, P_z from the log-sum-exp of the row's kept scores.
    Value lse = reduceRows(ReductionKind::LogSumExp, rowType(weights),
                           [&](ValueRange point) -> Value {
      return readAt(loc, scores, point);
    });
    SmallVector<std::string> sinkNames(rowNames);
    sinkNames.push_back("z");
    SmallVector<Value> sinkExtents(rowSizes);
    sinkExtents.push_back(indexConstant(1));
    Value dSink = pointwise(sink, sinkNames, sinkExtents,
                            [&](Block &body) -> Value {
      ValueRange row = body.getArguments().drop_back();
      Value share = definition.getSinkWeight(
          b, loc, readAt(loc, sink, row),
          readAt(loc, lse, row));
      return arith::NegFOp::create(
          b, loc,
          arith::MulFOp::create(b, loc, share,
                                readAt(loc, delta, row)));
    });
    contribute(sink, dSink);
  }
  return success();
}

void GradientBuilder::addStatistics(SmallVectorImpl<Operation *> &cascade) {
  for (Operation *&op : cascade) {
    auto attention = dyn_cast<AttentionOp>(op);
    if (!attention || attention.getLse() ||
        !NormalizerDefinition(attention.getNormalizer(),
                              static_cast<bool>(attention.getSink()), {},
                              attention.getMap())
             .hasStatistic())
      continue;
    auto query = cast<RankedTensorType>(attention.getQuery().getType());
    auto lseType = RankedTensorType::get(query.getShape().take_front(3),
                                         b.getF32Type());
    OpBuilder here(attention);
    auto withLse = AttentionOp::create(
        here, attention.getLoc(), attention.getOutput().getType(), lseType,
        attention.getQuery(), attention.getKey(), attention.getValue(),
        attention.getScale(), attention.getSink(),
        attention.getNormalizerAttr(), attention.getMapAttr());
    for (auto [from, to] : llvm::zip(attention->getRegions(),
                                     withLse->getRegions()))
      to.takeBody(from);
    attention.getOutput().replaceAllUsesWith(withLse.getOutput());
    replacedOutputs[attention.getOutput()] = withLse.getOutput();
    attention.erase();
    op = withLse;
  }
}

LogicalResult GradientBuilder::differentiateAttention(AttentionOp attention) {
  Value adjoint = adjointOf(attention.getOutput());
  Value lseAdjoint =
      attention.getLse() ? adjointOf(attention.getLse()) : Value();
  if (!adjoint && !lseAdjoint)
    return success();
  auto refuse = [&](const Twine &why) {
    return attention.emitError("attn-grad: no fused backward: ") << why;
  };
  if (attention.getNormalizer() == Normalizer::Normalize &&
      attention.getMap() == WeightMap::Identity)
    return refuse("normalize without a weight map has no row statistic to "
                  "recompute its weights from");
  // Reads of tensors that need a gradient: in the mask they decide only
  // which scores are kept (no derivative); in score_mod each must add a
  // row's terms to one entry, a position of (b, h, m) alone.
  Block &scoreMod = attention.getScoreModBlock();
  SmallVector<int64_t> gradReads;
  SmallVector<ReadOp> readsOfActive;
  for (auto [position, op] : llvm::enumerate(getScoreModReads(scoreMod))) {
    auto read = cast<ReadOp>(op);
    if (!active.contains(read.getTensor()))
      continue;
    if (!isRowPositionRead(read, scoreMod))
      return refuse("score_mod reads a tensor that needs a gradient at a "
                    "position that depends on the key (its gradient would be "
                    "scattered per score)");
    gradReads.push_back(position);
    readsOfActive.push_back(read);
  }
  Location loc = attention.getLoc();
  // Only the LSE reaches the outputs: O's adjoint is 0.
  if (!adjoint)
    adjoint = zerosLike(loc, attention.getOutput());
  Value statistic = attention.getLse();
  if (!statistic) {
    // none: the backward reads no statistic; give it zeros of its shape.
    auto query = cast<RankedTensorType>(attention.getQuery().getType());
    SmallVector<Value> sizes = axisSizes(attention.getQuery());
    sizes.pop_back();
    statistic = zeros(loc,
                      RankedTensorType::get(query.getShape().take_front(3),
                                            b.getF32Type()),
                      sizes);
  }
  Value sink = attention.getSink();
  OpBuilder top = atTop();
  auto query = cast<RankedTensorType>(attention.getQuery().getType());
  SmallVector<Type> rowSumTypes(
      gradReads.size(),
      RankedTensorType::get(query.getShape().take_front(3), b.getF32Type()));
  auto backward = AttentionBackwardOp::create(
      top, loc, adjointType(attention.getQuery()),
      adjointType(attention.getKey()), adjointType(attention.getValue()),
      sink ? Type(adjointType(sink)) : Type(), rowSumTypes,
      attention.getQuery(), attention.getKey(), attention.getValue(),
      attention.getOutput(), statistic, adjoint, attention.getScale(), sink,
      lseAdjoint, attention.getNormalizerAttr(), attention.getMapAttr(),
      top.getDenseI64ArrayAttr(gradReads));
  for (auto [from, to] :
       llvm::zip(attention->getRegions(), backward->getRegions())) {
    IRMapping mapping;
    from.cloneInto(&to, mapping);
  }
  contribute(attention.getQuery(), backward.getQueryGrad());
  contribute(attention.getKey(), backward.getKeyGrad());
  contribute(attention.getValue(), backward.getValueGrad());
  if (sink)
    contribute(sink, backward.getSinkGrad());
  for (auto [read, rowSums] : llvm::zip(readsOfActive, backward.getReadGrads()))
    contributeRowSums(attention, read, rowSums);
  return success();
}

void GradientBuilder::contributeRowSums(AttentionOp attention, ReadOp read,
                                        Value rowSums) {
  Location loc = read.getLoc();
  Value tensor = read.getTensor();
  Block &scoreMod = attention.getScoreModBlock();
  // score_mod's (b, h, m) and their extents, Q's leading axes.
  const std::string rowNames[] = {"b", "h", "m"};
  SmallVector<Value> rowExtents = axisSizes(attention.getQuery());
  rowExtents.pop_back();
  llvm::StringSet<> taken;
  for (const std::string &name : rowNames)
    taken.insert(name);

  // As differentiateRead: an axis subscripted by a plain row index is that
  // index; any other gets a fresh index and a guard.
  SmallVector<std::optional<unsigned>> axisOf(3);
  SmallVector<std::string> outputNames;
  SmallVector<unsigned> guardedAxes;
  for (auto [axis, subscript] : llvm::enumerate(read.getSubscripts())) {
    auto arg = dyn_cast<BlockArgument>(subscript);
    if (arg && arg.getOwner() == &scoreMod && arg.getArgNumber() >= 1 &&
        arg.getArgNumber() <= 3 && !axisOf[arg.getArgNumber() - 1]) {
      axisOf[arg.getArgNumber() - 1] = axis;
      outputNames.push_back(rowNames[arg.getArgNumber() - 1]);
      continue;
    }
    outputNames.push_back(takeFreshName("x" + std::to_string(axis), taken));
    guardedAxes.push_back(axis);
  }
  SmallVector<std::string> reducedNames;
  SmallVector<Value> extents = axisSizes(tensor);
  SmallVector<unsigned> reducedOf(3);
  for (unsigned k = 0; k < 3; ++k) {
    if (axisOf[k])
      continue;
    reducedOf[k] = reducedNames.size();
    reducedNames.push_back(rowNames[k]);
    extents.push_back(rowExtents[k]);
  }
  bool onePoint = reducedNames.empty();
  if (onePoint) {
    reducedNames.push_back(takeFreshName("z", taken));
    extents.push_back(indexConstant(1));
  }
  EinsumOp contribution =
      createEinsum(loc, adjointType(tensor), ReductionKind::Sum, outputNames,
                   reducedNames, extents);
  Block &body = contribution.getBodyBlock();
  unsigned numOutputs = outputNames.size();
  SmallVector<Value> row;
  IRMapping mapping;
  for (unsigned k = 0; k < 3; ++k) {
    Value index = axisOf[k] ? body.getArgument(*axisOf[k])
                            : body.getArgument(numOutputs + reducedOf[k]);
    mapping.map(scoreMod.getArgument(k + 1), index);
    row.push_back(index);
  }

  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&body);
  // What score_mod computes before the read from b, h, m and values from
  // above alone, which the subscripts are (attn-grad checked).
  for (Operation &op : scoreMod) {
    if (&op == read.getOperation())
      break;
    bool fromRows = llvm::all_of(op.getOperands(), [&](Value operand) {
      if (auto arg = dyn_cast<BlockArgument>(operand))
        return arg.getOwner() != &scoreMod ||
               (arg.getArgNumber() >= 1 && arg.getArgNumber() <= 3);
      return operand.getDefiningOp()->getBlock() != &scoreMod ||
             mapping.contains(operand);
    });
    if (fromRows)
      b.clone(op, mapping);
  }
  Value value = readAt(loc, rowSums, row);
  SmallVector<Value> conditions;
  for (unsigned axis : guardedAxes)
    conditions.push_back(arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::eq,
        mapping.lookupOrDefault(read.getSubscripts()[axis]),
        body.getArgument(axis)));
  if (onePoint)
    conditions.push_back(arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::eq, body.getArguments().back(),
        arith::ConstantIndexOp::create(b, loc, 0)));
  if (Value all = allOf(loc, conditions))
    value = keepIf(loc, all, value);
  YieldOp::create(b, loc, value);
  contribute(tensor, contribution.getResult());
}

FailureOr<OwningOpRef<ModuleOp>> GradientBuilder::build() {
  MLIRContext *context = forward.getContext();
  Location loc = forward.getLoc();
  auto name = [](ArrayAttr names, unsigned i) {
    return cast<StringAttr>(names[i]).getValue().str();
  };
  llvm::StringSet<> taken;
  for (ArrayAttr names : {forward.getDimNames(), forward.getInputNames(),
                          forward.getParamNames(), forward.getOutputNames()})
    for (Attribute n : names)
      taken.insert(cast<StringAttr>(n).getValue());

  // The signature.
  ReturnOp forwardReturn = forward.getReturnOp();
  SmallVector<Attribute> inputNames(forward.getInputNames().begin(),
                                    forward.getInputNames().end());
  SmallVector<Attribute> shapes;
  for (unsigned i = 0; i < forward.getNumInputs(); ++i)
    shapes.push_back(forward.getShapeOf(i));
  SmallVector<unsigned> floatOutputs, floatInputs;
  for (unsigned o = 0; o < forward.getNumOutputs(); ++o) {
    if (!isa<FloatType>(
            cast<TypeAttr>(forward.getOutputTypes()[o]).getValue()))
      continue;
    floatOutputs.push_back(o);
    inputNames.push_back(StringAttr::get(
        context, takeFreshName("d" + name(forward.getOutputNames(), o), taken)));
    shapes.push_back(forward.getShapeOf(forward.getNumInputs() + o));
  }
  SmallVector<Attribute> outputNames, outputTypes;
  for (unsigned i = 0; i < forward.getNumInputs(); ++i) {
    if (!isDifferentiated(i))
      continue;
    floatInputs.push_back(i);
    outputNames.push_back(StringAttr::get(
        context, takeFreshName("d" + name(forward.getInputNames(), i), taken)));
    outputTypes.push_back(TypeAttr::get(Float32Type::get(context)));
    shapes.push_back(forward.getShapeOf(i));
  }
  if (floatOutputs.empty() || floatInputs.empty())
    return forward.emitError("attn-grad: the kernel has no float ")
           << (floatOutputs.empty() ? "output" : "input")
           << " to differentiate";

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  grad = KernelOp::create(
      b, loc, b.getStringAttr(forward.getSymName() + "_grad"),
      forward.getDimNames(), forward.getDimSizesAttr(),
      b.getArrayAttr(inputNames), forward.getParamNames(),
      forward.getParamDefaults(), b.getArrayAttr(outputNames),
      b.getArrayAttr(outputTypes), b.getArrayAttr(shapes));
  entry = &grad.getBody().emplaceBlock();
  Block &forwardEntry = forward.getEntryBlock();
  IRMapping mapping;
  for (unsigned i = 0; i < forward.getNumDims() + forward.getNumInputs(); ++i)
    mapping.map(forwardEntry.getArgument(i),
                entry->addArgument(forwardEntry.getArgument(i).getType(),
                                   forwardEntry.getArgument(i).getLoc()));
  SmallVector<Value> outputAdjoints;
  for (unsigned o : floatOutputs)
    outputAdjoints.push_back(entry->addArgument(
        adjointType(forwardReturn.getValues()[o]),
        forwardReturn.getValues()[o].getLoc()));
  for (unsigned p = 0; p < forward.getNumParams(); ++p) {
    BlockArgument param = forward.getParamArg(p);
    mapping.map(param, entry->addArgument(param.getType(), param.getLoc()));
  }

  // 1. The forward, recomputed.
  b.setInsertionPointToEnd(entry);
  SmallVector<Operation *> cascade;
  for (Operation &op : forwardEntry.without_terminator())
    cascade.push_back(b.clone(op, mapping));
  addStatistics(cascade);
  findActiveTensors();

  // 2. Backwards from the outputs' adjoints.
  for (auto [o, adjoint] : llvm::zip(floatOutputs, outputAdjoints)) {
    Value output = mapping.lookup(forwardReturn.getValues()[o]);
    contribute(replacedOutputs.lookup(output) ? replacedOutputs.lookup(output)
                                              : output,
               adjoint);
  }
  for (Operation *op : llvm::reverse(cascade)) {
    if (auto attention = dyn_cast<AttentionOp>(op)) {
      if (failed(differentiateAttention(attention)))
        return failure();
      continue;
    }
    if (op->getNumResults() != 1 || !active.contains(op->getResult(0)))
      continue;
    Value adjoint = adjointOf(op->getResult(0));
    if (!adjoint)
      continue;
    LogicalResult result = success();
    if (auto einsum = dyn_cast<EinsumOp>(op))
      result = differentiate(einsum, adjoint);
    else if (auto keep = dyn_cast<KeepOp>(op))
      contribute(keep.getInput(), adjoint);
    else if (isa<SoftmaxOp, NormalizeOp>(op))
      result = differentiateNormalizer(op, adjoint);
    else if (auto expand = dyn_cast<tensor::ExpandShapeOp>(op)) {
      OpBuilder top = atTop();
      contribute(expand.getSrc(),
                 tensor::CollapseShapeOp::create(
                     top, expand.getLoc(), adjointType(expand.getSrc()),
                     adjoint, expand.getReassociationIndices()));
    }
    else
      result = op->emitError("attn-grad: cannot differentiate '")
               << op->getName() << "'";
    if (failed(result))
      return failure();
  }

  // 3. The gradient of each float input (0 where nothing reaches it).
  SmallVector<Value> gradients;
  for (unsigned i : floatInputs) {
    Value input = grad.getInputArg(i);
    Value gradient = adjointOf(input);
    gradients.push_back(gradient ? gradient : zerosLike(input.getLoc(), input));
  }
  b.setInsertionPointToEnd(entry);
  ReturnOp::create(b, loc, gradients);
  if (failed(mlir::verify(*module)))
    return forward.emitError("attn-grad: the adjoint kernel does not verify");
  return module;
}

struct AttnGrad : impl::AttnGradBase<AttnGrad> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<KernelOp> kernels(module.getOps<KernelOp>());
    for (KernelOp kernel : kernels) {
      FailureOr<OwningOpRef<ModuleOp>> adjoint =
          buildGradientModule(kernel, {});
      if (failed(adjoint))
        return signalPassFailure();
      for (Operation &op :
           llvm::make_early_inc_range((*adjoint)->getBody()->getOperations()))
        op.moveBefore(kernel);
      kernel.erase();
    }
  }
};

} // namespace

FailureOr<OwningOpRef<ModuleOp>>
buildGradientModule(KernelOp kernel, ArrayRef<unsigned> constantInputs) {
  return GradientBuilder(kernel, constantInputs).build();
}

} // namespace mlir::attn
