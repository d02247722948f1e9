//===- FusedQueryGrad.cpp - dQ in the fused dK/dV kernel ------------------===//
//
// The fused dK/dV kernel's share of dQ per block of queries: each warp
// group writes its dS transposed to shared memory, computes dQ = dS K for
// half of the columns over the CTA's keys, stages it in 128-byte-swizzled
// boxes and adds it into dQ with TMA reductions, or with atomics where the
// runtime passes an all-zero tensor map.
//
//===----------------------------------------------------------------------===//

#include "BackwardKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

Value BackwardEmitter::scoreGradTile(Value turn) {
  return gep(
      smem, elementType,
      add(c32(shape.ownedElements() + shape.stages() * shape.stageElements()),
          mul(turn, c32(shape.ownedRows() * shape.stream()))));
}

Value BackwardEmitter::previousTurn(Value count) {
  return arith::RemUIOp::create(b, loc, add(count, c32(1)), c32(2));
}

void BackwardEmitter::storeScoreGradTile(ArrayRef<Value> dsPairs, Value tile) {
  // Key row 16 warp + g (+ 8) holds queries 8 j + 2 c4 (+ 1): one 32-bit
  // word of 16-byte unit j, which the swizzle moves to unit j ^ g. The 64
  // queries of a block are one swizzled chunk: rows of 64 elements.
  assert(shape.stream() == 64 && "a block of queries is one chunk");
  for (int64_t r = 0; r < 2; ++r) {
    Value row = add(mul(warp, c32(16)), add(quadRow, c32(8 * r)));
    Value rowStart = add(mul(row, c32(64)), mul(quadCol, c32(2)));
    for (int64_t j = 0; j < shape.stream() / 8; ++j) {
      Value unit = arith::XOrIOp::create(b, loc, quadRow, c32(j));
      Value at = gep(tile, elementType, add(rowStart, mul(unit, c32(8))));
      LLVM::StoreOp::create(b, loc, dsPairs[pairIndex(j, r)], at, 4);
    }
  }
}

void BackwardEmitter::issueQueryGrad(MutableArrayRef<Value> dq, Value keysTile,
                                     Value scoreGrads) {
  // A = dS (M = queries, K = keys) is the dSᵀ tile read MN-major; B = K (K =
  // keys, N = this warp group's D / 2 columns) MN-major too. At D = 128 the
  // columns are a swizzle chunk of their own; at D = 64 half of one.
  const int64_t columns = shape.headDim / 2;
  scoreGrads = addressInLoop(scoreGrads);
  Value columnsStart = mul(
      warpGroup, c32(columns % 64 == 0 ? (columns / 64) * shape.ownedRows() * 64
                                       : columns));
  Value keys = addressInLoop(gep(keysTile, elementType, columnsStart));
  SmallVector<Value> operands = fenceOperands(b, loc, dq);
  llvm::copy(operands, dq.begin());
  wgmmaFence();
  for (int64_t kk = 0; kk < shape.ownedRows() / 16; ++kk)
    wgmma(dq, mnMajorOperand(scoreGrads, shape.ownedRows(), kk), {},
          mnMajorOperand(keys, shape.ownedRows(), kk), /*transposeB=*/true,
          /*accumulate=*/kk > 0, /*transposeA=*/true);
  wgmmaCommit();
}

