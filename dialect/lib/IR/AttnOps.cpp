//===- AttnOps.cpp - Operations of the attn dialect -----------------------===//

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

#include <limits>

using namespace mlir;
using namespace mlir::attn;

#include "attn/Dialect/Attn/IR/AttnEnums.cpp.inc"

double mlir::attn::getReductionIdentity(ReductionKind kind) {
  switch (kind) {
  case ReductionKind::None:
  case ReductionKind::Sum:
  case ReductionKind::Mean:
    return 0.0;
  case ReductionKind::Max:
  case ReductionKind::LogSumExp:
    return -std::numeric_limits<double>::infinity();
  case ReductionKind::Min:
    return std::numeric_limits<double>::infinity();
  }
  llvm_unreachable("unknown reduction kind");
}

/// Names the entry block arguments after the index names, so that printed
/// IR reads like the spec.
static void nameIndexArguments(Block &block, ArrayRef<Attribute> names,
                               OpAsmSetValueNameFn setNameFn) {
  for (auto [arg, name] : llvm::zip(block.getArguments(), names))
    setNameFn(arg, cast<StringAttr>(name).getValue());
}

/// Checks that `names` holds distinct, non-empty names.
static LogicalResult verifyDistinctNames(Operation *op, ArrayAttr names,
                                         StringRef what) {
  llvm::StringSet<> seen;
  for (Attribute attr : names) {
    StringRef name = cast<StringAttr>(attr).getValue();
    if (name.empty())
      return op->emitOpError() << "has an empty " << what << " name";
    if (!seen.insert(name).second)
      return op->emitOpError() << "has two " << what << "s named '" << name
                               << "'";
  }
  return success();
}

/// Checks that a single-block body has `numArgs` index arguments and yields
/// exactly one value.
static LogicalResult verifyIndexBody(Operation *op, Block &block,
                                     unsigned numArgs, Value &yielded) {
  if (block.getNumArguments() != numArgs)
    return op->emitOpError() << "body takes " << block.getNumArguments()
                             << " arguments, expected one index per axis ("
                             << numArgs << ")";
  for (BlockArgument arg : block.getArguments())
    if (!arg.getType().isIndex())
      return op->emitOpError() << "body argument #" << arg.getArgNumber()
                               << " must be index, got " << arg.getType();
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return op->emitOpError() << "body must end with attn.yield of one value";
  yielded = yield.getValues().front();
  return success();
}

//===----------------------------------------------------------------------===//
// KernelOp
//===----------------------------------------------------------------------===//

void KernelOp::getAsmBlockArgumentNames(Region &region,
                                        OpAsmSetValueNameFn setNameFn) {
  if (&region != &getBody() || region.empty())
    return;
  Block &block = region.front();
  SmallVector<Attribute> names;
  llvm::append_range(names, getDimNames());
  llvm::append_range(names, getInputNames());
  llvm::append_range(names, getParamNames());
  nameIndexArguments(block, names, setNameFn);
}

std::optional<unsigned> KernelOp::lookupDim(StringRef name) {
  for (auto [i, attr] : llvm::enumerate(getDimNames()))
    if (cast<StringAttr>(attr).getValue() == name)
      return i;
  return std::nullopt;
}

ReturnOp KernelOp::getReturnOp() {
  return cast<ReturnOp>(getEntryBlock().getTerminator());
}

LogicalResult KernelOp::verify() {
  if (getDimSizes().size() != getNumDims())
    return emitOpError() << "has " << getDimSizes().size()
                         << " dim sizes for " << getNumDims() << " dims";
  if (getParamDefaults().size() != getNumParams())
    return emitOpError() << "has " << getParamDefaults().size()
                         << " param defaults for " << getNumParams()
                         << " params";
  if (getOutputTypes().size() != getNumOutputs())
    return emitOpError() << "has " << getOutputTypes().size()
                         << " output types for " << getNumOutputs()
                         << " outputs";
  if (getShapes().size() != getNumInputs() + getNumOutputs())
    return emitOpError() << "has " << getShapes().size()
                         << " shapes, expected one per input and output ("
                         << getNumInputs() + getNumOutputs() << ")";
  if (failed(verifyDistinctNames(*this, getDimNames(), "dim")))
    return failure();
  SmallVector<Attribute> tensorNames(getInputNames().begin(),
                                     getInputNames().end());
  llvm::append_range(tensorNames, getParamNames());
  llvm::append_range(tensorNames, getOutputNames());
  if (failed(verifyDistinctNames(
          *this, ArrayAttr::get(getContext(), tensorNames), "argument")))
    return failure();
  for (auto [i, shapeAttr] : llvm::enumerate(getShapes())) {
    auto shape = dyn_cast<ArrayAttr>(shapeAttr);
    if (!shape)
      return emitOpError() << "shape #" << i << " must be an array";
    for (Attribute axis : shape) {
      if (auto name = dyn_cast<StringAttr>(axis)) {
        if (!lookupDim(name.getValue()))
          return emitOpError() << "shape #" << i << " names unknown dim '"
                               << name.getValue() << "'";
      } else if (auto size = dyn_cast<IntegerAttr>(axis)) {
        if (size.getInt() <= 0)
          return emitOpError() << "shape #" << i << " has a non-positive size";
      } else {
        return emitOpError() << "shape #" << i
                             << " axes must be dim names or sizes";
      }
    }
  }
  return success();
}

