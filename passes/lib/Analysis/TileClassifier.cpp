//===- TileClassifier.cpp - Symbolic tile classes of attention masks ------===//
//
// The mask region is interpreted over a tile, not evaluated at its points:
// each op of the mask is replaced by the few index ops that compute a sound
// enclosure of its values over the whole tile. See TileClassifier.h.
//
//===----------------------------------------------------------------------===//

#include "attn/Analysis/TileClassifier.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <limits>
#include <map>

using namespace mlir;
using namespace mlir::attn;

namespace mlir::attn {
namespace {

/// What one SSA value of the mask can be over a tile.
struct AbstractValue {
  enum class Kind {
    /// The same value at every point of the tile (it depends on neither m
    /// nor n): `first` is that value, in its own type.
    Point,
    /// An integer in [first, second], both index values.
    Range,
    /// An i1: `first` says whether it may be true, `second` whether it may be
    /// false.
    Bool,
    /// Anything; i1 values read as "may be both".
    Unknown,
  };
  Kind kind = Kind::Unknown;
  Value first, second;
  /// The integer type of a Range (its wrap-around width).
  Type type;

  static AbstractValue point(Value v) { return {Kind::Point, v, v, v.getType()}; }
  static AbstractValue range(Value lo, Value hi, Type type) {
    return {Kind::Range, lo, hi, type};
  }
  static AbstractValue boolean(Value mayBeTrue, Value mayBeFalse) {
    return {Kind::Bool, mayBeTrue, mayBeFalse, Type()};
  }
  static AbstractValue unknown() { return {}; }
  bool isPoint() const { return kind == Kind::Point; }
  bool isUnknown() const { return kind == Kind::Unknown; }
};

/// Integer (not i1) or index.
bool isIntLike(Type type) {
  if (isa<IndexType>(type))
    return true;
  auto integer = dyn_cast<IntegerType>(type);
  return integer && integer.getWidth() > 1;
}

bool isI1(Type type) { return type.isInteger(1); }

} // namespace

/// Clones a mask region into a tile_class block in interval form.
class MaskInterpreter {
public:
  /// `op` is the attention (forward or backward) whose `mask` block is
  /// interpreted into `block`.
  MaskInterpreter(TileClassifier &classifier, Operation *op, Block &mask,
                  Block &block)
      : classifier(classifier), op(op), mask(mask),
        b(OpBuilder::atBlockEnd(&block)), loc(op->getLoc()) {}

  /// Interprets the mask over the tile of `block`'s arguments and returns the
  /// abstract predicate.
  AbstractValue run();
  /// Emits the i32 class of `predicate` and the yield.
  void emitYield(const AbstractValue &predicate);

  std::string reason;
  bool usedSummaries = false;

private:
  AbstractValue lookup(Value value) const;
  void interpret(Operation *maskOp);
  AbstractValue interpretRanged(Operation *maskOp);
  AbstractValue interpretRead(ReadOp read);
  AbstractValue interpretSelect(arith::SelectOp select);
  AbstractValue interpretCmp(arith::CmpIOp cmp);
  AbstractValue interpretDivision(Operation *maskOp, const AbstractValue &lhs,
                                  const AbstractValue &rhs);
  AbstractValue interpretRemainder(const AbstractValue &lhs,
                                   const AbstractValue &rhs);
  std::optional<AbstractValue> matchFlooredModulo(arith::SelectOp select);
  AbstractValue giveUp(Operation *maskOp, StringRef why);

  /// The index bounds of an integer Point or Range.
  std::pair<Value, Value> asRange(const AbstractValue &value);
  /// (mayBeTrue, mayBeFalse) of an i1.
  std::pair<Value, Value> asBool(const AbstractValue &value);
  /// A Range of `type`, widened to the whole type when [lo, hi] leaves it
  /// (the narrow arithmetic may have wrapped).
  AbstractValue makeRange(Value lo, Value hi, Type type);
  /// The integer an f32 summary holds, or the bound of `type` on the side
  /// `isLow` when the f32 may have rounded it.
  Value fromSummary(Value f, IntegerType type, bool isLow);

  Value index(int64_t v);
  Value flag(bool v);
  Value i32(int32_t v);
  Value add(Value x, Value y) { return b.createOrFold<arith::AddIOp>(loc, x, y); }
  Value sub(Value x, Value y) { return b.createOrFold<arith::SubIOp>(loc, x, y); }
  Value mul(Value x, Value y) { return b.createOrFold<arith::MulIOp>(loc, x, y); }
  Value min(Value x, Value y) { return b.createOrFold<arith::MinSIOp>(loc, x, y); }
  Value max(Value x, Value y) { return b.createOrFold<arith::MaxSIOp>(loc, x, y); }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return b.createOrFold<arith::CmpIOp>(loc, p, x, y);
  }
  Value land(Value x, Value y) { return b.createOrFold<arith::AndIOp>(loc, x, y); }
  Value lor(Value x, Value y) { return b.createOrFold<arith::OrIOp>(loc, x, y); }
  Value lnot(Value x) { return b.createOrFold<arith::XOrIOp>(loc, x, flag(true)); }
  Value select(Value c, Value x, Value y) {
    return b.createOrFold<arith::SelectOp>(loc, c, x, y);
  }

  TileClassifier &classifier;
  Operation *op;
  Block &mask;
  OpBuilder b;
  Location loc;
  DenseMap<Value, AbstractValue> values;
  /// A std::map: DenseMap<int64_t> reserves INT64_MAX and INT64_MAX - 1
  /// as its empty and tombstone keys, and the bounds of an i64 mask tensor
  /// are those values.
  std::map<int64_t, Value> indexConstants;
  Value constantTrue, constantFalse;
};

} // namespace mlir::attn

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

