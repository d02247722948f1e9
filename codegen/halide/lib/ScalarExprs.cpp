//===- ScalarExprs.cpp - Cascade scalar ops as Halide expressions ---------===//

#include "ScalarExprs.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

using namespace mlir;
using namespace ::attn::halide;
namespace HL = Halide;

FailureOr<HL::Type> (::attn::halide::getHalideType)(Type type) {
  if (type.isIndex())
    return HL::Int(64);
  if (type.isF32())
    return HL::Float(32);
  if (type.isF64())
    return HL::Float(64);
  if (type.isF16())
    return HL::Float(16);
  if (type.isBF16())
    return HL::BFloat(16);
  if (type.isInteger(1))
    return HL::Bool();
  if (auto integer = dyn_cast<IntegerType>(type))
    if (integer.getWidth() == 8 || integer.getWidth() == 16 ||
        integer.getWidth() == 32 || integer.getWidth() == 64)
      return HL::Int(integer.getWidth());
  return failure();
}

FailureOr<HL::Expr> ScalarTranslator::lookup(Value value,
                                             Operation *user) const {
  auto it = exprs.find(value);
  if (it != exprs.end())
    return it->second;
  if (parent && parent->contains(value))
    return parent->lookup(value, user);
  // Constants defined outside the body (CSE may hoist them) translate on
  // first use.
  if (Operation *def = value.getDefiningOp())
    if (auto constant = dyn_cast<arith::ConstantOp>(def)) {
      ScalarTranslator local;
      if (succeeded(local.translate(*def)))
        return local.exprs.lookup(value);
    }
  user->emitOpError() << "uses a value the Halide backend does not know";
  return failure();
}

namespace {

/// a / b rounded toward -inf (arith.floordivsi); Halide divides
/// Euclidean-style, which differs for negative divisors.
HL::Expr floorDiv(HL::Expr a, HL::Expr b) {
  HL::Expr euclid = a / b;
  HL::Expr rest = a - euclid * b;
  return HL::select(b < 0 && rest != 0, euclid - 1, euclid);
}

/// C's fmod: the remainder of the quotient rounded toward zero.
HL::Expr truncRem(HL::Expr a, HL::Expr b) {
  return a - b * HL::trunc(a / b);
}

/// log(1 + x) accurate for small x (Kahan's form); strict so that Halide's
/// simplifier does not fold (1 + x) - 1 into x.
HL::Expr accurateLog1p(HL::Expr x) {
  HL::Expr u = 1.0f + x;
  return HL::strict_float(
      HL::select(u == 1.0f, x, HL::log(u) * x / (u - 1.0f)));
}

HL::Expr compareFloats(arith::CmpFPredicate predicate, HL::Expr a,
                       HL::Expr b) {
  using P = arith::CmpFPredicate;
  HL::Expr unordered = HL::is_nan(a) || HL::is_nan(b);
  switch (predicate) {
  case P::AlwaysFalse:
    return HL::cast<bool>(false);
  case P::AlwaysTrue:
    return HL::cast<bool>(true);
  case P::OEQ:
    return a == b;
  case P::OGT:
    return a > b;
  case P::OGE:
    return a >= b;
  case P::OLT:
    return a < b;
  case P::OLE:
    return a <= b;
  case P::ONE:
    return a < b || a > b;
  case P::ORD:
    return !unordered;
  case P::UEQ:
    return a == b || unordered;
  case P::UGT:
    return !(a <= b);
  case P::UGE:
    return !(a < b);
  case P::ULT:
    return !(a >= b);
  case P::ULE:
    return !(a > b);
  case P::UNE:
    return !(a == b);
  case P::UNO:
    return unordered;
  }
  return HL::Expr();
}

HL::Expr compareIntegers(arith::CmpIPredicate predicate, HL::Expr a,
                         HL::Expr b) {
  using P = arith::CmpIPredicate;
  auto asUnsigned = [](HL::Expr x) {
    return HL::cast(HL::UInt(x.type().bits()), x);
  };
  switch (predicate) {
  case P::eq:
    return a == b;
  case P::ne:
    return a != b;
  case P::slt:
    return a < b;
  case P::sle:
    return a <= b;
  case P::sgt:
    return a > b;
  case P::sge:
    return a >= b;
  case P::ult:
    return asUnsigned(a) < asUnsigned(b);
  case P::ule:
    return asUnsigned(a) <= asUnsigned(b);
  case P::ugt:
    return asUnsigned(a) > asUnsigned(b);
  case P::uge:
    return asUnsigned(a) >= asUnsigned(b);
  }
  return HL::Expr();
}

HL::Expr constantExpr(Attribute value, HL::Type type) {
  if (auto f = dyn_cast<FloatAttr>(value))
    return HL::cast(type, HL::Expr(f.getValueAsDouble()));
  if (auto i = dyn_cast<IntegerAttr>(value)) {
    if (type.is_bool())
      return HL::cast<bool>(i.getValue().getBoolValue());
    return HL::cast(type, HL::Expr(i.getValue().getSExtValue()));
  }
  return HL::Expr();
}

} // namespace