LogicalResult KernelOp::verifyRegions() {
  Block &block = getEntryBlock();
  unsigned expected = getNumDims() + getNumInputs() + getNumParams();
  if (block.getNumArguments() != expected)
    return emitOpError() << "entry block takes " << block.getNumArguments()
                         << " arguments, expected " << expected
                         << " (dims, inputs, params)";
  for (unsigned i = 0; i < getNumDims(); ++i)
    if (!getDimArg(i).getType().isIndex())
      return emitOpError() << "dim argument #" << i << " must be index";
  for (unsigned i = 0; i < getNumInputs(); ++i) {
    auto type = dyn_cast<RankedTensorType>(getInputArg(i).getType());
    if (!type)
      return emitOpError() << "input #" << i << " must be a ranked tensor";
    if (type.getRank() != (int64_t)getShapeOf(i).size())
      return emitOpError() << "input #" << i << " has rank " << type.getRank()
                           << " but its shape names "
                           << getShapeOf(i).size() << " axes";
  }
  for (unsigned i = 0; i < getNumParams(); ++i)
    if (!getParamArg(i).getType().isIntOrFloat())
      return emitOpError() << "param #" << i << " must be a scalar";
  auto ret = dyn_cast<ReturnOp>(block.getTerminator());
  if (!ret)
    return emitOpError() << "body must end with attn.return";
  if (ret.getValues().size() != getNumOutputs())
    return emitOpError() << "returns " << ret.getValues().size()
                         << " values for " << getNumOutputs() << " outputs";
  for (unsigned i = 0; i < getNumOutputs(); ++i) {
    auto type = cast<RankedTensorType>(ret.getValues()[i].getType());
    if (type.getRank() != (int64_t)getShapeOf(getNumInputs() + i).size())
      return emitOpError() << "output #" << i << " has rank "
                           << type.getRank() << " but its shape names "
                           << getShapeOf(getNumInputs() + i).size()
                           << " axes";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// EinsumOp
//===----------------------------------------------------------------------===//

void EinsumOp::build(OpBuilder &builder, OperationState &state,
                     Type resultType, ReductionKind kind,
                     ArrayRef<StringRef> indices, ArrayRef<StringRef> reduced,
                     ValueRange extents) {
  state.addTypes(resultType);
  state.addOperands(extents);
  state.addAttribute(getKindAttrName(state.name),
                     ReductionKindAttr::get(builder.getContext(), kind));
  state.addAttribute(getIndicesAttrName(state.name),
                     builder.getStrArrayAttr(indices));
  state.addAttribute(getReducedAttrName(state.name),
                     builder.getStrArrayAttr(reduced));
  Region *body = state.addRegion();
  Block *block = new Block();
  body->push_back(block);
  for (size_t i = 0, e = indices.size() + reduced.size(); i < e; ++i)
    block->addArgument(builder.getIndexType(), state.location);
}

void EinsumOp::getAsmBlockArgumentNames(Region &region,
                                        OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  SmallVector<Attribute> names(getIndices().begin(), getIndices().end());
  llvm::append_range(names, getReduced());
  nameIndexArguments(region.front(), names, setNameFn);
}

Value EinsumOp::getYieldedValue() {
  return cast<YieldOp>(getBodyBlock().getTerminator()).getValues().front();
}

LogicalResult EinsumOp::verify() {
  auto type = cast<RankedTensorType>(getResult().getType());
  if (type.getRank() != (int64_t)getNumOutputIndices())
    return emitOpError() << "result has rank " << type.getRank() << " but "
                         << getNumOutputIndices() << " indices";
  if (getExtents().size() != getNumOutputIndices() + getNumReducedIndices())
    return emitOpError() << "has " << getExtents().size()
                         << " extents, expected one per index ("
                         << getNumOutputIndices() + getNumReducedIndices()
                         << ")";
  bool isReduction = getKind() != ReductionKind::None;
  if (isReduction && getReduced().empty())
    return emitOpError() << "reduction '" << stringifyReductionKind(getKind())
                         << "' has no reduced index";
  if (!isReduction && !getReduced().empty())
    return emitOpError() << "reduces over indices but its kind is 'none'";
  SmallVector<Attribute> all(getIndices().begin(), getIndices().end());
  llvm::append_range(all, getReduced());
  if (failed(verifyDistinctNames(*this, ArrayAttr::get(getContext(), all),
                                 "index")))
    return failure();
  if (isReduction && !isa<FloatType>(type.getElementType()))
    return emitOpError() << "reduces '" << stringifyReductionKind(getKind())
                         << "' over a non-float element type "
                         << type.getElementType();
  return success();
}

LogicalResult EinsumOp::verifyRegions() {
  Value yielded;
  if (failed(verifyIndexBody(*this, getBodyBlock(),
                             getNumOutputIndices() + getNumReducedIndices(),
                             yielded)))
    return failure();
  Type elementType = cast<RankedTensorType>(getType()).getElementType();
  if (yielded.getType() != elementType)
    return emitOpError() << "body yields " << yielded.getType()
                         << " but the result holds " << elementType;
  for (unsigned i = 0; i < getNumReducedIndices(); ++i) {
    BlockArgument arg = getBodyBlock().getArgument(getNumOutputIndices() + i);
    if (arg.use_empty())
      return emitOpError() << "reduces over index '"
                           << cast<StringAttr>(getReduced()[i]).getValue()
                           << "' that its body does not use";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// ReadOp
//===----------------------------------------------------------------------===//

LogicalResult ReadOp::verify() {
  auto type = cast<RankedTensorType>(getTensor().getType());
  if (type.getRank() != (int64_t)getSubscripts().size())
    return emitOpError() << "reads a rank-" << type.getRank()
                         << " tensor with " << getSubscripts().size()
                         << " subscripts";
  Operation *parent = getOperation()->getParentOp();
  if (!isa_and_nonnull<EinsumOp, KeepOp, AttentionOp, AttentionBackwardOp>(
          parent))
    return emitOpError() << "must be inside an attn.einsum, attn.keep, "
                            "attn.attention or attn.attention_backward body";
  return success();
}

//===----------------------------------------------------------------------===//
// KeepOp
//===----------------------------------------------------------------------===//

void KeepOp::build(OpBuilder &builder, OperationState &state, Value input,
                   ArrayRef<StringRef> indices) {
  state.addOperands(input);
  state.addTypes(input.getType());
  state.addAttribute(getIndicesAttrName(state.name),
                     builder.getStrArrayAttr(indices));
  Region *body = state.addRegion();
  Block *block = new Block();
  body->push_back(block);
  for (size_t i = 0; i < indices.size(); ++i)
    block->addArgument(builder.getIndexType(), state.location);
}

void KeepOp::getAsmBlockArgumentNames(Region &region,
                                      OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  nameIndexArguments(region.front(), getIndices().getValue(), setNameFn);
}

Value KeepOp::getPredicate() {
  return cast<YieldOp>(getBodyBlock().getTerminator()).getValues().front();
}

LogicalResult KeepOp::verify() {
  auto type = cast<RankedTensorType>(getInput().getType());
  if (type.getRank() != (int64_t)getIndices().size())
    return emitOpError() << "names " << getIndices().size()
                         << " indices for a rank-" << type.getRank()
                         << " tensor";
  if (failed(verifyDistinctNames(*this, getIndices(), "index")))
    return failure();
  if (IntegerAttr sinks = getSinksAttr(); sinks && sinks.getInt() < 0)
    return emitOpError() << "sinks must be non-negative, got "
                         << sinks.getInt();
  if (auto block = getBlock()) {
    if (block->size() != 2 || (*block)[0] <= 0 || (*block)[1] <= 0)
      return emitOpError() << "block must hold two positive sizes";
  }
  return success();
}

LogicalResult KeepOp::verifyRegions() {
  Value yielded;
  if (failed(verifyIndexBody(*this, getBodyBlock(), getIndices().size(),
                             yielded)))
    return failure();
  if (!yielded.getType().isInteger(1))
    return emitOpError() << "predicate must be i1, got " << yielded.getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Normalizers
//===----------------------------------------------------------------------===//

/// Checks the axis of a normalizer and that it normalizes floats.
static LogicalResult verifyNormalizer(Operation *op, Value input,
                                      int64_t dimension) {
  auto type = cast<RankedTensorType>(input.getType());
  if (dimension < 0 || dimension >= type.getRank())
    return op->emitOpError() << "dimension " << dimension
                             << " is out of range for a rank-"
                             << type.getRank() << " tensor";
  if (!isa<FloatType>(type.getElementType()))
    return op->emitOpError() << "normalizes a non-float tensor of "
                             << type.getElementType();
  return success();
}

LogicalResult SoftmaxOp::verify() {
  if (failed(verifyNormalizer(*this, getInput(), getDimension())))
    return failure();
  if (Value sink = getSink()) {
    auto inputType = cast<RankedTensorType>(getInput().getType());
    auto sinkType = cast<RankedTensorType>(sink.getType());
    if (sinkType.getRank() != inputType.getRank() - 1)
      return emitOpError() << "sink has rank " << sinkType.getRank()
                           << ", expected " << inputType.getRank() - 1
                           << " (the input without dimension "
                           << getDimension() << ")";
    if (sinkType.getElementType() != inputType.getElementType())
      return emitOpError() << "sink holds " << sinkType.getElementType()
                           << " but the input holds "
                           << inputType.getElementType();
  }
  return success();
}

LogicalResult NormalizeOp::verify() {
  return verifyNormalizer(*this, getInput(), getDimension());
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

/// Names the arguments of the score_mod, mask and tile_class regions of
/// attn.attention and attn.attention_backward.
static void nameAttentionRegionArguments(Region &region, Region &scoreMod,
                                         Region &mask,
                                         OpAsmSetValueNameFn setNameFn) {
  if (region.empty())
    return;
  static const char *const scoreModNames[] = {"score", "b", "h", "m", "n"};
  static const char *const maskNames[] = {"b", "h", "m", "n"};
  static const char *const tileNames[] = {"b",      "h",       "m_first",
                                          "m_last", "n_first", "n_last"};
  ArrayRef<const char *> names;
  if (&region == &scoreMod)
    names = scoreModNames;
  else if (&region == &mask)
    names = maskNames;
  else
    names = tileNames;
  for (auto [arg, name] : llvm::zip(region.front().getArguments(), names))
    setNameFn(arg, name);
}

void AttentionOp::getAsmBlockArgumentNames(Region &region,
                                           OpAsmSetValueNameFn setNameFn) {
  nameAttentionRegionArguments(region, getScoreMod(), getMask(), setNameFn);
}

/// The value a single-block region yields, or null.
static Value getYielded(Region &region) {
  if (region.empty())
    return {};
  auto yield = dyn_cast<YieldOp>(region.front().getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return {};
  return yield.getValues().front();
}

/// Whether a mask region yields the constant true.
static bool yieldsTrue(Region &mask) {
  Value predicate = getYielded(mask);
  auto constant = predicate ? predicate.getDefiningOp<arith::ConstantOp>()
                            : arith::ConstantOp();
  auto value = constant ? dyn_cast<BoolAttr>(constant.getValue()) : BoolAttr();
  return value && value.getValue();
}

/// Whether a score_mod region yields its score argument.
static bool yieldsScore(Region &scoreMod) {
  return getYielded(scoreMod) == scoreMod.front().getArgument(0);
}

bool AttentionOp::hasTrivialMask() { return yieldsTrue(getMask()); }

bool AttentionOp::hasTrivialScoreMod() { return yieldsScore(getScoreMod()); }

LogicalResult AttentionOp::verify() {
  auto query = cast<RankedTensorType>(getQuery().getType());
  auto key = cast<RankedTensorType>(getKey().getType());
  auto value = cast<RankedTensorType>(getValue().getType());
  auto output = cast<RankedTensorType>(getOutput().getType());
  for (auto [name, type] : {std::pair<StringRef, RankedTensorType>{"query", query},
                            {"key", key},
                            {"value", value},
                            {"output", output}})
    if (type.getRank() != 4)
      return emitOpError() << name << " must have rank 4, got "
                           << type.getRank();
  auto mismatch = [](int64_t a, int64_t b) {
    return !ShapedType::isDynamic(a) && !ShapedType::isDynamic(b) && a != b;
  };
  if (mismatch(query.getDimSize(3), key.getDimSize(3)))
    return emitOpError() << "query and key head dims differ: "
                         << query.getDimSize(3) << " vs " << key.getDimSize(3);
  if (mismatch(key.getDimSize(2), value.getDimSize(2)))
    return emitOpError() << "key and value lengths differ: "
                         << key.getDimSize(2) << " vs " << value.getDimSize(2);
  if (mismatch(output.getDimSize(3), value.getDimSize(3)))
    return emitOpError() << "output and value head dims differ: "
                         << output.getDimSize(3) << " vs "
                         << value.getDimSize(3);
  if (!output.getElementType().isF32())
    return emitOpError() << "output must hold f32, got "
                         << output.getElementType();
  if (Value lse = getLse()) {
    auto lseType = cast<RankedTensorType>(lse.getType());
    if (lseType.getRank() != 3 || !lseType.getElementType().isF32())
      return emitOpError() << "lse must be a rank-3 f32 tensor, got "
                           << lseType;
    if (getNormalizer() != Normalizer::Softmax &&
        (getNormalizer() != Normalizer::Normalize ||
         getMap() == WeightMap::Identity))
      return emitOpError() << "lse needs the softmax normalizer, or normalize "
                              "with a weight map";
  }
  if (getMap() != WeightMap::Identity && getNormalizer() != Normalizer::Normalize)
    return emitOpError() << "a weight map needs the normalize normalizer";
  if (Value sink = getSink()) {
    auto sinkType = cast<RankedTensorType>(sink.getType());
    if (sinkType.getRank() != 3 || !sinkType.getElementType().isF32())
      return emitOpError() << "sink must be a rank-3 f32 tensor [B, H, M], got "
                           << sinkType;
    if (getNormalizer() != Normalizer::Softmax)
      return emitOpError() << "a sink logit needs the softmax normalizer";
  }
  return success();
}

/// Checks that `region` takes `types` and yields one value of `result`.
static LogicalResult verifyAttentionRegion(Operation *op, Region &region,
                                           StringRef name,
                                           ArrayRef<Type> types, Type result) {
  Block &block = region.front();
  if (TypeRange(block.getArgumentTypes()) != TypeRange(types))
    return op->emitOpError() << name << " must take " << types.size()
                             << " arguments of types (" << types << ")";
  Value yielded = getYielded(region);
  if (!yielded || yielded.getType() != result)
    return op->emitOpError() << name << " must yield one " << result;
  return success();
}

/// The region checks attn.attention and attn.attention_backward share.
static LogicalResult verifyAttentionRegions(Operation *op, Region &scoreMod,
                                            Region &mask, Region &tileClass) {
  Builder b(op->getContext());
  Type index = b.getIndexType(), f32 = b.getF32Type();
  if (failed(verifyAttentionRegion(op, scoreMod, "score_mod",
                                   {f32, index, index, index, index}, f32)) ||
      failed(verifyAttentionRegion(op, mask, "mask",
                                   {index, index, index, index},
                                   b.getI1Type())))
    return failure();
  if (!tileClass.empty()) {
    if (!tileClass.hasOneBlock())
      return op->emitOpError() << "tile_class must have one block";
    SmallVector<Type> indices(6, index);
    if (failed(verifyAttentionRegion(op, tileClass, "tile_class", indices,
                                     b.getI32Type())))
      return failure();
  }
  return success();
}

LogicalResult AttentionOp::verifyRegions() {
  return verifyAttentionRegions(*this, getScoreMod(), getMask(),
                                getTileClass());
}

//===----------------------------------------------------------------------===//
// AttentionBackwardOp
//===----------------------------------------------------------------------===//

void AttentionBackwardOp::getAsmBlockArgumentNames(
    Region &region, OpAsmSetValueNameFn setNameFn) {
  nameAttentionRegionArguments(region, getScoreMod(), getMask(), setNameFn);
}

bool AttentionBackwardOp::hasTrivialMask() { return yieldsTrue(getMask()); }

ReadOp AttentionBackwardOp::getGradRead(unsigned i) {
  int64_t position = getGradReads()[i];
  for (Operation &op : getScoreModBlock())
    if (auto read = dyn_cast<ReadOp>(op); read && position-- == 0)
      return read;
  return ReadOp();
}

bool mlir::attn::isRowPositionRead(ReadOp read, Block &scoreMod) {
  SmallVector<Value> work(read.getSubscripts());
  llvm::SmallPtrSet<Operation *, 8> seen;
  while (!work.empty()) {
    Value next = work.pop_back_val();
    if (auto arg = dyn_cast<BlockArgument>(next)) {
      if (arg.getOwner() == &scoreMod &&
          (arg.getArgNumber() == 0 || arg.getArgNumber() == 4))
        return false;
      continue;
    }
    Operation *def = next.getDefiningOp();
    if (def->getBlock() == &scoreMod && seen.insert(def).second)
      llvm::append_range(work, def->getOperands());
  }
  return true;
}

bool AttentionBackwardOp::hasTrivialScoreMod() {
  return yieldsScore(getScoreMod());
}

LogicalResult AttentionBackwardOp::verify() {
  auto rank = [](Value v) {
    return cast<RankedTensorType>(v.getType()).getRank();
  };
  for (auto [name, value] :
       {std::pair<StringRef, Value>{"query", getQuery()},
        {"key", getKey()},
        {"value", getValue()},
        {"output", getOutput()},
        {"output_grad", getOutputGrad()}})
    if (rank(value) != 4)
      return emitOpError() << name << " must have rank 4, got " << rank(value);
  if (rank(getStatistic()) != 3)
    return emitOpError() << "statistic must have rank 3";
  for (auto [operand, result] :
       {std::pair<Value, Value>{getQuery(), getQueryGrad()},
        {getKey(), getKeyGrad()},
        {getValue(), getValueGrad()}}) {
    auto from = cast<RankedTensorType>(operand.getType());
    auto to = cast<RankedTensorType>(result.getType());
    if (from.getShape() != to.getShape() || !to.getElementType().isF32())
      return emitOpError() << "gradient type " << to
                           << " must be f32 and shaped as " << from;
  }
  Normalizer normalizer = getNormalizer();
  if (normalizer == Normalizer::Normalize && getMap() == WeightMap::Identity)
    return emitOpError() << "differentiates normalize with a weight map only "
                            "(its statistic is the log of the row's "
                            "denominator)";
  if (getMap() != WeightMap::Identity && normalizer != Normalizer::Normalize)
    return emitOpError() << "a weight map needs the normalize normalizer";
  if (static_cast<bool>(getSink()) != static_cast<bool>(getSinkGrad()))
    return emitOpError() << "has a sink gradient exactly when it has a sink";
  if (getSink() && normalizer != Normalizer::Softmax)
    return emitOpError() << "a sink logit needs the softmax normalizer";
  if (Value lseGrad = getLseGrad()) {
    auto type = cast<RankedTensorType>(lseGrad.getType());
    auto statistic = cast<RankedTensorType>(getStatistic().getType());
    if (type.getRank() != 3 || !type.getElementType().isF32())
      return emitOpError() << "lse_grad must be a rank-3 f32 tensor, got "
                           << type;
    if (failed(verifyCompatibleShape(type.getShape(), statistic.getShape())))
      return emitOpError() << "lse_grad " << type
                           << " must be shaped as the statistic " << statistic;
    if (normalizer != Normalizer::Softmax)
      return emitOpError() << "lse_grad needs the softmax normalizer";
  }
  if (getGradReads().size() != getReadGrads().size())
    return emitOpError() << "has one read gradient per grad_reads entry, got "
                         << getReadGrads().size() << " for "
                         << getGradReads().size();
  for (auto [i, result] : llvm::enumerate(getReadGrads())) {
    auto type = cast<RankedTensorType>(result.getType());
    if (type.getRank() != 3 || !type.getElementType().isF32())
      return emitOpError() << "read gradient " << i
                           << " must be a rank-3 f32 tensor [B, H, M], got "
                           << type;
    ReadOp read = getGradRead(i);
    if (!read)
      return emitOpError() << "grad_reads entry " << getGradReads()[i]
                           << " names no attn.read of score_mod";
    if (!isa<FloatType>(read.getResult().getType()))
      return emitOpError() << "grad_reads entry " << getGradReads()[i]
                           << " reads an integer";
    if (!isRowPositionRead(read, getScoreModBlock()))
      return emitOpError() << "grad_reads entry " << getGradReads()[i]
                           << " reads at a position that depends on the "
                              "score or the key index n";
  }
  return success();
}

LogicalResult AttentionBackwardOp::verifyRegions() {
  return verifyAttentionRegions(*this, getScoreMod(), getMask(),
                                getTileClass());
}

#define GET_OP_CLASSES
#include "attn/Dialect/Attn/IR/AttnOps.cpp.inc"
