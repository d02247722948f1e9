//===- ScalarDerivatives.cpp - One derivative rule per scalar op ----------===//
//
// The rules agree with the reference evaluator's reverse mode
// (reference/lib/BodyAdjoint.cpp) where a function has a kink: maximumf and
// minimumf follow the operand they select (the first on ties), absf and the
// subgradient 0 at 0, powf's exponent derivative exists only for a > 0.
//
//===----------------------------------------------------------------------===//

#include "attn/Grad/ScalarDerivatives.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;

namespace mlir::attn {
namespace {

/// Builds derivative arithmetic in f32, treating null as 0.
class DerivativeBuilder {
public:
  DerivativeBuilder(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  Value constant(double value) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
  }
  /// `x` as f32 (operands of f32 ops already are).
  Value widen(Value x) {
    if (x.getType().isF32())
      return x;
    return arith::ExtFOp::create(b, loc, b.getF32Type(), x);
  }
  Value add(Value x, Value y) {
    if (!x)
      return y;
    if (!y)
      return x;
    return arith::AddFOp::create(b, loc, x, y);
  }
  Value sub(Value x, Value y) {
    if (!y)
      return x;
    if (!x)
      return arith::NegFOp::create(b, loc, y);
    return arith::SubFOp::create(b, loc, x, y);
  }
  Value mul(Value x, Value y) {
    if (!x || !y)
      return Value();
    return arith::MulFOp::create(b, loc, x, y);
  }
  Value div(Value x, Value y) {
    if (!x)
      return Value();
    return arith::DivFOp::create(b, loc, x, y);
  }
  Value neg(Value x) {
    return x ? arith::NegFOp::create(b, loc, x).getResult() : Value();
  }
  Value cmp(arith::CmpFPredicate predicate, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, predicate, x, y);
  }
  /// `condition ? x : y` with null as 0.
  Value select(Value condition, Value x, Value y) {
    if (!x && !y)
      return Value();
    return arith::SelectOp::create(b, loc, condition, x ? x : constant(0.0),
                                   y ? y : constant(0.0));
  }

  OpBuilder &b;
  Location loc;
};

} // namespace