void BackwardEmitter::addQueryGrad(ArrayRef<Value> dq, Value head, Value m0) {
  const int64_t columns = shape.headDim / 2;
  const int64_t boxColumns = BackwardShape::kQueryGradBoxColumns;
  const int64_t boxBytes = shape.queryGradBoxBytes();
  const int64_t groupBoxes = columns / boxColumns;
  Value tile = gep(smem, b.getI8Type(), c32(shape.queryGradOffsetBytes()));
  // The accumulators, times the scale: row 16 (warp % 4) + g (+ 8) holds
  // the group's columns 8 j + 2 c4 (+ 1), 32-bit word 2 (c4 % 2) (+ 1) of
  // 16-byte unit 2 (j % 4) + c4 / 2 of box j / 4, which the swizzle moves
  // to unit 2 (j % 4) ^ (c4 / 2 ^ g). Addresses from values of this point
  // of the loop, as addressInLoop's.
  Value warpRow = mul(arith::RemUIOp::create(b, loc, warp, c32(4)), c32(16));
  Value swizzle =
      fenceOperands(b, loc,
                    {arith::XOrIOp::create(
                        b, loc, arith::DivUIOp::create(b, loc, quadCol, c32(2)),
                        quadRow)})
          .front();
  auto pairType = VectorType::get({2}, f32);
  for (int64_t r = 0; r < 2; ++r) {
    Value row = add(warpRow, add(quadRow, c32(8 * r)));
    Value rowStart = addressInLoop(
        gep(tile, b.getI8Type(),
            add(mul(warpGroup, c32(groupBoxes * boxBytes)),
                add(mul(row, c32(kSwizzledRowBytes)),
                    mul(arith::RemUIOp::create(b, loc, quadCol, c32(2)),
                        c32(8))))));
    for (int64_t j = 0; j < columns / 8; ++j) {
      Value unit = arith::XOrIOp::create(b, loc, swizzle, c32(2 * (j % 4)));
      Value at = LLVM::IntToPtrOp::create(
          b, loc, smem.getType(),
          add(rowStart, add(c32((j / 4) * boxBytes), mul(unit, c32(16)))));
      Value pair = vector::FromElementsOp::create(
          b, loc, pairType,
          ValueRange{mulf(dq[slot(j, r, 0)], scale),
                     mulf(dq[slot(j, r, 1)], scale)});
      LLVM::StoreOp::create(b, loc, pair, at, 8);
    }
  }
  // Each warp group adds its own columns, once its warps have written them
  // (TMA reads them through the async proxy): the other group goes on
  // meanwhile.
  asyncProxyFence();
  NVVM::BarrierOp::create(b, loc, Type(), add(warpGroup, c32(1)),
                          c32(2 * kWarpGroupRows), NVVM::BarrierReductionAttr(),
                          Value());
  // The thread's index in its group as a value of this point of the loop:
  // what is derived from it is not held through the loop.
  Value local = fenceOperands(b, loc,
                              {arith::RemUIOp::create(b, loc, tid,
                                                      c32(kWarpGroupRows * 2))})
                    .front();
  Value firstBox = mul(warpGroup, c32(groupBoxes));
  OpBuilder::InsertionGuard insertion(b);
  if (shape.queryGradMap) {
    // The group's first thread adds its boxes with TMA; rows past M are
    // left out by it.
    auto ifTensor = scf::IfOp::create(b, loc, queryGradByTensor,
                                      /*withElseRegion=*/true);
    b.setInsertionPointToStart(ifTensor.thenBlock());
    auto ifFirst =
        scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::eq, local, c32(0)),
                          /*withElseRegion=*/false);
    b.setInsertionPointToStart(ifFirst.thenBlock());
    for (int64_t box = 0; box < groupBoxes; ++box) {
      Value index = add(firstBox, c32(box));
      reduceAddBox(
          queryGradMap,
          sharedAddressOf(gep(tile, b.getI8Type(), mul(index, c32(boxBytes)))),
          {mul(index, c32(boxColumns)), m0, head, batch});
    }
    bulkCommit();
    b.setInsertionPointToStart(ifTensor.elseBlock());
  }
  // Otherwise the group's thread t adds column t % columns of rows
  // t / columns, t / columns + 128 / columns, ... with atomics: each warp's
  // cover 32 adjacent elements of a row.
  const int64_t rowsPerPass = 2 * kWarpGroupRows / columns;
  Value groupColumn = arith::RemUIOp::create(b, loc, local, c32(columns));
  Value column = add(mul(warpGroup, c32(columns)), groupColumn);
  Value firstRow = arith::DivUIOp::create(b, loc, local, c32(columns));
  Value headBase =
      gep(arg(FixedParam::DQ), f32,
          rowOffset(FixedParam::DQStrideB, FixedParam::DQStrideH, head));
  Value row0 = add(m0, firstRow);
  Value dest =
      gep(headBase, f32,
          add(mul(ext64(row0), arg(FixedParam::DQStrideM)), ext64(column)));
  Value step = mul(arg(FixedParam::DQStrideM), c64(rowsPerPass));
  // Column c of row r in the boxes: word c % 4 of unit (c % 32) / 4 ^ r % 8
  // of row r of box c / 32.
  Value within = arith::RemUIOp::create(b, loc, column, c32(boxColumns));
  Value columnStart =
      add(mul(arith::DivUIOp::create(b, loc, column, c32(boxColumns)),
              c32(boxBytes)),
          mul(arith::RemUIOp::create(b, loc, within, c32(4)), c32(4)));
  Value columnUnit = arith::DivUIOp::create(b, loc, within, c32(4));
  for (int64_t pass = 0; pass * rowsPerPass < shape.stream(); ++pass) {
    Value row = add(firstRow, c32(pass * rowsPerPass));
    auto ifRow = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, add(m0, row), sizeM),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(ifRow.thenBlock());
    Value unit = arith::XOrIOp::create(
        b, loc, columnUnit, arith::RemUIOp::create(b, loc, row, c32(8)));
    Value source = gep(tile, b.getI8Type(),
                       add(columnStart, add(mul(row, c32(kSwizzledRowBytes)),
                                            mul(unit, c32(16)))));
    Value value = LLVM::LoadOp::create(b, loc, f32, source, 4);
    LLVM::AtomicRMWOp::create(b, loc, LLVM::AtomicBinOp::fadd,
                              gep(dest, f32, mul(step, c64(pass))), value,
                              LLVM::AtomicOrdering::monotonic);
  }
}

void BackwardEmitter::ifPending(Value m0, function_ref<void()> emitAdd) {
  auto ifPending =
      scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::sge, m0, c32(0)),
                        /*withElseRegion=*/false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(ifPending.thenBlock());
  emitAdd();
}
