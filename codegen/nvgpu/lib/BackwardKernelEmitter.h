//===- BackwardKernelEmitter.h - The backward kernels' emitter --*- C++ -*-===//
//
// Private to codegen/nvgpu: the emitter of an attn.attention_backward's
// kernels, shared by BackwardKernelBuilder.cpp (what the kernels share,
// the entry points), BackwardPreprocessKernel.cpp, BackwardTileStream.cpp,
// FusedQueryGrad.cpp, BackwardKeyValueKernel.cpp and
// BackwardQueryKernel.cpp.
//
// The kernels of an attn.attention_backward (FlashAttention-2's backward on
// mma.sync m16n8k16), into which the op's score_mod (with its derivative),
// mask and tile_class regions are inlined as in the forward:
//
//   _pre   one warp per 4 query rows: Delta = sum_e dO O (dO as rounded
//          to 16 bits for the products), less
//          dLSE e^(LSE' - LSE) where the LSE has an adjoint dLSE (Delta',
//          what the scores' adjoints read); LSE' = LSE (+) sink, written
//          over LSE; dO rounded to 16 bits for the products (an f32 dO
//          of an op with grad_reads: also the rounding of the rest, see
//          backwardSplitsOutputGrad); where the
//          sink's gradient is used, the row's dSink = -P_sink Delta
//          (einsums after the backward reduce it, see
//          GpuBackwardKernels::epilogue).
//   _dkdv  one CTA per (key block of 64, key/value head, batch), one warp per
//          16 keys; K and V stay in shared memory; for each query head of
//          the group and each live query block (Q and dO double-buffered
//          by cp.async):
//            Sᵀ = K Qᵀ;  P = exp(score_mod(scale Sᵀ) - LSE')   (none: P = s;
//                        normalize: map(s) e^-LSE)
//            dV += P dO;  dPᵀ = V dOᵀ
//            dS = P (dPᵀ - Delta') score_mod'                 (none: dPᵀ s';
//                        normalize: times map'/map)
//            dK += dS Q
//          then dK = scale dK and dV are stored.
//   _dq    one CTA per (query block of 64, head, batch), one warp per 16
//          rows, Q and dO fragments in registers; for each live key block
//          (K and V double-buffered): S = Q Kᵀ, dP = dO Vᵀ, dS as above,
//          dQ += dS K; then dQ = scale dQ is stored. With a tensor
//          score_mod reads that needs a gradient (grad_reads), each row
//          also sums dS' d score_mod / d read over its keys, taken at the
//          row's own Delta = sum P dP rather than dO O (whose O rounded P
//          to 16 bits, an error the sum would weigh by key position), and
//          with dP from both parts of a split dO.
//
// S and dP are computed in both kernels (7 products per kept pair instead of
// 5), which keeps every gradient element owned by one thread: no atomics and
// the same bits on every run. Products whose A operand is a result (P, dS)
// take it from the accumulators as the forward's P V does; B operands come
// from shared memory through ldmatrix, transposed where the product contracts
// over the tile's rows.
//
// On sm_90a (wgmma) the dK/dV kernel computes dQ too, unless asked for the
// same bits on every run or a tensor score_mod reads needs the dQ kernel's
// row sums (grad_reads): 5 products per kept pair. One CTA per 128 keys, two
// warp groups of 64; Q and dO stream through three stages, each filled by
// one thread's TMA loads (through maps of Q and of dO's 16-bit copy; every
// thread's cp.async copies where the runtime could not make Q's) and the
// rows' statistics' cp.async copies, and completed on an mbarrier (no
// barrier of the CTA between blocks). Per block of 64 queries each group writes
// its dSᵀ to one of two tiles, and after a barrier of the CTA each computes dQ
// = dS K for half of D's columns over all 128 keys (both operands in shared
// memory; issued in the next block, where Sᵀ runs behind it, unless the
// regions read tensors: BackwardShape::deferQueryGrad), stages it, scaled,
// in shared memory (boxes of 32 columns, 128-byte
// swizzled) and adds it into dQ (zeroed by _pre) with one TMA reduction per
// box (cp.reduce.async.bulk.tensor, issued by one thread of the group)
// through the kernel's tensor map of dQ, or with atomics where the runtime
// passes an all-zero map (a dQ TMA cannot describe: a misaligned base or
// row stride). The order of those additions varies from run to run.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_BACKWARDKERNELEMITTER_H
#define ATTN_NVGPU_BACKWARDKERNELEMITTER_H

