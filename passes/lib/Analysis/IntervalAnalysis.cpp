//===- IntervalAnalysis.cpp - Integer ranges of cascade values ------------===//

#include "attn/Analysis/IntervalAnalysis.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace mlir::attn;

/// Interval bounds are kept well inside int64 so that sums of two bounds
/// never overflow; anything larger is treated as unbounded. Products can
/// (2^40 * 2^40), and are checked.
static constexpr int64_t kLimit = int64_t(1) << 40;

static Interval make(int64_t lo, int64_t hi) {
  if (lo < -kLimit || hi > kLimit)
    return Interval::unbounded();
  return Interval::range(lo, hi);
}

/// x when `value` is `0 - x`: `max(x, 0 - x)` is the language's integer
/// abs, whose interval is not the max of the two operands' intervals.
static Value getNegated(Value value) {
  auto sub = value.getDefiningOp<arith::SubIOp>();
  if (!sub || !matchPattern(sub.getLhs(), m_Zero()))
    return Value();
  return sub.getRhs();
}

/// |x| over x in `a`.
static Interval absolute(Interval a) {
  if (a.isUnbounded())
    return Interval::unbounded();
  if (a.isEmpty())
    return a;
  if (a.lo >= 0)
    return a;
  if (a.hi <= 0)
    return make(-a.hi, -a.lo);
  return make(0, std::max(-a.lo, a.hi));
}

static Interval join(Interval a, Interval b) {
  if (a.isUnbounded() || b.isUnbounded())
    return Interval::unbounded();
  return make(std::min(a.lo, b.lo), std::max(a.hi, b.hi));
}

static Interval add(Interval a, Interval b) {
  if (a.isUnbounded() || b.isUnbounded())
    return Interval::unbounded();
  return make(a.lo + b.lo, a.hi + b.hi);
}

static Interval sub(Interval a, Interval b) {
  if (a.isUnbounded() || b.isUnbounded())
    return Interval::unbounded();
  return make(a.lo - b.hi, a.hi - b.lo);
}

static Interval mul(Interval a, Interval b) {
  if (a.isUnbounded() || b.isUnbounded())
    return Interval::unbounded();
  int64_t products[4];
  if (llvm::MulOverflow(a.lo, b.lo, products[0]) ||
      llvm::MulOverflow(a.lo, b.hi, products[1]) ||
      llvm::MulOverflow(a.hi, b.lo, products[2]) ||
      llvm::MulOverflow(a.hi, b.hi, products[3]))
    return Interval::unbounded();
  return make(*std::min_element(products, products + 4),
              *std::max_element(products, products + 4));
}

/// Division by a divisor interval that excludes zero, rounding with `div`.
template <typename DivFn>
static Interval divide(Interval a, Interval b, DivFn div) {
  if (a.isUnbounded() || b.isUnbounded() || (b.lo <= 0 && b.hi >= 0))
    return Interval::unbounded();
  int64_t quotients[] = {div(a.lo, b.lo), div(a.lo, b.hi), div(a.hi, b.lo),
                         div(a.hi, b.hi)};
  return make(*std::min_element(quotients, quotients + 4),
              *std::max_element(quotients, quotients + 4));
}

/// C remainder (sign of the dividend) by a divisor that excludes zero.
static Interval remainder(Interval a, Interval b) {
  if (a.isUnbounded() || b.isUnbounded() || (b.lo <= 0 && b.hi >= 0))
    return Interval::unbounded();
  int64_t bound = std::max(std::abs(b.lo), std::abs(b.hi)) - 1;
  if (a.lo >= 0)
    return make(0, std::min(a.hi, bound));
  if (a.hi <= 0)
    return make(std::max(a.lo, -bound), 0);
  return make(std::max(a.lo, -bound), std::min(a.hi, bound));
}

/// Recognises the floored modulo `select(r != 0 && sign(r) != sign(b), r + b,
/// r)` with `r = remsi(a, b)`: for a positive divisor it lies in [0, b - 1].
static std::optional<Interval> flooredModulo(arith::SelectOp select,
                                             const IntervalAnalysis &ia) {
  auto rem = select.getFalseValue().getDefiningOp<arith::RemSIOp>();
  auto sum = select.getTrueValue().getDefiningOp<arith::AddIOp>();
  if (!rem || !sum)
    return std::nullopt;
  Value divisor = rem.getRhs();
  bool matches = (sum.getLhs() == rem.getResult() && sum.getRhs() == divisor) ||
                 (sum.getRhs() == rem.getResult() && sum.getLhs() == divisor);
  if (!matches)
    return std::nullopt;
  Interval b = ia.lookup(divisor);
  if (b.isUnbounded() || b.lo <= 0)
    return std::nullopt;
  return make(0, b.hi - 1);
}

