//===- KernelBuilding.h - Pieces shared by the GPU kernel builder -*- C++ -*-===//
//
// Private to codegen/lib/GPU: how the values an attn.attention's regions
// read from above become kernel parameters, how a region is inlined into the
// kernel, and the NVPTX-specific rewrites applied to the inlined code.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_LIB_GPU_KERNELBUILDING_H
#define ATTN_LIB_GPU_KERNELBUILDING_H

#include "attn/GPU/GpuKernel.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"

namespace mlir {
namespace gpu {
class GPUFuncOp;
} // namespace gpu
namespace attn {

/// Values the regions of `op` read from above that must become kernel
/// parameters, in first-use order. Constants are not listed: they are
/// cloned into the kernel. Fails (with a diagnostic) on a value that can be
/// neither passed nor cloned.
LogicalResult collectCaptures(AttentionOp op, SmallVectorImpl<Value> &captures);

/// Appends the parameters of `captures` to `signature` (after the fixed
/// prefix) and the matching argument types to `argTypes`.
void appendCaptureParams(ArrayRef<Value> captures,
                         GpuKernelSignature &signature,
                         SmallVectorImpl<Type> &argTypes);

/// Fills `mapping` so that cloned region code reads the kernel's arguments
/// instead of the captured values: scalars are cast from their parameters,
/// tensors become placeholders that `lowerCapturedTensorAccesses` removes,
/// and constants the regions use are cloned at `builder`'s point.
void mapCaptures(OpBuilder &builder, Location loc, AttentionOp op,
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

/// The passes from a device-only gpu.module (arith/scf/llvm/nvvm/gpu ops)
/// to a gpu.binary holding PTX.
void addGpuLoweringPasses(OpPassManager &pm, const GpuOptions &options);

} // namespace attn
} // namespace mlir

#endif // ATTN_LIB_GPU_KERNELBUILDING_H