#include "WgmmaTiles.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Grad/ScoreModDerivative.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace mlir {
namespace attn {

/// Warps per CTA of the preprocessing kernel and of the dK/dV and dQ
/// kernels, each warp owning 16 rows of its tile (keys, or queries); the
/// fused kernel has two such warp groups.
constexpr int64_t kBackwardWarps = 4;
constexpr int64_t kWarpGroupRows = 16 * kBackwardWarps;

/// The sizes the kernels are built for.
struct BackwardShape {
  int64_t headDim, valueDim;
  /// Rows of the streamed tiles per iteration: queries in the dK/dV
  /// kernel, keys in the dQ kernel.
  int64_t streamRows;
  /// sm_90a: the products on wgmma (each 4 warps are one warp group),
  /// tiles in the 128-byte-swizzled layout (WgmmaTiles.h) instead of
  /// padded rows; A operands the kernels hold (K, V; Q, dO) are read from
  /// shared memory by the products themselves.
  bool wgmma = false;
  /// With wgmma, the dQ kernel's split dO keeps its low part in a third
  /// owned tile (see backwardSplitsOutputGrad).
  bool lowPartTile = false;
  /// The dK/dV kernel also computes dQ, adding each key block's share into
  /// dQ (addQueryGrad), and no dQ kernel is built.
  bool fusedQuery = false;
  /// Fused: each block's dQ = dS K is issued and added in the next block,
  /// beside its Sᵀ = K Qᵀ (the last block's after the loop), rather than
  /// at the end of its own block.
  bool deferQueryGrad = false;
  /// Fused: the kernels take a tensor map of dQ (GpuOptions::
  /// queryGradTensorMap), through which the shares are added.
  bool queryGradMap = false;
  /// Fused: the kernels also take tensor maps of Q and of dO's 16-bit copy
  /// (GpuOptions::streamTensorMaps), through which one thread loads the
  /// streamed blocks.
  bool streamMaps = false;
  int64_t stream() const { return streamRows; }
  /// The kernels' tensor maps: dQ's, then Q's and dO's.
  unsigned tensorMaps() const {
    return (queryGradMap ? 1 : 0) + (streamMaps ? 2 : 0);
  }
  /// Warps of the dK/dV kernel: two warp groups of 64 keys when fused.
  int64_t keyValueWarps() const {
    return fusedQuery ? 2 * kBackwardWarps : kBackwardWarps;
  }
  /// Rows of the owned tiles: keys in the dK/dV kernel, queries in the dQ
  /// kernel.
  int64_t ownedRows() const {
    return fusedQuery ? 2 * kWarpGroupRows : kWarpGroupRows;
  }
  /// Row pitches in elements: rows padded by 16 bytes so that the 8 row
  /// addresses of one ldmatrix fall in distinct bank groups, or none in the
  /// swizzled layout.
  int64_t qkPitch() const { return wgmma ? headDim : headDim + 8; }
  int64_t vPitch() const { return wgmma ? valueDim : valueDim + 8; }
  /// Elements of one stage of the streamed tiles: the [stream, D] tile and
  /// the [stream, E] tile.
  int64_t stageElements() const { return stream() * (qkPitch() + vPitch()); }
  /// The owned [rows, D] and [rows, E] tiles (and dO's low part), then the
  /// stages.
  int64_t ownedElements() const {
    return ownedRows() * (qkPitch() + vPitch() * (lowPartTile ? 2 : 1));
  }
  /// Stages of the streamed tiles. Fused, three: a block's tiles are copied
  /// into the stage of the block two before it, which every warp has left
  /// once past the last block's barrier, and their completion is an
  /// mbarrier's (no barrier of the CTA at the top of a block). Else two,
  /// reused after a barrier of the CTA.
  int64_t stages() const { return fusedQuery ? 3 : 2; }
  /// Fused: the [keys, stream] tiles of dSᵀ that dQ's product reads, after
  /// the stages: two, written by turns, so that a warp group may write a
  /// block's while the other still multiplies the last one's.
  int64_t scoreGradElements() const {
    return fusedQuery ? 2 * ownedRows() * stream() : 0;
  }
  /// Fused: after them, each stage's rows' LSE' and Delta' (f32).
  int64_t statisticsOffsetBytes() const {
    return 2 *
           (ownedElements() + stages() * stageElements() + scoreGradElements());
  }
  /// Fused: after those, one mbarrier per stage, which every thread's
  /// copies into the stage complete (cp.async.mbarrier.arrive.noinc).
  int64_t stageBarrierOffsetBytes() const {
    return statisticsOffsetBytes() + stages() * 2 * stream() * 4;
  }
  /// Fused: after them, dQ's f32 share [stream, D] as D / 32 boxes of 32
  /// columns, each [stream] rows of 128 bytes in the 128-byte swizzle: the
  /// tensor map's box (and stores from the accumulators without bank
  /// conflicts).
  static constexpr int64_t kQueryGradBoxColumns = kSwizzledRowBytes / 4;
  int64_t queryGradBoxBytes() const { return stream() * kSwizzledRowBytes; }
  int64_t queryGradOffsetBytes() const {
    return llvm::alignTo(stageBarrierOffsetBytes() + 8 * stages(),
                         kSwizzleAtomBytes);
  }
  int64_t sharedBytes() const {
    // With wgmma, room to align the tiles to the swizzle's atom.
    int64_t bytes = fusedQuery ? queryGradOffsetBytes() + stream() * headDim * 4
                               : statisticsOffsetBytes();
    return bytes + (wgmma ? kSwizzleAtomBytes : 0);
  }
};

/// Accumulator slot of (row half r, 8-column tile j, column c of the pair)
/// in a 16-row tile: rows g (r = 0) and g + 8 (r = 1) of lane l, g = l / 4,
/// columns 8 j + 2 (l % 4) + c.
inline int64_t slot(int64_t j, int64_t r, int64_t c) {
  return 4 * j + 2 * r + c;
}

/// The index of slots (j, r, 0) and (j, r, 1) as one register of two 16-bit
/// values: k-step kk's A fragment is pairs 4 kk ... 4 kk + 3.
inline int64_t pairIndex(int64_t j, int64_t r) { return 2 * j + r; }

class BackwardEmitter : WgmmaTileBuilder {
public:
  BackwardEmitter(OpBuilder &builder, Location loc, AttentionBackwardOp op,
                  BackwardShape shape, Type elementType, int64_t warps,
                  ValueRange args, const IRMapping &captures)
      : WgmmaTileBuilder(builder, loc, elementType, 32 * warps), op(op),
        shape(shape), args(args), captures(captures),
        normalizer(op.getNormalizer(), static_cast<bool>(op.getSink()),
                   getNVPTXNormalizerMath(), op.getMap()),
        splitsOutputGrad(backwardSplitsOutputGrad(op)) {}

