//===- BackwardTileStream.cpp - Streamed tiles of the backward ------------===//
//
// The tiles the dK/dV and dQ kernels stream through shared memory: a CTA's
// own rows, loaded once, and the other side's blocks, double-buffered by
// cp.async groups (the fused kernel: a ring of stages whose TMA loads or
// copies complete on mbarriers), with the rows' statistics beside them.
//
//===----------------------------------------------------------------------===//

#include "BackwardKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;

void BackwardEmitter::loadOwnedTiles(const TilePair &tiles, Value first) {
  const int64_t rows = shape.ownedRows();
  loadTileAsync(0, rows, shape.headDim, shape.qkPitch(), tiles.dBase,
                tiles.dStride, first, tiles.limit, nullptr, shape.wgmma);
  loadTileAsync(rows * shape.qkPitch(), rows, shape.valueDim, shape.vPitch(),
                tiles.eBase, tiles.eStride, first, tiles.limit, nullptr,
                shape.wgmma);
}

Value BackwardEmitter::stagePointer(Value stage) {
  return gep(
      smem, elementType,
      add(c32(shape.ownedElements()), mul(stage, c32(shape.stageElements()))));
}

Value BackwardEmitter::stageStatistics(Value stage) {
  return gep(gep(smem, b.getI8Type(), c32(shape.statisticsOffsetBytes())), f32,
             mul(stage, c32(2 * shape.stream())));
}

/// Starts the copies of the streamed tiles of `block` into `stage`: two
/// commit groups, empty past the last block, so that every iteration
/// commits the same number of groups (which cp.async.wait_group counts;
/// fused, the stage's mbarrier tracks the copies instead).
void BackwardEmitter::prefetchStage(const TilePair &tiles, Value block,
                                    Value numBlocks, Value stage) {
  const int64_t stream = shape.stream();
  auto guard = scf::IfOp::create(
      b, loc, cmpi(arith::CmpIPredicate::slt, block, numBlocks),
      /*withElseRegion=*/true);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(guard.thenBlock());
  Value first = mul(block, c32(stream));
  if (shape.fusedQuery && readsStatistic()) {
    // Threads 0 .. 2 stream - 1 copy a row's LSE' or Delta' each; the copies
    // join the first tile's group. Rows past M read nothing (and are never
    // kept).
    auto copier = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::ult, tid, c32(2 * stream)),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(copier.thenBlock());
    Value isDelta = cmpi(arith::CmpIPredicate::uge, tid, c32(stream));
    Value local = select(isDelta, sub(tid, c32(stream)), tid);
    Value row = add(first, local);
    Value inRange = cmpi(arith::CmpIPredicate::slt, row, tiles.limit);
    Value offset =
        statisticOffset(tiles.head, minsi(row, sub(tiles.limit, c32(1))));
    Value source = select(isDelta, gep(arg(FixedParam::Delta), f32, offset),
                          gep(arg(FixedParam::Lse), f32, offset));
    NVVM::CpAsyncOp::create(b, loc, gep(stageStatistics(stage), f32, tid),
                            source, /*size=*/4, NVVM::LoadCacheModifierKind::CA,
                            select(inRange, c32(4), c32(0)));
  }
  // Where the kernel has maps of Q and dO, one thread loads the tiles with
  // TMA, and every thread copies them otherwise.
  scf::IfOp ifTensor;
  if (shape.streamMaps) {
    ifTensor = scf::IfOp::create(b, loc, streamByTensor,
                                 /*withElseRegion=*/true);
    b.setInsertionPointToStart(ifTensor.thenBlock());
    loadStageByTensor(tiles, first, stage);
    b.setInsertionPointToStart(ifTensor.elseBlock());
  }
  // loadTileAsync copies to offsets from `smem`: the stage's base stands in.
  Value savedSmem = smem;
  smem = stagePointer(stage);
  loadTileAsync(0, stream, shape.headDim, shape.qkPitch(), tiles.dBase,
                tiles.dStride, first, tiles.limit, nullptr, shape.wgmma);
  loadTileAsync(stream * shape.qkPitch(), stream, shape.valueDim,
                shape.vPitch(), tiles.eBase, tiles.eStride, first, tiles.limit,
                nullptr, shape.wgmma);
  smem = savedSmem;
  if (ifTensor)
    b.setInsertionPointAfter(ifTensor);
  // Fused: the stage's mbarrier completes once every thread's copies have
  // (each arrives once per stage's fill).
  if (shape.fusedQuery)
    arriveOnCopies(stageBarrier(stage));
  b.setInsertionPointToStart(guard.elseBlock());
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
}

