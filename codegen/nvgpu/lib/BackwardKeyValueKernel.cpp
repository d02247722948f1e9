//===- BackwardKeyValueKernel.cpp - The backward's dK/dV kernel -----------===//
//
// The _dkdv kernel (BackwardKernelEmitter.h): one CTA per key block keeps K
// and V and streams the query blocks of every head of its group; fused on
// sm_90a, it also adds each block's share of dQ (FusedQueryGrad.cpp).
//
//===----------------------------------------------------------------------===//

#include "BackwardKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;

//===----------------------------------------------------------------------===//
// dK and dV.
//===----------------------------------------------------------------------===//

void BackwardEmitter::emitKeyValue() {
  emitIndices(gpu::Dimension::x, /*firstBlocksFirst=*/true);
  const int64_t stream = shape.stream();
  const int64_t rows = shape.ownedRows();
  const int64_t qTiles = stream / 8;
  const int64_t dTiles = shape.headDim / 8, eTiles = shape.valueDim / 8;
  Value group = headOrGroup;
  Value n0 = mul(blockIndex, c32(rows));
  // The tensor maps, in the order BackwardShape::tensorMaps gives them.
  unsigned nextMap = kNumFixedParams;
  if (shape.queryGradMap) {
    queryGradMap = args[nextMap++];
    queryGradByTensor = isMapMade(queryGradMap);
  }
  if (shape.streamMaps) {
    queryMap = args[nextMap++];
    outputGradMap = args[nextMap++];
    streamByTensor = arith::AndIOp::create(b, loc, isMapMade(queryMap),
                                           isMapMade(outputGradMap));
  }
  Value nLast = sub(minsi(add(n0, c32(rows)), sizeN), c32(1));
  if (shape.fusedQuery) {
    // The stages' mbarriers: every thread arrives once per fill.
    auto ifFirst =
        scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::eq, tid, c32(0)),
                          /*withElseRegion=*/false);
    {
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifFirst.thenBlock());
      for (int64_t stage = 0; stage < shape.stages(); ++stage)
        initBarrier(stageBarrier(c32(stage)), 32 * shape.keyValueWarps());
      emitAsm(b, loc, {}, {}, "fence.mbarrier_init.release.cluster;", "");
    }
    gpu::BarrierOp::create(b, loc);
  }

  // K and V of this block, once; their fragments are read per use.
  loadOwnedTiles(
      {gep(arg(FixedParam::K), elementType,
           rowOffset(FixedParam::KStrideB, FixedParam::KStrideG, group)),
       arg(FixedParam::KStrideN),
       gep(arg(FixedParam::V), elementType,
           rowOffset(FixedParam::VStrideB, FixedParam::VStrideG, group)),
       arg(FixedParam::VStrideN), sizeN, Value()},
      n0);
  Value warpRow = mul(warp, c32(16));
  Value keysTile = smem;
  Value valuesTile = gep(smem, elementType, c32(rows * shape.qkPitch()));
  // With wgmma, each warp group's products read its 64 rows of K and V (a
  // swizzled chunk holds 64 elements per row); without, K's and V's A
  // fragments are read by ldmatrix per use.
  Value groupKeys, groupValues, kAddr, vAddr;
  if (shape.wgmma) {
    Value groupRows = mul(warpGroup, c32(kWarpGroupRows * 64));
    groupKeys = gep(keysTile, elementType, groupRows);
    groupValues = gep(valuesTile, elementType, groupRows);
  } else {
    kAddr = aAddress(keysTile, shape.qkPitch(), warpRow);
    vAddr = aAddress(valuesTile, shape.vPitch(), warpRow);
  }

  // The keys this thread's accumulator rows hold, clamped for the regions.
  SmallVector<Value, 2> keyIdx, keyInRange;
  for (int64_t r = 0; r < 2; ++r) {
    Value n = add(n0, add(warpRow, add(quadRow, c32(8 * r))));
    keyInRange.push_back(cmpi(arith::CmpIPredicate::slt, n, sizeN));
    keyIdx.push_back(toIndex(minsi(n, sub(sizeN, c32(1)))));
  }

  // dK and dV summed over the query heads of the group, in order.
  SmallVector<Value> grads(4 * (dTiles + eTiles), cf(0.0));
  Value firstHead = mul(group, groupSize);
  // Fused: the blocks streamed so far (emitStreamLoop), through the heads.
  SmallVector<Value> headsInit(grads);
  if (shape.fusedQuery)
    headsInit.push_back(c32(0));
  auto heads = scf::ForOp::create(
      b, loc, toIndex(firstHead), toIndex(add(firstHead, groupSize)),
      arith::ConstantIndexOp::create(b, loc, 1), headsInit,
      [&](OpBuilder &nested, Location, Value headIndex, ValueRange carried) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value head = arith::IndexCastOp::create(b, loc, i32, headIndex);
        TilePair queries = {
            gep(arg(FixedParam::Q), elementType,
                rowOffset(FixedParam::QStrideB, FixedParam::QStrideH, head)),
            arg(FixedParam::QStrideM),
            gep(arg(FixedParam::DO16), elementType,
                rowOffset(FixedParam::OStrideB, FixedParam::OStrideH, head)),
            arg(FixedParam::OStrideM),
            sizeM,
            head};
        auto classOf = [&](Value block) {
          Value m0 = mul(block, c32(stream));
          Value mLast = sub(minsi(add(m0, c32(stream)), sizeM), c32(1));
          return tileClass(head, m0, mLast, n0, nLast);
        };
        auto body = [&](Value m0, Value cls, Value qTile, Value dOTile,
                        Value stage, Value count, ValueRange state) {
          SmallVector<Value> acc(state);
          MutableArrayRef<Value> dK(acc.data(), 4 * dTiles);
          MutableArrayRef<Value> dV(acc.data() + 4 * dTiles, 4 * eTiles);
          // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ.
          SmallVector<Value> st(4 * qTiles, cf(0.0));
          SmallVector<Value> dpt(4 * qTiles, cf(0.0));
          if (shape.wgmma) {
            // Deferred, the last block's dQ = dS K is issued first and
            // added while Sᵀ runs (see the pending block below); dPᵀ after
            // that, so that dQ's registers are free for it.
            SmallVector<Value> dq;
            if (shape.deferQueryGrad) {
              dq = freshAccumulators(shape.headDim / 4);
              issueQueryGrad(dq, keysTile, scoreGradTile(previousTurn(count)));
            }
            st = freshAccumulators(st.size());
            dpt = freshAccumulators(dpt.size());
            issueWgmma(st, shape.headDim / 16, groupKeys, nullptr, qTile,
                       stream, /*contractRows=*/false, /*overwrite=*/true);
            if (shape.deferQueryGrad) {
              wgmmaWait(1);
              dq = fenceOperands(b, loc, dq);
              ifPending(acc.back(),
                        [&] { addQueryGrad(dq, head, acc.back()); });
            }
            issueWgmma(dpt, shape.valueDim / 16, groupValues, nullptr, dOTile,
                       stream, /*contractRows=*/false, /*overwrite=*/true);
            completeWgmma({st, dpt});
          } else {
            multiply(
                st, shape.headDim / 16, qTiles,
                [&](int64_t kk) {
                  return ldmatrix(gep(kAddr, elementType, c32(16 * kk)), false);
                },
                bAddress(qTile, shape.qkPitch()), shape.qkPitch(), false);
            multiply(
                dpt, shape.valueDim / 16, qTiles,
                [&](int64_t kk) {
                  return ldmatrix(gep(vAddr, elementType, c32(16 * kk)), false);
                },
                bAddress(dOTile, shape.vPitch()), shape.vPitch(), false);
          }

          // P and dS of each element, rounded to 16 bits in pairs of
          // adjacent queries as soon as both are known (fewer registers
          // live); the mask is skipped on full tiles.
          const int64_t numPairs = st.size() / 2;
          auto evaluate = [&](bool full) {
            SmallVector<Value> results(2 * numPairs);
            for (int64_t j = 0; j < qTiles; ++j) {
              Value weights[2][2], adjoints[2][2];
              for (int64_t c = 0; c < 2; ++c) {
                Value local = add(mul(quadCol, c32(2)), c32(8 * j + c));
                Value m = add(m0, local);
                RowStatistics row = shape.fusedQuery
                                        ? stagedRowStatistics(stage, local, m)
                                        : loadRowStatistics(head, m);
                for (int64_t r = 0; r < 2; ++r) {
                  const int64_t k = slot(j, r, c);
                  Value keep =
                      arith::AndIOp::create(b, loc, row.inRange, keyInRange[r]);
                  ScoreAdjoint adjoint =
                      emitWeightAndAdjoint(st[k], dpt[k], headIndex, row.index,
                                           keyIdx[r], keep, full, row);
                  weights[r][c] = adjoint.weight;
                  adjoints[r][c] = adjoint.scoreAdjoint;
                }
              }
              for (int64_t r = 0; r < 2; ++r) {
                results[pairIndex(j, r)] = pack(weights[r][0], weights[r][1]);
                results[numPairs + pairIndex(j, r)] =
                    pack(adjoints[r][0], adjoints[r][1]);
              }
            }
            return results;
          };
          SmallVector<Value> weighted = evaluateByClass(
              cls, SmallVector<Type>(2 * numPairs, i32), evaluate);
          ArrayRef<Value> p(weighted.data(), numPairs);
          ArrayRef<Value> ds(weighted.data() + numPairs, numPairs);

          // dV += P dO and dK += dS Q, contracting over the queries.
          auto pFragment = [&](int64_t kk) { return pairFragment(p, kk); };
          auto dsFragment = [&](int64_t kk) { return pairFragment(ds, kk); };
          if (shape.wgmma) {
            // dSᵀ tiles by turns (see scoreGradElements).
            Value scoreGrads;
            if (shape.fusedQuery) {
              scoreGrads =
                  scoreGradTile(arith::RemUIOp::create(b, loc, count, c32(2)));
              storeScoreGradTile(ds, scoreGrads);
            }
            issueWgmma(dV, stream / 16, {}, pFragment, dOTile, stream,
                       /*contractRows=*/true);
            issueWgmma(dK, stream / 16, {}, dsFragment, qTile, stream,
                       /*contractRows=*/true);
            if (!shape.fusedQuery) {
              completeWgmma({dV, dK});
              return acc;
            }
            // dQ's product reads both warp groups' dSᵀ, after this barrier;
            // dV and dK run while the CTA waits for it. The tensor
            // reductions (or atomics) of the block before have read the dQ
            // boxes before the barrier; they are written after it.
            asyncProxyFence();
            if (shape.queryGradMap)
              bulkWait(/*readOnly=*/true);
            gpu::BarrierOp::create(b, loc);
            completeWgmma({dV, dK});
            if (shape.deferQueryGrad) {
              acc.back() = m0;
              return acc;
            }
            // Here, once dV and dK are complete, so that P's and dS's
            // registers are free for dQ's accumulators.
            SmallVector<Value> dq = freshAccumulators(shape.headDim / 4);
            issueQueryGrad(dq, keysTile, scoreGrads);
            completeWgmma({dq});
            addQueryGrad(dq, head, m0);
            return acc;
          }
          multiply(dV, stream / 16, eTiles, pFragment,
                   bTransposedAddress(dOTile, shape.vPitch()), shape.vPitch(),
                   true);
          multiply(dK, stream / 16, dTiles, dsFragment,
                   bTransposedAddress(qTile, shape.qkPitch()), shape.qkPitch(),
                   true);
          return acc;
        };
        // Deferred, the loop carries the first row of the block whose dQ
        // is pending (-1: none), added in the next block or after the loop.
        Value streamed = shape.fusedQuery ? carried.back() : Value();
        SmallVector<Value> init(carried.take_front(grads.size()));
        if (shape.deferQueryGrad)
          init.push_back(c32(-1));
        SmallVector<Value> results =
            emitStreamLoop(queries, classOf, init, body, streamed);
        if (shape.deferQueryGrad) {
          Value pendingM0 = results.pop_back_val();
          ifPending(pendingM0, [&] {
            SmallVector<Value> dq = freshAccumulators(shape.headDim / 4);
            issueQueryGrad(dq, keysTile, scoreGradTile(previousTurn(streamed)));
            completeWgmma({dq});
            addQueryGrad(dq, head, pendingM0);
          });
        }
        if (shape.fusedQuery)
          results.push_back(streamed);
        scf::YieldOp::create(b, loc, results);
      });
  // The tensor reductions complete before the CTA exits, and the copies
  // (those of K and V where no query block was live).
  if (shape.queryGradMap)
    bulkWait(/*readOnly=*/false);
  NVVM::CpAsyncWaitGroupOp::create(b, loc, 0);
  SmallVector<Value> finalGrads(heads.getResults().take_front(grads.size()));
  ArrayRef<Value> dK(finalGrads.data(), 4 * dTiles);
  ArrayRef<Value> dV(finalGrads.data() + 4 * dTiles, 4 * eTiles);
  storeGradient(
      dK, shape.headDim, scale,
      gep(arg(FixedParam::DK), f32,
          rowOffset(FixedParam::DKStrideB, FixedParam::DKStrideG, group)),
      FixedParam::DKStrideN, n0, sizeN);
  storeGradient(
      dV, shape.valueDim, cf(1.0),
      gep(arg(FixedParam::DV), f32,
          rowOffset(FixedParam::DVStrideB, FixedParam::DVStrideG, group)),
      FixedParam::DVStrideN, n0, sizeN);
}
