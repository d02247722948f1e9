//===- SubscriptConstraints.cpp - Gathers in range, as dim formulas -------===//

#include "SubscriptConstraints.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"

#include <map>
#include <optional>
#include <set>

using namespace mlir;
using mlir::attn::AttentionOp;
using mlir::attn::KernelOp;
using mlir::attn::ReadOp;

namespace {

using UniqueStrings = llvm::SetVector<std::string, std::vector<std::string>,
                                      std::set<std::string>>;

/// constant + Σ coefficient · dim, or a formula that is not of that form.
struct Bound {
  int64_t constant = 0;
  /// Dim index -> coefficient (no zeros).
  std::map<unsigned, int64_t> terms;
  /// Set when not affine.
  std::optional<std::string> formula;

  static Bound ofConstant(int64_t value) { return {value, {}, std::nullopt}; }
  static Bound ofDim(unsigned dim) { return {0, {{dim, 1}}, std::nullopt}; }
  static Bound ofFormula(std::string text) { return {0, {}, std::move(text)}; }
  bool isConstant() const { return !formula && terms.empty(); }
  /// Whether it is >= 0 for all non-negative dims.
  bool isNonNegative() const {
    return !formula && constant >= 0 &&
           llvm::all_of(terms, [](auto term) { return term.second > 0; });
  }
};

class RangeFinder {
public:
  RangeFinder(KernelOp kernel) : kernel(kernel) {}

  std::string print(const Bound &x) const {
    if (x.formula)
      return *x.formula;
    // Positive terms first: "N - M", not "-M + N".
    SmallVector<std::pair<unsigned, int64_t>> terms;
    for (bool positive : {true, false})
      for (auto term : x.terms)
        if ((term.second > 0) == positive)
          terms.push_back(term);
    std::string text;
    for (auto [dim, coefficient] : terms) {
      std::string name =
          cast<StringAttr>(kernel.getDimNames()[dim]).getValue().str();
      int64_t magnitude = coefficient < 0 ? -coefficient : coefficient;
      std::string term =
          magnitude == 1 ? name : std::to_string(magnitude) + "*" + name;
      text += text.empty() ? (coefficient < 0 ? "-" : "") + term
                           : (coefficient < 0 ? " - " : " + ") + term;
    }
    if (text.empty())
      return std::to_string(x.constant);
    if (x.constant)
      text += (x.constant < 0 ? " - " : " + ") +
              std::to_string(x.constant < 0 ? -x.constant : x.constant);
    return text;
  }
  Bound add(const Bound &x, const Bound &y) const {
    if (x.formula || y.formula)
      return Bound::ofFormula("(" + print(x) + ") + (" + print(y) + ")");
    Bound sum = x;
    sum.constant += y.constant;
    for (auto [dim, coefficient] : y.terms)
      if ((sum.terms[dim] += coefficient) == 0)
        sum.terms.erase(dim);
    return sum;
  }
  Bound scale(const Bound &x, int64_t factor) const {
    if (x.formula)
      return Bound::ofFormula(std::to_string(factor) + "*(" + print(x) + ")");
    Bound product = Bound::ofConstant(x.constant * factor);
    if (factor)
      for (auto [dim, coefficient] : x.terms)
        product.terms[dim] = coefficient * factor;
    return product;
  }
  Bound call(llvm::StringRef function, const Bound &x, const Bound &y) const {
    if (x.isConstant() && y.isConstant())
      return Bound::ofConstant(function == "min"
                                   ? std::min(x.constant, y.constant)
                                   : std::max(x.constant, y.constant));
    return Bound::ofFormula(function.str() + "(" + print(x) + ", " + print(y) +
                            ")");
  }
  Bound divide(const Bound &x, int64_t divisor) const {
    if (x.isConstant())
      return Bound::ofConstant(x.constant / divisor);
    return Bound::ofFormula("(" + print(x) + ")/" + std::to_string(divisor));
  }

  struct Range {
    Bound lo, hi;
  };
  /// The range of `value`, or nullopt when it is not of the supported form.
  std::optional<Range> rangeOf(Value value);

