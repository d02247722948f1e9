//===- WgmmaAttentionKernel.cpp - The Hopper attention skeleton -----------===//
//
// The sm_90a forward kernel of an attn.attention, FlashAttention-3's
// structure: CTAs of three warp groups, each taking tiles of (128 query
// rows, head, batch) in turn (below). The first is the producer: after giving
// registers back (setmaxnreg) one of its threads loads Q, then K and V of each
// live key block into a ring of kWgmmaStages stages, with TMA
// (cp.async.bulk.tensor, 128-byte swizzle) completing on mbarriers. The other
// two are consumers of 64 rows each: S = Q Kᵀ on wgmma with both operands in
// shared memory, the op's score_mod, mask and normalizer exactly as in the
// mma.sync skeleton (a wgmma m64nN accumulator holds, per warp, the fragments
// of an m16n8 accumulator row tile), and O += P V on wgmma with P from
// registers. Blocks of 128 keys where the per-score code is short, with a
// longer index-only mask evaluated into bits while S runs
// (AttentionTileShape::maskBesideProduct), else 64. The two products overlap
// the softmax: block j's S and block j - 1's P V are issued together, block
// j's weights are computed while P V runs, and O is rescaled by block j's
// shift once it has. The two groups take turns
// issuing a block's products (named barriers 1 and 2), so that the tensor
// cores run one group's while the other computes its weights. K of a stage
// is released as soon as S is done, V once P V is.
//
// The asynchronous products' registers pass through fenceOperands
// (WgmmaTiles.h) around wgmma.fence and wgmma.wait_group.
//
// The CTAs stay resident, one per SM, and take their tiles in turn: each
// starts with the tile of its index in the grid, then its producer fetches
// the next from a counter in global memory (an atomic add, once it has
// issued the last loads of the tile before) and hands it to the consumers
// through shared memory with the tile's Q. Tiles are numbered row block by
// row block, the last rows first (under a causal mask they have the most
// keys), each block of the query heads that share a key/value head side by
// side (setTileIndices), so the longest tiles start first and the short
// ones fill the end, as SMs free up. The producer loads the next tile's Q
// once both consumers have done their last S = Q Kᵀ of the tile before
// (Q empty), and its keys as soon as the ring has room, while the consumers
// finish the last P V and write O; the ring and the turns carry on across
// tiles. The CTA that fetches the last ticket resets the counter to 0 for
// the next launch.
//
// Shared memory (bytes from a 1024-aligned base): Q as D / 64 column chunks
// of [128 rows][64] (128 bytes a row, swizzled in 1024-byte atoms of 8
// rows); each stage K then V as chunks of [blockN rows][64]; then the
// barriers: Q full, then per stage K full, V full, K empty and V empty,
// then Q empty; then the tile slot.
//
//===----------------------------------------------------------------------===//

#include "AttentionKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Rows of a consumer warp group and of one wgmma.
constexpr int64_t kWgmmaRows = 64;
/// Registers a producer thread keeps, and a consumer thread gets: 128 of
/// the first and 256 of the second fill the register file.
constexpr int64_t kProducerRegisters = 40;
constexpr int64_t kConsumerRegisters = 232;

} // namespace

Value AttentionKernelEmitter::sharedAddress(int64_t offset) {
  return add(sharedBase, c32(offset));
}

Value AttentionKernelEmitter::sharedAddress(Value offset) {
  return add(sharedBase, offset);
}

//===----------------------------------------------------------------------===//
// Shared memory.
//===----------------------------------------------------------------------===//

int64_t AttentionKernelEmitter::wgmmaStageBytes() const {
  return 2 * shape.blockN * (shape.headDim + shape.valueDim);
}

int64_t AttentionKernelEmitter::wgmmaStageOffset(int64_t stage) const {
  return 2 * shape.blockM * shape.headDim + stage * wgmmaStageBytes();
}