Value MaskInterpreter::index(int64_t v) {
  Value &slot = indexConstants[v];
  if (!slot) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(b.getInsertionBlock());
    slot = arith::ConstantIndexOp::create(b, loc, v);
  }
  return slot;
}

Value MaskInterpreter::flag(bool v) {
  Value &slot = v ? constantTrue : constantFalse;
  if (!slot) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(b.getInsertionBlock());
    slot = arith::ConstantIntOp::create(b, loc, v, 1);
  }
  return slot;
}

Value MaskInterpreter::i32(int32_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}

AbstractValue MaskInterpreter::lookup(Value value) const {
  auto it = values.find(value);
  if (it != values.end())
    return it->second;
  // Defined above the mask: a dim, a param, a tensor, kernel-level math.
  return AbstractValue::point(value);
}

std::pair<Value, Value> MaskInterpreter::asRange(const AbstractValue &value) {
  if (value.kind == AbstractValue::Kind::Range)
    return {value.first, value.second};
  assert(value.isPoint() && isIntLike(value.first.getType()));
  Value v = value.first;
  if (!isa<IndexType>(v.getType()))
    v = b.createOrFold<arith::IndexCastOp>(loc, b.getIndexType(), v);
  return {v, v};
}

std::pair<Value, Value> MaskInterpreter::asBool(const AbstractValue &value) {
  switch (value.kind) {
  case AbstractValue::Kind::Point:
    return {value.first, lnot(value.first)};
  case AbstractValue::Kind::Bool:
    return {value.first, value.second};
  default:
    return {flag(true), flag(true)};
  }
}

AbstractValue MaskInterpreter::makeRange(Value lo, Value hi, Type type) {
  auto integer = dyn_cast<IntegerType>(type);
  if (integer && integer.getWidth() < 64) {
    unsigned width = integer.getWidth();
    Value typeMin = index(llvm::minIntN(width));
    Value typeMax = index(llvm::maxIntN(width));
    Value fits = land(cmp(arith::CmpIPredicate::sge, lo, typeMin),
                      cmp(arith::CmpIPredicate::sle, hi, typeMax));
    lo = select(fits, lo, typeMin);
    hi = select(fits, hi, typeMax);
  }
  return AbstractValue::range(lo, hi, type);
}

Value MaskInterpreter::fromSummary(Value f, IntegerType type, bool isLow) {
  // f32 holds every integer of magnitude below 2^24 exactly; beyond that
  // sitofp may have rounded the extreme the wrong way.
  Type f32 = b.getF32Type();
  Value limit = arith::ConstantFloatOp::create(
      b, loc, cast<FloatType>(f32), APFloat(float(1 << 24)));
  Value negLimit = arith::ConstantFloatOp::create(
      b, loc, cast<FloatType>(f32), APFloat(-float(1 << 24)));
  Value big = lor(
      b.createOrFold<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, f, limit),
      b.createOrFold<arith::CmpFOp>(loc, arith::CmpFPredicate::OLE, f,
                                    negLimit));
  Value asInt = b.createOrFold<arith::FPToSIOp>(loc, b.getI64Type(), f);
  Value asIndex =
      b.createOrFold<arith::IndexCastOp>(loc, b.getIndexType(), asInt);
  unsigned width = type.getWidth();
  int64_t bound = isLow ? llvm::minIntN(width) : llvm::maxIntN(width);
  return select(big, index(bound), asIndex);
}

AbstractValue MaskInterpreter::giveUp(Operation *maskOp, StringRef why) {
  if (reason.empty()) {
    llvm::raw_string_ostream os(reason);
    os << "'" << maskOp->getName() << "' " << why;
  }
  return AbstractValue::unknown();
}

//===----------------------------------------------------------------------===//
// Interpretation
//===----------------------------------------------------------------------===//

AbstractValue MaskInterpreter::run() {
  Block *tile = b.getInsertionBlock();
  Type indexType = b.getIndexType();
  values[mask.getArgument(0)] = AbstractValue::point(tile->getArgument(0));
  values[mask.getArgument(1)] = AbstractValue::point(tile->getArgument(1));
  values[mask.getArgument(2)] = AbstractValue::range(
      tile->getArgument(2), tile->getArgument(3), indexType);
  values[mask.getArgument(3)] = AbstractValue::range(
      tile->getArgument(4), tile->getArgument(5), indexType);
  for (Operation &maskOp : mask.without_terminator())
    interpret(&maskOp);
  auto yield = cast<YieldOp>(mask.getTerminator());
  return lookup(yield.getValues().front());
}

void MaskInterpreter::emitYield(const AbstractValue &predicate) {
  auto cls = [&](TileClass c) { return i32(static_cast<int32_t>(c)); };
  Value result;
  switch (predicate.kind) {
  case AbstractValue::Kind::Point:
    // The mask depends on b and h only: the tile is all kept or all dropped.
    result = select(predicate.first, cls(TileClass::Full),
                    cls(TileClass::Empty));
    break;
  case AbstractValue::Kind::Bool:
    result = select(predicate.first,
                    select(predicate.second, cls(TileClass::Partial),
                           cls(TileClass::Full)),
                    cls(TileClass::Empty));
    break;
  default:
    result = cls(TileClass::Partial);
    break;
  }
  YieldOp::create(b, loc, ValueRange{result});
}

void MaskInterpreter::interpret(Operation *maskOp) {
  bool allPoints = maskOp->getNumRegions() == 0 &&
                   llvm::all_of(maskOp->getOperands(), [&](Value operand) {
                     return lookup(operand).isPoint();
                   });
  if (allPoints) {
    // Same value at every point of the tile: compute it exactly. Reads of
    // points are exact reads of one element.
    IRMapping mapping;
    for (Value operand : maskOp->getOperands())
      mapping.map(operand, lookup(operand).first);
    Operation *clone = b.clone(*maskOp, mapping);
    for (auto [from, to] :
         llvm::zip(maskOp->getResults(), clone->getResults()))
      values[from] = AbstractValue::point(to);
    return;
  }
  if (maskOp->getNumResults() != 1) {
    giveUp(maskOp, "has several results");
    return;
  }
  values[maskOp->getResult(0)] = interpretRanged(maskOp);
}