FailureOr<HL::Expr> ScalarTranslator::translateExpr(Operation &op) {
  SmallVector<HL::Expr> in;
  // A read's tensor is the read function's business; its subscripts are
  // scalars.
  ValueRange operands = op.getOperands();
  if (auto read = dyn_cast<mlir::attn::ReadOp>(op))
    operands = read.getSubscripts();
  for (Value operand : operands) {
    FailureOr<HL::Expr> e = lookup(operand, &op);
    if (failed(e))
      return failure();
    in.push_back(*e);
  }
  HL::Type resultType;
  if (op.getNumResults() == 1) {
    FailureOr<HL::Type> type = getHalideType(op.getResult(0).getType());
    if (failed(type))
      return op.emitOpError() << "has a result type the Halide backend does "
                                 "not support: "
                              << op.getResult(0).getType();
    resultType = *type;
  }
  auto unsupported = [&]() -> FailureOr<HL::Expr> {
    return op.emitOpError() << "is not supported by the Halide backend";
  };
  if (auto read = dyn_cast<mlir::attn::ReadOp>(op)) {
    if (!this->read)
      return unsupported();
    return this->read(read, in);
  }
  if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
    HL::Expr e = constantExpr(constant.getValue(), resultType);
    if (!e.defined())
      return unsupported();
    return e;
  }
  HL::Expr e =
      llvm::TypeSwitch<Operation *, HL::Expr>(&op)
          .Case<arith::AddFOp, arith::AddIOp>(
              [&](auto) { return in[0] + in[1]; })
          .Case<arith::SubFOp, arith::SubIOp>(
              [&](auto) { return in[0] - in[1]; })
          .Case<arith::MulFOp, arith::MulIOp>(
              [&](auto) { return in[0] * in[1]; })
          .Case<arith::DivFOp>([&](auto) { return in[0] / in[1]; })
          .Case<arith::NegFOp>([&](auto) { return -in[0]; })
          .Case<arith::RemFOp>([&](auto) { return truncRem(in[0], in[1]); })
          .Case<arith::MaximumFOp, arith::MaxNumFOp, arith::MaxSIOp>(
              [&](auto) { return HL::max(in[0], in[1]); })
          .Case<arith::MinimumFOp, arith::MinNumFOp, arith::MinSIOp>(
              [&](auto) { return HL::min(in[0], in[1]); })
          .Case<arith::DivSIOp>(
              [&](auto) { return HL::div_round_to_zero(in[0], in[1]); })
          .Case<arith::RemSIOp>(
              [&](auto) { return HL::mod_round_to_zero(in[0], in[1]); })
          .Case<arith::FloorDivSIOp>(
              [&](auto) { return floorDiv(in[0], in[1]); })
          .Case<arith::AndIOp>([&](auto) {
            return in[0].type().is_bool() ? in[0] && in[1] : in[0] & in[1];
          })
          .Case<arith::OrIOp>([&](auto) {
            return in[0].type().is_bool() ? in[0] || in[1] : in[0] | in[1];
          })
          .Case<arith::XOrIOp>([&](auto) {
            return in[0].type().is_bool() ? in[0] != in[1] : in[0] ^ in[1];
          })
          .Case<arith::CmpFOp>([&](arith::CmpFOp cmp) {
            return compareFloats(cmp.getPredicate(), in[0], in[1]);
          })
          .Case<arith::CmpIOp>([&](arith::CmpIOp cmp) {
            return compareIntegers(cmp.getPredicate(), in[0], in[1]);
          })
          .Case<arith::SelectOp>(
              [&](auto) { return HL::select(in[0], in[1], in[2]); })
          .Case<arith::IndexCastOp, arith::SIToFPOp, arith::FPToSIOp,
                arith::ExtFOp, arith::TruncFOp, arith::ExtSIOp,
                arith::TruncIOp>(
              [&](auto) { return HL::cast(resultType, in[0]); })
          .Case<arith::UIToFPOp, arith::ExtUIOp>([&](auto) {
            if (in[0].type().is_bool())
              return HL::select(in[0], HL::cast(resultType, 1),
                                HL::cast(resultType, 0));
            return HL::cast(resultType,
                            HL::cast(HL::UInt(in[0].type().bits()), in[0]));
          })
          .Case<math::ExpOp>([&](auto) { return HL::exp(in[0]); })
          .Case<math::Exp2Op>([&](auto) {
            return HL::pow(HL::cast(resultType, 2.0f), in[0]);
          })
          .Case<math::LogOp>([&](auto) { return HL::log(in[0]); })
          .Case<math::Log2Op>([&](auto) {
            return HL::log(in[0]) * HL::cast(resultType, HL::Expr(1.0 / std::log(2.0)));
          })
          .Case<math::Log1pOp>([&](auto) { return accurateLog1p(in[0]); })
          .Case<math::SqrtOp>([&](auto) { return HL::sqrt(in[0]); })
          .Case<math::RsqrtOp>([&](auto) {
            return HL::cast(resultType, 1.0f) / HL::sqrt(in[0]);
          })
          .Case<math::TanhOp>([&](auto) { return HL::tanh(in[0]); })
          .Case<math::AbsFOp>([&](auto) { return HL::abs(in[0]); })
          .Case<math::PowFOp>([&](auto) { return HL::pow(in[0], in[1]); })
          .Case<math::FloorOp>([&](auto) { return HL::floor(in[0]); })
          .Case<math::CeilOp>([&](auto) { return HL::ceil(in[0]); })
          .Case<math::FmaOp>([&](auto) { return in[0] * in[1] + in[2]; })
          .Default([](Operation *) { return HL::Expr(); });
  if (!e.defined())
    return unsupported();
  // Halide's abs of a float is a float, of an int unsigned; keep MLIR's.
  if (e.type() != resultType)
    e = HL::cast(resultType, e);
  return e;
}

