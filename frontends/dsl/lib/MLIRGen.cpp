//===- MLIRGen.cpp - From checked .attn specs to the attn dialect ---------===//

#include "attn/Frontend/MLIRGen.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <optional>

using namespace attn::dsl;
using namespace mlir;
using llvm::SMLoc;
using llvm::SMRange;
using llvm::SourceMgr;

namespace {

/// A scalar value in a body with the kind the language gives it: `index`
/// for Int, f32 for Float, i1 for Bool.
struct Scalar {
  Value value;
  ScalarKind kind = ScalarKind::Float;
};

class Generator {
public:
  Generator(SourceMgr &sourceMgr, MLIRContext &context, const Spec &spec,
            const SemaResult &sema, const FrontendOptions &options)
      : sourceMgr(sourceMgr), context(context), spec(spec), sema(sema),
        options(options), builder(&context) {}

  FailureOr<OwningOpRef<ModuleOp>> run();

private:
  //===--------------------------------------------------------------------===//
  // Helpers
  //===--------------------------------------------------------------------===//

  Location loc(SMLoc where) {
    if (!where.isValid())
      return UnknownLoc::get(&context);
    unsigned buffer = sourceMgr.FindBufferContainingLoc(where);
    if (!buffer)
      return UnknownLoc::get(&context);
    auto [line, column] = sourceMgr.getLineAndColumn(where, buffer);
    StringRef name = sourceMgr.getMemoryBuffer(buffer)->getBufferIdentifier();
    return FileLineColLoc::get(&context, name, line, column);
  }
  Location loc(SMRange range) { return loc(range.Start); }

  /// Reports a bug of the front end (Sema let through what MLIRGen cannot
  /// lower); never a user error.
  void internalError(SMRange range, const llvm::Twine &message) {
    if (hadError)
      return;
    hadError = true;
    sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Error,
                           "internal error in the .attn front end: " + message);
  }

  Type f32() { return builder.getF32Type(); }
  Type mlirType(ElemType type, bool applyOverride);
  RankedTensorType computedType(size_t rank, Type elem) {
    return RankedTensorType::get(
        SmallVector<int64_t>(rank, ShapedType::kDynamic), elem);
  }
  Type elemTypeOf(ScalarKind kind) {
    switch (kind) {
    case ScalarKind::Float:
      return f32();
    case ScalarKind::Int:
      return builder.getI64Type();
    case ScalarKind::Bool:
      return builder.getI1Type();
    }
    return f32();
  }

  Value constIndex(int64_t value, Location where) {
    return arith::ConstantOp::create(builder, where,
                                     builder.getIndexAttr(value));
  }
  Value constF32(double value, Location where) {
    llvm::APFloat number(value);
    bool losesInfo = false;
    number.convert(llvm::APFloat::IEEEsingle(),
                   llvm::APFloat::rmNearestTiesToEven, &losesInfo);
    return arith::ConstantOp::create(builder, where,
                                     builder.getFloatAttr(f32(), number));
  }
  Value constBool(bool value, Location where) {
    return arith::ConstantOp::create(builder, where,
                                     builder.getBoolAttr(value));
  }

  //===--------------------------------------------------------------------===//
  // Scalars
  //===--------------------------------------------------------------------===//

  Value convert(Scalar scalar, ScalarKind to, Location where);
  Scalar gen(const Expr &expr);
  Value genAs(const Expr &expr, ScalarKind kind);
  Scalar genName(const Expr &expr);
  Scalar genBinary(const Expr &expr);
  Scalar genCall(const Expr &expr);
  Scalar read(Value tensor, ValueRange subscripts, Location where);
  Value indexArg(StringRef name, SMRange range);
  Value intBinary(BinaryOp op, Value lhs, Value rhs, Location where);
  Value floatBinary(BinaryOp op, Value lhs, Value rhs, Location where);
  Value toElement(Scalar scalar, Type elem, Location where);

  //===--------------------------------------------------------------------===//
  // Cascade ops
  //===--------------------------------------------------------------------===//

  Value genExtent(const Extent &extent, Location where);
  LogicalResult hoist(const Expr &expr);
  FailureOr<Value> emitEinsum(mlir::attn::ReductionKind kind,
                              ArrayRef<std::string> indices,
                              ArrayRef<std::string> reduced, const Expr &body,
                              Type elem, SMRange where);
  FailureOr<Value> emitValue(const Expr &rhs, ArrayRef<std::string> indices,
                             Type elem, SMRange where);
  LogicalResult genAssign(const Stmt &stmt, const StmtInfo &info);
  LogicalResult genNormalizer(const Stmt &stmt, const StmtInfo &info);
  LogicalResult genKeep(const Stmt &stmt, const StmtInfo &info);