AbstractValue MaskInterpreter::interpretRanged(Operation *maskOp) {
  Type type = maskOp->getResult(0).getType();
  auto operand = [&](unsigned i) { return lookup(maskOp->getOperand(i)); };
  bool anyUnknown = llvm::any_of(maskOp->getOperands(), [&](Value v) {
    return lookup(v).isUnknown();
  });

  // i1 logic: unknown operands read as "may be both".
  if (isa<arith::AndIOp, arith::OrIOp, arith::XOrIOp>(maskOp) && isI1(type)) {
    auto [xt, xf] = asBool(operand(0));
    auto [yt, yf] = asBool(operand(1));
    if (isa<arith::AndIOp>(maskOp))
      return AbstractValue::boolean(land(xt, yt), lor(xf, yf));
    if (isa<arith::OrIOp>(maskOp))
      return AbstractValue::boolean(lor(xt, yt), land(xf, yf));
    return AbstractValue::boolean(lor(land(xt, yf), land(xf, yt)),
                                  lor(land(xt, yt), land(xf, yf)));
  }
  if (auto select = dyn_cast<arith::SelectOp>(maskOp))
    return interpretSelect(select);
  if (auto cmpOp = dyn_cast<arith::CmpIOp>(maskOp))
    return interpretCmp(cmpOp);
  if (auto read = dyn_cast<ReadOp>(maskOp))
    return interpretRead(read);

  if (anyUnknown)
    return AbstractValue::unknown();

  // Casts of an i1 to an integer.
  if (isa<arith::ExtUIOp, arith::ExtSIOp, arith::IndexCastOp>(maskOp) &&
      isI1(maskOp->getOperand(0).getType())) {
    auto [mayBeTrue, mayBeFalse] = asBool(operand(0));
    int64_t one = isa<arith::ExtUIOp>(maskOp) ? 1 : -1;
    Value ifTrue = index(one), ifFalse = index(0);
    Value lo = one > 0 ? select(mayBeFalse, ifFalse, ifTrue)
                       : select(mayBeTrue, ifTrue, ifFalse);
    Value hi = one > 0 ? select(mayBeTrue, ifTrue, ifFalse)
                       : select(mayBeFalse, ifFalse, ifTrue);
    return AbstractValue::range(lo, hi, type);
  }

  if (!isIntLike(type) ||
      !llvm::all_of(maskOp->getOperandTypes(), isIntLike))
    return giveUp(maskOp, "is not integer arithmetic");

  if (isa<arith::IndexCastOp, arith::ExtSIOp, arith::TruncIOp>(maskOp)) {
    auto [lo, hi] = asRange(operand(0));
    return makeRange(lo, hi, type);
  }
  if (maskOp->getNumOperands() != 2)
    return giveUp(maskOp, "is not supported over ranges");
  AbstractValue lhs = operand(0), rhs = operand(1);
  Value xlo, xhi, ylo, yhi;
  std::tie(xlo, xhi) = asRange(lhs);
  std::tie(ylo, yhi) = asRange(rhs);
  return llvm::TypeSwitch<Operation *, AbstractValue>(maskOp)
      .Case([&](arith::AddIOp) {
        return makeRange(add(xlo, ylo), add(xhi, yhi), type);
      })
      .Case([&](arith::SubIOp) {
        return makeRange(sub(xlo, yhi), sub(xhi, ylo), type);
      })
      .Case([&](arith::MaxSIOp) {
        // max(x, 0 - x), the language's integer abs: |x| over [lo, hi] is
        // not the max of the operands' ranges.
        for (auto [x, negated] :
             {std::pair{maskOp->getOperand(0), maskOp->getOperand(1)},
              std::pair{maskOp->getOperand(1), maskOp->getOperand(0)}}) {
          auto negation = negated.getDefiningOp<arith::SubIOp>();
          if (!negation || negation.getRhs() != x ||
              !matchPattern(negation.getLhs(), m_Zero()))
            continue;
          auto [lo, hi] = x == maskOp->getOperand(0) ? std::pair{xlo, xhi}
                                                     : std::pair{ylo, yhi};
          Value zero = index(0);
          Value absLo = select(cmp(arith::CmpIPredicate::sge, lo, zero), lo,
                               select(cmp(arith::CmpIPredicate::sle, hi, zero),
                                      sub(zero, hi), zero));
          return makeRange(absLo, max(hi, sub(zero, lo)), type);
        }
        return makeRange(max(xlo, ylo), max(xhi, yhi), type);
      })
      .Case([&](arith::MinSIOp) {
        return makeRange(min(xlo, ylo), min(xhi, yhi), type);
      })
      .Case([&](arith::MulIOp) {
        // A constant factor keeps the bounds in order (or swaps them).
        for (auto [range, factor] : {std::pair{lhs, rhs}, std::pair{rhs, lhs}}) {
          if (!factor.isPoint())
            continue;
          std::optional<int64_t> c = getConstantIntValue(factor.first);
          if (!c)
            continue;
          auto [lo, hi] = asRange(range);
          Value f = index(*c);
          return *c >= 0 ? makeRange(mul(lo, f), mul(hi, f), type)
                         : makeRange(mul(hi, f), mul(lo, f), type);
        }
        Value p0 = mul(xlo, ylo), p1 = mul(xlo, yhi), p2 = mul(xhi, ylo),
              p3 = mul(xhi, yhi);
        return makeRange(min(min(p0, p1), min(p2, p3)),
                         max(max(p0, p1), max(p2, p3)), type);
      })
      .Case<arith::FloorDivSIOp, arith::DivSIOp, arith::CeilDivSIOp>(
          [&](Operation *division) {
            return interpretDivision(division, lhs, rhs);
          })
      .Case([&](arith::RemSIOp) { return interpretRemainder(lhs, rhs); })
      .Default([&](Operation *other) {
        return giveUp(other, "is not supported over ranges");
      });
}