FailureOr<Value> differentiateScalarOp(OpBuilder &b, Operation *op,
                                       ArrayRef<Value> operandDerivatives) {
  if (llvm::none_of(operandDerivatives, [](Value d) { return !!d; }))
    return Value();
  if (op->getNumResults() != 1)
    return op->emitError("attn-grad: cannot differentiate '")
           << op->getName() << "'";
  Value result = op->getResult(0);
  DerivativeBuilder d(b, op->getLoc());
  auto x = [&](unsigned i) { return op->getOperand(i); };
  auto dx = [&](unsigned i) { return operandDerivatives[i]; };
  using Rule = std::function<Value()>;
  std::optional<Rule> rule =
      llvm::TypeSwitch<Operation *, std::optional<Rule>>(op)
          .Case([&](arith::AddFOp) -> Rule {
            return [&] { return d.add(dx(0), dx(1)); };
          })
          .Case([&](arith::SubFOp) -> Rule {
            return [&] { return d.sub(dx(0), dx(1)); };
          })
          .Case([&](arith::MulFOp) -> Rule {
            return [&] { return d.add(d.mul(dx(0), x(1)), d.mul(x(0), dx(1))); };
          })
          .Case([&](arith::DivFOp) -> Rule {
            // (da - (a / b) db) / b
            return [&] { return d.div(d.sub(dx(0), d.mul(result, dx(1))), x(1)); };
          })
          .Case([&](arith::RemFOp) -> Rule {
            // fmod(a, b) = a - trunc(a / b) b, trunc locally constant.
            return [&] {
              Value quotient =
                  arith::DivFOp::create(b, op->getLoc(), x(0), x(1));
              Value truncated = d.select(
                  d.cmp(arith::CmpFPredicate::OGE, quotient, d.constant(0.0)),
                  math::FloorOp::create(b, op->getLoc(), quotient),
                  math::CeilOp::create(b, op->getLoc(), quotient));
              return d.sub(dx(0), d.mul(truncated, dx(1)));
            };
          })
          .Case([&](arith::NegFOp) -> Rule {
            return [&] { return d.neg(dx(0)); };
          })
          .Case<arith::MaximumFOp, arith::MinimumFOp, arith::MaxNumFOp,
                arith::MinNumFOp>([&](Operation *) -> Rule {
            // The operand the op selects: the first on ties.
            return [&] {
              bool isMax = isa<arith::MaximumFOp, arith::MaxNumFOp>(op);
              Value first = d.cmp(isMax ? arith::CmpFPredicate::OGE
                                        : arith::CmpFPredicate::OLE,
                                  x(0), x(1));
              return d.select(first, dx(0), dx(1));
            };
          })
          .Case([&](math::ExpOp) -> Rule {
            return [&] { return d.mul(result, dx(0)); };
          })
          .Case([&](math::Exp2Op) -> Rule {
            return [&] { return d.mul(d.mul(result, d.constant(M_LN2)), dx(0)); };
          })
          .Case([&](math::LogOp) -> Rule {
            return [&] { return d.div(dx(0), x(0)); };
          })
          .Case([&](math::Log1pOp) -> Rule {
            return [&] {
              return d.div(dx(0), d.add(d.constant(1.0), x(0)));
            };
          })
          .Case([&](math::SqrtOp) -> Rule {
            return [&] { return d.div(dx(0), d.mul(d.constant(2.0), result)); };
          })
          .Case([&](math::RsqrtOp) -> Rule {
            // -1/2 a^(-3/2) = -1/2 rsqrt(a) / a
            return [&] {
              return d.mul(d.div(d.mul(d.constant(-0.5), result), x(0)), dx(0));
            };
          })
          .Case([&](math::TanhOp) -> Rule {
            return [&] {
              return d.mul(d.sub(d.constant(1.0), d.mul(result, result)), dx(0));
            };
          })
          .Case([&](math::AbsFOp) -> Rule {
            // Subgradient 0 at the kink.
            return [&] {
              Value zero = d.constant(0.0);
              Value sign = d.select(
                  d.cmp(arith::CmpFPredicate::OGT, x(0), zero), d.constant(1.0),
                  d.select(d.cmp(arith::CmpFPredicate::OLT, x(0), zero),
                           d.constant(-1.0), zero));
              return d.mul(sign, dx(0));
            };
          })
          .Case([&](math::PowFOp) -> Rule {
            // b a^(b-1) da + a^b log(a) db (the latter for a > 0 only).
            return [&] {
              Value base = x(0), exponent = x(1);
              Value one = d.constant(1.0), zero = d.constant(0.0);
              Value power = math::PowFOp::create(
                  b, op->getLoc(), base,
                  arith::SubFOp::create(b, op->getLoc(), exponent, one));
              Value byBase = dx(0)
                                 ? d.select(d.cmp(arith::CmpFPredicate::ONE,
                                                  exponent, zero),
                                            d.mul(d.mul(exponent, power), dx(0)),
                                            Value())
                                 : Value();
              Value byExponent;
              if (dx(1)) {
                Value positive =
                    d.cmp(arith::CmpFPredicate::OGT, base, zero);
                Value safeBase = d.select(positive, base, one);
                byExponent = d.select(
                    positive,
                    d.mul(d.mul(result,
                                math::LogOp::create(b, op->getLoc(), safeBase)),
                          dx(1)),
                    Value());
              }
              return d.add(byBase, byExponent);
            };
          })
          .Case([&](arith::SelectOp) -> Rule {
            return [&] { return d.select(x(0), dx(1), dx(2)); };
          })
          .Case<arith::ExtFOp, arith::TruncFOp>([&](Operation *) -> Rule {
            return [&] { return dx(0); };
          })
          .Case<math::FloorOp, math::CeilOp, math::TruncOp, math::RoundOp,
                arith::CmpFOp, arith::FPToSIOp, arith::FPToUIOp>(
              [&](Operation *) -> Rule { return [] { return Value(); }; })
          .Default([&](Operation *) -> std::optional<Rule> {
            // Integer arithmetic has no derivative; anything else that
            // yields a float has no rule yet.
            if (!isa<FloatType>(result.getType()))
              return Rule([] { return Value(); });
            return std::nullopt;
          });
  if (!rule)
    return op->emitError("attn-grad: no derivative rule for '")
           << op->getName() << "'";
  return (*rule)();
}

} // namespace mlir::attn