  SourceMgr &sourceMgr;
  MLIRContext &context;
  const Spec &spec;
  const SemaResult &sema;
  const FrontendOptions &options;
  OpBuilder builder;
  mlir::attn::KernelOp kernel;
  Block *entry = nullptr;
  std::optional<Type> floatOverride;
  /// The statement being generated.
  const StmtInfo *info = nullptr;
  /// The current value of every tensor, by name.
  llvm::StringMap<Value> tensors;
  /// The index arguments of the body being generated, by name.
  llvm::StringMap<Value> indexArgs;
  /// Hoisted reductions of the current statement.
  llvm::DenseMap<const Expr *, Value> hoisted;
  bool hadError = false;
};

} // namespace

Type Generator::mlirType(ElemType type, bool applyOverride) {
  if (applyOverride && floatOverride &&
      (type == ElemType::F16 || type == ElemType::BF16 ||
       type == ElemType::F32))
    return *floatOverride;
  switch (type) {
  case ElemType::F16:
    return builder.getF16Type();
  case ElemType::BF16:
    return builder.getBF16Type();
  case ElemType::F32:
    return builder.getF32Type();
  case ElemType::F64:
    return builder.getF64Type();
  case ElemType::I1:
    return builder.getI1Type();
  case ElemType::I8:
    return builder.getIntegerType(8);
  case ElemType::I32:
    return builder.getI32Type();
  case ElemType::I64:
    return builder.getI64Type();
  }
  return builder.getF32Type();
}

//===----------------------------------------------------------------------===//
// Scalars
//===----------------------------------------------------------------------===//

Value Generator::convert(Scalar scalar, ScalarKind to, Location where) {
  if (!scalar.value)
    return nullptr;
  if (scalar.kind == to)
    return scalar.value;
  if (to == ScalarKind::Float) {
    if (scalar.kind == ScalarKind::Int) {
      Value wide = arith::IndexCastOp::create(
          builder, where, builder.getI64Type(), scalar.value);
      return arith::SIToFPOp::create(builder, where, f32(), wide);
    }
    return arith::UIToFPOp::create(builder, where, f32(), scalar.value);
  }
  if (to == ScalarKind::Int && scalar.kind == ScalarKind::Bool) {
    Value wide = arith::ExtUIOp::create(builder, where, builder.getI64Type(),
                                        scalar.value);
    return arith::IndexCastOp::create(builder, where, builder.getIndexType(),
                                      wide);
  }
  internalError(SMRange(), "cannot convert between scalar kinds");
  return nullptr;
}

Value Generator::genAs(const Expr &expr, ScalarKind kind) {
  if (expr.kind == ExprKind::IntLit && kind == ScalarKind::Float)
    return constF32(static_cast<double>(expr.intValue), loc(expr.range));
  return convert(gen(expr), kind, loc(expr.range));
}

Value Generator::indexArg(StringRef name, SMRange range) {
  Value value = indexArgs.lookup(name);
  if (!value)
    internalError(range, "index '" + name + "' is not bound here");
  return value;
}

Scalar Generator::read(Value tensor, ValueRange subscripts, Location where) {
  if (!tensor)
    return {};
  auto type = cast<RankedTensorType>(tensor.getType());
  if (llvm::any_of(subscripts, [](Value v) { return !v; }) ||
      type.getRank() != static_cast<int64_t>(subscripts.size())) {
    internalError(SMRange(), "a read does not match the tensor's rank");
    return {};
  }
  Value value = mlir::attn::ReadOp::create(
      builder, where, type.getElementType(), tensor, subscripts);
  Type elem = type.getElementType();
  if (elem.isF32())
    return {value, ScalarKind::Float};
  if (elem.isF16() || elem.isBF16())
    return {arith::ExtFOp::create(builder, where, f32(), value),
            ScalarKind::Float};
  if (elem.isF64())
    return {arith::TruncFOp::create(builder, where, f32(), value),
            ScalarKind::Float};
  if (elem.isInteger(1))
    return {value, ScalarKind::Bool};
  return {
      arith::IndexCastOp::create(builder, where, builder.getIndexType(), value),
      ScalarKind::Int};
}

Value Generator::intBinary(BinaryOp op, Value lhs, Value rhs, Location where) {
  switch (op) {
  case BinaryOp::Add:
    return arith::AddIOp::create(builder, where, lhs, rhs);
  case BinaryOp::Sub:
    return arith::SubIOp::create(builder, where, lhs, rhs);
  case BinaryOp::Mul:
    return arith::MulIOp::create(builder, where, lhs, rhs);
  case BinaryOp::Div:
    return arith::FloorDivSIOp::create(builder, where, lhs, rhs);
  case BinaryOp::Mod: {
    // Floored modulo: the remainder takes the sign of the divisor.
    Value rem = arith::RemSIOp::create(builder, where, lhs, rhs);
    Value zero = constIndex(0, where);
    Value nonZero = arith::CmpIOp::create(builder, where,
                                          arith::CmpIPredicate::ne, rem, zero);
    Value remNeg = arith::CmpIOp::create(builder, where,
                                         arith::CmpIPredicate::slt, rem, zero);
    Value rhsNeg = arith::CmpIOp::create(builder, where,
                                         arith::CmpIPredicate::slt, rhs, zero);
    Value signsDiffer = arith::XOrIOp::create(builder, where, remNeg, rhsNeg);
    Value fix = arith::AndIOp::create(builder, where, nonZero, signsDiffer);
    Value adjusted = arith::AddIOp::create(builder, where, rem, rhs);
    return arith::SelectOp::create(builder, where, fix, adjusted, rem);
  }
  default:
    break;
  }
  internalError(SMRange(), "unexpected integer operator");
  return nullptr;
}

