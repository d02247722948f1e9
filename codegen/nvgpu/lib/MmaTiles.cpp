//===- MmaTiles.cpp - Warp-level tensor-core pieces -----------------------===//
//
// ldmatrix, mma.sync m16n8k16, cp.async tile copies and quad reductions:
// what the attention, decode and backward kernels are built from.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

void MmaTileBuilder::emitThreadIndices() {
  tid = arith::IndexCastOp::create(
      b, loc, i32, gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x));
  lane = arith::AndIOp::create(b, loc, tid, c32(31));
  warp = arith::ShRUIOp::create(b, loc, tid, c32(5));
  quadRow = arith::ShRUIOp::create(b, loc, lane, c32(2));
  quadCol = arith::AndIOp::create(b, loc, lane, c32(3));
}

Value MmaTileBuilder::blockIndexAlong(gpu::Dimension dimension) {
  return arith::IndexCastOp::create(b, loc, i32,
                                    gpu::BlockIdOp::create(b, loc, dimension));
}

Value MmaTileBuilder::lastFirstBlockIndexAlong(gpu::Dimension dimension) {
  Value count = arith::IndexCastOp::create(
      b, loc, i32, gpu::GridDimOp::create(b, loc, dimension));
  return arith::SubIOp::create(
      b, loc, arith::SubIOp::create(b, loc, count, c32(1)),
      blockIndexAlong(dimension));
}

Value MmaTileBuilder::shuffleXor(Value v, int64_t mask) {
  return gpu::ShuffleOp::create(b, loc, v, c32(mask), c32(32),
                                gpu::ShuffleMode::XOR)
      .getShuffleResult();
}