int64_t AttentionKernelEmitter::wgmmaBarrierOffset() const {
  return wgmmaStageOffset(kWgmmaStages);
}

int64_t mlir::attn::getWgmmaSharedMemoryBytes(const AttentionTileShape &shape) {
  // The tiles, the barriers, the tile slot (8 bytes, keeping what follows
  // aligned), and room to align the base to 1024 bytes.
  return 2 * shape.blockM * shape.headDim +
         kWgmmaStages * 2 * shape.blockN * (shape.headDim + shape.valueDim) +
         8 * (2 + 4 * kWgmmaStages) + 8 + kSwizzleAtomBytes;
}

//===----------------------------------------------------------------------===//
// The two roles.
//===----------------------------------------------------------------------===//

namespace {
/// Barrier byte offsets past wgmmaBarrierOffset: Q full, then per stage K
/// full, V full, K empty and V empty, then Q empty. K and V of a stage are
/// released apart: K once S = Q Kᵀ is done, V one block later, once P V is.
int64_t qFullBarrier() { return 0; }
int64_t keysFullBarrier(int64_t stage) { return 8 * (1 + stage); }
int64_t valuesFullBarrier(int64_t stage) {
  return 8 * (1 + kWgmmaStages + stage);
}
int64_t keysEmptyBarrier(int64_t stage) {
  return 8 * (1 + 2 * kWgmmaStages + stage);
}
int64_t valuesEmptyBarrier(int64_t stage) {
  return 8 * (1 + 3 * kWgmmaStages + stage);
}
int64_t queryEmptyBarrier() { return 8 * (1 + 4 * kWgmmaStages); }
} // namespace

/// After the barriers, the slot through which the producer hands each tile
/// (its index in the schedule) to the consumers.
int64_t AttentionKernelEmitter::tileSlotOffset() {
  return 8 * (2 + 4 * kWgmmaStages);
}

AttentionKernelEmitter::RingSlot
AttentionKernelEmitter::ringSlot(Value iteration) {
  RingSlot slot;
  Value stage = arith::AndIOp::create(b, loc, iteration, c32(kWgmmaStages - 1));
  slot.phase =
      arith::AndIOp::create(b, loc, divu(iteration, c32(kWgmmaStages)), c32(1));
  slot.offset =
      add(c32(wgmmaStageOffset(0)), mul(stage, c32(wgmmaStageBytes())));
  slot.barrierStride = mul(stage, c32(8));
  return slot;
}

Value AttentionKernelEmitter::ringBarrier(int64_t firstStageOffset,
                                          const RingSlot &slot) {
  return sharedAddress(
      add(c32(wgmmaBarrierOffset() + firstStageOffset), slot.barrierStride));
}

std::pair<Value, Value>
AttentionKernelEmitter::nextLiveBlock(Value block, Value position,
                                      Value numBlocks) {
  if (shape.tileList) {
    Value entry = readTileList(position);
    return {arith::ShRUIOp::create(b, loc, entry, c32(2)),
            arith::AndIOp::create(b, loc, entry, c32(3))};
  }
  return findLiveBlock(block ? add(block, c32(1)) : c32(0), numBlocks);
}

AttentionKernelEmitter::TileSchedule
AttentionKernelEmitter::emitTileSchedule() {
  // The CTA's place in the grid however the runtime shaped it: launched
  // with one CTA per tile, each takes just its own.
  Value gridX = arith::IndexCastOp::create(
      b, loc, i32, gpu::GridDimOp::create(b, loc, gpu::Dimension::x));
  Value gridY = arith::IndexCastOp::create(
      b, loc, i32, gpu::GridDimOp::create(b, loc, gpu::Dimension::y));
  Value gridZ = arith::IndexCastOp::create(
      b, loc, i32, gpu::GridDimOp::create(b, loc, gpu::Dimension::z));
  TileSchedule schedule;
  schedule.numCtas = mul(gridX, mul(gridY, gridZ));
  schedule.cta =
      add(blockIndexAlong(gpu::Dimension::x),
          mul(gridX, add(blockIndexAlong(gpu::Dimension::y),
                         mul(gridY, blockIndexAlong(gpu::Dimension::z)))));
  schedule.numTiles = mul(ceilDiv(sizeM, shape.blockM),
                          mul(arg(FixedParam::H), arg(FixedParam::B)));
  schedule.counter = args[kNumFixedParams + kWgmmaTensorMaps];
  return schedule;
}

