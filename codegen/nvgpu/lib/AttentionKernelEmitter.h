//===- AttentionKernelEmitter.h - The attention kernels' emitter -*- C++ -*-===//
//
// Private to codegen/nvgpu: the emitter of an attn.attention's forward and
// decode kernels. What every skeleton shares (indices, tile classes and the
// live-block scan, the inlined score_mod and mask, the normalizer's update,
// the epilogue) is defined in AttentionKernelBuilder.cpp with the mma.sync
// skeleton; the Hopper skeleton (TMA, mbarriers, wgmma, warp
// specialisation) in WgmmaAttentionKernel.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_ATTENTIONKERNELEMITTER_H
#define ATTN_NVGPU_ATTENTIONKERNELEMITTER_H

#include "WgmmaTiles.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

namespace mlir {
namespace attn {

/// Threads of the Hopper skeleton's producer warp group.
constexpr int64_t kWgmmaProducerThreads = 128;
/// Stages of its ring of K and V tiles.
constexpr int64_t kWgmmaStages = 2;
/// Its parameters after the FixedParams: the tensor maps of Q, K and V,
/// then the tile counter (GpuWgmmaKernel).
constexpr unsigned kWgmmaTensorMaps = 3;

/// Sizes fixed at compile time.
struct AttentionTileShape {
  int64_t blockM, blockN, headDim, valueDim;
  /// Query rows per warp: 16 or 32, i.e. one or two m16 row tiles.
  int64_t warpRows;
  /// Decode: the rows are (query, head) pairs of one key/value head and the
  /// CTA visits one part of the keys (see GpuDecodeKernels).
  bool splitKeys = false;
  /// The key loop walks the CTA's list of live blocks (GpuTileList) instead
  /// of evaluating the tile class.
  bool tileList = false;
  /// Rows of the shared-memory tiles are padded by 16 bytes so that the 8
  /// row addresses of one ldmatrix fall in distinct bank groups.
  int64_t qkPitch() const { return headDim + 8; }
  int64_t vPitch() const { return valueDim + 8; }
  int64_t numWarps() const { return blockM / warpRows; }
  int64_t rowTiles() const { return warpRows / 16; }
  /// Rows of the online-softmax state a thread owns: two per row tile.
  int64_t ownedRows() const { return 2 * rowTiles(); }
  /// Q fragments stay in registers with one row tile; with two they would
  /// not fit beside the accumulators, so they are re-read from shared memory.
  bool qInRegisters() const { return rowTiles() == 1; }
  /// The Hopper skeleton (WgmmaAttentionKernel.cpp): a producer warp group
  /// before the consumer warps, which own 16 rows each.
  bool wgmma = false;
  /// Hopper: the consumers evaluate the mask of partial tiles while S = Q Kᵀ
  /// runs, into bits (emitKeepBits), rather than beside the scores.
  bool maskBesideProduct = false;
  int64_t numThreads() const {
    return 32 * numWarps() + (wgmma ? kWgmmaProducerThreads : 0);
  }
  int64_t kOffset() const { return blockM * qkPitch(); }
  int64_t vOffset() const { return kOffset() + blockN * qkPitch(); }
  int64_t sharedElements() const { return vOffset() + blockN * vPitch(); }
};

/// Dynamic shared memory of the Hopper skeleton's kernel for `shape`.
int64_t getWgmmaSharedMemoryBytes(const AttentionTileShape &shape);

/// The per-row normalizer states and the output accumulator, as they flow
/// through the key loop.
struct AttentionLoopState {
  /// [rowTiles][valueDim / 8][4]: accumulator fragments, row-major by tile.
  SmallVector<Value> acc;
  /// Per owned row (g and g + 8 of each row tile, in that order): the
  /// normalizer's state, with the running max over the row's quad and this
  /// thread's partial sum and count of kept keys.
  SmallVector<NormalizerState> rows;