Value Generator::floatBinary(BinaryOp op, Value lhs, Value rhs,
                             Location where) {
  switch (op) {
  case BinaryOp::Add:
    return arith::AddFOp::create(builder, where, lhs, rhs);
  case BinaryOp::Sub:
    return arith::SubFOp::create(builder, where, lhs, rhs);
  case BinaryOp::Mul:
    return arith::MulFOp::create(builder, where, lhs, rhs);
  case BinaryOp::Div:
    return arith::DivFOp::create(builder, where, lhs, rhs);
  case BinaryOp::Pow:
    return math::PowFOp::create(builder, where, lhs, rhs);
  case BinaryOp::Mod: {
    // Floored modulo, as for integers.
    Value rem = arith::RemFOp::create(builder, where, lhs, rhs);
    Value zero = constF32(0.0, where);
    Value nonZero = arith::CmpFOp::create(builder, where,
                                          arith::CmpFPredicate::UNE, rem, zero);
    Value remNeg = arith::CmpFOp::create(builder, where,
                                         arith::CmpFPredicate::OLT, rem, zero);
    Value rhsNeg = arith::CmpFOp::create(builder, where,
                                         arith::CmpFPredicate::OLT, rhs, zero);
    Value signsDiffer = arith::XOrIOp::create(builder, where, remNeg, rhsNeg);
    Value fix = arith::AndIOp::create(builder, where, nonZero, signsDiffer);
    Value adjusted = arith::AddFOp::create(builder, where, rem, rhs);
    return arith::SelectOp::create(builder, where, fix, adjusted, rem);
  }
  default:
    break;
  }
  internalError(SMRange(), "unexpected float operator");
  return nullptr;
}

static bool isComparison(BinaryOp op) {
  return op == BinaryOp::Lt || op == BinaryOp::Le || op == BinaryOp::Gt ||
         op == BinaryOp::Ge || op == BinaryOp::Eq || op == BinaryOp::Ne;
}

Scalar Generator::genBinary(const Expr &expr) {
  Location where = loc(expr.range);
  const Expr &lhsExpr = *expr.operands[0];
  const Expr &rhsExpr = *expr.operands[1];
  BinaryOp op = expr.binaryOp;
  if (op == BinaryOp::And || op == BinaryOp::Or) {
    Value lhs = genAs(lhsExpr, ScalarKind::Bool);
    Value rhs = genAs(rhsExpr, ScalarKind::Bool);
    if (!lhs || !rhs)
      return {};
    if (op == BinaryOp::And)
      return {arith::AndIOp::create(builder, where, lhs, rhs),
              ScalarKind::Bool};
    return {arith::OrIOp::create(builder, where, lhs, rhs), ScalarKind::Bool};
  }
  if (isComparison(op)) {
    ScalarKind operandKind;
    if (lhsExpr.type == ScalarKind::Float || rhsExpr.type == ScalarKind::Float)
      operandKind = ScalarKind::Float;
    else if (lhsExpr.type == ScalarKind::Bool &&
             rhsExpr.type == ScalarKind::Bool &&
             (op == BinaryOp::Eq || op == BinaryOp::Ne))
      operandKind = ScalarKind::Bool;
    else
      operandKind = ScalarKind::Int;
    Value lhs = genAs(lhsExpr, operandKind);
    Value rhs = genAs(rhsExpr, operandKind);
    if (!lhs || !rhs)
      return {};
    if (operandKind == ScalarKind::Float) {
      arith::CmpFPredicate pred;
      switch (op) {
      case BinaryOp::Lt:
        pred = arith::CmpFPredicate::OLT;
        break;
      case BinaryOp::Le:
        pred = arith::CmpFPredicate::OLE;
        break;
      case BinaryOp::Gt:
        pred = arith::CmpFPredicate::OGT;
        break;
      case BinaryOp::Ge:
        pred = arith::CmpFPredicate::OGE;
        break;
      case BinaryOp::Eq:
        pred = arith::CmpFPredicate::OEQ;
        break;
      default:
        pred = arith::CmpFPredicate::UNE;
        break;
      }
      return {arith::CmpFOp::create(builder, where, pred, lhs, rhs),
              ScalarKind::Bool};
    }
    arith::CmpIPredicate pred;
    switch (op) {
    case BinaryOp::Lt:
      pred = arith::CmpIPredicate::slt;
      break;
    case BinaryOp::Le:
      pred = arith::CmpIPredicate::sle;
      break;
    case BinaryOp::Gt:
      pred = arith::CmpIPredicate::sgt;
      break;
    case BinaryOp::Ge:
      pred = arith::CmpIPredicate::sge;
      break;
    case BinaryOp::Eq:
      pred = arith::CmpIPredicate::eq;
      break;
    default:
      pred = arith::CmpIPredicate::ne;
      break;
    }
    return {arith::CmpIOp::create(builder, where, pred, lhs, rhs),
            ScalarKind::Bool};
  }
  ScalarKind kind = expr.type;
  Value lhs = genAs(lhsExpr, kind);
  Value rhs = genAs(rhsExpr, kind);
  if (!lhs || !rhs)
    return {};
  if (kind == ScalarKind::Float)
    return {floatBinary(op, lhs, rhs, where), kind};
  return {intBinary(op, lhs, rhs, where), kind};
}