AbstractValue MaskInterpreter::interpretDivision(Operation *maskOp,
                                                 const AbstractValue &lhs,
                                                 const AbstractValue &rhs) {
  if (!rhs.isPoint())
    return giveUp(maskOp, "divides by a value that varies over the tile");
  // For a fixed divisor each of these is monotone in the dividend, so the
  // quotients of the bounds are the extremes.
  auto [lo, hi] = asRange(lhs);
  Value d = asRange(rhs).first;
  auto divide = [&](Value x) -> Value {
    if (isa<arith::FloorDivSIOp>(maskOp))
      return b.createOrFold<arith::FloorDivSIOp>(loc, x, d);
    if (isa<arith::DivSIOp>(maskOp))
      return b.createOrFold<arith::DivSIOp>(loc, x, d);
    return b.createOrFold<arith::CeilDivSIOp>(loc, x, d);
  };
  Value q0 = divide(lo), q1 = divide(hi);
  Type type = maskOp->getResult(0).getType();
  std::optional<int64_t> c = getConstantIntValue(rhs.first);
  if (c && *c > 0)
    return AbstractValue::range(q0, q1, type);
  return makeRange(min(q0, q1), max(q0, q1), type);
}

AbstractValue MaskInterpreter::interpretRemainder(const AbstractValue &lhs,
                                                  const AbstractValue &rhs) {
  if (!rhs.isPoint())
    return AbstractValue::unknown();
  // remsi(a, d) == remsi(a, |d|), and with the truncated quotient fixed the
  // remainder is a - q * |d|, increasing in a.
  auto [lo, hi] = asRange(lhs);
  Value d = asRange(rhs).first;
  Value absD = max(d, sub(index(0), d));
  Value bound = sub(absD, index(1));
  Value q0 = b.createOrFold<arith::DivSIOp>(loc, lo, absD);
  Value q1 = b.createOrFold<arith::DivSIOp>(loc, hi, absD);
  Value same = cmp(arith::CmpIPredicate::eq, q0, q1);
  Value nonNegative = cmp(arith::CmpIPredicate::sge, lo, index(0));
  Value nonPositive = cmp(arith::CmpIPredicate::sle, hi, index(0));
  Value rlo = b.createOrFold<arith::RemSIOp>(loc, lo, absD);
  Value rhi = b.createOrFold<arith::RemSIOp>(loc, hi, absD);
  Value newLo = select(same, rlo,
                       select(nonNegative, index(0), sub(index(0), bound)));
  Value newHi = select(same, rhi, select(nonPositive, index(0), bound));
  return AbstractValue::range(newLo, newHi, lhs.type ? lhs.type : rhs.type);
}

/// Whether `v` is the constant 0.
static bool isZero(Value v) {
  std::optional<int64_t> c = getConstantIntValue(v);
  return c && *c == 0;
}

std::optional<AbstractValue>
MaskInterpreter::matchFlooredModulo(arith::SelectOp select) {
  // select((r != 0) and ((r < 0) xor (d < 0)), r + d, r), r = remsi(a, d):
  // the front end's floored modulo, in [0, d - 1] for d > 0.
  auto rem = select.getFalseValue().getDefiningOp<arith::RemSIOp>();
  auto sum = select.getTrueValue().getDefiningOp<arith::AddIOp>();
  if (!rem || !sum)
    return std::nullopt;
  Value r = rem.getResult(), a = rem.getLhs(), d = rem.getRhs();
  if (!((sum.getLhs() == r && sum.getRhs() == d) ||
        (sum.getLhs() == d && sum.getRhs() == r)))
    return std::nullopt;
  auto both = select.getCondition().getDefiningOp<arith::AndIOp>();
  if (!both)
    return std::nullopt;
  auto isSignMismatch = [&](Value v) {
    auto x = v.getDefiningOp<arith::XOrIOp>();
    if (!x)
      return false;
    auto isSlt0 = [&](Value c, Value of) {
      auto cmpOp = c.getDefiningOp<arith::CmpIOp>();
      return cmpOp && cmpOp.getPredicate() == arith::CmpIPredicate::slt &&
             cmpOp.getLhs() == of && isZero(cmpOp.getRhs());
    };
    return (isSlt0(x.getLhs(), r) && isSlt0(x.getRhs(), d)) ||
           (isSlt0(x.getLhs(), d) && isSlt0(x.getRhs(), r));
  };
  auto isNonZero = [&](Value v) {
    auto cmpOp = v.getDefiningOp<arith::CmpIOp>();
    return cmpOp && cmpOp.getPredicate() == arith::CmpIPredicate::ne &&
           cmpOp.getLhs() == r && isZero(cmpOp.getRhs());
  };
  if (!((isNonZero(both.getLhs()) && isSignMismatch(both.getRhs())) ||
        (isNonZero(both.getRhs()) && isSignMismatch(both.getLhs()))))
    return std::nullopt;
  AbstractValue dividend = lookup(a), divisor = lookup(d);
  if (dividend.isUnknown() || !divisor.isPoint())
    return std::nullopt;
  auto [lo, hi] = asRange(dividend);
  Value dv = asRange(divisor).first;
  Value q0 = b.createOrFold<arith::FloorDivSIOp>(loc, lo, dv);
  Value q1 = b.createOrFold<arith::FloorDivSIOp>(loc, hi, dv);
  Value same = cmp(arith::CmpIPredicate::eq, q0, q1);
  Value base = mul(q0, dv);
  Value newLo = this->select(same, sub(lo, base), index(0));
  Value newHi = this->select(same, sub(hi, base), sub(dv, index(1)));
  return AbstractValue::range(newLo, newHi, select.getType());
}