  /// The accumulators, then each field of the states, row after row.
  SmallVector<Value> flatten(const NormalizerDefinition &normalizer) const {
    SmallVector<Value> values(acc);
    auto append = [&](Value NormalizerState::*field) {
      for (const NormalizerState &row : rows)
        values.push_back(row.*field);
    };
    if (normalizer.hasMax())
      append(&NormalizerState::max);
    if (normalizer.hasSum())
      append(&NormalizerState::sum);
    if (normalizer.hasKeptCount())
      append(&NormalizerState::keptCount);
    return values;
  }
  static AttentionLoopState unflatten(ValueRange values, int64_t numAcc, int64_t numRows,
                             const NormalizerDefinition &normalizer) {
    AttentionLoopState state;
    state.acc.assign(values.begin(), values.begin() + numAcc);
    values = values.drop_front(numAcc);
    state.rows.resize(numRows);
    auto take = [&](Value NormalizerState::*field) {
      for (NormalizerState &row : state.rows) {
        row.*field = values.front();
        values = values.drop_front();
      }
    };
    if (normalizer.hasMax())
      take(&NormalizerState::max);
    if (normalizer.hasSum())
      take(&NormalizerState::sum);
    if (normalizer.hasKeptCount())
      take(&NormalizerState::keptCount);
    return state;
  }
};

class AttentionKernelEmitter : WgmmaTileBuilder {
public:
  AttentionKernelEmitter(OpBuilder &builder, Location loc, AttentionOp op,
                         AttentionTileShape shape, Type elementType,
                         Type outputType, ValueRange args,
                         const IRMapping &captures)
      : WgmmaTileBuilder(builder, loc, elementType, shape.numThreads()), op(op),
        shape(shape), outputType(outputType), args(args), captures(captures),
        // A decode kernel's parts leave the sink to the merge.
        normalizer(op.getNormalizer(), op.getSink() && !shape.splitKeys,
                   getQuadNormalizerMath(), op.getMap()) {}

  void emit();
  /// The Hopper skeleton's kernel (WgmmaAttentionKernel.cpp).
  void emitWgmma();

private:
  Value arg(FixedParam param) { return getFixedArg(args, param); }

  /// The NVPTX normalizer arithmetic, for rows spread over the quad of lanes
  /// that share them in the mma fragments.
  NormalizerMath getQuadNormalizerMath() {
    NormalizerMath math = getNVPTXNormalizerMath();
    math.maxAcrossLanes = [this](OpBuilder &, Location, Value v) {
      return quadMax(v);
    };
    math.sumAcrossLanes = [this](OpBuilder &, Location, Value v) {
      return quadSum(v);
    };
    return math;
  }
  /// The thread's place, the CTA's rows, head and batch, sizes and scale.
  void emitIndices();
  void emitPrologue();
  std::pair<Value, Value> rowCoordinates(int64_t i);
  void loadKeys(Value n0);
  void loadValues(Value n0);
  Value emitTileClass(Value n0, int64_t numKeys = 0);
  std::pair<Value, Value> findLiveBlock(Value from, Value numBlocks);
  void emitTileListStart(Value numBlocks);
  Value readTileList(Value position);
  /// S = Q Kᵀ for the key block at `n0`, scaled, modified and masked: the
  /// `scored` operand of emitBlockUpdate (scoreBlock of multiplyKeys).
  SmallVector<Value> emitBlockScores(Value n0, Value tileClass);
  /// S = Q Kᵀ in accumulator order ([rowTiles][blockN / 8][4]).
  SmallVector<Value> multiplyKeys();
  /// `qk` scaled, modified and masked by tile class, followed, when the
  /// normalizer counts them, by the owned rows' kept counts.
  /// With `keepBits` (emitKeepBits), the mask is read from them.
  SmallVector<Value> scoreBlock(ArrayRef<Value> qk, Value n0, Value tileClass,
                                ArrayRef<Value> keepBits = {});
  /// The mask of this thread's scores of the key block at `n0`, one bit per
  /// accumulator slot (32 to an i32), 0 on full tiles: the Hopper consumers
  /// evaluate it while S = Q Kᵀ runs, so that the mask's reads of tensors
  /// and its index arithmetic overlap with the product, and only the bits
  /// are live beside the scores.
  SmallVector<Value> emitKeepBits(Value n0, Value tileClass);
  /// Whether accumulator slot `slot`'s bit is set in `keepBits` (i1).
  Value testKeepBit(ArrayRef<Value> keepBits, int64_t slot);
  /// The normalizer's update of `state` by one key block's scores, and
  /// O += P V: updateNormalizer then accumulateValues.
  AttentionLoopState emitBlockUpdate(ArrayRef<Value> scored,
                                     const AttentionLoopState &state);
  /// Rescales `next` (the state before the block) by the block's `scored`
  /// and updates its rows; returns the weights P in accumulator order. With
  /// `shifts`, the accumulators are left as they are and each owned row's
  /// shift is appended there, for rescaleRow once earlier products that
  /// write them have completed.
  SmallVector<Value>
  updateNormalizer(ArrayRef<Value> scored, AttentionLoopState &next,
                   SmallVectorImpl<BlockShift> *shifts = nullptr);
  /// Rescales the accumulators of owned row `i` by `shift`.
  void rescaleRow(MutableArrayRef<Value> acc, int64_t i,
                  const BlockShift &shift);
  /// next.acc += P V with V in shared memory.
  void accumulateValues(ArrayRef<Value> p, AttentionLoopState &next);