Scalar Generator::genCall(const Expr &expr) {
  Location where = loc(expr.range);
  ScalarKind kind = expr.type;
  auto arg = [&](unsigned i, ScalarKind k) {
    return genAs(*expr.operands[i], k);
  };
  switch (expr.builtin) {
  case Builtin::Select: {
    Value cond = arg(0, ScalarKind::Bool);
    Value lhs = arg(1, kind);
    Value rhs = arg(2, kind);
    if (!cond || !lhs || !rhs)
      return {};
    return {arith::SelectOp::create(builder, where, cond, lhs, rhs), kind};
  }
  case Builtin::Min:
  case Builtin::Max: {
    Value lhs = arg(0, kind);
    Value rhs = arg(1, kind);
    if (!lhs || !rhs)
      return {};
    bool isMax = expr.builtin == Builtin::Max;
    if (kind == ScalarKind::Float)
      return {isMax
                  ? Value(arith::MaximumFOp::create(builder, where, lhs, rhs))
                  : Value(arith::MinimumFOp::create(builder, where, lhs, rhs)),
              kind};
    return {isMax ? Value(arith::MaxSIOp::create(builder, where, lhs, rhs))
                  : Value(arith::MinSIOp::create(builder, where, lhs, rhs)),
            kind};
  }
  case Builtin::Relu:
  case Builtin::Abs: {
    Value x = arg(0, kind);
    if (!x)
      return {};
    bool isRelu = expr.builtin == Builtin::Relu;
    if (kind == ScalarKind::Float) {
      if (isRelu)
        return {
            arith::MaximumFOp::create(builder, where, x, constF32(0.0, where)),
            kind};
      return {math::AbsFOp::create(builder, where, x), kind};
    }
    Value zero = constIndex(0, where);
    if (isRelu)
      return {arith::MaxSIOp::create(builder, where, x, zero), kind};
    Value negated = arith::SubIOp::create(builder, where, zero, x);
    return {arith::MaxSIOp::create(builder, where, x, negated), kind};
  }
  default:
    break;
  }
  Value x = arg(0, ScalarKind::Float);
  if (!x)
    return {};
  switch (expr.builtin) {
  case Builtin::Exp:
    return {math::ExpOp::create(builder, where, x), ScalarKind::Float};
  case Builtin::Log:
    return {math::LogOp::create(builder, where, x), ScalarKind::Float};
  case Builtin::Sqrt:
    return {math::SqrtOp::create(builder, where, x), ScalarKind::Float};
  case Builtin::Rsqrt:
    return {math::RsqrtOp::create(builder, where, x), ScalarKind::Float};
  case Builtin::Tanh:
    return {math::TanhOp::create(builder, where, x), ScalarKind::Float};
  case Builtin::Sigmoid: {
    // 1 / (1 + exp(-x))
    Value negated = arith::NegFOp::create(builder, where, x);
    Value e = math::ExpOp::create(builder, where, negated);
    Value one = constF32(1.0, where);
    Value denom = arith::AddFOp::create(builder, where, one, e);
    return {arith::DivFOp::create(builder, where, one, denom),
            ScalarKind::Float};
  }
  case Builtin::Softplus: {
    // max(x, 0) + log1p(exp(-|x|)): no overflow for large |x|.
    Value zero = constF32(0.0, where);
    Value positive = arith::MaximumFOp::create(builder, where, x, zero);
    Value magnitude = math::AbsFOp::create(builder, where, x);
    Value negated = arith::NegFOp::create(builder, where, magnitude);
    Value e = math::ExpOp::create(builder, where, negated);
    Value tail = math::Log1pOp::create(builder, where, e);
    return {arith::AddFOp::create(builder, where, positive, tail),
            ScalarKind::Float};
  }
  default:
    break;
  }
  internalError(expr.range, "unexpected function");
  return {};
}