SmallVector<Value, 4> MmaTileBuilder::ldmatrix(Value address,
                                             bool transpose) {
  Type i32x4 = LLVM::LLVMStructType::getLiteral(b.getContext(),
                                                {i32, i32, i32, i32});
  Value result = NVVM::LdMatrixOp::create(
      b, loc, i32x4, address, 4,
      transpose ? NVVM::MMALayout::col : NVVM::MMALayout::row,
      NVVM::LdStMatrixShapeAttr::get(b.getContext(), 8, 8),
      NVVM::LdStMatrixEltType::B16);
  SmallVector<Value, 4> parts;
  for (int64_t i = 0; i < 4; ++i)
    parts.push_back(LLVM::ExtractValueOp::create(b, loc, result, i));
  return parts;
}
SmallVector<Value, 4> MmaTileBuilder::mma(ArrayRef<Value> a,
                                        ArrayRef<Value> bFrag,
                                        ArrayRef<Value> c) {
  Type f32x4 = LLVM::LLVMStructType::getLiteral(b.getContext(),
                                                {f32, f32, f32, f32});
  NVVM::MMATypes type = elementType.isBF16() ? NVVM::MMATypes::bf16
                                             : NVVM::MMATypes::f16;
  // Fragments are i32 registers of two 16-bit values: what nvvm.mma.sync
  // takes for bf16; for f16 it wants them as vector<2xf16>.
  auto operands = [&](ArrayRef<Value> registers) {
    SmallVector<Value, 4> values(registers);
    if (type == NVVM::MMATypes::f16)
      for (Value &value : values)
        value = LLVM::BitcastOp::create(
            b, loc, VectorType::get({2}, b.getF16Type()), value);
    return values;
  };
  Value result = NVVM::MmaOp::create(
      b, loc, f32x4, operands(a), operands(bFrag), c, {16, 8, 16},
      std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{type, type},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  SmallVector<Value, 4> parts;
  for (int64_t i = 0; i < 4; ++i)
    parts.push_back(LLVM::ExtractValueOp::create(b, loc, result, i));
  return parts;
}
Value MmaTileBuilder::pack(Value lo, Value hi) {
  Value pair = vector::FromElementsOp::create(
      b, loc, VectorType::get({2}, f32), ValueRange{lo, hi});
  Value narrow = arith::TruncFOp::create(
      b, loc, VectorType::get({2}, elementType), pair);
  return LLVM::BitcastOp::create(b, loc, i32, narrow);
}

/// Starts asynchronous copies (cp.async, 16 bytes per thread and access,
/// bypassing L1) of rows [firstRow, firstRow + rows) of a [*, cols] tile (row
/// stride `rowStride` elements, last dim contiguous) to shared memory at
/// `smemOffset` with row pitch `pitch`, and commits them as one group. Rows
/// at or past `rowLimit` are zero-filled: their source size is 0 and their
/// address is clamped to the last row, so no predicate guards the access.
///
/// With `rowOffset`, row r starts at element `rowOffset(r)` of `base`
/// instead of r * rowStride.
void MmaTileBuilder::loadTileAsync(int64_t smemOffset, int64_t rows,
                                   int64_t cols, int64_t pitch, Value base,
                                   Value rowStride, Value firstRow,
                                   Value rowLimit,
                                   function_ref<Value(Value)> rowOffset,
                                   bool swizzled) {
  const int64_t chunksPerRow = cols / 8;
  const int64_t chunks = rows * chunksPerRow;
  const int64_t threads = numThreads;
  Value cpSize = c32(16), noBytes = c32(0);
  // Element offset of (row, col) in the tile, col a multiple of 8.
  auto tileOffset = [&](Value row, Value col) {
    if (!swizzled)
      return add(mul(row, c32(pitch)), col);
    Value chunk = arith::ShRUIOp::create(b, loc, col, c32(6));
    Value unit = arith::AndIOp::create(
        b, loc, arith::ShRUIOp::create(b, loc, col, c32(3)), c32(7));
    Value swizzledUnit = arith::XOrIOp::create(
        b, loc, unit, arith::AndIOp::create(b, loc, row, c32(7)));
    return add(add(mul(chunk, c32(64 * rows)), mul(row, c32(64))),
               mul(swizzledUnit, c32(8)));
  };
  // Rows one pass apart: `pitch` elements, or 64 in a swizzled chunk where
  // a pass covers whole 8-row atoms (the swizzle repeats every 8 rows).
  const int64_t rowsPerPass =
      threads % chunksPerRow == 0 ? threads / chunksPerRow : 0;
  const bool steppedRows =
      !rowOffset && rowsPerPass > 0 && (!swizzled || rowsPerPass % 8 == 0);
  const int64_t rowStep = swizzled ? 64 : pitch;
  if (steppedRows) {
    // Each thread copies the same 16 bytes of rows threadRow, threadRow +
    // rowsPerPass, ...: one source pointer stepped by a fixed stride, and
    // destinations at constant offsets, keep few registers live in the loop.
    // Rows past the limit read nothing (and point at row 0, which exists).
    Value threadRow = arith::DivUIOp::create(b, loc, tid, c32(chunksPerRow));
    Value col = mul(arith::RemUIOp::create(b, loc, tid, c32(chunksPerRow)),
                    c32(8));
    Value globalRow = add(firstRow, threadRow);
    Value source = gep(base, elementType,
                       add(mul(ext64(globalRow), rowStride), ext64(col)));
    Value step = mul(rowStride, c64(rowsPerPass));
    Value dest = gep(smem, elementType,
                     add(c32(smemOffset), tileOffset(threadRow, col)));
    for (int64_t pass = 0; pass * rowsPerPass < rows; ++pass) {
      Value row = add(globalRow, c32(pass * rowsPerPass));
      Value inRange = cmpi(arith::CmpIPredicate::slt, row, rowLimit);
      auto emitCopy = [&] {
        NVVM::CpAsyncOp::create(
            b, loc, gep(dest, elementType, c32(pass * rowsPerPass * rowStep)),
            select(inRange, source, base), /*size=*/16,
            NVVM::LoadCacheModifierKind::CG, select(inRange, cpSize, noBytes));
      };
      if ((pass + 1) * rowsPerPass <= rows) {
        emitCopy();
      } else {
        auto guard = scf::IfOp::create(
            b, loc,
            cmpi(arith::CmpIPredicate::slt, threadRow,
                 c32(rows - pass * rowsPerPass)),
            /*withElseRegion=*/false);
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPointToStart(guard.thenBlock());
        emitCopy();
      }
      source = gep(source, elementType, step);
    }
    NVVM::CpAsyncCommitGroupOp::create(b, loc);
    return;
  }
  Value lastRow = arith::SubIOp::create(b, loc, rowLimit, c32(1));
  for (int64_t first = 0; first < chunks; first += threads) {
    Value chunk = add(tid, c32(first));
    auto emitCopy = [&]() {
      Value row = arith::DivUIOp::create(b, loc, chunk, c32(chunksPerRow));
      Value col = mul(arith::RemUIOp::create(b, loc, chunk, c32(chunksPerRow)),
                      c32(8));
      Value globalRow = add(firstRow, row);
      Value inRange = cmpi(arith::CmpIPredicate::slt, globalRow, rowLimit);
      Value clamped = minsi(globalRow, lastRow);
      Value offset =
          add(rowOffset ? rowOffset(clamped) : mul(ext64(clamped), rowStride),
              ext64(col));
      Value dest =
          gep(smem, elementType, add(c32(smemOffset), tileOffset(row, col)));
      NVVM::CpAsyncOp::create(b, loc, dest, gep(base, elementType, offset),
                              /*size=*/16, NVVM::LoadCacheModifierKind::CG,
                              select(inRange, cpSize, noBytes));
    };
    if (first + threads <= chunks) {
      emitCopy();
      continue;
    }
    auto guard = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, chunk, c32(chunks)),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(guard.thenBlock());
    emitCopy();
  }
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
}

/// Waits for every committed copy of this thread, then for every thread of
/// the CTA: after it, shared memory holds all copies and no warp still reads
/// what the next copies overwrite.
void MmaTileBuilder::waitForCopies() {
  NVVM::CpAsyncWaitGroupOp::create(b, loc, 0);
  gpu::BarrierOp::create(b, loc);
}

/// The max of `partial` over the quad of lanes that share a row.
Value MmaTileBuilder::quadMax(Value partial) {
  for (int64_t mask : {1, 2})
    partial = maxf(partial, shuffleXor(partial, mask));
  return partial;
}

/// The sum of `partial` over the quad of lanes that share a row.
Value MmaTileBuilder::quadSum(Value partial) {
  for (int64_t mask : {1, 2})
    partial = addf(partial, shuffleXor(partial, mask));
  return partial;
}