  // The Hopper skeleton's pieces (WgmmaAttentionKernel.cpp).
  /// The shared-memory address (i32) of byte `offset` past the aligned base.
  Value sharedAddress(int64_t offset);
  Value sharedAddress(Value offset);
  /// The live block after `block` (null: the first) and its class: entry
  /// `position` of the CTA's tile list, or the scan's next.
  std::pair<Value, Value> nextLiveBlock(Value block, Value position,
                                        Value numBlocks);
  /// Where the i-th live block lives in the ring: its stage's byte offset,
  /// the parity of its pass over the ring, and 8 × its stage (the offset of
  /// its barriers from the first stage's).
  struct RingSlot {
    Value offset, phase, barrierStride;
  };
  RingSlot ringSlot(Value iteration);
  /// The address of `slot`'s barrier of a kind whose first stage's barrier
  /// is at `firstStageOffset` past wgmmaBarrierOffset.
  Value ringBarrier(int64_t firstStageOffset, const RingSlot &slot);
  /// The CTAs' shared schedule of tiles: the tiles, the CTAs launched, this
  /// CTA's index (its first tile) and the counter of tiles handed out.
  struct TileSchedule {
    Value numTiles, numCtas, cta, counter;
  };
  TileSchedule emitTileSchedule();
  /// Takes a ticket from the counter: the next tile is numCtas + ticket.
  Value fetchTile(const TileSchedule &schedule);
  /// Sets the counter back to 0 where `ticket` was the launch's last.
  void resetTileCounter(const TileSchedule &schedule, Value ticket);
  /// The producer's and the consumers' loops over the CTA's tiles: `body`
  /// emits one tile whose live blocks take the ring from `ringStart` (the
  /// blocks of the CTA's earlier tiles) and returns where they end. The
  /// producer fetches each next tile and passes it on through the tile slot
  /// with the tile's Q (a tile past the last: stop).
  void emitProducerTiles(const TileSchedule &schedule,
                         function_ref<Value(Value ringStart)> body);
  void emitConsumerTiles(const TileSchedule &schedule,
                         function_ref<Value(Value ringStart)> body);
  /// m0, head, kvHead and batch of tile `tile` of the schedule, and with a
  /// tile list, the tile's list.
  void setTileIndices(Value tile);
  /// The tile slot's offset past wgmmaBarrierOffset.
  static int64_t tileSlotOffset();
  /// The producer's tile: Q, then K and V of each live block into the ring
  /// from `ringStart`; returns where it ends.
  Value emitWgmmaProducer(Value numBlocks, Value ringStart);
  /// Waits for the keys in `slot`, issues S = Q Kᵀ (Q at shared address
  /// `qBase`) and commits it; returns the accumulators, which are only
  /// valid after the matching wgmmaWait.
  SmallVector<Value> issueKeyProduct(Value qBase, const RingSlot &slot);
  /// Waits for the values in `slot`, issues acc += P V (P as packed A
  /// fragments, `weights`) and commits it; `acc` and `weights` are
  /// replaced by the registers the product owns until the matching
  /// wgmmaWait.
  void issueValueProduct(MutableArrayRef<Value> acc,
                         MutableArrayRef<Value> weights, const RingSlot &slot);
  /// The consumers take turns issuing their products (FlashAttention-3's
  /// ping-pong), so that one group's softmax runs while the tensor cores
  /// work on the other's: a group waits for its turn at named barrier
  /// 1 + `group` and passes it on by arriving at the other's once its
  /// products of the block are issued. Group 0 holds the first turn.
  void waitForProductTurn(Value group);
  void passProductTurn(Value group);
  /// Threads of the two consumer groups: the turn barriers' and the ring's
  /// empty barriers' counts.
  int64_t wgmmaConsumerThreads() const;
  /// The weights of one block, in accumulator order, packed into the A
  /// fragments of P V.
  SmallVector<Value> packWeights(ArrayRef<Value> p);
  /// A consumer warp group's key loop and epilogue of one tile, its blocks
  /// in the ring from `ringStart`; returns where they end. `group` is the
  /// warp group, `qBase` its rows of Q.
  Value emitWgmmaConsumer(Value numBlocks, Value group, Value qBase,
                          Value ringStart);
  /// Byte offsets of the Hopper skeleton's shared memory.
  int64_t wgmmaStageBytes() const;
  int64_t wgmmaStageOffset(int64_t stage) const;
  int64_t wgmmaBarrierOffset() const;
  /// The aligned base of shared memory (i32 shared address).
  Value sharedBase;
  /// Where one of this thread's scores of a key block lies: its accumulator
  /// slot, its owned row, the (clamped) query, head and key indices the
  /// regions see, and whether the key is in the problem.
  struct ScorePlace {
    int64_t slot, row;
    Value query, head, key, inRange;
  };
  /// Calls `visit` for each of this thread's scores of the key block at
  /// `n0`, key tile by key tile.
  void forEachScore(Value n0, function_ref<void(const ScorePlace &)> visit);
  /// The mask region inlined at `place`.
  Value maskAt(const ScorePlace &place);
  SmallVector<Value> emitScores(ArrayRef<Value> qk, Value n0, bool full,
                                SmallVectorImpl<Value> &kept,
                                ArrayRef<Value> keepBits = {});
  void emitEpilogue(const AttentionLoopState &state);
  void emitPartials(const AttentionLoopState &state);
  SmallVector<Value> rowPairs(const AttentionLoopState &state, int64_t i,
                              Value factor, Type type);
  void storePairs(ArrayRef<Value> pairs, Value rowPtr, Type type,
                  Value pairsAligned);
  /// Per four tiles of 16-bit pairs, the 16 bytes of the tile this lane's
  /// quad column takes (vector<4xi32>), by shuffles within the quad.
  SmallVector<Value> transposeQuadWords(ArrayRef<Value> pairs);
  /// Whether every row of O starts `bytes`-aligned (i1, known at launch).
  Value outputAligned(int64_t bytes);