Scalar Generator::genName(const Expr &expr) {
  Location where = loc(expr.range);
  switch (expr.ref) {
  case NameRef::Index:
    return {indexArg(expr.name, expr.range), ScalarKind::Int};
  case NameRef::Dim:
    if (expr.refId >= spec.dims.size())
      break;
    return {kernel.getDimArg(expr.refId), ScalarKind::Int};
  case NameRef::Param: {
    if (expr.refId >= spec.params.size())
      break;
    Value arg = kernel.getParamArg(expr.refId);
    if (spec.params[expr.refId].type == ElemType::F32)
      return {arg, ScalarKind::Float};
    return {
        arith::IndexCastOp::create(builder, where, builder.getIndexType(), arg),
        ScalarKind::Int};
  }
  case NameRef::Let:
    if (expr.refId >= spec.stmts.size() || !spec.stmts[expr.refId].value)
      break;
    return gen(*spec.stmts[expr.refId].value);
  case NameRef::Tensor: {
    SmallVector<Value> subscripts;
    for (const std::string &index : expr.freeIndices)
      subscripts.push_back(indexArg(index, expr.range));
    Value tensor = tensors.lookup(expr.name);
    if (!tensor)
      break;
    return read(tensor, subscripts, where);
  }
  case NameRef::Unresolved:
    break;
  }
  internalError(expr.range, "unresolved name '" + expr.name + "'");
  return {};
}

Scalar Generator::gen(const Expr &expr) {
  if (hadError)
    return {};
  Location where = loc(expr.range);
  switch (expr.kind) {
  case ExprKind::IntLit:
    return {constIndex(expr.intValue, where), ScalarKind::Int};
  case ExprKind::FloatLit:
    return {constF32(expr.floatValue, where), ScalarKind::Float};
  case ExprKind::Name:
    return genName(expr);
  case ExprKind::Access: {
    SmallVector<Value> subscripts;
    for (const ExprPtr &sub : expr.operands)
      subscripts.push_back(genAs(*sub, ScalarKind::Int));
    Value tensor = tensors.lookup(expr.name);
    if (!tensor) {
      internalError(expr.range, "unknown tensor '" + expr.name + "'");
      return {};
    }
    return read(tensor, subscripts, where);
  }
  case ExprKind::Unary: {
    if (expr.unaryOp == UnaryOp::Not) {
      Value operand = genAs(*expr.operands[0], ScalarKind::Bool);
      if (!operand)
        return {};
      return {arith::XOrIOp::create(builder, where, operand,
                                    constBool(true, where)),
              ScalarKind::Bool};
    }
    Value operand = genAs(*expr.operands[0], expr.type);
    if (!operand)
      return {};
    if (expr.type == ScalarKind::Float)
      return {arith::NegFOp::create(builder, where, operand),
              ScalarKind::Float};
    return {
        arith::SubIOp::create(builder, where, constIndex(0, where), operand),
        ScalarKind::Int};
  }
  case ExprKind::Binary:
    return genBinary(expr);
  case ExprKind::Call:
    return genCall(expr);
  case ExprKind::Reduce: {
    Value tensor = hoisted.lookup(&expr);
    if (!tensor) {
      internalError(expr.range, "reduction was not hoisted");
      return {};
    }
    SmallVector<Value> subscripts;
    for (const std::string &index : expr.freeIndices)
      subscripts.push_back(indexArg(index, expr.range));
    return read(tensor, subscripts, where);
  }
  case ExprKind::Normalizer:
    break;
  }
  internalError(expr.range, "unexpected expression");
  return {};
}

