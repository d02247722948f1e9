//===- NVPTXMath.cpp - Transcendentals as PTX approximations --------------===//
//
// convert-gpu-to-nvvm turns math ops into libdevice calls, which need
// libdevice.10.bc at compile time (found only where a CUDA toolkit is
// installed, so the PTX would depend on the build machine) and cost tens of
// instructions each. The softmax and the usual score mods (softcap's tanh,
// ALiBi, sigmoid, softplus) are fine with the hardware approximations
// (ex2/lg2.approx: about 2 ulp), so every math op is emitted directly.
// Likewise a division by a value from outside the loop or branch it is in
// (softcap's s / cap, a launch parameter) becomes a product with the
// reciprocal, computed once: f32 division is a subroutine of a dozen
// instructions per element, the product one (within 1.5 ulp of it).
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Matchers.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

static Value callUnary(OpBuilder &builder, Location loc, StringRef intrinsic,
                       Value x) {
  return LLVM::CallIntrinsicOp::create(builder, loc, x.getType(),
                                       builder.getStringAttr(intrinsic),
                                       ValueRange{x})
      .getResult(0);
}

static Value constantF32(OpBuilder &builder, Location loc, double value) {
  return arith::ConstantOp::create(builder, loc,
                                   builder.getF32FloatAttr(value));
}

Value mlir::attn::createExp2(OpBuilder &builder, Location loc, Value x) {
  return callUnary(builder, loc, "llvm.nvvm.ex2.approx.ftz.f", x);
}

Value mlir::attn::createLog2(OpBuilder &builder, Location loc, Value x) {
  return callUnary(builder, loc, "llvm.nvvm.lg2.approx.ftz.f", x);
}

NormalizerMath mlir::attn::getNVPTXNormalizerMath() {
  NormalizerMath math;
  math.base = NormalizerMath::Base::Two;
  math.exp = createExp2;
  math.log = createLog2;
  math.max = [](OpBuilder &builder, Location loc, Value x, Value y) -> Value {
    return LLVM::MaxNumOp::create(builder, loc, x, y);
  };
  math.fma = [](OpBuilder &builder, Location loc, Value x, Value y,
                Value z) -> Value {
    return LLVM::FMAOp::create(builder, loc, x, y, z);
  };
  return math;
}

/// tanh(x) = 1 - 2 / (2^(2x log2 e) + 1): exact at both infinities and with
/// an absolute error near 1e-7, which softcap (c * tanh(s / c)) needs more
/// than the relative accuracy of tanh.approx.f32 (2^-11).
static Value createTanh(OpBuilder &builder, Location loc, Value x) {
  Value twoLog2e = constantF32(builder, loc, 2.0 * M_LOG2E);
  Value e = createExp2(builder, loc,
                       arith::MulFOp::create(builder, loc, x, twoLog2e));
  Value one = constantF32(builder, loc, 1.0);
  Value two = constantF32(builder, loc, 2.0);
  // rcp.approx (1 ulp) rather than the IEEE division subroutine.
  Value ratio = arith::MulFOp::create(
      builder, loc, two,
      callUnary(builder, loc, "llvm.nvvm.rcp.approx.ftz.f",
                arith::AddFOp::create(builder, loc, e, one)));
  return arith::SubFOp::create(builder, loc, one, ratio);
}

/// log1p(x) = log(u) x / (u - 1) with u = 1 + x rounded (Goldberg): accurate
/// for small |x|, where log(1 + x) alone would lose every digit.
static Value createLog1p(OpBuilder &builder, Location loc, Value x) {
  Value one = constantF32(builder, loc, 1.0);
  Value u = arith::AddFOp::create(builder, loc, x, one);
  Value uMinusOne = arith::SubFOp::create(builder, loc, u, one);
  Value logU = arith::MulFOp::create(builder, loc, createLog2(builder, loc, u),
                                     constantF32(builder, loc, M_LN2));
  Value scaled = arith::DivFOp::create(
      builder, loc, arith::MulFOp::create(builder, loc, logU, x), uMinusOne);
  Value exact = arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OEQ,
                                      uMinusOne, constantF32(builder, loc, 0.0));
  // u = 1 + x overflows to inf for huge x: log(u) is the answer then.
  Value huge = arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OEQ, u,
                                     constantF32(builder, loc, INFINITY));
  Value result = arith::SelectOp::create(builder, loc, exact, x, scaled);
  return arith::SelectOp::create(builder, loc, huge, logU, result);
}