IntervalAnalysis::IntervalAnalysis(KernelOp kernel, const LaunchFacts &facts)
    : kernel(kernel), facts(facts) {
  for (unsigned i = 0; i < kernel.getNumDims() && i < facts.dims.size(); ++i)
    intervals[kernel.getDimArg(i)] = Interval::point(facts.dims[i]);
  for (unsigned i = 0; i < kernel.getNumParams() && i < facts.params.size();
       ++i) {
    BlockArgument arg = kernel.getParamArg(i);
    double value = facts.params[i];
    if (isa<IntegerType>(arg.getType()) && std::isfinite(value) &&
        std::abs(value) < double(kLimit))
      intervals[arg] = Interval::point(static_cast<int64_t>(value));
  }
  for (Operation &op : kernel.getEntryBlock())
    visit(&op);
}

Interval IntervalAnalysis::lookup(Value value) const {
  auto it = intervals.find(value);
  return it == intervals.end() ? Interval::unbounded() : it->second;
}

std::optional<int64_t> IntervalAnalysis::lookupConstant(Value value) const {
  Interval interval = lookup(value);
  if (interval.isUnbounded() || interval.lo != interval.hi)
    return std::nullopt;
  return interval.lo;
}

/// Gives every index argument of a cascade body the range of its extent.
static void bindIndexArguments(Block &block, ValueRange extents,
                               llvm::DenseMap<Value, Interval> &intervals,
                               const IntervalAnalysis &ia) {
  for (auto [arg, extent] : llvm::zip(block.getArguments(), extents)) {
    Interval size = ia.lookup(extent);
    intervals[arg] = size.isUnbounded() ? Interval::unbounded()
                                        : make(0, size.hi - 1);
  }
}

static std::pair<std::optional<int64_t>, std::optional<unsigned>>
getAxisSize(KernelOp kernel, const IntervalAnalysis &ia, Value tensor,
            unsigned axis);

/// The range of a clamp of any value: min(max(x, a), b) lies in
/// [min(a.lo, b.lo), b.hi] and max(min(x, b), a) in [a.lo, max(a.hi, b.hi)]
/// whatever x is (a position the mask analysis computed from a table entry
/// and clamped into the table). None when `op` is no such clamp.
template <typename Outer, typename Inner, bool OuterIsMin>
static std::optional<Interval> getClampRangeOf(Outer op,
                                               const IntervalAnalysis &ia) {
  for (unsigned i = 0; i < 2; ++i) {
    auto inner = op->getOperand(i).template getDefiningOp<Inner>();
    Interval outerBound = ia.lookup(op->getOperand(1 - i));
    if (!inner || outerBound.isUnbounded())
      continue;
    for (Value innerOperand : inner->getOperands()) {
      Interval innerBound = ia.lookup(innerOperand);
      if (innerBound.isUnbounded())
        continue;
      if (OuterIsMin)
        return make(std::min(innerBound.lo, outerBound.lo), outerBound.hi);
      return make(outerBound.lo, std::max(innerBound.hi, outerBound.hi));
    }
  }
  return std::nullopt;
}

static std::optional<Interval> getClampRange(arith::MinSIOp op,
                                             const IntervalAnalysis &ia) {
  return getClampRangeOf<arith::MinSIOp, arith::MaxSIOp, true>(op, ia);
}

static std::optional<Interval> getClampRange(arith::MaxSIOp op,
                                             const IntervalAnalysis &ia) {
  return getClampRangeOf<arith::MaxSIOp, arith::MinSIOp, false>(op, ia);
}