  AttentionOp op;
  AttentionTileShape shape;
  /// Element type of O in memory: f32, or bf16/f16 rounded from the f32
  /// accumulators in registers, so a bf16 spec output needs no extra pass.
  Type outputType;
  ValueRange args;
  const IRMapping &captures;
  NormalizerDefinition normalizer;

  // Values of the prologue.
  Value batch, head, kvHead, m0, sizeM, sizeN;
  Value batchIdx, headIdx;
  /// Rows of the problem this CTA's rows index: M, or for decode the packed
  /// rows M H / G of a key/value head.
  Value rowLimit;
  /// Decode: query heads per key/value head, this CTA's row tile and split,
  /// the number of each.
  Value groupSize, rowBlock, rowBlocks, split, numSplits;
  Value kBase, vBase;
  /// With a tile list: this CTA's list.
  Value tileList;
  Value scale;
  /// Lane's ldmatrix address in this warp's first Q row tile.
  Value qAddr;
  /// [headDim / 16][4]: the Q fragments, when kept in registers.
  SmallVector<SmallVector<Value, 4>> qFrag;

  /// The A fragment of Q for row tile `t` and k-step `kk`.
  SmallVector<Value, 4> getQFragment(int64_t t, int64_t kk) {
    if (shape.qInRegisters())
      return qFrag[kk];
    return ldmatrix(gep(qAddr, elementType,
                        c32(16 * t * shape.qkPitch() + 16 * kk)),
                    false);
  }
  /// First row (relative to m0) of this thread's accumulator row `i`
  /// (rows g and g + 8 of each row tile).
  Value ownedRow(int64_t i) {
    return add(mul(warp, c32(shape.warpRows)),
               add(quadRow, c32(16 * (i / 2) + 8 * (i % 2))));
  }
};

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_ATTENTIONKERNELEMITTER_H