Value AttentionKernelEmitter::fetchTile(const TileSchedule &schedule) {
  return emitAsm(b, loc, i32, {schedule.counter},
                 "atom.global.add.u32 $0, [$1], 1;", "=r,l")
      .getResult(0);
}

void AttentionKernelEmitter::resetTileCounter(const TileSchedule &schedule,
                                              Value ticket) {
  // A CTA takes a ticket for each tile it starts (the ticket of the tile
  // after it), none if its first is past the last: numTiles tickets in
  // all, so the one that got numTiles - 1 is the last, and no CTA of this
  // launch reads the counter after it. Left at 0, it serves the next launch.
  auto ifLast = scf::IfOp::create(
      b, loc,
      cmpi(arith::CmpIPredicate::eq, ticket, sub(schedule.numTiles, c32(1))),
      /*withElseRegion=*/false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(ifLast.thenBlock());
  emitAsm(b, loc, {}, {schedule.counter}, "st.global.u32 [$0], 0;", "l");
}

void AttentionKernelEmitter::emitProducerTiles(
    const TileSchedule &schedule, function_ref<Value(Value ringStart)> body) {
  Value slot = sharedAddress(wgmmaBarrierOffset() + tileSlotOffset());
  Value qEmpty = sharedAddress(wgmmaBarrierOffset() + queryEmptyBarrier());
  // State: the tile's ordinal in the CTA, where it starts in the ring, and
  // the tile.
  emitWhileLoop(
      TypeRange{i32, i32, i32}, ValueRange{c32(0), c32(0), schedule.cta},
      [&](ValueRange state) -> std::pair<Value, SmallVector<Value>> {
        // Q's buffer and the tile's slot are free once both consumers have
        // done the last S of the tile before; the first tile waits for the
        // phase before the first, which counts as complete.
        Value ordinal = state[0], tile = state[2];
        waitBarrier(qEmpty,
                    arith::XOrIOp::create(
                        b, loc, arith::AndIOp::create(b, loc, ordinal, c32(1)),
                        c32(1)));
        emitAsm(b, loc, {}, {slot, tile}, "st.shared.u32 [$0], $1;", "r,r");
        return {cmpi(arith::CmpIPredicate::slt, tile, schedule.numTiles),
                llvm::to_vector(state)};
      },
      [&](ValueRange state) -> SmallVector<Value> {
        setTileIndices(state[2]);
        Value ringEnd = body(state[1]);
        // The next tile is taken once this one's last keys are on their
        // way, a block or two before the consumers finish it: taken as the
        // tile starts, a long tile would hold the next one back while SMs
        // with short tiles go idle.
        Value ticket = fetchTile(schedule);
        resetTileCounter(schedule, ticket);
        return {add(state[0], c32(1)), ringEnd, add(schedule.numCtas, ticket)};
      });
  // The slot holds a tile past the last: completing Q full without loading
  // anything tells the consumers to stop.
  arrive(sharedAddress(wgmmaBarrierOffset() + qFullBarrier()));
}

void AttentionKernelEmitter::emitConsumerTiles(
    const TileSchedule &schedule, function_ref<Value(Value ringStart)> body) {
  Value slot = sharedAddress(wgmmaBarrierOffset() + tileSlotOffset());
  Value qFull = sharedAddress(wgmmaBarrierOffset() + qFullBarrier());
  // State: the tile's ordinal in the CTA and where it starts in the ring;
  // the body also gets the tile.
  emitWhileLoop(
      TypeRange{i32, i32, i32}, ValueRange{c32(0), c32(0)},
      [&](ValueRange state) -> std::pair<Value, SmallVector<Value>> {
        // Q full (the mbarrier's acquire) also publishes the slot.
        waitBarrier(qFull, arith::AndIOp::create(b, loc, state[0], c32(1)));
        Value tile =
            emitAsm(b, loc, i32, {slot}, "ld.shared.u32 $0, [$1];", "=r,r")
                .getResult(0);
        return {cmpi(arith::CmpIPredicate::slt, tile, schedule.numTiles),
                {state[0], state[1], tile}};
      },
      [&](ValueRange state) -> SmallVector<Value> {
        setTileIndices(state[2]);
        Value ringEnd = body(state[1]);
        return {add(state[0], c32(1)), ringEnd};
      });
}

void AttentionKernelEmitter::setTileIndices(Value tile) {
  // The query heads that share a key/value head (GQA) side by side, one
  // row block of each in turn, the last rows first: the tiles in flight at
  // once read the same keys, which L2 then holds for all of them.
  Value rowTiles = ceilDiv(sizeM, shape.blockM);
  Value groupTiles = mul(rowTiles, groupSize);
  Value group = divu(tile, groupTiles);
  Value inGroup = remu(tile, groupTiles);
  Value numKvHeads = arg(FixedParam::G);
  batch = divu(group, numKvHeads);
  kvHead = remu(group, numKvHeads);
  head = add(mul(kvHead, groupSize), remu(inGroup, groupSize));
  m0 = mul(sub(sub(rowTiles, c32(1)), divu(inGroup, groupSize)),
           c32(shape.blockM));
  batchIdx = toIndex(batch);
  headIdx = toIndex(head);
  if (shape.tileList)
    emitTileListStart(ceilDiv(sizeN, shape.blockN));
}

Value AttentionKernelEmitter::emitWgmmaProducer(Value numBlocks,
                                                Value ringStart) {
  Value qMap = args[kNumFixedParams], kMap = args[kNumFixedParams + 1],
        vMap = args[kNumFixedParams + 2];
  const int64_t dChunks = shape.headDim / 64, eChunks = shape.valueDim / 64;
  Value qFull = sharedAddress(wgmmaBarrierOffset() + qFullBarrier());
  arriveExpectingBytes(qFull, 2 * shape.blockM * shape.headDim);
  for (int64_t c = 0; c < dChunks; ++c)
    loadBox(qMap, sharedAddress(c * shape.blockM * kSwizzledRowBytes),
            {c32(64 * c), m0, head, batch}, qFull);

  Value first = nextLiveBlock(Value(), c32(0), numBlocks).first;
  scf::WhileOp loop = emitBlockLoop(
      ValueRange{first, c32(0)}, numBlocks,
      [&](ValueRange state) -> SmallVector<Value> {
        Value block = state[0], iteration = state[1];
        RingSlot slot = ringSlot(add(ringStart, iteration));
        // A stage's K (V) is free once both consumers released it; the
        // first pass over the ring waits for the phase before the first,
        // which counts as complete.
        Value previousPhase = arith::XOrIOp::create(b, loc, slot.phase, c32(1));
        Value n0 = mul(block, c32(shape.blockN));
        waitBarrier(ringBarrier(keysEmptyBarrier(0), slot), previousPhase);
        Value keysFull = ringBarrier(keysFullBarrier(0), slot);
        arriveExpectingBytes(keysFull, 2 * shape.blockN * shape.headDim);
        for (int64_t c = 0; c < dChunks; ++c)
          loadBox(kMap,
                  sharedAddress(add(slot.offset,
                                    c32(c * shape.blockN * kSwizzledRowBytes))),
                  {c32(64 * c), n0, kvHead, batch}, keysFull);
        waitBarrier(ringBarrier(valuesEmptyBarrier(0), slot), previousPhase);
        Value valuesFull = ringBarrier(valuesFullBarrier(0), slot);
        arriveExpectingBytes(valuesFull, 2 * shape.blockN * shape.valueDim);
        Value valuesOffset =
            add(slot.offset, c32(2 * shape.blockN * shape.headDim));
        for (int64_t c = 0; c < eChunks; ++c)
          loadBox(vMap,
                  sharedAddress(add(valuesOffset,
                                    c32(c * shape.blockN * kSwizzledRowBytes))),
                  {c32(64 * c), n0, kvHead, batch}, valuesFull);
        Value nextIteration = add(iteration, c32(1));
        Value nextBlock =
            nextLiveBlock(block, nextIteration, numBlocks).first;
        return {nextBlock, nextIteration};
      });
  return add(ringStart, loop.getResult(1));
}

SmallVector<Value>
AttentionKernelEmitter::issueKeyProduct(Value qBase, const RingSlot &slot) {
  waitBarrier(ringBarrier(keysFullBarrier(0), slot), slot.phase);
  Value keysBase = sharedAddress(slot.offset);
  SmallVector<Value> qk(shape.blockN / 2, cf(0.0));
  qk = fenceOperands(b, loc, qk);
  wgmmaFence();
  for (int64_t kk = 0; kk < shape.headDim / 16; ++kk)
    wgmma(qk, kMajorOperand(qBase, shape.blockM, kk), {},
          kMajorOperand(keysBase, shape.blockN, kk), /*transposeB=*/false,
          /*accumulate=*/kk > 0);
  wgmmaCommit();
  return qk;
}

void AttentionKernelEmitter::issueValueProduct(MutableArrayRef<Value> acc,
                                               MutableArrayRef<Value> weights,
                                               const RingSlot &slot) {
  SmallVector<Value> operands(acc.begin(), acc.end());
  llvm::append_range(operands, weights);
  operands = fenceOperands(b, loc, operands);
  llvm::copy(ArrayRef<Value>(operands).take_front(acc.size()), acc.begin());
  llvm::copy(ArrayRef<Value>(operands).drop_front(acc.size()), weights.begin());
  waitBarrier(ringBarrier(valuesFullBarrier(0), slot), slot.phase);
  Value valuesBase =
      sharedAddress(add(slot.offset, c32(2 * shape.blockN * shape.headDim)));
  wgmmaFence();
  for (int64_t kk = 0; kk < shape.blockN / 16; ++kk)
    wgmma(acc, Value(), weights.slice(4 * kk, 4),
          mnMajorOperand(valuesBase, shape.blockN, kk), /*transposeB=*/true,
          /*accumulate=*/true);
  wgmmaCommit();
}

int64_t AttentionKernelEmitter::wgmmaConsumerThreads() const {
  return shape.numThreads() - kWgmmaProducerThreads;
}

void AttentionKernelEmitter::waitForProductTurn(Value group) {
  NVVM::BarrierOp::create(b, loc, Type(), add(group, c32(1)),
                          c32(wgmmaConsumerThreads()),
                          NVVM::BarrierReductionAttr(), Value());
}

void AttentionKernelEmitter::passProductTurn(Value group) {
  Value other = sub(c32(1), group);
  NVVM::BarrierArriveOp::create(b, loc, add(other, c32(1)),
                                c32(wgmmaConsumerThreads()));
}

SmallVector<Value> AttentionKernelEmitter::packWeights(ArrayRef<Value> p) {
  // Per 16 keys, the A fragment of an m16n8k16 mma: the accumulator tiles
  // of keys 16 kk .. 16 kk + 7 and 16 kk + 8 .. 16 kk + 15.
  SmallVector<Value> fragments;
  for (int64_t kk = 0; kk < shape.blockN / 16; ++kk) {
    const int64_t t0 = 8 * kk, t1 = t0 + 4;
    llvm::append_range(fragments, ArrayRef<Value>{pack(p[t0], p[t0 + 1]),
                                                  pack(p[t0 + 2], p[t0 + 3]),
                                                  pack(p[t1], p[t1 + 1]),
                                                  pack(p[t1 + 2], p[t1 + 3])});
  }
  return fragments;
}

Value AttentionKernelEmitter::emitWgmmaConsumer(Value numBlocks, Value group,
                                                Value qBase, Value ringStart) {
  const int64_t numRows = shape.ownedRows();
  const int64_t numAcc = shape.valueDim / 2;
  const int64_t numWeights = shape.blockN / 4;
  SmallVector<NormalizerState> initialRows(
      numRows, normalizer.getInitialState(b, loc, f32));
  auto flattenRows = [&](ArrayRef<NormalizerState> rows) {
    AttentionLoopState state;
    state.rows.assign(rows.begin(), rows.end());
    return state.flatten(normalizer);
  };
  auto unflattenRows = [&](ValueRange values) {
    return AttentionLoopState::unflatten(values, 0, numRows, normalizer).rows;
  };
  // The weights P of a block (packed A fragments) and the rows' states
  // after it, from its scores; the accumulators' rescaling is left to the
  // caller, in `shifts`.
  auto weigh = [&](ArrayRef<Value> qk, Value block, Value tileClass,
                   ArrayRef<Value> keepBits, AttentionLoopState &state,
                   SmallVectorImpl<BlockShift> &shifts) {
    SmallVector<Value> scored =
        scoreBlock(qk, mul(block, c32(shape.blockN)), tileClass, keepBits);
    return packWeights(updateNormalizer(scored, state, &shifts));
  };
  // The block's mask, evaluated while its S = Q Kᵀ runs.
  auto keepBitsOf = [&](Value block, Value tileClass) {
    if (!shape.maskBesideProduct)
      return SmallVector<Value>();
    return emitKeepBits(mul(block, c32(shape.blockN)), tileClass);
  };

  // The first live block: S = Q Kᵀ and its weights, before the loop, so
  // that every iteration of the loop has a P V of the block before it to
  // run beside its own S.
  auto [first, firstClass] = nextLiveBlock(Value(), c32(0), numBlocks);
  Value anyBlock = cmpi(arith::CmpIPredicate::slt, first, numBlocks);
  SmallVector<Type> firstTypes(2, i32);
  firstTypes.append(numWeights, i32);
  for (Value v : flattenRows(initialRows))
    firstTypes.push_back(v.getType());
  auto ifAny = scf::IfOp::create(b, loc, firstTypes, anyBlock,
                                 /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifAny.thenBlock());
    RingSlot slot = ringSlot(ringStart);
    waitForProductTurn(group);
    SmallVector<Value> qk = issueKeyProduct(qBase, slot);
    passProductTurn(group);
    SmallVector<Value> keepBits = keepBitsOf(first, firstClass);
    wgmmaWait(0);
    qk = fenceOperands(b, loc, qk);
    arrive(ringBarrier(keysEmptyBarrier(0), slot));
    AttentionLoopState state;
    state.rows = initialRows;
    SmallVector<BlockShift> shifts;
    // The accumulators are 0: nothing to rescale.
    SmallVector<Value> weights =
        weigh(qk, first, firstClass, keepBits, state, shifts);
    auto [second, secondClass] = nextLiveBlock(first, c32(1), numBlocks);
    SmallVector<Value> results = {second, secondClass};
    llvm::append_range(results, weights);
    llvm::append_range(results, flattenRows(state.rows));
    scf::YieldOp::create(b, loc, results);
    b.setInsertionPointToStart(ifAny.elseBlock());
    results = {first, firstClass};
    results.append(numWeights, c32(0));
    llvm::append_range(results, flattenRows(initialRows));
    scf::YieldOp::create(b, loc, results);
  }

  // Block j: S_j = Q K_jᵀ and O += P_(j-1) V_(j-1) issued together; the
  // weights P_j computed while the second runs; then O rescaled by block
  // j's shift.
  ValueRange firstResults = ifAny.getResults();
  SmallVector<Value> carried = {firstResults[0], firstResults[1], c32(1)};
  const size_t numCursor = carried.size();
  llvm::append_range(carried, firstResults.slice(2, numWeights));
  carried.append(numAcc, cf(0.0));
  llvm::append_range(carried, firstResults.drop_front(2 + numWeights));
  scf::WhileOp loop = emitBlockLoop(
      carried, numBlocks,
      [&](ValueRange carriedArgs) -> SmallVector<Value> {
        Value block = carriedArgs[0], tileClass = carriedArgs[1],
              iteration = carriedArgs[2];
        ValueRange rest = carriedArgs.drop_front(numCursor);
        SmallVector<Value> weights(rest.take_front(numWeights));
        SmallVector<Value> acc(rest.slice(numWeights, numAcc));
        AttentionLoopState state;
        state.rows = unflattenRows(rest.drop_front(numWeights + numAcc));

        Value position = add(ringStart, iteration);
        RingSlot slot = ringSlot(position);
        RingSlot previous = ringSlot(sub(position, c32(1)));
        waitForProductTurn(group);
        SmallVector<Value> qk = issueKeyProduct(qBase, slot);
        issueValueProduct(acc, weights, previous);
        passProductTurn(group);
        SmallVector<Value> keepBits = keepBitsOf(block, tileClass);
        wgmmaWait(1);
        qk = fenceOperands(b, loc, qk);
        arrive(ringBarrier(keysEmptyBarrier(0), slot));
        SmallVector<BlockShift> shifts;
        SmallVector<Value> nextWeights =
            weigh(qk, block, tileClass, keepBits, state, shifts);
        wgmmaWait(0);
        // The weights P V read stay live until it is done: otherwise their
        // registers may take the next block's weights while it runs, and
        // ptxas serialises the products to keep them apart.
        SmallVector<Value> finished(acc);
        llvm::append_range(finished, weights);
        finished = fenceOperands(b, loc, finished);
        acc.assign(finished.begin(), finished.begin() + numAcc);
        arrive(ringBarrier(valuesEmptyBarrier(0), previous));
        for (int64_t i = 0; i < numRows; ++i)
          rescaleRow(acc, i, shifts[i]);

        Value nextIteration = add(iteration, c32(1));
        auto [nextBlock, nextClass] =
            nextLiveBlock(block, nextIteration, numBlocks);
        SmallVector<Value> results = {nextBlock, nextClass, nextIteration};
        llvm::append_range(results, nextWeights);
        llvm::append_range(results, acc);
        llvm::append_range(results, flattenRows(state.rows));
        return results;
      });

  // Every S of the tile is done: Q may take the next tile's.
  arrive(sharedAddress(wgmmaBarrierOffset() + queryEmptyBarrier()));

  // The last block's P V.
  ValueRange loopResults = loop.getResults();
  Value numLive = loopResults[2];
  ValueRange rest = loopResults.drop_front(numCursor);
  SmallVector<Value> weights(rest.take_front(numWeights));
  SmallVector<Value> acc(rest.slice(numWeights, numAcc));
  auto ifLast = scf::IfOp::create(b, loc, SmallVector<Type>(numAcc, f32),
                                  anyBlock, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifLast.thenBlock());
    SmallVector<Value> lastAcc = acc;
    RingSlot last = ringSlot(add(ringStart, sub(numLive, c32(1))));
    issueValueProduct(lastAcc, weights, last);
    wgmmaWait(0);
    // The stage's V is free for the next tile's keys.
    arrive(ringBarrier(valuesEmptyBarrier(0), last));
    scf::YieldOp::create(b, loc, fenceOperands(b, loc, lastAcc));
    b.setInsertionPointToStart(ifLast.elseBlock());
    scf::YieldOp::create(b, loc, acc);
  }
  AttentionLoopState state;
  state.acc.assign(ifLast.getResults().begin(), ifLast.getResults().end());
  state.rows = unflattenRows(rest.drop_front(numWeights + numAcc));
  emitEpilogue(state);
  // Without a live block the loop's count is 1 though none took a stage.
  return arith::SelectOp::create(b, loc, anyBlock, add(ringStart, numLive),
                                 ringStart);
}