AbstractValue MaskInterpreter::interpretSelect(arith::SelectOp selectOp) {
  Type type = selectOp.getType();
  AbstractValue x = lookup(selectOp.getTrueValue());
  AbstractValue y = lookup(selectOp.getFalseValue());
  auto [ct, cf] = asBool(lookup(selectOp.getCondition()));
  if (isI1(type)) {
    auto [xt, xf] = asBool(x);
    auto [yt, yf] = asBool(y);
    return AbstractValue::boolean(lor(land(ct, xt), land(cf, yt)),
                                  lor(land(ct, xf), land(cf, yf)));
  }
  if (!isIntLike(type) || x.isUnknown() || y.isUnknown())
    return giveUp(selectOp, "selects values that are not integers");
  auto [xlo, xhi] = asRange(x);
  auto [ylo, yhi] = asRange(y);
  Value both = land(ct, cf);
  Value lo = select(both, min(xlo, ylo), select(ct, xlo, ylo));
  Value hi = select(both, max(xhi, yhi), select(ct, xhi, yhi));
  AbstractValue general = AbstractValue::range(lo, hi, type);
  std::optional<AbstractValue> modulo = matchFlooredModulo(selectOp);
  if (!modulo)
    return general;
  // The floored-modulo bounds hold only for a positive divisor.
  auto rem = selectOp.getFalseValue().getDefiningOp<arith::RemSIOp>();
  Value positive = cmp(arith::CmpIPredicate::sgt,
                       asRange(lookup(rem.getRhs())).first, index(0));
  return AbstractValue::range(select(positive, modulo->first, lo),
                              select(positive, modulo->second, hi), type);
}

AbstractValue MaskInterpreter::interpretCmp(arith::CmpIOp cmpOp) {
  using P = arith::CmpIPredicate;
  AbstractValue lhs = lookup(cmpOp.getLhs()), rhs = lookup(cmpOp.getRhs());
  if (lhs.isUnknown() || rhs.isUnknown())
    return AbstractValue::unknown();
  P pred = cmpOp.getPredicate();
  if (isI1(cmpOp.getLhs().getType())) {
    if (pred != P::eq && pred != P::ne)
      return giveUp(cmpOp, "orders i1 values");
    auto [xt, xf] = asBool(lhs);
    auto [yt, yf] = asBool(rhs);
    Value mayBeEqual = lor(land(xt, yt), land(xf, yf));
    Value mayDiffer = lor(land(xt, yf), land(xf, yt));
    return pred == P::eq ? AbstractValue::boolean(mayBeEqual, mayDiffer)
                         : AbstractValue::boolean(mayDiffer, mayBeEqual);
  }
  Value xlo, xhi, ylo, yhi;
  std::tie(xlo, xhi) = asRange(lhs);
  std::tie(ylo, yhi) = asRange(rhs);
  // (mayBeTrue, mayBeFalse) of the signed predicates.
  auto signedCase = [&](P p) -> std::pair<Value, Value> {
    switch (p) {
    case P::slt:
    case P::ult:
      return {cmp(P::slt, xlo, yhi), cmp(P::sge, xhi, ylo)};
    case P::sle:
    case P::ule:
      return {cmp(P::sle, xlo, yhi), cmp(P::sgt, xhi, ylo)};
    case P::sgt:
    case P::ugt:
      return {cmp(P::sgt, xhi, ylo), cmp(P::sle, xlo, yhi)};
    case P::sge:
    case P::uge:
      return {cmp(P::sge, xhi, ylo), cmp(P::slt, xlo, yhi)};
    case P::eq:
    case P::ne: {
      Value overlap = land(cmp(P::sle, xlo, yhi), cmp(P::sle, ylo, xhi));
      Value singleSame = land(land(cmp(P::eq, xlo, xhi), cmp(P::eq, ylo, yhi)),
                              cmp(P::eq, xlo, ylo));
      if (p == P::eq)
        return {overlap, lnot(singleSame)};
      return {lnot(singleSame), overlap};
    }
    }
    llvm_unreachable("unknown predicate");
  };
  auto [mayBeTrue, mayBeFalse] = signedCase(pred);
  if (pred == P::ult || pred == P::ule || pred == P::ugt || pred == P::uge) {
    // Unsigned order agrees with signed order on non-negative values only.
    Value nonNegative = land(cmp(P::sge, xlo, index(0)),
                             cmp(P::sge, ylo, index(0)));
    mayBeTrue = lor(mayBeTrue, lnot(nonNegative));
    mayBeFalse = lor(mayBeFalse, lnot(nonNegative));
  }
  return AbstractValue::boolean(mayBeTrue, mayBeFalse);
}