/// Converts a body's scalar to the element type of the tensor it defines.
Value Generator::toElement(Scalar scalar, Type elem, Location where) {
  if (!scalar.value)
    return nullptr;
  if (isa<FloatType>(elem))
    return convert(scalar, ScalarKind::Float, where);
  if (elem.isInteger(1)) {
    if (scalar.kind == ScalarKind::Bool)
      return scalar.value;
  } else if (elem.isInteger()) {
    if (scalar.kind == ScalarKind::Bool)
      return arith::ExtUIOp::create(builder, where, elem, scalar.value);
    if (scalar.kind == ScalarKind::Int)
      return arith::IndexCastOp::create(builder, where, elem, scalar.value);
  }
  internalError(SMRange(), "cannot store a scalar in the tensor's type");
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Cascade ops
//===----------------------------------------------------------------------===//

Value Generator::genExtent(const Extent &extent, Location where) {
  switch (extent.kind) {
  case Extent::Kind::Const:
    return constIndex(extent.value, where);
  case Extent::Kind::Dim:
    if (extent.dim < spec.dims.size())
      return kernel.getDimArg(extent.dim);
    break;
  case Extent::Kind::Expr:
    if (extent.expr)
      return genAs(*extent.expr, ScalarKind::Int);
    break;
  }
  internalError(SMRange(), "invalid extent");
  return nullptr;
}

/// Emits every reduction nested in `expr` as its own einsum (innermost
/// first), so that the enclosing body reads it.
LogicalResult Generator::hoist(const Expr &expr) {
  for (const ExprPtr &operand : expr.operands)
    if (failed(hoist(*operand)))
      return failure();
  if (expr.sink && failed(hoist(*expr.sink)))
    return failure();
  if (expr.kind != ExprKind::Reduce)
    return success();
  SmallVector<std::string> reduced;
  for (const IndexDecl &decl : expr.indices)
    reduced.push_back(decl.name);
  auto kind = static_cast<mlir::attn::ReductionKind>(
      static_cast<unsigned>(expr.reduceOp) + 1);
  FailureOr<Value> value = emitEinsum(kind, expr.freeIndices, reduced,
                                      *expr.operands[0], f32(), expr.range);
  if (failed(value))
    return failure();
  hoisted[&expr] = *value;
  return success();
}

FailureOr<Value> Generator::emitEinsum(mlir::attn::ReductionKind kind,
                                       ArrayRef<std::string> indices,
                                       ArrayRef<std::string> reduced,
                                       const Expr &body, Type elem,
                                       SMRange where) {
  Location location = loc(where);
  SmallVector<Value> extents;
  SmallVector<StringRef> indexNames, reducedNames;
  for (const std::string &name : indices)
    indexNames.push_back(name);
  for (const std::string &name : reduced)
    reducedNames.push_back(name);
  for (StringRef name : llvm::concat<StringRef>(indexNames, reducedNames)) {
    auto it = info->ranges.find(name);
    if (it == info->ranges.end()) {
      internalError(where, "index '" + name + "' has no range");
      return failure();
    }
    Value extent = genExtent(it->second, location);
    if (!extent)
      return failure();
    extents.push_back(extent);
  }
  auto op = mlir::attn::EinsumOp::create(
      builder, location, computedType(indices.size(), elem), kind, indexNames,
      reducedNames, extents);
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(&op.getBodyBlock());
  llvm::StringMap<Value> saved = std::move(indexArgs);
  indexArgs.clear();
  for (auto [name, arg] :
       llvm::zip(llvm::concat<StringRef>(indexNames, reducedNames),
                 op.getBodyBlock().getArguments()))
    indexArgs[name] = arg;
  Value value = toElement(gen(body), elem, loc(body.range));
  indexArgs = std::move(saved);
  if (!value)
    return failure();
  mlir::attn::YieldOp::create(builder, loc(body.range), ValueRange{value});
  return op.getResult();
}

FailureOr<Value> Generator::emitValue(const Expr &rhs,
                                      ArrayRef<std::string> indices, Type elem,
                                      SMRange where) {
  if (rhs.kind == ExprKind::Reduce) {
    // A statement that is one reduction is one reducing einsum.
    if (failed(hoist(*rhs.operands[0])))
      return failure();
    SmallVector<std::string> reduced;
    for (const IndexDecl &decl : rhs.indices)
      reduced.push_back(decl.name);
    auto kind = static_cast<mlir::attn::ReductionKind>(
        static_cast<unsigned>(rhs.reduceOp) + 1);
    return emitEinsum(kind, indices, reduced, *rhs.operands[0], elem, where);
  }
  if (failed(hoist(rhs)))
    return failure();
  return emitEinsum(mlir::attn::ReductionKind::None, indices, {}, rhs, elem,
                    where);
}

LogicalResult Generator::genAssign(const Stmt &stmt, const StmtInfo &info) {
  if (stmt.value->kind == ExprKind::Normalizer)
    return genNormalizer(stmt, info);
  Type elem = info.declaredResultType
                  ? mlirType(*info.declaredResultType, false)
                  : elemTypeOf(info.valueType);
  FailureOr<Value> value =
      emitValue(*stmt.value, info.outIndices, elem, stmt.targetRange);
  if (failed(value))
    return failure();
  tensors[stmt.target] = *value;
  return success();
}

LogicalResult Generator::genNormalizer(const Stmt &stmt, const StmtInfo &info) {
  const Expr &norm = *stmt.value;
  // `normalize[n](softplus(x))` keeps the map apart from x, so that the row
  // can be computed relative to its largest entry (attn.normalize's map).
  mlir::attn::WeightMap map = mlir::attn::WeightMap::Identity;
  const Expr *mapped = norm.operands[0].get();
  if (norm.normalizerOp == NormalizerOp::Normalize &&
      mapped->kind == ExprKind::Call && mapped->operands.size() == 1) {
    std::optional<mlir::attn::WeightMap> known;
    switch (mapped->builtin) {
    case Builtin::Exp:
      known = mlir::attn::WeightMap::Exp;
      break;
    case Builtin::Softplus:
      known = mlir::attn::WeightMap::Softplus;
      break;
    case Builtin::Sigmoid:
      known = mlir::attn::WeightMap::Sigmoid;
      break;
    default:
      break;
    }
    if (known) {
      map = *known;
      mapped = mapped->operands[0].get();
    }
  }
  const Expr &operand = *mapped;
  Location location = loc(stmt.targetRange);
  // Use the tensor itself when the operand is a whole f32 tensor; otherwise
  // materialize the operand first.
  Value input;
  if (operand.kind == ExprKind::Name && operand.ref == NameRef::Tensor &&
      llvm::ArrayRef(operand.freeIndices) == llvm::ArrayRef(info.outIndices)) {
    Value tensor = tensors.lookup(operand.name);
    if (tensor &&
        cast<RankedTensorType>(tensor.getType()).getElementType().isF32())
      input = tensor;
  }
  if (!input) {
    FailureOr<Value> value =
        emitValue(operand, info.outIndices, f32(), operand.range);
    if (failed(value))
      return failure();
    input = *value;
  }
  const std::string &axisName = norm.indices[0].name;
  auto axisIt = llvm::find(info.outIndices, axisName);
  if (axisIt == info.outIndices.end()) {
    internalError(norm.range, "normalized index is not an operand index");
    return failure();
  }
  int64_t dimension = axisIt - info.outIndices.begin();
  Value result;
  if (norm.normalizerOp == NormalizerOp::Softmax) {
    Value sink;
    if (norm.sink) {
      SmallVector<std::string> sinkIndices;
      for (const std::string &index : info.outIndices)
        if (index != axisName)
          sinkIndices.push_back(index);
      FailureOr<Value> value =
          emitValue(*norm.sink, sinkIndices, f32(), norm.sink->range);
      if (failed(value))
        return failure();
      sink = *value;
    }
    result = mlir::attn::SoftmaxOp::create(
        builder, location, input.getType(), input,
        builder.getI64IntegerAttr(dimension), sink);
  } else {
    result = mlir::attn::NormalizeOp::create(
        builder, location, input.getType(), input,
        builder.getI64IntegerAttr(dimension),
        mlir::attn::WeightMapAttr::get(builder.getContext(), map));
  }
  tensors[stmt.target] = result;
  return success();
}

LogicalResult Generator::genKeep(const Stmt &stmt, const StmtInfo &info) {
  Value input = tensors.lookup(stmt.target);
  if (!input) {
    internalError(stmt.targetRange, "kept tensor is undefined");
    return failure();
  }
  if (failed(hoist(*stmt.value)))
    return failure();
  SmallVector<StringRef> names;
  for (const std::string &name : info.outIndices)
    names.push_back(name);
  Location location = loc(stmt.range);
  auto op = mlir::attn::KeepOp::create(builder, location, input, names);
  for (const Annotation &annotation : stmt.annotations) {
    if (annotation.name == "sinks" && annotation.args.size() == 1)
      op.setSinksAttr(builder.getI64IntegerAttr(annotation.args[0]));
    else if (annotation.name == "block")
      op.setBlockAttr(builder.getDenseI64ArrayAttr(annotation.args));
    else if (annotation.name == "per_head")
      op.setPerHeadAttr(builder.getUnitAttr());
  }
  {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(&op.getBodyBlock());
    indexArgs.clear();
    for (auto [name, arg] : llvm::zip(names, op.getBodyBlock().getArguments()))
      indexArgs[name] = arg;
    Value pred = genAs(*stmt.value, ScalarKind::Bool);
    indexArgs.clear();
    if (!pred)
      return failure();
    mlir::attn::YieldOp::create(builder, loc(stmt.value->range),
                                ValueRange{pred});
  }
  tensors[stmt.target] = op.getResult();
  return success();
}

//===----------------------------------------------------------------------===//
// Kernel
//===----------------------------------------------------------------------===//

FailureOr<OwningOpRef<ModuleOp>> Generator::run() {
  if (options.floatTypeOverride) {
    std::optional<ElemType> type = parseElemType(*options.floatTypeOverride);
    if (!type || !isFloatElemType(*type)) {
      sourceMgr.PrintMessage(spec.nameRange.Start, SourceMgr::DK_Error,
                             "invalid float type override '" +
                                 *options.floatTypeOverride +
                                 "' (expected f32, bf16, f16 or f64)");
      return failure();
    }
    floatOverride = mlirType(*type, false);
  }

  Location kernelLoc = loc(spec.nameRange);
  OwningOpRef<ModuleOp> module = ModuleOp::create(kernelLoc);
  builder.setInsertionPointToEnd(module->getBody());

  // The signature.
  SmallVector<Attribute> dimNames, inputNames, paramNames, paramDefaults,
      outputNames, outputTypes, shapes;
  SmallVector<int64_t> dimSizes;
  auto shapeOf = [&](const TensorDecl &decl) {
    SmallVector<Attribute> axes;
    for (const AxisDecl &axis : decl.shape) {
      if (axis.dim.empty())
        axes.push_back(builder.getI64IntegerAttr(axis.size));
      else
        axes.push_back(builder.getStringAttr(axis.dim));
    }
    return builder.getArrayAttr(axes);
  };
  for (const DimDecl &dim : spec.dims) {
    dimNames.push_back(builder.getStringAttr(dim.name));
    dimSizes.push_back(dim.size ? *dim.size : ShapedType::kDynamic);
  }
  for (const TensorDecl &decl : spec.inputs) {
    inputNames.push_back(builder.getStringAttr(decl.name));
    shapes.push_back(shapeOf(decl));
  }
  for (const ParamDecl &param : spec.params) {
    paramNames.push_back(builder.getStringAttr(param.name));
    Type type = mlirType(param.type, false);
    if (!param.hasDefault)
      paramDefaults.push_back(builder.getUnitAttr());
    else if (param.type == ElemType::F32)
      paramDefaults.push_back(builder.getFloatAttr(type, param.floatDefault));
    else
      paramDefaults.push_back(builder.getIntegerAttr(type, param.intDefault));
  }
  for (const TensorDecl &decl : spec.outputs) {
    outputNames.push_back(builder.getStringAttr(decl.name));
    outputTypes.push_back(TypeAttr::get(mlirType(decl.elemType, true)));
    shapes.push_back(shapeOf(decl));
  }
  kernel = mlir::attn::KernelOp::create(
      builder, kernelLoc, builder.getStringAttr(spec.name),
      builder.getArrayAttr(dimNames), builder.getDenseI64ArrayAttr(dimSizes),
      builder.getArrayAttr(inputNames), builder.getArrayAttr(paramNames),
      builder.getArrayAttr(paramDefaults), builder.getArrayAttr(outputNames),
      builder.getArrayAttr(outputTypes), builder.getArrayAttr(shapes));
  entry = &kernel.getBody().emplaceBlock();
  for (const DimDecl &dim : spec.dims)
    entry->addArgument(builder.getIndexType(), loc(dim.range));
  for (const TensorDecl &decl : spec.inputs) {
    SmallVector<int64_t> shape;
    for (const AxisDecl &axis : decl.shape) {
      if (axis.dim.empty()) {
        shape.push_back(axis.size);
        continue;
      }
      int64_t size = ShapedType::kDynamic;
      for (const DimDecl &dim : spec.dims)
        if (dim.name == axis.dim && dim.size)
          size = *dim.size;
      shape.push_back(size);
    }
    BlockArgument arg = entry->addArgument(
        RankedTensorType::get(shape, mlirType(decl.elemType, true)),
        loc(decl.range));
    tensors[decl.name] = arg;
  }
  for (const ParamDecl &param : spec.params)
    entry->addArgument(mlirType(param.type, false), loc(param.range));

  // The cascade, in program order.
  builder.setInsertionPointToEnd(entry);
  for (auto [stmt, stmtInfo] : llvm::zip(spec.stmts, sema.stmts)) {
    if (stmt.kind == StmtKind::Let)
      continue;
    info = &stmtInfo;
    hoisted.clear();
    builder.setInsertionPointToEnd(entry);
    LogicalResult status = stmt.kind == StmtKind::Assign
                               ? genAssign(stmt, stmtInfo)
                               : genKeep(stmt, stmtInfo);
    if (failed(status) || hadError) {
      internalError(stmt.range, "could not generate this statement");
      return failure();
    }
  }
  builder.setInsertionPointToEnd(entry);
  SmallVector<Value> results;
  for (const TensorDecl &decl : spec.outputs) {
    Value value = tensors.lookup(decl.name);
    if (!value) {
      internalError(decl.range, "output has no value");
      return failure();
    }
    results.push_back(value);
  }
  mlir::attn::ReturnOp::create(builder, kernelLoc, results);

  // A verifier failure here is a bug of the front end, not of the spec.
  std::string messages;
  {
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      llvm::raw_string_ostream os(messages);
      os << "\n  " << diag.getLocation() << ": " << diag;
      return success();
    });
    if (failed(mlir::verify(*module))) {
      internalError(spec.nameRange,
                    "the generated IR does not verify:" + messages);
      return failure();
    }
  }
  return module;
}

namespace attn::dsl {
FailureOr<OwningOpRef<ModuleOp>>
generateModule(SourceMgr &sourceMgr, MLIRContext &context, const Spec &spec,
               const SemaResult &sema, const FrontendOptions &options) {
  Generator generator(sourceMgr, context, spec, sema, options);
  return generator.run();
}
} // namespace attn::dsl
