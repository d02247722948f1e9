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
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
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
  /// An scf.while whose regions are emitted through `b`: `before(state)`
  /// returns whether to go on and the values the body gets (of `types`),
  /// `after(values)` the next state.
  scf::WhileOp emitWhileLoop(
      TypeRange types, ValueRange init,
      function_ref<std::pair<Value, SmallVector<Value>>(ValueRange)> before,
      function_ref<SmallVector<Value>(ValueRange)> after) {
    auto atEnd = [&](OpBuilder &nested) {
      b.setInsertionPoint(nested.getInsertionBlock(),
                          nested.getInsertionPoint());
    };
    return scf::WhileOp::create(
        b, loc, types, init,
        [&](OpBuilder &nested, Location, ValueRange state) {
          OpBuilder::InsertionGuard insertion(b);
          atEnd(nested);
          auto [goOn, passed] = before(state);
          scf::ConditionOp::create(b, loc, goOn, passed);
        },
        [&](OpBuilder &nested, Location, ValueRange values) {
          OpBuilder::InsertionGuard insertion(b);
          atEnd(nested);
          scf::YieldOp::create(b, loc, after(values));
        });
  }
  /// A loop over blocks whose first carried value is the block: it runs
  /// while that is below `numBlocks`, `body` giving the next carried values.
  scf::WhileOp
  emitBlockLoop(ValueRange init, Value numBlocks,
                function_ref<SmallVector<Value>(ValueRange)> body) {
    return emitWhileLoop(
        TypeRange(init), init,
        [&](ValueRange state) -> std::pair<Value, SmallVector<Value>> {
          return {cmpi(arith::CmpIPredicate::slt, state[0], numBlocks),
                  llvm::to_vector(state)};
        },
        body);
  }

  /// `eval(full)` for a tile of class `tileClass` (0 empty, 1 partial, 2
  /// full): once if the class is a constant, else on both sides of a branch
  /// on it, results of `types`.
  SmallVector<Value>
  evaluateByClass(Value tileClass, TypeRange types,
                  function_ref<SmallVector<Value>(bool)> eval) {
    if (auto constant = getConstantIntValue(tileClass))
      return eval(*constant == 2);
    auto ifFull = scf::IfOp::create(
        b, loc, types, cmpi(arith::CmpIPredicate::eq, tileClass, c32(2)),
        /*withElseRegion=*/true);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifFull.thenBlock());
    scf::YieldOp::create(b, loc, eval(true));
    b.setInsertionPointToStart(ifFull.elseBlock());
    scf::YieldOp::create(b, loc, eval(false));
    return SmallVector<Value>(ifFull.getResults());
  }

  OpBuilder &b;
  Location loc;
  Type i32, i64, f32, globalPtr, sharedPtr;
};

/// The warp-level tensor-core pieces every mma.sync kernel is made of:
/// ldmatrix, mma.m16n8k16 on bf16/f16 with f32 accumulators, cp.async tile
/// copies into shared memory, and reductions over the quad of lanes that
/// share an accumulator row. Fragment layouts are PTX's (see
/// AttentionKernelBuilder.cpp). The kernel sets `tid` and `smem` in its
/// prologue before the copies are used.
class MmaTileBuilder : protected KernelIRBuilder {
public:
  MmaTileBuilder(OpBuilder &builder, Location loc, Type elementType,
                 int64_t numThreads)
      : KernelIRBuilder(builder, loc), elementType(elementType),
        numThreads(numThreads) {}

protected:
  /// Sets `tid` and the thread's place in the warp's mma fragments: `lane`,
  /// `warp`, and the row (lane / 4) and column (lane % 4) of its quad.
  void emitThreadIndices();
  /// The CTA's index along `dimension` (i32).
  Value blockIndexAlong(gpu::Dimension dimension);
  /// The same counted from the last CTA: under a causal mask the last row
  /// blocks have the most work, and starting them first leaves the short
  /// ones to fill the last wave.
  Value lastFirstBlockIndexAlong(gpu::Dimension dimension);
  Value shuffleXor(Value v, int64_t mask);
  /// ldmatrix.x4 of 8x8 tiles of 16-bit elements from `address` (this
  /// lane's row), transposed or not: four i32 registers.
  SmallVector<Value, 4> ldmatrix(Value address, bool transpose);
  /// d = a * b + c on one m16n8k16 tile; returns the 4 accumulators.
  SmallVector<Value, 4> mma(ArrayRef<Value> a, ArrayRef<Value> bFrag,
                            ArrayRef<Value> c);
  /// Two f32 rounded to one register of two 16-bit values (low = first).
  Value pack(Value lo, Value hi);
  /// The max / sum of `partial` over the quad of lanes that share a row.
  Value quadMax(Value partial);
  Value quadSum(Value partial);
  /// Starts asynchronous copies (cp.async, 16 bytes per thread and access,
  /// bypassing L1) of rows [firstRow, firstRow + rows) of a [*, cols] tile
  /// (row stride `rowStride` elements, last dim contiguous) to shared memory
  /// at element `smemOffset` with row pitch `pitch`, and commits them as one
  /// group. Rows at or past `rowLimit` are zero-filled: their source size is
  /// 0, so no predicate guards the access. With `rowOffset`, row r starts at
  /// element `rowOffset(r)` of `base` instead of r * rowStride.
  ///
  /// With `swizzled`, the tile is laid out for wgmma instead (`pitch` is
  /// unused): cols / 64 chunks of [rows][64] one after the other, rows 128
  /// bytes apart, 16-byte unit u of row r at unit u ^ (r % 8) (the 128-byte
  /// swizzle TMA writes); the tile must start on a 1024-byte boundary.
  void loadTileAsync(int64_t smemOffset, int64_t rows, int64_t cols,
                     int64_t pitch, Value base, Value rowStride, Value firstRow,
                     Value rowLimit,
                     function_ref<Value(Value)> rowOffset = nullptr,
                     bool swizzled = false);
  /// Waits for every committed copy of this thread, then for every thread
  /// of the CTA: after it, shared memory holds all copies and no warp still
  /// reads what the next copies overwrite.
  void waitForCopies();