AbstractValue MaskInterpreter::interpretRead(ReadOp read) {
  Value tensor = read.getTensor();
  auto tensorType = cast<RankedTensorType>(tensor.getType());
  auto element = dyn_cast<IntegerType>(tensorType.getElementType());
  if (!element)
    return giveUp(read, "reads a non-integer tensor over a range");
  if (Operation *def = tensor.getDefiningOp(); def && op->isAncestor(def))
    return giveUp(read, "reads a tensor defined inside the attention");
  int64_t rank = tensorType.getRank();
  if (rank > 63)
    return giveUp(read, "reads a tensor of too high a rank");
  uint64_t rangedAxes = 0;
  SmallVector<AbstractValue> subscripts;
  for (auto [axis, subscript] : llvm::enumerate(read.getSubscripts())) {
    AbstractValue value = lookup(subscript);
    if (value.isUnknown())
      return AbstractValue::unknown();
    if (!value.isPoint())
      rangedAxes |= uint64_t(1) << axis;
    subscripts.push_back(value);
  }
  unsigned numRanged = llvm::popcount(rangedAxes);
  if (numRanged > 3)
    return giveUp(read, "reads a tensor over more than three ranged axes");
  Operation *anchor = op;
  while (anchor->getParentOp() != classifier.kernel.getOperation())
    anchor = anchor->getParentOp();
  const TileClassifier::Summary *summary =
      classifier.getSummary(tensor, rangedAxes, anchor);
  if (!summary)
    return giveUp(read, "reads a tensor whose sizes are unknown at kernel level");
  usedSummaries = true;

  // Clamp the ranges into the tensor: the mask reads in range at every point
  // of the tile (the driver proves it), so the clamped range still holds
  // every element the tile reads.
  int64_t tileSize = classifier.options.summaryTileSize;
  Value tile = index(tileSize);
  SmallVector<Value> exact, exactHi, tileLo, tileHi;
  /// Whether every ranged subscript spans at most two elements: then the
  /// (at most 2^ranked) corner elements are read exactly.
  Value allPoints = flag(true), oneTile = flag(true);
  int64_t rangedAxis = -1;
  for (auto [axis, value] : llvm::enumerate(subscripts)) {
    auto [lo, hi] = asRange(value);
    if (value.isPoint()) {
      exact.push_back(lo);
      exactHi.push_back(lo);
      tileLo.push_back(lo);
      tileHi.push_back(lo);
      continue;
    }
    rangedAxis = axis;
    Value last = sub(summary->extents[axis], index(1));
    lo = min(max(lo, index(0)), last);
    hi = min(max(hi, index(0)), last);
    exact.push_back(lo);
    exactHi.push_back(hi);
    allPoints = land(allPoints,
                     cmp(arith::CmpIPredicate::sle, sub(hi, lo), index(1)));
    Value tlo = b.createOrFold<arith::FloorDivSIOp>(loc, lo, tile);
    Value thi = b.createOrFold<arith::FloorDivSIOp>(loc, hi, tile);
    oneTile = land(oneTile, cmp(arith::CmpIPredicate::eq, tlo, thi));
    tileLo.push_back(tlo);
    tileHi.push_back(thi);
  }
  SmallVector<Value> wholeSubscripts;
  for (auto [axis, value] : llvm::enumerate(subscripts))
    if (value.isPoint())
      wholeSubscripts.push_back(tileLo[axis]);

  auto readAt = [&](Value from, ArrayRef<Value> at) -> Value {
    return ReadOp::create(b, loc, b.getF32Type(), from, at);
  };
  Value minF = readAt(summary->wholeMin, wholeSubscripts);
  Value maxF = readAt(summary->wholeMax, wholeSubscripts);
  if (llvm::popcount(rangedAxes) == 1) {
    // Sparse table: a span of c tiles, 2^k < c <= 2^(k+1), is the union of
    // the level-k entries at its first tile and at its last tile - 2^k + 1.
    Value count = add(sub(tileHi[rangedAxis], tileLo[rangedAxis]), index(1));
    for (int64_t k = summary->minLevels.size() - 1; k >= 0; --k) {
      SmallVector<Value> first(tileLo), second(tileLo);
      // Clamped so that the levels not selected still read in range.
      second[rangedAxis] = max(
          add(sub(tileHi[rangedAxis], index(int64_t(1) << k)), index(1)),
          tileLo[rangedAxis]);
      Value levelMin = b.createOrFold<arith::MinimumFOp>(
          loc, readAt(summary->minLevels[k], first),
          readAt(summary->minLevels[k], second));
      Value levelMax = b.createOrFold<arith::MaximumFOp>(
          loc, readAt(summary->maxLevels[k], first),
          readAt(summary->maxLevels[k], second));
      Value fits =
          cmp(arith::CmpIPredicate::sle, count, index(int64_t(2) << k));
      minF = select(fits, levelMin, minF);
      maxF = select(fits, levelMax, maxF);
    }
  } else {
    minF = select(oneTile, readAt(summary->minLevels[0], tileLo), minF);
    maxF = select(oneTile, readAt(summary->maxLevels[0], tileLo), maxF);
  }

  // The corners: every combination of the clamped bounds of the ranged
  // subscripts, which covers the read when each spans at most two elements.
  SmallVector<Value> corners;
  for (unsigned corner = 0; corner < (1u << numRanged); ++corner) {
    SmallVector<Value> at;
    unsigned bit = 0;
    for (unsigned axis = 0; axis < exact.size(); ++axis) {
      if (!((rangedAxes >> axis) & 1)) {
        at.push_back(exact[axis]);
        continue;
      }
      at.push_back(((corner >> bit++) & 1) ? exactHi[axis] : exact[axis]);
    }
    corners.push_back(ReadOp::create(b, loc, element, tensor, at));
  }
  if (element.getWidth() == 1) {
    Value cornerTrue = flag(false), cornerFalse = flag(false);
    for (Value c : corners) {
      cornerTrue = lor(cornerTrue, c);
      cornerFalse = lor(cornerFalse, lnot(c));
    }
    Type f32 = b.getF32Type();
    Value half = arith::ConstantFloatOp::create(b, loc, cast<FloatType>(f32),
                                                APFloat(0.5f));
    Value anyTrue =
        b.createOrFold<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, maxF, half);
    Value anyFalse =
        b.createOrFold<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, minF, half);
    return AbstractValue::boolean(select(allPoints, cornerTrue, anyTrue),
                                  select(allPoints, cornerFalse, anyFalse));
  }
  Value cornerLo, cornerHi;
  for (Value c : corners) {
    Value v = b.createOrFold<arith::IndexCastOp>(loc, b.getIndexType(), c);
    cornerLo = cornerLo ? min(cornerLo, v) : v;
    cornerHi = cornerHi ? max(cornerHi, v) : v;
  }
  return AbstractValue::range(
      select(allPoints, cornerLo, fromSummary(minF, element, true)),
      select(allPoints, cornerHi, fromSummary(maxF, element, false)),
      element);
}