LogicalResult ScalarTranslator::translate(Operation &op) {
  if (op.getNumResults() != 1)
    return op.emitOpError() << "is not supported by the Halide backend";
  FailureOr<HL::Expr> e = translateExpr(op);
  if (failed(e))
    return failure();
  exprs[op.getResult(0)] = *e;
  return success();
}

LogicalResult ScalarTranslator::translateBody(Block &block) {
  for (Operation &op : block.without_terminator())
    if (failed(translate(op)))
      return failure();
  return success();
}

ScalarTemplate::ScalarTemplate(MLIRContext *context, unsigned numArgs)
    : block(std::make_unique<Block>()), builder(context),
      loc(UnknownLoc::get(context)) {
  context->getOrLoadDialect<arith::ArithDialect>();
  context->getOrLoadDialect<math::MathDialect>();
  Type f32 = Float32Type::get(context);
  for (unsigned i = 0; i < numArgs; ++i)
    block->addArgument(f32, loc);
  builder.setInsertionPointToEnd(block.get());
}

ScalarTemplate::~ScalarTemplate() {
  block->dropAllDefinedValueUses();
  // Erase in reverse so that no op outlives its users.
  while (!block->empty())
    block->back().erase();
}

FailureOr<HL::Expr> ScalarTemplate::instantiate(Value result,
                                                ArrayRef<HL::Expr> args) {
  if (auto arg = dyn_cast<BlockArgument>(result))
    return args[arg.getArgNumber()];
  ScalarTranslator translator;
  for (auto [i, arg] : llvm::enumerate(args))
    translator.map(block->getArgument(i), arg);
  for (Operation &op : *block) {
    if (failed(translator.translate(op)))
      return failure();
    if (op.getResult(0) == result)
      break;
  }
  return translator.lookup(result, result.getDefiningOp());
}