  /// The 16-bit element type of the tensor-core operands (bf16 or f16).
  Type elementType;
  int64_t numThreads;
  /// Set by the kernel's prologue: the thread index (i32) and the dynamic
  /// shared memory.
  Value tid, smem;
  /// Set by emitThreadIndices.
  Value lane, warp, quadRow, quadCol;
};

/// The argument of a kernel's entry block that holds `param`.
inline Value getFixedArg(ValueRange args, FixedParam param) {
  return args[static_cast<unsigned>(param)];
}

/// A `gpu.module` for the kernels of one op with score_mod, mask and
/// tile_class regions (attn.attention or attn.attention_backward), all of
/// which take the parameters of `signature`: the FixedParams, then what the
/// op's regions read from above.
class KernelModuleBuilder {
public:
  KernelModuleBuilder(OpBuilder &builder, Operation *regionOwner,
                      GpuKernelSignature &signature)
      : builder(builder), regionOwner(regionOwner), signature(signature),
        loc(regionOwner->getLoc()) {}

  /// Collects the captures, fills the signature and creates the module
  /// with its dynamic shared memory. `tensorMaps` parameters of
  /// Kind::TensorMap ("map.<i>") follow the FixedParams, then pointers
  /// named `pointers`.
  FailureOr<gpu::GPUModuleOp> create(StringRef moduleName,
                                     unsigned tensorMaps = 0,
                                     ArrayRef<StringRef> pointers = {});
  /// An empty kernel of `threads` threads per CTA taking the signature.
  gpu::GPUFuncOp createKernel(const Twine &name, int64_t threads);
  /// Adds a kernel whose body `emitBody` emits with the regions' captures
  /// mapped to the parameters, then lowers captured tensor accesses and
  /// math for NVPTX.
  /// `trustInRangeReads`: see lowerCapturedTensorAccesses.
  LogicalResult addRegionKernel(
      const Twine &name, int64_t threads,
      llvm::function_ref<void(ValueRange, const IRMapping &)> emitBody,
      bool trustInRangeReads = false);
  OpBuilder &getBuilder() { return builder; }

private:
  OpBuilder &builder;
  Operation *regionOwner;
  GpuKernelSignature &signature;
  Location loc;
  gpu::GPUModuleOp module;
  SmallVector<Value> captureValues;
  SmallVector<Type> argTypes;
};

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
/// their pointer parameters, each subscript clamped into its axis unless
/// `trustInRangeReads` and the read is marked in range (constrainSubscripts).
LogicalResult lowerCapturedTensorAccesses(gpu::GPUFuncOp func,
                                          bool trustInRangeReads = false);

/// Rewrites the math ops inlined region code may hold (exp, exp2, log, log2,
/// log1p, tanh, abs, sqrt, rsqrt, pow) into PTX instructions and
/// approximations, so that no libdevice is needed; fails on any other. A
/// division by a constant or by a value from outside its loop or branch
/// becomes a product with the reciprocal (NVPTXMath.cpp).
LogicalResult lowerMathForNVPTX(gpu::GPUFuncOp func);

/// Emits `ex2.approx.ftz.f32` / `lg2.approx.ftz.f32`.
Value createExp2(OpBuilder &builder, Location loc, Value x);
Value createLog2(OpBuilder &builder, Location loc, Value x);

/// The normalizers' arithmetic on f32 scalars of a kernel: base-2
/// exponentials and logarithms through createExp2/createLog2, llvm.maxnum
/// and llvm.fma (see KernelIRBuilder::maxf). One lane per row; the attention
/// kernel adds its reductions over a quad.
NormalizerMath getNVPTXNormalizerMath();

/// The function attribute listing a kernel's TensorMap arguments: lowering
/// makes them byval grid constants (see addGpuLoweringPasses).
constexpr llvm::StringLiteral kTensorMapArgsAttrName = "attn.tensor_map_args";

/// The passes from a device-only gpu.module (arith/scf/llvm/nvvm/gpu ops)
/// to a gpu.binary holding PTX.
void addGpuLoweringPasses(OpPassManager &pm, const GpuOptions &options);

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_KERNELBUILDING_H