void BackwardEmitter::loadStageByTensor(const TilePair &tiles, Value first,
                                        Value stage) {
  const int64_t stream = shape.stream();
  auto ifFirst =
      scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::eq, tid, c32(0)),
                        /*withElseRegion=*/false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(ifFirst.thenBlock());
  // The stage's mbarrier counts every thread's arrival on its copies (the
  // statistics'); the boxes' bytes are expected before any of them lands.
  // Rows past M are filled with zeros, and count.
  Value barrier = stageBarrier(stage);
  expectBytes(barrier, 2 * stream * (shape.headDim + shape.valueDim));
  Value base = sharedAddressOf(stagePointer(stage));
  auto loadChunks = [&](Value map, Value tile, int64_t columns) {
    for (int64_t c = 0; c < columns / 64; ++c)
      loadBox(map, add(tile, c32(c * stream * kSwizzledRowBytes)),
              {c32(64 * c), first, tiles.head, batch}, barrier);
  };
  loadChunks(queryMap, base, shape.headDim);
  loadChunks(outputGradMap, add(base, c32(2 * stream * shape.qkPitch())),
             shape.valueDim);
}

Value BackwardEmitter::stageBarrier(Value stage) {
  return sharedAddressOf(
      gep(gep(smem, b.getI8Type(), c32(shape.stageBarrierOffsetBytes())), i64,
          stage));
}

SmallVector<Value> BackwardEmitter::emitStreamLoop(
    const TilePair &tiles, function_ref<Value(Value)> classOfBlock,
    ValueRange init, StreamBody body, Value &streamed) {
  const int64_t stream = shape.stream();
  const bool fused = shape.fusedQuery;
  auto stageOf = [&](Value count) {
    return arith::RemUIOp::create(b, loc, count, c32(shape.stages()));
  };
  Value numBlocks = ceilDiv(tiles.limit, stream);
  auto [first, firstClass] = findLiveBlock(c32(0), numBlocks, classOfBlock);
  prefetchStage(tiles, first, numBlocks, fused ? stageOf(streamed) : c32(0));
  SmallVector<Value> loopInit = {first, firstClass, fused ? streamed : c32(0)};
  llvm::append_range(loopInit, init);
  scf::WhileOp loop = emitBlockLoop(
      loopInit, numBlocks, [&](ValueRange state) -> SmallVector<Value> {
        Value block = state[0], tileClass = state[1], count = state[2];
        auto [next, nextClass] =
            findLiveBlock(add(block, c32(1)), numBlocks, classOfBlock);
        Value stage, nextCount;
        if (fused) {
          // The next live block streams into the stage of the block two
          // before this one, which every warp left before the last block's
          // barrier; this block's copies, every thread's, are complete when
          // its stage's mbarrier completes its phase of this fill, after
          // which the products may read them.
          stage = stageOf(count);
          nextCount = add(count, c32(1));
          prefetchStage(tiles, next, numBlocks, stageOf(nextCount));
          Value fill =
              arith::DivUIOp::create(b, loc, count, c32(shape.stages()));
          waitBarrier(stageBarrier(stage),
                      arith::AndIOp::create(b, loc, fill, c32(1)));
          // cp.async writes through the generic proxy, which wgmma does
          // not see without a fence; TMA writes through the async one.
          if (shape.streamMaps) {
            auto ifCopied = scf::IfOp::create(
                b, loc,
                arith::XOrIOp::create(
                    b, loc, streamByTensor,
                    arith::ConstantIntOp::create(b, loc, 1, 1)),
                /*withElseRegion=*/false);
            OpBuilder::InsertionGuard insertion(b);
            b.setInsertionPointToStart(ifCopied.thenBlock());
            asyncProxyFence();
          } else {
            asyncProxyFence();
          }
        } else {
          // This stage's copies are complete and, past the barrier, every
          // thread's; every warp is done with the other stage, into which
          // the next live block streams while this one is used.
          waitForTiles(0);
          stage = count;
          nextCount = sub(c32(1), stage);
          prefetchStage(tiles, next, numBlocks, nextCount);
        }
        Value dTile = stagePointer(stage);
        Value eTile = gep(dTile, elementType, c32(stream * shape.qkPitch()));
        SmallVector<Value> results = {next, nextClass, nextCount};
        llvm::append_range(results,
                           body(mul(block, c32(stream)), tileClass, dTile,
                                eTile, stage, count, state.drop_front(3)));
        return results;
      });
  // No warp reads a stage once every warp is past here: a next loop
  // prefetches into stage 0 at once (fused, into the stage after the last
  // block's, which the barriers inside the blocks already free; kept, once
  // per loop, for the same end state).
  gpu::BarrierOp::create(b, loc);
  if (fused)
    streamed = loop.getResult(2);
  return SmallVector<Value>(loop.getResults().drop_front(3));
}

BackwardEmitter::RowStatistics
BackwardEmitter::stagedRowStatistics(Value stage, Value localRow, Value row) {
  return rowStatistics(row, [&](Value) {
    Value lse = gep(stageStatistics(stage), f32, localRow);
    return std::make_pair(lse, gep(lse, f32, c32(shape.stream())));
  });
}