void IntervalAnalysis::visit(Operation *op) {
  auto operand = [&](unsigned i) { return lookup(op->getOperand(i)); };
  auto set = [&](Interval interval) { intervals[op->getResult(0)] = interval; };

  if (isa<AttentionOp, AttentionBackwardOp>(op)) {
    // The regions' indices range over the operands: b, h, m over Q's first
    // three axes, n over K's keys; tile_class takes (b, h, m_first, m_last,
    // n_first, n_last).
    Value query = op->getOperand(0), key = op->getOperand(1);
    auto range = [&](Value tensor, unsigned axis) {
      std::optional<int64_t> size =
          getAxisSize(kernel, *this, tensor, axis).first;
      return size ? make(0, *size - 1) : Interval::unbounded();
    };
    Interval b = range(query, 0), h = range(query, 1), m = range(query, 2),
             n = range(key, 2);
    for (Region &region : op->getRegions()) {
      if (region.empty())
        continue;
      Block &block = region.front();
      SmallVector<Interval> ranges;
      if (block.getNumArguments() == 5)
        ranges = {Interval::unbounded(), b, h, m, n}; // score_mod
      else if (block.getNumArguments() == 4)
        ranges = {b, h, m, n}; // mask
      else if (block.getNumArguments() == 6)
        ranges = {b, h, m, m, n, n}; // tile_class
      for (auto [arg, interval] : llvm::zip(block.getArguments(), ranges))
        if (isa<IndexType>(arg.getType()))
          intervals[arg] = interval;
      for (Operation &inner : block)
        visit(&inner);
    }
    return;
  }

  if (auto einsum = dyn_cast<EinsumOp>(op)) {
    bindIndexArguments(einsum.getBodyBlock(), einsum.getExtents(), intervals,
                       *this);
    for (Operation &inner : einsum.getBodyBlock())
      visit(&inner);
    Value yielded = einsum.getYieldedValue();
    if (isa<IntegerType, IndexType>(yielded.getType()) &&
        einsum.getKind() == ReductionKind::None)
      tensorEntries[einsum.getResult()] = lookup(yielded);
    return;
  }
  if (auto keep = dyn_cast<KeepOp>(op)) {
    SmallVector<Value> extents;
    // A keep's indices range over its input; find the einsum that made it.
    Value source = keep.getInput();
    while (Operation *def = source.getDefiningOp()) {
      if (auto producer = dyn_cast<EinsumOp>(def)) {
        llvm::append_range(extents, producer.getOutputExtents());
        break;
      }
      source = def->getOperand(0);
    }
    if (extents.size() == keep.getIndices().size())
      bindIndexArguments(keep.getBodyBlock(), extents, intervals, *this);
    for (Operation &inner : keep.getBodyBlock())
      visit(&inner);
    return;
  }
  if (op->getNumResults() != 1)
    return;
  Type type = op->getResult(0).getType();
  if (!isa<IntegerType, IndexType>(type))
    return;

  llvm::TypeSwitch<Operation *>(op)
      .Case([&](arith::ConstantOp constant) {
        if (auto attr = dyn_cast<IntegerAttr>(constant.getValue()))
          set(Interval::point(attr.getValue().getSExtValue()));
      })
      .Case([&](arith::AddIOp) { set(add(operand(0), operand(1))); })
      .Case([&](arith::SubIOp) { set(sub(operand(0), operand(1))); })
      .Case([&](arith::MulIOp) { set(mul(operand(0), operand(1))); })
      .Case([&](arith::FloorDivSIOp) {
        set(divide(operand(0), operand(1), [](int64_t a, int64_t b) {
          return llvm::divideFloorSigned(a, b);
        }));
      })
      .Case([&](arith::DivSIOp) {
        set(divide(operand(0), operand(1),
                   [](int64_t a, int64_t b) { return a / b; }));
      })
      .Case([&](arith::RemSIOp) { set(remainder(operand(0), operand(1))); })
      .Case([&](arith::MaxSIOp max) {
        if (getNegated(max.getRhs()) == max.getLhs() ||
            getNegated(max.getLhs()) == max.getRhs()) {
          set(absolute(getNegated(max.getRhs()) == max.getLhs() ? operand(0)
                                                                : operand(1)));
          return;
        }
        Interval a = operand(0), b = operand(1);
        if (!a.isUnbounded() && !b.isUnbounded())
          set(make(std::max(a.lo, b.lo), std::max(a.hi, b.hi)));
        else if (std::optional<Interval> clamp = getClampRange(max, *this))
          set(*clamp);
      })
      .Case([&](arith::MinSIOp min) {
        Interval a = operand(0), b = operand(1);
        if (!a.isUnbounded() && !b.isUnbounded())
          set(make(std::min(a.lo, b.lo), std::min(a.hi, b.hi)));
        else if (std::optional<Interval> clamp = getClampRange(min, *this))
          set(*clamp);
      })
      .Case([&](arith::SelectOp select) {
        if (std::optional<Interval> modulo = flooredModulo(select, *this))
          set(*modulo);
        else
          set(join(operand(1), operand(2)));
      })
      .Case<arith::IndexCastOp, arith::ExtSIOp>(
          [&](Operation *) { set(operand(0)); })
      .Case([&](ReadOp read) {
        Value tensor = read.getTensor();
        if (auto arg = dyn_cast<BlockArgument>(tensor);
            arg && arg.getOwner() == &kernel.getEntryBlock()) {
          unsigned index = arg.getArgNumber() - kernel.getNumDims();
          if (facts.inputRange)
            if (std::optional<Interval> range = facts.inputRange(index))
              set(*range);
          return;
        }
        auto it = tensorEntries.find(tensor);
        if (it != tensorEntries.end())
          set(it->second);
      })
      .Default([&](Operation *) {
        if (type.isInteger(1))
          set(Interval::range(0, 1));
      });
}