void AttentionKernelEmitter::emitWgmma() {
  emitIndices();
  smem = LLVM::AddressOfOp::create(b, loc, sharedPtr, "attn_smem");
  // The 128-byte swizzle repeats every 1024 bytes: tiles start on such a
  // boundary.
  Value raw = LLVM::PtrToIntOp::create(b, loc, i32, smem);
  sharedBase =
      arith::AndIOp::create(b, loc, add(raw, c32(kSwizzleAtomBytes - 1)),
                            c32(~(kSwizzleAtomBytes - 1)));
  Value numBlocks = ceilDiv(sizeN, shape.blockN);
  TileSchedule schedule = emitTileSchedule();
  const int64_t barriers = wgmmaBarrierOffset();
  const int64_t consumers = wgmmaConsumerThreads();
  {
    auto ifFirst = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::eq, tid, c32(0)),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifFirst.thenBlock());
    initBarrier(sharedAddress(barriers + qFullBarrier()), 1);
    for (int64_t s = 0; s < kWgmmaStages; ++s) {
      initBarrier(sharedAddress(barriers + keysFullBarrier(s)), 1);
      initBarrier(sharedAddress(barriers + valuesFullBarrier(s)), 1);
      initBarrier(sharedAddress(barriers + keysEmptyBarrier(s)), consumers);
      initBarrier(sharedAddress(barriers + valuesEmptyBarrier(s)), consumers);
    }
    initBarrier(sharedAddress(barriers + queryEmptyBarrier()), consumers);
    emitAsm(b, loc, {}, {}, "fence.mbarrier_init.release.cluster;", "");
  }
  gpu::BarrierOp::create(b, loc);
  auto ifProducer = scf::IfOp::create(
      b, loc, cmpi(arith::CmpIPredicate::ult, tid, c32(kWgmmaProducerThreads)),
      /*withElseRegion=*/true);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(ifProducer.thenBlock());
  setMaxRegisters(kProducerRegisters, /*increase=*/false);
  auto ifLoader = scf::IfOp::create(
      b, loc, cmpi(arith::CmpIPredicate::eq, tid, c32(0)),
      /*withElseRegion=*/false);
  b.setInsertionPointToStart(ifLoader.thenBlock());
  emitProducerTiles(schedule, [&](Value ringStart) {
    return emitWgmmaProducer(numBlocks, ringStart);
  });
  b.setInsertionPointToStart(ifProducer.elseBlock());
  setMaxRegisters(kConsumerRegisters, /*increase=*/true);
  // Consumer warps count from 0; warp group g owns rows 64 g .. 64 g + 63.
  warp = sub(warp, c32(kWgmmaProducerThreads / 32));
  Value group = divu(warp, c32(kWgmmaRows / 16));
  Value qBase = sharedAddress(mul(group, c32(kWgmmaRows * kSwizzledRowBytes)));
  // Group 0 takes the first turn as if group 1 had passed it: it arrives
  // at its own barrier once. Group 1's last pass is left pending when the
  // CTA exits, which resets the barrier.
  {
    auto ifFirstGroup =
        scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::eq, group, c32(0)),
                          /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifFirstGroup.thenBlock());
    passProductTurn(/*group=*/c32(1));
  }
  emitConsumerTiles(schedule, [&](Value ringStart) {
    return emitWgmmaConsumer(numBlocks, group, qBase, ringStart);
  });
}
