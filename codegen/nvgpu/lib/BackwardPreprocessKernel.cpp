//===- BackwardPreprocessKernel.cpp - The backward's _pre kernel ----------===//
//
// The preprocessing kernel of the backward: per query row Delta = sum dO O
// (Delta', less the LSE's adjoint), LSE' = LSE (+) sink, and dO rounded to
// 16 bits for the products (BackwardKernelEmitter.h).
//
//===----------------------------------------------------------------------===//

#include "BackwardKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;

//===----------------------------------------------------------------------===//
// Preprocessing: Delta (Delta'), LSE', dO in 16 bits.
//===----------------------------------------------------------------------===//

void BackwardEmitter::emitPreprocess() {
  emitIndices(gpu::Dimension::x);
  // One warp per row at a time, kBackwardPreprocessRows / 4 rows per warp;
  // each lane reads E / 32 elements of the row (E is a multiple of 16: a
  // lane may have none of the last 16).
  Value head = headOrGroup;
  auto doType = cast<RankedTensorType>(op.getOutputGrad().getType());
  Type doElement = doType.getElementType();
  Value dOBase =
      gep(arg(FixedParam::DO), doElement,
          rowOffset(FixedParam::DOStrideB, FixedParam::DOStrideH, head));
  Value oBase =
      gep(arg(FixedParam::O), f32,
          rowOffset(FixedParam::OStrideB, FixedParam::OStrideH, head));
  Value do16Base =
      gep(arg(FixedParam::DO16), elementType,
          rowOffset(FixedParam::OStrideB, FixedParam::OStrideH, head));
  Value dQBase =
      gep(arg(FixedParam::DQ), f32,
          rowOffset(FixedParam::DQStrideB, FixedParam::DQStrideH, head));
  const int64_t rowsPerWarp = kBackwardPreprocessRows / kBackwardWarps;
  const int64_t perLane = (shape.valueDim + 31) / 32;
  for (int64_t i = 0; i < rowsPerWarp; ++i) {
    Value row = add(mul(blockIndex, c32(kBackwardPreprocessRows)),
                    add(mul(warp, c32(rowsPerWarp)), c32(i)));
    Value inRange = cmpi(arith::CmpIPredicate::slt, row, sizeM);
    Value clamped = minsi(row, sub(sizeM, c32(1)));
    Value dORow =
        gep(dOBase, doElement, mul(ext64(clamped), arg(FixedParam::DOStrideM)));
    Value oRow =
        gep(oBase, f32, mul(ext64(clamped), arg(FixedParam::OStrideM)));
    Value do16Row = gep(do16Base, elementType,
                        mul(ext64(clamped), arg(FixedParam::OStrideM)));
    // The fused kernel adds each key block's share into dQ: zero it first.
    if (shape.fusedQuery) {
      Value dQRow =
          gep(dQBase, f32, mul(ext64(clamped), arg(FixedParam::DQStrideM)));
      for (int64_t k = 0; k < (shape.headDim + 31) / 32; ++k) {
        Value col = add(lane, c32(32 * k));
        auto ifValid = scf::IfOp::create(
            b, loc,
            arith::AndIOp::create(
                b, loc, inRange,
                cmpi(arith::CmpIPredicate::slt, col, c32(shape.headDim))),
            /*withElseRegion=*/false);
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPointToStart(ifValid.thenBlock());
        LLVM::StoreOp::create(b, loc, cf(0.0), gep(dQRow, f32, col), 4);
      }
    }
    // Each row's dO O with dO as the dK/dV kernel reads it (its 16-bit
    // copy) and, split, as the dQ kernel does (both parts).
    const int64_t numSums = splitsOutputGrad ? 2 : 1;
    SmallVector<Value, 2> partials(numSums, cf(0.0));
    for (int64_t k = 0; k < perLane; ++k) {
      Value col = add(lane, c32(32 * k));
      Value valid = arith::AndIOp::create(
          b, loc, inRange,
          cmpi(arith::CmpIPredicate::slt, col, c32(shape.valueDim)));
      auto ifValid =
          scf::IfOp::create(b, loc, SmallVector<Type, 2>(numSums, f32), valid,
                            /*withElseRegion=*/true);
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifValid.thenBlock());
      Value g =
          LLVM::LoadOp::create(b, loc, doElement, gep(dORow, doElement, col));
      Value o = LLVM::LoadOp::create(b, loc, f32, gep(oRow, f32, col));
      Value rounded = g;
      if (doElement != elementType)
        rounded = doElement.isF32()
                      ? arith::TruncFOp::create(b, loc, elementType, g)
                      : arith::TruncFOp::create(
                            b, loc, elementType,
                            arith::ExtFOp::create(b, loc, f32, g));
      LLVM::StoreOp::create(b, loc, rounded, gep(do16Row, elementType, col));
      // Delta from the dO the products read, so that each row's score
      // adjoints P (dP - Delta) still sum to 0: gradients that weigh them
      // by position (ALiBi's slopes) would otherwise add up the rounding
      // of dO over the whole row.
      Value high = arith::ExtFOp::create(b, loc, f32, rounded);
      SmallVector<Value, 2> terms = {mulf(high, o)};
      if (splitsOutputGrad) {
        Value low = arith::TruncFOp::create(b, loc, elementType, subf(g, high));
        LLVM::StoreOp::create(
            b, loc, low,
            gep(gep(do16Row, elementType, lowPartOffset()), elementType, col));
        terms.push_back(
            mulf(addf(high, arith::ExtFOp::create(b, loc, f32, low)), o));
      }
      scf::YieldOp::create(b, loc, terms);
      b.setInsertionPointToStart(ifValid.elseBlock());
      scf::YieldOp::create(b, loc, SmallVector<Value, 2>(numSums, cf(0.0)));
      b.setInsertionPointAfter(ifValid);
      for (int64_t i = 0; i < numSums; ++i)
        partials[i] = addf(partials[i], ifValid.getResult(i));
    }
    for (Value &partial : partials)
      for (int64_t mask : {16, 8, 4, 2, 1})
        partial = addf(partial, shuffleXor(partial, mask));
    auto ifWriter = scf::IfOp::create(
        b, loc,
        arith::AndIOp::create(b, loc, inRange,
                              cmpi(arith::CmpIPredicate::eq, lane, c32(0))),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifWriter.thenBlock());
    Value offset = statisticOffset(head, row);
    // The scores' adjoints read Delta' (per plane, see deltaPlaneOffset);
    // the sink's gradient reads Delta, the exactest there is.
    Value partial = partials.back();
    SmallVector<Value, 2> scoreDeltas(partials);
    if (readsStatistic() && (normalizer.hasSink() || readsLseGrad())) {
      Value lsePtr = gep(arg(FixedParam::Lse), f32, offset);
      Value lse = LLVM::LoadOp::create(b, loc, f32, lsePtr, 4);
      Value sink;
      if (normalizer.hasSink()) {
        sink = loadSinkLogit(head, row);
      }
      if (readsLseGrad()) {
        Value lseGradOffset = add(
            rowOffset(FixedParam::DLseStrideB, FixedParam::DLseStrideH, head),
            mul(ext64(row), arg(FixedParam::DLseStrideM)));
        Value lseGrad = LLVM::LoadOp::create(
            b, loc, f32, gep(arg(FixedParam::DLse), f32, lseGradOffset), 4);
        Value share = normalizer.getLseAdjointShare(b, loc, lseGrad, lse, sink);
        for (Value &delta : scoreDeltas)
          delta = subf(delta, share);
      }
      if (sink && writesSinkGrad()) {
        // dSink = -P_sink Delta, with P_sink from the LSE of the scores
        // alone (before LSE' replaces it). A sink of -inf has no share,
        // also in a row that kept nothing (where the share's formula
        // would be NaN).
        Value share =
            select(cmpf(arith::CmpFPredicate::OEQ, sink, negInf()), cf(0.0),
                   normalizer.getSinkWeight(b, loc, sink, lse));
        LLVM::StoreOp::create(
            b, loc, arith::NegFOp::create(b, loc, mulf(share, partial)),
            gep(arg(FixedParam::DSink), f32, offset), 4);
      }
      if (sink)
        LLVM::StoreOp::create(
            b, loc, normalizer.getRowLogDenominator(b, loc, lse, sink), lsePtr,
            4);
    }
    for (int64_t i = 0; i < numSums; ++i)
      LLVM::StoreOp::create(b, loc, scoreDeltas[i],
                            gep(gep(arg(FixedParam::Delta), f32, offset), f32,
                                i == 0 ? c64(0) : deltaPlaneOffset()),
                            4);
    // The dQ kernel corrects its grad_reads sums with dO O (see there).
    if (readsStatistic() && !op.getGradReads().empty())
      LLVM::StoreOp::create(b, loc, partial,
                            gep(arg(FixedParam::ReadGrad), f32, offset), 4);
  }
}

/// The [rows, D] and [rows, E] tiles of a CTA's own rows from `first` (rows
/// past `limit` zero), into the two owned slots of shared memory.