//===----------------------------------------------------------------------===//
// Summaries
//===----------------------------------------------------------------------===//

/// The size of `axis` of `tensor` as an index value usable at kernel level
/// before `b`'s insertion point, or null.
static Value getAxisExtent(KernelOp kernel, Value tensor, unsigned axis,
                           OpBuilder &b, Location loc) {
  auto type = cast<RankedTensorType>(tensor.getType());
  if (!type.isDynamicDim(axis))
    return arith::ConstantIndexOp::create(b, loc, type.getDimSize(axis));
  if (auto arg = dyn_cast<BlockArgument>(tensor)) {
    if (arg.getOwner() != &kernel.getEntryBlock())
      return {};
    unsigned number = arg.getArgNumber();
    if (number < kernel.getNumDims() ||
        number >= kernel.getNumDims() + kernel.getNumInputs())
      return {};
    Attribute size = kernel.getShapeOf(number - kernel.getNumDims())[axis];
    if (auto name = dyn_cast<StringAttr>(size)) {
      std::optional<unsigned> dim = kernel.lookupDim(name.getValue());
      return dim ? Value(kernel.getDimArg(*dim)) : Value();
    }
    if (auto fixed = dyn_cast<IntegerAttr>(size))
      return arith::ConstantIndexOp::create(b, loc, fixed.getInt());
    return {};
  }
  if (auto einsum = tensor.getDefiningOp<EinsumOp>())
    return einsum.getOutputExtents()[axis];
  if (auto keep = tensor.getDefiningOp<KeepOp>())
    return getAxisExtent(kernel, keep.getInput(), axis, b, loc);
  return {};
}

/// `value` (an integer read) as the f32 the summaries hold.
static Value toF32(OpBuilder &b, Location loc, Value value) {
  Type f32 = b.getF32Type();
  if (value.getType().isInteger(1))
    return arith::UIToFPOp::create(b, loc, f32, value);
  return arith::SIToFPOp::create(b, loc, f32, value);
}

TileClassifier::TileClassifier(KernelOp kernel, TileClassifierOptions options)
    : kernel(kernel), options(options) {}

TileClassifier::~TileClassifier() = default;

