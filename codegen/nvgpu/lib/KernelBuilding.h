//===- KernelBuilding.h - Pieces shared by the GPU kernel builder -*- C++
//-*-===//
//
// Private to codegen/nvgpu: how the values an attn.attention's regions
// read from above become kernel parameters, how a region is inlined into the
// kernel, and the NVPTX-specific rewrites applied to the inlined code.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_KERNELBUILDING_H
#define ATTN_NVGPU_KERNELBUILDING_H

#include "attn/NVGPU/GpuKernel.h"
#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"

#include <limits>

namespace mlir {
namespace gpu {
class GPUFuncOp;
} // namespace gpu
namespace attn {

/// Short builders for the scalar code of a kernel body: i32 index math,
/// f32 arithmetic and typed pointer offsets at `b`'s insertion point.
class KernelIRBuilder {
public:
  KernelIRBuilder(OpBuilder &builder, Location loc) : b(builder), loc(loc) {
    i32 = b.getI32Type();
    i64 = b.getI64Type();
    f32 = b.getF32Type();
    globalPtr = LLVM::LLVMPointerType::get(b.getContext(), 1);
    sharedPtr = LLVM::LLVMPointerType::get(b.getContext(), 3);
  }

protected:
  Value c32(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
  }
  Value c64(int64_t v) {
    return arith::ConstantOp::create(b, loc, b.getI64IntegerAttr(v));
  }
  Value cf(double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value divu(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  Value remu(Value x, Value y) { return arith::RemUIOp::create(b, loc, x, y); }
  /// ceil(x / y) of non-negative values.
  Value ceilDiv(Value x, int64_t y) { return divu(add(x, c32(y - 1)), c32(y)); }
  Value addf(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value mulf(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value subf(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  /// llvm.maxnum directly: convert-gpu-to-nvvm may turn arith.maxnumf (and
  /// math.fma) into libdevice calls (__nv_fmaxf, __nv_fmaf) that nothing
  /// links.
  Value maxf(Value x, Value y) { return LLVM::MaxNumOp::create(b, loc, x, y); }
  Value minsi(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value ext64(Value x) { return arith::ExtSIOp::create(b, loc, i64, x); }
  Value toIndex(Value x) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), x);
  }
  Value negInf() { return cf(-std::numeric_limits<double>::infinity()); }
  Value gep(Value base, Type element, Value offset) {
    return LLVM::GEPOp::create(b, loc, base.getType(), element, base,
                               ValueRange{offset});
  }

  OpBuilder &b;
  Location loc;
  Type i32, i64, f32, globalPtr, sharedPtr;
};

/// The argument of a kernel's entry block that holds `param`.
inline Value getFixedArg(ValueRange args, FixedParam param) {
  return args[static_cast<unsigned>(param)];
}

/// Emits, at `builder`'s point inside a one-warp kernel, the listing of the
/// live key blocks of one query tile (see GpuTileList) for tiles of
/// `blockM` x `blockN`; `captures` maps what the tile class reads.
void emitTileList(OpBuilder &builder, Location loc, AttentionOp op,
                  int64_t blockM, int64_t blockN, ValueRange args,
                  const IRMapping &captures);

/// Emits, at `builder`'s point inside a kernel of kMergeThreads threads on
/// grid [RB, G, B], the merge of the decode kernel's partial results for
/// `op` (see GpuDecodeKernels): O in `outputType`, and LSE if `op` has one.
void emitDecodeMerge(OpBuilder &builder, Location loc, AttentionOp op,
                     Type outputType, ValueRange args);

/// Values the regions of `ops` (and the extents of einsums among them) read
/// from above that must become kernel parameters, in first-use order.
/// Constants and pure scalar math on passed values are not listed: they are
/// cloned into the kernel. Fails (with a diagnostic) on a value that can be
/// neither passed nor cloned. Rewrites the attn.read ops of `ops` into
/// tensor.extract.
LogicalResult collectCaptures(ArrayRef<Operation *> ops,
                              SmallVectorImpl<Value> &captures);

/// Appends the parameters of `captures` to `signature` (after the fixed
/// prefix) and the matching argument types to `argTypes`.
void appendCaptureParams(ArrayRef<Value> captures,
                         GpuKernelSignature &signature,
                         SmallVectorImpl<Type> &argTypes);

/// Fills `mapping` so that cloned region code reads the kernel's arguments
/// instead of the captured values: scalars are cast from their parameters,
/// tensors become placeholders that `lowerCapturedTensorAccesses` removes,
/// and the constants and scalar math `ops` read are cloned at `builder`'s
/// point.
void mapCaptures(OpBuilder &builder, Location loc, ArrayRef<Operation *> ops,
                 ArrayRef<Value> captures, const GpuKernelSignature &signature,
                 ValueRange kernelArgs, IRMapping &mapping);

/// Clones the body of the single-block `region` at `builder`'s point with
/// its block arguments bound to `args` and returns the value its
/// attn.yield yields.
Value inlineRegion(OpBuilder &builder, Region &region, ValueRange args,
                   const IRMapping &captures);

/// Rewrites tensor.extract / tensor.dim of captured tensors into loads from
/// their pointer parameters.
LogicalResult lowerCapturedTensorAccesses(gpu::GPUFuncOp func);

/// Rewrites the math ops inlined region code may hold (exp, exp2, log, log2,
/// log1p, tanh, abs, sqrt, rsqrt, pow) into PTX instructions and
/// approximations, so that no libdevice is needed; fails on any other.
LogicalResult lowerMathForNVPTX(gpu::GPUFuncOp func);

/// Emits `ex2.approx.ftz.f32` / `lg2.approx.ftz.f32`.
Value createExp2(OpBuilder &builder, Location loc, Value x);
Value createLog2(OpBuilder &builder, Location loc, Value x);

/// The normalizers' arithmetic on f32 scalars of a kernel: base-2
/// exponentials and logarithms through createExp2/createLog2, llvm.maxnum
/// and llvm.fma (see KernelIRBuilder::maxf). One lane per row; the attention
/// kernel adds its reductions over a quad.
NormalizerMath getNVPTXNormalizerMath();

/// The passes from a device-only gpu.module (arith/scf/llvm/nvvm/gpu ops)
/// to a gpu.binary holding PTX.
void addGpuLoweringPasses(OpPassManager &pm, const GpuOptions &options);

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_KERNELBUILDING_H