  llvm::DenseMap<Value, std::optional<Range>> known;
  /// "x >= 0" conditions that divisions need (floor and truncating division
  /// agree only on non-negative numerators).
  UniqueStrings conditions;

private:
  /// Mutable: the generated accessors are not const.
  mutable KernelOp kernel;
};

std::optional<int64_t> getConstant(Value value) {
  if (auto constant = value.getDefiningOp<arith::ConstantOp>())
    if (auto attr = dyn_cast<IntegerAttr>(constant.getValue()))
      return attr.getInt();
  return std::nullopt;
}

/// Whether `value` is `0 - x` (how the front end negates an integer).
bool isNegationOf(Value value, Value x) {
  auto sub = value.getDefiningOp<arith::SubIOp>();
  return sub && sub.getRhs() == x && getConstant(sub.getLhs()) == 0;
}

/// x when `op` computes |x| (max(x, 0 - x), either way round).
std::optional<Value> getAbsoluteValueOperand(Operation *op) {
  auto max = dyn_cast<arith::MaxSIOp>(op);
  if (!max)
    return std::nullopt;
  if (isNegationOf(max.getRhs(), max.getLhs()))
    return max.getLhs();
  if (isNegationOf(max.getLhs(), max.getRhs()))
    return max.getRhs();
  return std::nullopt;
}

std::optional<RangeFinder::Range> RangeFinder::rangeOf(Value value) {
  if (auto it = known.find(value); it != known.end())
    return it->second;
  std::optional<Range> range;
  auto operand = [&](unsigned i) {
    return rangeOf(value.getDefiningOp()->getOperand(i));
  };
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    if (arg.getOwner() == &kernel.getEntryBlock() &&
        arg.getArgNumber() < kernel.getNumDims()) {
      int64_t size = kernel.getDimSizes()[arg.getArgNumber()];
      Bound dim = ShapedType::isDynamic(size) ? Bound::ofDim(arg.getArgNumber())
                                              : Bound::ofConstant(size);
      range = Range{dim, dim};
    }
  } else if (std::optional<int64_t> constant = getConstant(value)) {
    range = Range{Bound::ofConstant(*constant), Bound::ofConstant(*constant)};
  } else if (Operation *op = value.getDefiningOp()) {
    if (isa<arith::IndexCastOp, arith::ExtSIOp, arith::ExtUIOp,
            arith::TruncIOp>(op)) {
      range = operand(0);
    } else if (std::optional<Value> x = getAbsoluteValueOperand(op)) {
      // |x| >= 0 whatever the sign of x's bounds; max's rule would give
      // max(x.lo, -x.hi), which is negative for a range around 0 (n - m)
      // and would become a constraint no launch meets.
      if (std::optional<Range> inner = rangeOf(*x))
        range = Range{Bound::ofConstant(0),
                      call("max", inner->hi, scale(inner->lo, -1))};
    } else if (isa<arith::AddIOp, arith::SubIOp, arith::MinSIOp,
                   arith::MaxSIOp>(op)) {
      std::optional<Range> x = operand(0), y = operand(1);
      if (x && y) {
        if (isa<arith::AddIOp>(op))
          range = Range{add(x->lo, y->lo), add(x->hi, y->hi)};
        else if (isa<arith::SubIOp>(op))
          range =
              Range{add(x->lo, scale(y->hi, -1)), add(x->hi, scale(y->lo, -1))};
        else if (isa<arith::MinSIOp>(op))
          range = Range{call("min", x->lo, y->lo), call("min", x->hi, y->hi)};
        else
          range = Range{call("max", x->lo, y->lo), call("max", x->hi, y->hi)};
      }
    } else if (isa<arith::MulIOp>(op)) {
      std::optional<int64_t> factor = getConstant(op->getOperand(1));
      unsigned other = 0;
      if (!factor) {
        factor = getConstant(op->getOperand(0));
        other = 1;
      }
      std::optional<Range> x = operand(other);
      if (factor && x)
        range = *factor >= 0
                    ? Range{scale(x->lo, *factor), scale(x->hi, *factor)}
                    : Range{scale(x->hi, *factor), scale(x->lo, *factor)};
    } else if (isa<arith::FloorDivSIOp, arith::DivSIOp, arith::DivUIOp>(op)) {
      std::optional<int64_t> divisor = getConstant(op->getOperand(1));
      std::optional<Range> x = operand(0);
      if (divisor && *divisor > 0 && x) {
        if (!x->lo.isNonNegative())
          conditions.insert(print(x->lo) + " >= 0");
        range = Range{divide(x->lo, *divisor), divide(x->hi, *divisor)};
      }
    }
  }
  known[value] = range;
  return range;
}