/// The size of `axis` of `tensor` and the dim that sets it, if known.
static std::pair<std::optional<int64_t>, std::optional<unsigned>>
getAxisSize(KernelOp kernel, const IntervalAnalysis &ia, Value tensor,
            unsigned axis) {
  while (true) {
    int64_t fixed = cast<RankedTensorType>(tensor.getType()).getDimSize(axis);
    if (auto arg = dyn_cast<BlockArgument>(tensor)) {
      unsigned index = arg.getArgNumber() - kernel.getNumDims();
      Attribute size = kernel.getShapeOf(index)[axis];
      if (auto literal = dyn_cast<IntegerAttr>(size))
        return {literal.getInt(), std::nullopt};
      std::optional<unsigned> dim =
          kernel.lookupDim(cast<StringAttr>(size).getValue());
      if (!dim)
        return {std::nullopt, std::nullopt};
      return {ia.lookupConstant(kernel.getDimArg(*dim)), dim};
    }
    Operation *def = tensor.getDefiningOp();
    auto sizeOf = [&](Value extent)
        -> std::pair<std::optional<int64_t>, std::optional<unsigned>> {
      std::optional<unsigned> dim;
      if (auto dimArg = dyn_cast<BlockArgument>(extent);
          dimArg && dimArg.getOwner() == &kernel.getEntryBlock())
        dim = dimArg.getArgNumber();
      return {ia.lookupConstant(extent), dim};
    };
    if (auto producer = dyn_cast<EinsumOp>(def))
      return sizeOf(producer.getOutputExtents()[axis]);
    // A grouped key or value the gradient's cascade gave a head axis of 1
    // ([B, N, D] as [B, 1, N, D]): its output sizes are the expansion's.
    if (auto expand = dyn_cast<tensor::ExpandShapeOp>(def)) {
      OpFoldResult size = expand.getMixedOutputShape()[axis];
      if (auto extent = dyn_cast<Value>(size))
        return sizeOf(extent);
      return {cast<IntegerAttr>(cast<Attribute>(size)).getInt(), std::nullopt};
    }
    if (isa<KeepOp, SoftmaxOp, NormalizeOp>(def)) {
      tensor = def->getOperand(0);
      continue;
    }
    // Attention's results are shaped by its operands: O [B, H, M] of Q and
    // E of V, the LSE [B, H, M] of Q; the backward's gradients as Q, K and
    // V, the sink's as the first three axes of Q.
    if (auto attention = dyn_cast<AttentionOp>(def)) {
      bool valueAxis = tensor == attention.getOutput() && axis == 3;
      tensor = valueAxis ? attention.getValue() : attention.getQuery();
      continue;
    }
    if (auto backward = dyn_cast<AttentionBackwardOp>(def)) {
      unsigned result = cast<OpResult>(tensor).getResultNumber();
      tensor = result == 1   ? backward.getKey()
               : result == 2 ? backward.getValue()
                             : backward.getQuery();
      continue;
    }
    if (!ShapedType::isDynamic(fixed))
      return {fixed, std::nullopt};
    return {std::nullopt, std::nullopt};
  }
}

SmallVector<SubscriptViolation> IntervalAnalysis::findViolations() const {
  SmallVector<SubscriptViolation> violations;
  KernelOp kernel = this->kernel;
  kernel.walk([&](ReadOp read) {
    for (auto [axis, subscript] : llvm::enumerate(read.getSubscripts())) {
      auto [size, dim] = getAxisSize(kernel, *this, read.getTensor(), axis);
      Interval range = lookup(subscript);
      if (!size || range.isUnbounded() || range.lo < 0 || range.hi >= *size)
        violations.push_back(
            {read, static_cast<unsigned>(axis), range, size.value_or(-1), dim});
    }
  });
  return violations;
}

std::string mlir::attn::describeViolation(KernelOp kernel,
                                          const SubscriptViolation &v) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "subscript " << v.axis << " of ";
  ReadOp read = v.read;
  Value tensor = read.getTensor();
  if (auto arg = dyn_cast<BlockArgument>(tensor);
      arg && arg.getOwner() == &kernel.getEntryBlock())
    os << "'"
       << cast<StringAttr>(
              kernel.getInputNames()[arg.getArgNumber() - kernel.getNumDims()])
              .getValue()
       << "'";
  else
    os << "a computed tensor";
  if (v.subscript.isUnbounded())
    os << " cannot be bounded";
  else
    os << " ranges over [" << v.subscript.lo << ", " << v.subscript.hi << "]";
  if (v.size >= 0)
    os << " but the axis has size " << v.size;
  else
    os << " and the axis size is unknown";
  if (v.sizingDim)
    os << " (dim "
       << cast<StringAttr>(kernel.getDimNames()[*v.sizingDim]).getValue()
       << ")";
  return text;
}