/// x^y: repeated products for small integer exponents (exact, and defined
/// for negative x), else 2^(y log2 x) (NaN for negative x, as powf with a
/// non-integer exponent).
static Value createPow(OpBuilder &builder, Location loc, Value x, Value y) {
  FloatAttr exponent;
  if (matchPattern(y, m_Constant(&exponent))) {
    double value = exponent.getValueAsDouble();
    if (value == std::trunc(value) && std::fabs(value) <= 4) {
      Value result = constantF32(builder, loc, 1.0);
      for (int i = 0; i < static_cast<int>(std::fabs(value)); ++i)
        result = arith::MulFOp::create(builder, loc, result, x);
      if (value < 0)
        result = arith::DivFOp::create(builder, loc,
                                       constantF32(builder, loc, 1.0), result);
      return result;
    }
  }
  return createExp2(builder, loc,
                    arith::MulFOp::create(builder, loc, y,
                                          createLog2(builder, loc, x)));
}

/// x / c for a constant c: x * (1 / c), folded; x / y nested deeper than
/// y's definition (in a loop, a branch): x * r, with r = 1 / y computed
/// once, right after y.
static void hoistInvariantDivisors(gpu::GPUFuncOp func) {
  SmallVector<arith::DivFOp> divisions;
  func.walk([&](arith::DivFOp op) {
    if (op.getType().isF32())
      divisions.push_back(op);
  });
  llvm::DenseMap<Value, Value> reciprocals;
  for (arith::DivFOp division : divisions) {
    Value divisor = division.getRhs();
    Location loc = division.getLoc();
    OpBuilder builder(division);
    Value reciprocal;
    FloatAttr constant;
    if (matchPattern(divisor, m_Constant(&constant))) {
      llvm::APFloat value(constant.getValue().getSemantics(), 1);
      value.divide(constant.getValue(), llvm::APFloat::rmNearestTiesToEven);
      reciprocal = constantF32(builder, loc, value.convertToFloat());
    } else {
      Block *home = divisor.getParentBlock();
      if (division->getBlock() == home)
        continue;
      Value &hoisted = reciprocals[divisor];
      if (!hoisted) {
        OpBuilder::InsertionGuard insertion(builder);
        if (Operation *def = divisor.getDefiningOp())
          builder.setInsertionPointAfter(def);
        else
          builder.setInsertionPointToStart(home);
        hoisted = arith::DivFOp::create(
            builder, loc, constantF32(builder, loc, 1.0), divisor);
      }
      reciprocal = hoisted;
    }
    division.replaceAllUsesWith(
        arith::MulFOp::create(builder, loc, division.getLhs(), reciprocal)
            .getResult());
    division.erase();
  }
}

LogicalResult mlir::attn::lowerMathForNVPTX(gpu::GPUFuncOp func) {
  hoistInvariantDivisors(func);
  SmallVector<Operation *> ops;
  func.walk([&](Operation *op) {
    if (isa<math::MathDialect>(op->getDialect()))
      ops.push_back(op);
  });
  for (Operation *op : ops) {
    if (!op->getResult(0).getType().isF32())
      return op->emitError() << "attn-nvgpu: '" << op->getName()
                             << "' on a non-f32 value has no PTX lowering";
    OpBuilder builder(op);
    Location loc = op->getLoc();
    Value x = op->getOperand(0);
    Value result;
    if (isa<math::ExpOp>(op))
      result = createExp2(
          builder, loc,
          arith::MulFOp::create(builder, loc, x,
                                constantF32(builder, loc, M_LOG2E)));
    else if (isa<math::Exp2Op>(op))
      result = createExp2(builder, loc, x);
    else if (isa<math::LogOp>(op))
      result = arith::MulFOp::create(builder, loc, createLog2(builder, loc, x),
                                     constantF32(builder, loc, M_LN2));
    else if (isa<math::Log2Op>(op))
      result = createLog2(builder, loc, x);
    else if (isa<math::Log1pOp>(op))
      result = createLog1p(builder, loc, x);
    else if (isa<math::TanhOp>(op))
      result = createTanh(builder, loc, x);
    // As generic intrinsic calls: convert-gpu-to-nvvm would turn the
    // llvm.intr ops into libdevice calls.
    else if (isa<math::AbsFOp>(op))
      result = callUnary(builder, loc, "llvm.fabs.f32", x);
    else if (isa<math::SqrtOp>(op))
      result = callUnary(builder, loc, "llvm.sqrt.f32", x);
    else if (isa<math::RsqrtOp>(op))
      result = callUnary(builder, loc, "llvm.nvvm.rsqrt.approx.ftz.f", x);
    else if (isa<math::PowFOp>(op))
      result = createPow(builder, loc, x, op->getOperand(1));
    else
      // Anything else would become a libdevice call, which the kernel
      // cannot link: refuse it by name.
      return op->emitError() << "attn-nvgpu: '" << op->getName()
                             << "' has no PTX lowering";
    op->getResult(0).replaceAllUsesWith(result);
    op->erase();
  }
  return success();
}
