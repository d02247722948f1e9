//===- BackwardQueryKernel.cpp - The backward's dQ kernel -----------------===//
//
// The _dq kernel (BackwardKernelEmitter.h): one CTA per query block keeps Q
// and dO and streams the live key blocks; with grad_reads, each row also
// sums the gradients of the tensors the score_mod reads.
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
// dQ.
//===----------------------------------------------------------------------===//

void BackwardEmitter::emitQuery() {
  emitIndices(gpu::Dimension::x);
  const int64_t stream = shape.stream();
  const int64_t kTiles = stream / 8;
  const int64_t dTiles = shape.headDim / 8;
  Value head = headOrGroup;
  Value headIndex = toIndex(head);
  Value kvHead = divu(head, groupSize);
  Value m0 = mul(blockIndex, c32(kWarpGroupRows));
  Value mLast = sub(minsi(add(m0, c32(kWarpGroupRows)), sizeM), c32(1));

  // Q and dO of this block: into shared memory, then registers.
  Value dOBase =
      gep(arg(FixedParam::DO16), elementType,
          rowOffset(FixedParam::OStrideB, FixedParam::OStrideH, head));
  loadOwnedTiles(
      {gep(arg(FixedParam::Q), elementType,
           rowOffset(FixedParam::QStrideB, FixedParam::QStrideH, head)),
       arg(FixedParam::QStrideM), dOBase, arg(FixedParam::OStrideM), sizeM,
       Value()},
      m0);
  const int64_t dOOffset = kWarpGroupRows * shape.qkPitch();
  const int64_t dOLowOffset = dOOffset + kWarpGroupRows * shape.vPitch();
  Value queriesTile = smem;
  Value outputGradTile = gep(smem, elementType, c32(dOOffset));
  Value outputGradLowTile = gep(smem, elementType, c32(dOLowOffset));
  if (shape.lowPartTile)
    loadTileAsync(dOLowOffset, kWarpGroupRows, shape.valueDim, shape.vPitch(),
                  gep(dOBase, elementType, lowPartOffset()),
                  arg(FixedParam::OStrideM), m0, sizeM, nullptr,
                  /*swizzled=*/true);
  waitForTiles(0);
  Value warpRow = mul(warp, c32(16));
  // Without wgmma, Q and dO are held as A fragments in registers.
  SmallVector<SmallVector<Value, 4>> qFrag, dOFrag, dOLowFrag;
  if (!shape.wgmma) {
    Value qAddr = aAddress(queriesTile, shape.qkPitch(), warpRow);
    Value dOAddr = aAddress(outputGradTile, shape.vPitch(), warpRow);
    for (int64_t kk = 0; kk < shape.headDim / 16; ++kk)
      qFrag.push_back(ldmatrix(gep(qAddr, elementType, c32(16 * kk)), false));
    for (int64_t kk = 0; kk < shape.valueDim / 16; ++kk)
      dOFrag.push_back(ldmatrix(gep(dOAddr, elementType, c32(16 * kk)), false));
    if (splitsOutputGrad) {
      // dO's low part, through the same slot once every warp has its high
      // part.
      gpu::BarrierOp::create(b, loc);
      loadTileAsync(dOOffset, kWarpGroupRows, shape.valueDim, shape.vPitch(),
                    gep(dOBase, elementType, lowPartOffset()),
                    arg(FixedParam::OStrideM), m0, sizeM);
      waitForCopies();
      for (int64_t kk = 0; kk < shape.valueDim / 16; ++kk)
        dOLowFrag.push_back(
            ldmatrix(gep(dOAddr, elementType, c32(16 * kk)), false));
    }
  }
  SmallVector<RowStatistics, 2> rows;
  for (int64_t r = 0; r < 2; ++r)
    rows.push_back(
        loadRowStatistics(head, add(m0, add(warpRow, add(quadRow, c32(8 * r)))),
                          splitsOutputGrad));

  TilePair keys = {
      gep(arg(FixedParam::K), elementType,
          rowOffset(FixedParam::KStrideB, FixedParam::KStrideG, kvHead)),
      arg(FixedParam::KStrideN),
      gep(arg(FixedParam::V), elementType,
          rowOffset(FixedParam::VStrideB, FixedParam::VStrideG, kvHead)),
      arg(FixedParam::VStrideN),
      sizeN,
      Value()};
  auto classOf = [&](Value block) {
    Value n0 = mul(block, c32(stream));
    Value nLast = sub(minsi(add(n0, c32(stream)), sizeN), c32(1));
    return tileClass(head, m0, mLast, n0, nLast);
  };
  // With a grad_reads read, each of the thread's two rows also sums its
  // terms (carried after dQ's accumulators, kRowSums per row).
  const bool sumsRead = !op.getGradReads().empty();
  const int64_t numDq = 4 * dTiles;
  // A position-weighted sum of score adjoints (ALiBi's slopes) multiplies
  // any error in a row's sum of P (dP - Delta), 0 in exact arithmetic, by
  // the row's positions. Two such errors are large: Delta comes from O,
  // whose P V rounded P to 16 bits, and the recomputed P share the error of
  // the row's shift (the exponent's fma rounds LSE log2 e, which is large
  // where scores are). So where the weights come from the statistic, each
  // row also sums P, P dP and the terms' coefficients of -Delta, and the
  // sum is taken at the end as if of the row's weights renormalised
  // (P / (sum P + P_sink)) with their own Delta (sum P dP over the same).
  const bool correctsDelta = sumsRead && readsStatistic();
  const int64_t kRowSums = correctsDelta ? 4 : 1;
  enum {
    kReadSum = 0,
    kWeightedAdjointSum = 1,
    kDeltaCoefficientSum = 2,
    kWeightSum = 3
  };
  auto body = [&](Value n0, Value cls, Value kTile, Value vTile, Value, Value,
                  ValueRange state) {
    SmallVector<Value> dQ(state.take_front(numDq));
    SmallVector<Value> readSums(state.drop_front(numDq));
    // S = Q Kᵀ and dP = dO Vᵀ.
    SmallVector<Value> s(4 * kTiles, cf(0.0));
    SmallVector<Value> dp(4 * kTiles, cf(0.0));
    if (shape.wgmma) {
      SmallVector<Value, 2> outputGradTiles = {outputGradTile};
      if (splitsOutputGrad)
        outputGradTiles.push_back(outputGradLowTile);
      s = freshAccumulators(s.size());
      dp = freshAccumulators(dp.size());
      issueWgmma(s, shape.headDim / 16, queriesTile, nullptr, kTile, stream,
                 /*contractRows=*/false, /*overwrite=*/true);
      issueWgmma(dp, shape.valueDim / 16, outputGradTiles, nullptr, vTile,
                 stream, /*contractRows=*/false, /*overwrite=*/true);
      completeWgmma({s, dp});
    } else {
      multiply(
          s, shape.headDim / 16, kTiles, [&](int64_t kk) { return qFrag[kk]; },
          bAddress(kTile, shape.qkPitch()), shape.qkPitch(), false);
      if (splitsOutputGrad)
        multiply(
            dp, shape.valueDim / 16, kTiles,
            [&](int64_t kk) { return dOLowFrag[kk]; },
            bAddress(vTile, shape.vPitch()), shape.vPitch(), false);
      multiply(
          dp, shape.valueDim / 16, kTiles,
          [&](int64_t kk) { return dOFrag[kk]; },
          bAddress(vTile, shape.vPitch()), shape.vPitch(), false);
    }
    // dS, then (sumsRead) the two rows' sums of the read's terms.
    auto evaluate = [&](bool full) {
      SmallVector<Value> ds(s.size());
      SmallVector<Value> sums(readSums);
      for (int64_t j = 0; j < kTiles; ++j)
        for (int64_t c = 0; c < 2; ++c) {
          Value n = add(n0, add(mul(quadCol, c32(2)), c32(8 * j + c)));
          Value nInRange = cmpi(arith::CmpIPredicate::slt, n, sizeN);
          Value nIdx = toIndex(minsi(n, sub(sizeN, c32(1))));
          for (int64_t r = 0; r < 2; ++r) {
            const int64_t k = slot(j, r, c);
            Value keep =
                arith::AndIOp::create(b, loc, nInRange, rows[r].inRange);
            ScoreAdjoint adjoint =
                emitWeightAndAdjoint(s[k], dp[k], headIndex, rows[r].index,
                                     nIdx, keep, full, rows[r], sumsRead);
            ds[k] = adjoint.scoreAdjoint;
            if (!sumsRead)
              continue;
            Value *rowSums = &sums[kRowSums * r];
            rowSums[kReadSum] = addf(rowSums[kReadSum], adjoint.readTerm);
            if (!correctsDelta)
              continue;
            rowSums[kWeightedAdjointSum] =
                addf(rowSums[kWeightedAdjointSum], mulf(adjoint.weight, dp[k]));
            rowSums[kDeltaCoefficientSum] = addf(rowSums[kDeltaCoefficientSum],
                                                 adjoint.readDeltaCoefficient);
            rowSums[kWeightSum] = addf(rowSums[kWeightSum], adjoint.weight);
          }
        }
      llvm::append_range(ds, sums);
      return ds;
    };
    SmallVector<Value> evaluated = evaluateByClass(
        cls, SmallVector<Type>(s.size() + readSums.size(), f32), evaluate);
    SmallVector<Value> ds(evaluated.begin(), evaluated.begin() + s.size());
    // dQ += dS K, contracting over the keys.
    auto dsFragment = [&](int64_t kk) { return packedFragment(ds, kk); };
    if (shape.wgmma) {
      issueWgmma(dQ, stream / 16, {}, dsFragment, kTile, stream,
                 /*contractRows=*/true);
      completeWgmma({dQ});
    } else {
      multiply(dQ, stream / 16, dTiles, dsFragment,
               bTransposedAddress(kTile, shape.qkPitch()), shape.qkPitch(),
               true);
    }
    llvm::append_range(dQ, ArrayRef<Value>(evaluated).drop_front(s.size()));
    return dQ;
  };
  // Every warp holds its fragments before the stages are written.
  gpu::BarrierOp::create(b, loc);
  SmallVector<Value> init(numDq + (sumsRead ? 2 * kRowSums : 0), cf(0.0));
  Value streamed;
  SmallVector<Value> carried =
      emitStreamLoop(keys, classOf, init, body, streamed);
  ArrayRef<Value> dQ = ArrayRef<Value>(carried).take_front(numDq);
  storeGradient(
      dQ, shape.headDim, scale,
      gep(arg(FixedParam::DQ), f32,
          rowOffset(FixedParam::DQStrideB, FixedParam::DQStrideH, head)),
      FixedParam::DQStrideM, m0, sizeM);
  if (!sumsRead)
    return;
  // Each row's sum: over the quad's lanes, then by its first lane, in a
  // fixed order (the epilogue einsums add the rows up).
  for (int64_t r = 0; r < 2; ++r) {
    SmallVector<Value, 3> rowSums;
    for (int64_t i = 0; i < kRowSums; ++i) {
      Value sum = carried[numDq + kRowSums * r + i];
      for (int64_t mask : {1, 2})
        sum = addf(sum, shuffleXor(sum, mask));
      rowSums.push_back(sum);
    }
    Value row = add(m0, add(warpRow, add(quadRow, c32(8 * r))));
    auto ifWriter = scf::IfOp::create(
        b, loc,
        arith::AndIOp::create(b, loc, rows[r].inRange,
                              cmpi(arith::CmpIPredicate::eq, quadCol, c32(0))),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifWriter.thenBlock());
    Value slotPtr =
        gep(arg(FixedParam::ReadGrad), f32, statisticOffset(head, row));
    Value sum = rowSums[kReadSum];
    if (correctsDelta) {
      // With c = 1 / (sum P + P_sink) and the row's own Delta_c = c sum P dP,
      // the terms used Delta' = dO O - share (share: the LSE adjoint's part,
      // 0 without one) and should have used Delta_c - share:
      //   c (sum + (dO O - Delta_c) sum coefficient).
      // dO O is what _pre left in this row's slot.
      Value mass = rowSums[kWeightSum];
      if (normalizer.hasSink()) {
        mass = addf(mass, normalizer.weight(b, loc, rows[r].shift,
                                            loadSinkLogit(head, row)));
      }
      Value dOO = LLVM::LoadOp::create(b, loc, f32, slotPtr, 4);
      Value factor = arith::DivFOp::create(b, loc, cf(1.0), mass);
      Value ownDelta = mulf(factor, rowSums[kWeightedAdjointSum]);
      Value corrected = mulf(
          factor,
          addf(sum, mulf(subf(dOO, ownDelta), rowSums[kDeltaCoefficientSum])));
      sum = select(cmpf(arith::CmpFPredicate::OGT, mass, cf(0.0)), corrected,
                   sum);
    }
    LLVM::StoreOp::create(b, loc, sum, slotPtr, 4);
  }
}