/// The size of axis `axis` of kernel input `input`, as a bound.
Bound getAxisSize(KernelOp kernel, unsigned input, unsigned axis) {
  Attribute size = kernel.getShapeOf(input)[axis];
  if (auto number = dyn_cast<IntegerAttr>(size))
    return Bound::ofConstant(number.getInt());
  llvm::StringRef name = cast<StringAttr>(size).getValue();
  for (unsigned dim = 0; dim < kernel.getNumDims(); ++dim)
    if (cast<StringAttr>(kernel.getDimNames()[dim]).getValue() == name) {
      int64_t fixed = kernel.getDimSizes()[dim];
      return ShapedType::isDynamic(fixed) ? Bound::ofDim(dim)
                                          : Bound::ofConstant(fixed);
    }
  return Bound::ofFormula(name.str());
}

Bound sizeFromFormula(KernelOp kernel, const std::string &formula) {
  for (unsigned dim = 0; dim < kernel.getNumDims(); ++dim)
    if (cast<StringAttr>(kernel.getDimNames()[dim]).getValue() == formula) {
      int64_t fixed = kernel.getDimSizes()[dim];
      return ShapedType::isDynamic(fixed) ? Bound::ofDim(dim)
                                          : Bound::ofConstant(fixed);
    }
  int64_t number = 0;
  if (!llvm::StringRef(formula).getAsInteger(10, number))
    return Bound::ofConstant(number);
  return Bound::ofFormula(formula);
}

} // namespace

/// Calls `visit` with each read of a kernel input (attn.read, or
/// tensor.extract once the GPU backend has rewritten them) in the score_mod
/// and mask of `attention`, the input's index among the inputs and the
/// read's subscripts, after setting up `finder` with the ranges of the
/// regions' indices b, h, m, n.
static void visitInputReads(
    RangeFinder &finder, KernelOp kernel, AttentionOp attention,
    const std::vector<std::string> &indexSizes,
    llvm::function_ref<void(Operation *, unsigned, ValueRange)> visit) {
  for (Region *region : {&attention.getScoreMod(), &attention.getMask()}) {
    if (region->empty())
      continue;
    // The last four arguments are b, h, m, n.
    Block &block = region->front();
    unsigned first = block.getNumArguments() - indexSizes.size();
    for (auto [i, size] : llvm::enumerate(indexSizes))
      finder.known[block.getArgument(first + i)] = RangeFinder::Range{
          Bound::ofConstant(0),
          finder.add(sizeFromFormula(kernel, size), Bound::ofConstant(-1))};
    region->walk([&](Operation *op) {
      Value tensor;
      ValueRange subscripts;
      if (auto read = dyn_cast<ReadOp>(op)) {
        tensor = read.getTensor();
        subscripts = read.getSubscripts();
      } else if (auto extract = dyn_cast<tensor::ExtractOp>(op)) {
        tensor = extract.getTensor();
        subscripts = extract.getIndices();
      }
      auto input = dyn_cast_or_null<BlockArgument>(tensor);
      if (!input || input.getOwner() != &kernel.getEntryBlock() ||
          input.getArgNumber() < kernel.getNumDims())
        return;
      visit(op, input.getArgNumber() - kernel.getNumDims(), subscripts);
    });
  }
}

namespace attn {

std::vector<std::string>
constrainSubscripts(KernelOp kernel, AttentionOp attention,
                    const std::vector<std::string> &indexSizes) {
  RangeFinder finder(kernel);
  UniqueStrings constraints;
  visitInputReads(
      finder, kernel, attention, indexSizes,
      [&](Operation *op, unsigned index, ValueRange subscripts) {
        bool bounded = true;
        for (auto [axis, subscript] : llvm::enumerate(subscripts)) {
          std::optional<RangeFinder::Range> range = finder.rangeOf(subscript);
          if (!range) {
            bounded = false;
            continue;
          }
          if (!range->lo.isNonNegative())
            constraints.insert(finder.print(range->lo) + " >= 0");
          Bound size = getAxisSize(kernel, index, axis);
          Bound slack =
              finder.add(finder.add(size, finder.scale(range->hi, -1)),
                         Bound::ofConstant(-1));
          if (!slack.isNonNegative())
            constraints.insert(finder.print(range->hi) + " < " +
                               finder.print(size));
        }
        if (bounded)
          op->setAttr(kInRangeReadAttr, UnitAttr::get(op->getContext()));
      });
  for (const std::string &condition : finder.conditions)
    constraints.insert(condition);
  return constraints.takeVector();
}

std::optional<std::string> getDimFormula(KernelOp kernel, Value value) {
  RangeFinder finder(kernel);
  std::optional<RangeFinder::Range> range = finder.rangeOf(value);
  if (!range || !finder.conditions.empty())
    return std::nullopt;
  std::string lo = finder.print(range->lo), hi = finder.print(range->hi);
  if (lo != hi)
    return std::nullopt;
  return lo;
}

} // namespace attn