const TileClassifier::Summary *
TileClassifier::getSummary(Value tensor, uint64_t rangedAxes,
                           Operation *anchor) {
  auto key = std::make_pair(tensor, rangedAxes);
  auto found = summaries.find(key);
  if (found != summaries.end())
    return &found->second;

  Location loc = anchor->getLoc();
  OpBuilder kb(anchor);
  auto type = cast<RankedTensorType>(tensor.getType());
  unsigned rank = type.getRank();
  Summary summary;
  for (unsigned axis = 0; axis < rank; ++axis) {
    Value extent = getAxisExtent(kernel, tensor, axis, kb, loc);
    if (!extent)
      return nullptr;
    summary.extents.push_back(extent);
  }
  auto isRanged = [&](unsigned axis) { return (rangedAxes >> axis) & 1; };
  int64_t tileSize = options.summaryTileSize;
  Value tile = arith::ConstantIndexOp::create(kb, loc, tileSize);
  Value tileMinusOne = arith::ConstantIndexOp::create(kb, loc, tileSize - 1);
  // Tiles per ranged axis: ceil(extent / tile).
  SmallVector<Value> tiles(rank);
  for (unsigned axis = 0; axis < rank; ++axis)
    if (isRanged(axis))
      tiles[axis] = arith::FloorDivSIOp::create(
          kb, loc,
          arith::AddIOp::create(kb, loc, summary.extents[axis], tileMinusOne),
          tile);

  // Index names: "i<axis>" for points, "t<axis>" for tiles, "r<axis>" for
  // positions reduced over.
  auto name = [](char prefix, unsigned axis) {
    return (llvm::Twine(prefix) + llvm::Twine(axis)).str();
  };
  auto tensorTypeOfRank = [&](unsigned r) {
    return RankedTensorType::get(SmallVector<int64_t>(r, ShapedType::kDynamic),
                                 kb.getF32Type());
  };
  auto build = [&](ReductionKind kind, ArrayRef<std::string> outNames,
                   ArrayRef<std::string> reducedNames, ValueRange extents,
                   llvm::function_ref<Value(OpBuilder &, Block &)> body) {
    SmallVector<StringRef> outs(outNames.begin(), outNames.end());
    SmallVector<StringRef> reduced(reducedNames.begin(), reducedNames.end());
    auto einsum = EinsumOp::create(kb, loc, tensorTypeOfRank(outs.size()), kind,
                                   outs, reduced, extents);
    OpBuilder bb = OpBuilder::atBlockEnd(&einsum.getBodyBlock());
    Value result = body(bb, einsum.getBodyBlock());
    YieldOp::create(bb, loc, ValueRange{result});
    return einsum.getResult();
  };

  // Level 0: min/max over each summary tile of the ranged axes, the last
  // tile clamped to stay in range.
  SmallVector<std::string> tileNames, tileReduced;
  SmallVector<Value> tileExtents;
  for (unsigned axis = 0; axis < rank; ++axis) {
    tileNames.push_back(name(isRanged(axis) ? 't' : 'i', axis));
    tileExtents.push_back(isRanged(axis) ? tiles[axis] : summary.extents[axis]);
  }
  for (unsigned axis = 0; axis < rank; ++axis) {
    if (!isRanged(axis))
      continue;
    tileReduced.push_back(name('r', axis));
    tileExtents.push_back(tile);
  }
  auto tileBody = [&](OpBuilder &bb, Block &block) -> Value {
    SmallVector<Value> at;
    unsigned reducedArg = rank;
    Value size = arith::ConstantIndexOp::create(bb, loc, tileSize);
    for (unsigned axis = 0; axis < rank; ++axis) {
      Value arg = block.getArgument(axis);
      if (!isRanged(axis)) {
        at.push_back(arg);
        continue;
      }
      Value start = arith::MulIOp::create(bb, loc, arg, size);
      Value position = arith::AddIOp::create(
          bb, loc, start, block.getArgument(reducedArg++));
      Value last = arith::SubIOp::create(
          bb, loc, summary.extents[axis],
          arith::ConstantIndexOp::create(bb, loc, 1));
      at.push_back(arith::MinSIOp::create(bb, loc, position, last));
    }
    Value element = ReadOp::create(bb, loc, type.getElementType(), tensor, at);
    return toF32(bb, loc, element);
  };
  summary.minLevels.push_back(build(ReductionKind::Min, tileNames, tileReduced,
                                    tileExtents, tileBody));
  summary.maxLevels.push_back(build(ReductionKind::Max, tileNames, tileReduced,
                                    tileExtents, tileBody));

  // Sparse table over one ranged axis: level k covers 2^k tiles, built from
  // two entries of level k - 1, O(tiles) each.
  if (llvm::popcount(rangedAxes) == 1) {
    unsigned axis = llvm::countr_zero(rangedAxes);
    ValueRange levelExtents = ValueRange(tileExtents).take_front(rank);
    for (unsigned k = 1; k <= options.summaryLevels; ++k) {
      for (bool isMin : {true, false}) {
        Value previous =
            isMin ? summary.minLevels.back() : summary.maxLevels.back();
        auto levelBody = [&](OpBuilder &bb, Block &block) -> Value {
          SmallVector<Value> first(block.getArguments());
          SmallVector<Value> second(first);
          Value step =
              arith::ConstantIndexOp::create(bb, loc, int64_t(1) << (k - 1));
          Value last = arith::SubIOp::create(
              bb, loc, tiles[axis], arith::ConstantIndexOp::create(bb, loc, 1));
          second[axis] = arith::MinSIOp::create(
              bb, loc, arith::AddIOp::create(bb, loc, first[axis], step), last);
          Value x = ReadOp::create(bb, loc, bb.getF32Type(), previous, first);
          Value y = ReadOp::create(bb, loc, bb.getF32Type(), previous, second);
          if (isMin)
            return arith::MinimumFOp::create(bb, loc, x, y);
          return arith::MaximumFOp::create(bb, loc, x, y);
        };
        Value level = build(ReductionKind::None, tileNames, {}, levelExtents,
                            levelBody);
        (isMin ? summary.minLevels : summary.maxLevels).push_back(level);
      }
    }
  }

  // The whole range of the ranged axes, for spans the table does not cover.
  SmallVector<std::string> wholeNames, wholeReduced;
  SmallVector<Value> wholeExtents, reducedExtents;
  for (unsigned axis = 0; axis < rank; ++axis) {
    if (isRanged(axis)) {
      wholeReduced.push_back(name('r', axis));
      reducedExtents.push_back(summary.extents[axis]);
    } else {
      wholeNames.push_back(name('i', axis));
      wholeExtents.push_back(summary.extents[axis]);
    }
  }
  llvm::append_range(wholeExtents, reducedExtents);
  auto wholeBody = [&](OpBuilder &bb, Block &block) -> Value {
    SmallVector<Value> at(rank);
    unsigned pointArg = 0, reducedArg = wholeNames.size();
    for (unsigned axis = 0; axis < rank; ++axis)
      at[axis] = block.getArgument(isRanged(axis) ? reducedArg++ : pointArg++);
    Value element = ReadOp::create(bb, loc, type.getElementType(), tensor, at);
    return toF32(bb, loc, element);
  };
  summary.wholeMin = build(ReductionKind::Min, wholeNames, wholeReduced,
                           wholeExtents, wholeBody);
  summary.wholeMax = build(ReductionKind::Max, wholeNames, wholeReduced,
                           wholeExtents, wholeBody);
  return &summaries.try_emplace(key, std::move(summary)).first->second;
}

//===----------------------------------------------------------------------===//
// Entry point
//===----------------------------------------------------------------------===//

TileClassReport TileClassifier::classify(AttentionOp op) {
  return classify(op, op.getMaskBlock(), op.getTileClass());
}

TileClassReport TileClassifier::classify(AttentionBackwardOp op) {
  return classify(op, op.getMaskBlock(), op.getTileClass());
}

TileClassReport TileClassifier::classify(Operation *op, Block &mask,
                                         Region &region) {
  region.dropAllReferences();
  region.getBlocks().clear();
  Block *block = new Block();
  region.push_back(block);
  Location loc = op->getLoc();
  for (int i = 0; i < 6; ++i)
    block->addArgument(IndexType::get(op->getContext()), loc);

  MaskInterpreter interpreter(*this, op, mask, *block);
  AbstractValue predicate = interpreter.run();
  interpreter.emitYield(predicate);

  // Drop what the interpretation built but the class does not use (bounds
  // of values only compared for one side, unused exact reads).
  SmallVector<Operation *> built;
  for (Operation &builtOp : block->without_terminator())
    built.push_back(&builtOp);
  for (Operation *builtOp : llvm::reverse(built))
    if (isOpTriviallyDead(builtOp))
      builtOp->erase();

  TileClassReport report;
  report.interpreted = !predicate.isUnknown();
  report.usesSummaries = interpreter.usedSummaries;
  if (!report.interpreted)
    report.reason = interpreter.reason.empty() ? "the mask is not an i1 "
                                                 "predicate it can bound"
                                               : interpreter.reason;
  return report;
}