  void emitPreprocess();
  void emitKeyValue();
  void emitQuery();

private:
  Value arg(FixedParam param) { return getFixedArg(args, param); }
  /// Whether the weights are recomputed from the rows' statistic (softmax,
  /// normalize with a map), rather than being the scores (none).
  bool readsStatistic() const { return normalizer.hasStatistic(); }
  /// Whether anything reads the rows' sink gradients.
  bool writesSinkGrad() {
    return op.getSinkGrad() && !op.getSinkGrad().use_empty();
  }
  /// Whether the forward's LSE has an adjoint (softmax only).
  bool readsLseGrad() { return static_cast<bool>(op.getLseGrad()); }

  /// The thread's and CTA's indices; the CTA's block of rows counted along
  /// `rowsAxis` from the last block (query blocks: under a causal mask the
  /// last meet the most keys) or, with `firstBlocksFirst`, from the first
  /// (key blocks: the first meet the most queries), so that the longest
  /// CTAs start first rather than make the last wave's tail.
  void emitIndices(gpu::Dimension rowsAxis, bool firstBlocksFirst = false);
  /// Elements from dO's 16-bit copy to its low part (laid out alike, after
  /// the whole copy).
  Value lowPartOffset() {
    return mul(ext64(arg(FixedParam::B)), arg(FixedParam::OStrideB));
  }
  /// Elements from the Delta workspace's first plane (each row's Delta'
  /// with dO's 16-bit copy, which the dK/dV kernel reads) to its second
  /// (with both parts of a split dO, which the dQ kernel reads), so that
  /// each kernel's P (dP - Delta') sum to 0 over a row.
  Value deltaPlaneOffset() {
    return mul(ext64(arg(FixedParam::B)),
               mul(ext64(arg(FixedParam::H)), ext64(sizeM)));
  }
  Value rowOffset(FixedParam strideB, FixedParam strideH, Value headIndex);
  Value statisticOffset(Value headIndex, Value row);
  /// The sink logit of (batch, `headIndex`, `row`).
  Value loadSinkLogit(Value headIndex, Value row);
  /// ldmatrix lane addresses into a tile at `tile` with row pitch `pitch`:
  /// an A operand of rows firstRow .. firstRow + 15; a B operand whose
  /// columns are the tile's rows (non-transposed); a B operand whose
  /// columns are the tile's columns (transposed).
  Value aAddress(Value tile, int64_t pitch, Value firstRow);
  Value bAddress(Value tile, int64_t pitch);
  Value bTransposedAddress(Value tile, int64_t pitch);
  /// acc[16 x 8 nTiles] += A B over kSteps k-steps of 16, with A's
  /// fragments from `aFragment(kk)` and B's from ldmatrix at `bAddr`.
  void multiply(MutableArrayRef<Value> acc, int64_t kSteps, int64_t nTiles,
                function_ref<SmallVector<Value, 4>(int64_t)> aFragment,
                Value bAddr, int64_t pitch, bool transposed);
  /// Issues acc += A B on wgmma (shape.wgmma) over `kSteps` k-steps of 16
  /// per A operand and commits it: A the owned swizzled [64, 16 kSteps]
  /// tiles at `aTiles` (their products summed) or, where there are none,
  /// the register fragments `aFragment(kk)`; B the swizzled tile of `bRows`
  /// rows at `bTile`, contracted over its columns (K-major) or, if
  /// `contractRows`, over its rows (MN-major). `acc` is replaced by the
  /// registers the product owns until completeWgmma.
  void issueWgmma(MutableArrayRef<Value> acc, int64_t kSteps,
                  ArrayRef<Value> aTiles,
                  function_ref<SmallVector<Value, 4>(int64_t)> aFragment,
                  Value bTile, int64_t bRows, bool contractRows,
                  bool overwrite = false);
  /// `count` accumulators a product overwrites (issueWgmma's `overwrite`):
  /// no registers are set to 0 for them.
  SmallVector<Value> freshAccumulators(int64_t count);
  /// The shared address of `tile` as a value of this point of the loop:
  /// the wgmma descriptors derived from it are then computed where they
  /// are used, not hoisted out of the loop (where each of a tile that does
  /// not change would hold two registers through it).
  Value addressInLoop(Value tile) {
    return fenceOperands(b, loc, {sharedAddressOf(tile)}).front();
  }
  /// Waits for every issued product and gives back their accumulators.
  void completeWgmma(ArrayRef<MutableArrayRef<Value>> accs);
  /// The A fragments of k-step kk of an accumulator tile (16 x 16 kk).
  SmallVector<Value, 4> packedFragment(ArrayRef<Value> acc, int64_t kk);
  /// The same from the tile's pairs as 16-bit values (pairIndex).
  SmallVector<Value, 4> pairFragment(ArrayRef<Value> pairs, int64_t kk) {
    return {pairs[4 * kk], pairs[4 * kk + 1], pairs[4 * kk + 2],
            pairs[4 * kk + 3]};
  }
  /// cp.async.wait_group `pending`, then (wgmma) the fence that makes the
  /// copies visible to wgmma, then a barrier of the CTA.
  void waitForTiles(int64_t pending);
  Value tileClass(Value headIndex, Value mFirst, Value mLast, Value nFirst,
                  Value nLast);
  std::pair<Value, Value>
  findLiveBlock(Value from, Value numBlocks,
                function_ref<Value(Value)> classOfBlock);
  /// A query row's index (clamped into the problem, for the regions),
  /// whether it is in the problem, and where the weights are recomputed
  /// its shift (from LSE') and Delta.
  struct RowStatistics {
    Value index, inRange;
    BlockShift shift;
    Value delta;
  };
  /// Where a row's LSE' and Delta' are, from its index clamped into M.
  using StatisticSlots =
      function_ref<std::pair<Value, Value>(Value clampedRow)>;
  /// The RowStatistics of query `row`, loaded from `slots` where the
  /// weights are recomputed.
  RowStatistics rowStatistics(Value row, StatisticSlots slots);
  /// ... from the workspaces; `splitDelta`: Delta' of both parts of a split
  /// dO (the dQ kernel's).
  RowStatistics loadRowStatistics(Value head, Value row,
                                  bool splitDelta = false);
  /// P and dS of one score, and with `withReadTerm` the term dS' d
  /// score_mod / d read of the grad_reads read and that term's coefficient
  /// of -Delta (0 where the score is not kept).
  struct ScoreAdjoint {
    Value weight, scoreAdjoint, readTerm, readDeltaCoefficient;
  };
  /// The ScoreAdjoint of one score: `product` the unscaled q·k, `dp` its
  /// adjoint product, (m, n) its clamped indices, `inRange` whether both
  /// are in the problem; the mask is evaluated unless the tile is `full`.
  ScoreAdjoint emitWeightAndAdjoint(Value product, Value dp, Value head,
                                    Value m, Value n, Value inRange, bool full,
                                    const RowStatistics &row,
                                    bool withReadTerm = false);
  /// The two tiles a kernel holds or streams per block of rows: [rows, D]
  /// and [rows, E] from their bases and row strides, rows below `limit`;
  /// the streamed queries' head, whose LSE' and Delta' the fused kernel
  /// stages with them.
  struct TilePair {
    Value dBase, dStride, eBase, eStride, limit, head;
  };
  void loadOwnedTiles(const TilePair &tiles, Value first);
  Value stagePointer(Value stage);
  /// Fused: the stage's [stream] rows of LSE' (then of Delta') in shared
  /// memory.
  Value stageStatistics(Value stage);
  void prefetchStage(const TilePair &tiles, Value block, Value numBlocks,
                     Value stage);
  /// Fused: the shared address of the mbarrier of `stage`'s copies.
  Value stageBarrier(Value stage);
  /// Fused with streamMaps: one thread loads the streamed tiles of rows
  /// `first` ... into `stage` with TMA, completing on its mbarrier.
  void loadStageByTensor(const TilePair &tiles, Value first, Value stage);
  /// The body of a streamed block: (first row, tile class, [stream, D] tile,
  /// [stream, E] tile, stage, the block's count among the blocks the kernel
  /// streamed (fused; else the stage), carried values) -> the carried
  /// values after it.
  using StreamBody = function_ref<SmallVector<Value>(Value, Value, Value, Value,
                                                     Value, Value, ValueRange)>;
  /// Walks the live blocks of `tiles` in order, each copied by cp.async
  /// into a stage while earlier ones are used (shape.stages()), carrying
  /// `init` through `body`; returns the carried values at the end. Fused,
  /// `streamed` counts the blocks streamed before the loop and is advanced
  /// past it.
  SmallVector<Value> emitStreamLoop(const TilePair &tiles,
                                    function_ref<Value(Value)> classOfBlock,
                                    ValueRange init, StreamBody body,
                                    Value &streamed);
  /// Fused: the row statistics of streamed query `localRow` (row `row`)
  /// from the stage's copy.
  RowStatistics stagedRowStatistics(Value stage, Value localRow, Value row);
  /// Fused: dSᵀ tile `turn` (0 or 1): block `count` (of the blocks
  /// streamed) writes tile count % 2.
  Value scoreGradTile(Value turn);
  /// The turn of the block before block `count`.
  Value previousTurn(Value count);
  /// Fused: this warp group's dSᵀ (keys by queries, as pairs of 16-bit
  /// values, pairIndex) to the swizzled [keys, stream] tile dQ's product
  /// reads.
  void storeScoreGradTile(ArrayRef<Value> dsPairs, Value tile);
  /// Fused: dQ[stream, columns of this warp group] = dS K over the CTA's
  /// keys (dSᵀ from `scoreGrads`), issued on wgmma with both operands in
  /// shared memory.
  void issueQueryGrad(MutableArrayRef<Value> dq, Value keysTile,
                      Value scoreGrads);
  /// Fused: adds scale dQ (this warp group's columns) to dQ rows m0 ... of
  /// `head`, through the boxes in shared memory: by TMA reductions where the
  /// kernel has a map of dQ (queryGradByTensor), else by atomics.
  void addQueryGrad(ArrayRef<Value> dq, Value head, Value m0);
  /// Deferred (deferQueryGrad): `emitAdd` under a branch taken where a
  /// block's dQ is pending, `m0` (its first row) >= 0. In the loop dQ's
  /// product is issued for every block, one with none pending included (its
  /// result unused), rather than carry its running registers out of a
  /// branch.
  void ifPending(Value m0, function_ref<void()> emitAdd);
  void storeGradient(ArrayRef<Value> acc, int64_t cols, Value factor,
                     Value rowBase, FixedParam rowStride, Value firstRow,
                     Value rowLimit);

  AttentionBackwardOp op;
  BackwardShape shape;
  ValueRange args;
  const IRMapping &captures;
  NormalizerDefinition normalizer;
  /// See backwardSplitsOutputGrad.
  bool splitsOutputGrad;

  Value batch, blockIndex, headOrGroup, sizeM, sizeN, groupSize;
  /// The thread's warp group (i32).
  Value warpGroup;
  /// Fused: the tensor map of dQ (or null), and whether the runtime could
  /// make it (an all-zero map where TMA cannot describe dQ).
  Value queryGradMap, queryGradByTensor;
  /// Fused: the tensor maps of Q and of dO's 16-bit copy (or null), and
  /// whether the runtime could make both.
  Value queryMap, outputGradMap, streamByTensor;
  Value batchIdx, scale;
};

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_BACKWARDKERNELEMITTER_H
