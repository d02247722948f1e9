//===- NVPTXMath.cpp - Transcendentals as PTX approximations --------------===//
//
// convert-gpu-to-nvvm turns math ops into libdevice calls, which needs
// libdevice.10.bc at compile time and costs tens of instructions each. The
// softmax and the usual score mods (softcap's tanh, ALiBi, sigmoid) are fine
// with the hardware approximations (ex2/lg2.approx: about 2 ulp), so they
// are emitted directly.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"

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

/// tanh(x) = 1 - 2 / (2^(2x log2 e) + 1): exact at both infinities and with
/// an absolute error near 1e-7, which softcap (c * tanh(s / c)) needs more
/// than the relative accuracy of tanh.approx.f32 (2^-11).
static Value createTanh(OpBuilder &builder, Location loc, Value x) {
  Value twoLog2e = constantF32(builder, loc, 2.0 * M_LOG2E);
  Value e = createExp2(builder, loc,
                       arith::MulFOp::create(builder, loc, x, twoLog2e));
  Value one = constantF32(builder, loc, 1.0);
  Value two = constantF32(builder, loc, 2.0);
  Value ratio = arith::DivFOp::create(
      builder, loc, two, arith::AddFOp::create(builder, loc, e, one));
  return arith::SubFOp::create(builder, loc, one, ratio);
}

void mlir::attn::lowerMathForNVPTX(gpu::GPUFuncOp func) {
  SmallVector<Operation *> ops;
  func.walk([&](Operation *op) {
    if (isa<math::ExpOp, math::Exp2Op, math::LogOp, math::Log2Op,
            math::TanhOp>(op) &&
        op->getResult(0).getType().isF32())
      ops.push_back(op);
  });
  for (Operation *op : ops) {
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
    else
      result = createTanh(builder, loc, x);
    op->getResult(0).replaceAllUsesWith(result);
    op->erase();
  }
}
