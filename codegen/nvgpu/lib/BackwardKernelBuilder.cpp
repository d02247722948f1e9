//===- BackwardKernelBuilder.cpp - The mma.sync attention backward --------===//
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
// every thread's cp.async copies and completed on an mbarrier (no barrier of
// the CTA between blocks). Per block of 64 queries each group writes its
// dSᵀ to one of two tiles, and after a barrier of the CTA each computes
// dQ = dS K for half of D's columns over all 128 keys (both operands in
// shared memory),
// stages it, scaled, in shared memory (boxes of 32 columns, 128-byte
// swizzled) and adds it into dQ (zeroed by _pre) with one TMA reduction per
// box (cp.reduce.async.bulk.tensor, issued by one thread of the group)
// through the kernel's tensor map of dQ, or with atomics where the runtime
// passes an all-zero map (a dQ TMA cannot describe: a misaligned base or
// row stride). The order of those additions varies from run to run.
//
//===----------------------------------------------------------------------===//

#include "WgmmaTiles.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Grad/ScoreModDerivative.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

namespace {

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
  /// Fused: the kernels take a tensor map of dQ (GpuOptions::
  /// queryGradTensorMap), through which the shares are added.
  bool queryGradMap = false;
  int64_t stream() const { return streamRows; }
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
  int64_t stageElements() const {
    return stream() * (qkPitch() + vPitch());
  }
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
int64_t slot(int64_t j, int64_t r, int64_t c) { return 4 * j + 2 * r + c; }

/// The index of slots (j, r, 0) and (j, r, 1) as one register of two 16-bit
/// values: k-step kk's A fragment is pairs 4 kk ... 4 kk + 3.
int64_t pairIndex(int64_t j, int64_t r) { return 2 * j + r; }

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
  /// Fused: dSᵀ tile `turn` (0 or 1).
  Value scoreGradTile(Value turn);
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
  /// `eval(full)` for the tile's class: once if the class is a constant,
  /// else on both sides of a branch on it, results of `types`.
  SmallVector<Value>
  evaluateByClass(Value tileClass, TypeRange types,
                  function_ref<SmallVector<Value>(bool)> eval);
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
  Value batchIdx, scale;
};

} // namespace

void BackwardEmitter::emitIndices(gpu::Dimension rowsAxis,
                                  bool firstBlocksFirst) {
  emitThreadIndices();
  warpGroup = divu(warp, c32(kBackwardWarps));
  blockIndex = firstBlocksFirst ? blockIndexAlong(rowsAxis)
                                : lastFirstBlockIndexAlong(rowsAxis);
  headOrGroup = blockIndexAlong(gpu::Dimension::y);
  batch = blockIndexAlong(gpu::Dimension::z);
  batchIdx = toIndex(batch);
  sizeM = arg(FixedParam::M);
  sizeN = arg(FixedParam::N);
  groupSize = divu(arg(FixedParam::H), arg(FixedParam::G));
  scale = arg(FixedParam::Scale);
  smem = LLVM::AddressOfOp::create(b, loc, sharedPtr, "attn_smem");
  if (shape.wgmma) {
    // The swizzle repeats every 1024 bytes: tiles start on such a boundary.
    Value raw = sharedAddressOf(smem);
    Value aligned =
        arith::AndIOp::create(b, loc, add(raw, c32(kSwizzleAtomBytes - 1)),
                              c32(~(kSwizzleAtomBytes - 1)));
    smem = gep(smem, b.getI8Type(), sub(aligned, raw));
  }
}

/// Element offset of row 0 of (batch, `headIndex`) in a tensor whose batch
/// and head strides are the given params.
Value BackwardEmitter::rowOffset(FixedParam strideB, FixedParam strideH,
                                 Value headIndex) {
  return add(mul(ext64(batch), arg(strideB)),
             mul(ext64(headIndex), arg(strideH)));
}

/// Offset of (batch, head, row) in LSE and Delta (laid out alike).
Value BackwardEmitter::statisticOffset(Value headIndex, Value row) {
  return add(add(mul(ext64(batch), arg(FixedParam::LseStrideB)),
                 mul(ext64(headIndex), arg(FixedParam::LseStrideH))),
             ext64(row));
}

Value BackwardEmitter::loadSinkLogit(Value headIndex, Value row) {
  Value offset = add(add(mul(ext64(batch), arg(FixedParam::SinkStrideB)),
                         mul(ext64(headIndex), arg(FixedParam::SinkStrideH))),
                     mul(ext64(row), arg(FixedParam::SinkStrideM)));
  return LLVM::LoadOp::create(b, loc, f32,
                              gep(arg(FixedParam::Sink), f32, offset), 4);
}

Value BackwardEmitter::aAddress(Value tile, int64_t pitch, Value firstRow) {
  Value row = add(firstRow, arith::AndIOp::create(b, loc, lane, c32(15)));
  Value col = mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8));
  return gep(tile, elementType, add(mul(row, c32(pitch)), col));
}

Value BackwardEmitter::bAddress(Value tile, int64_t pitch) {
  Value row = add(arith::AndIOp::create(b, loc, lane, c32(7)),
                  mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8)));
  Value col = mul(arith::AndIOp::create(
                      b, loc, arith::ShRUIOp::create(b, loc, lane, c32(3)),
                      c32(1)),
                  c32(8));
  return gep(tile, elementType, add(mul(row, c32(pitch)), col));
}

Value BackwardEmitter::bTransposedAddress(Value tile, int64_t pitch) {
  return aAddress(tile, pitch, c32(0));
}

void BackwardEmitter::multiply(
    MutableArrayRef<Value> acc, int64_t kSteps, int64_t nTiles,
    function_ref<SmallVector<Value, 4>(int64_t)> aFragment, Value bAddr,
    int64_t pitch, bool transposed) {
  for (int64_t kk = 0; kk < kSteps; ++kk) {
    SmallVector<Value, 4> a = aFragment(kk);
    for (int64_t jp = 0; jp < nTiles / 2; ++jp) {
      int64_t offset = transposed ? 16 * kk * pitch + 16 * jp
                                  : 16 * jp * pitch + 16 * kk;
      SmallVector<Value, 4> bf =
          ldmatrix(gep(bAddr, elementType, c32(offset)), transposed);
      for (int64_t half = 0; half < 2; ++half) {
        MutableArrayRef<Value> tile = acc.slice(4 * (2 * jp + half), 4);
        llvm::copy(mma(a, {bf[2 * half], bf[2 * half + 1]}, tile),
                   tile.begin());
      }
    }
  }
}

void BackwardEmitter::issueWgmma(
    MutableArrayRef<Value> acc, int64_t kSteps, ArrayRef<Value> aTiles,
    function_ref<SmallVector<Value, 4>(int64_t)> aFragment, Value bTile,
    int64_t bRows, bool contractRows, bool overwrite) {
  SmallVector<Value> operands(acc.begin(), acc.end());
  if (aTiles.empty())
    for (int64_t kk = 0; kk < kSteps; ++kk)
      llvm::append_range(operands, aFragment(kk));
  operands = fenceOperands(b, loc, operands);
  llvm::copy(ArrayRef<Value>(operands).take_front(acc.size()), acc.begin());
  ArrayRef<Value> fragments = ArrayRef<Value>(operands).drop_front(acc.size());
  Value bAddress = addressInLoop(bTile);
  auto bOperand = [&](int64_t kk) {
    return contractRows ? mnMajorOperand(bAddress, bRows, kk)
                        : kMajorOperand(bAddress, bRows, kk);
  };
  wgmmaFence();
  // The first product of an overwritten accumulator ignores its registers.
  bool accumulate = !overwrite;
  for (Value aTile : aTiles) {
    Value aAddress = addressInLoop(aTile);
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      wgmma(acc, kMajorOperand(aAddress, shape.ownedRows(), kk), {},
            bOperand(kk), /*transposeB=*/contractRows, accumulate);
      accumulate = true;
    }
  }
  if (aTiles.empty())
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      wgmma(acc, Value(), fragments.slice(4 * kk, 4), bOperand(kk),
            /*transposeB=*/contractRows, accumulate);
      accumulate = true;
    }
  wgmmaCommit();
}

SmallVector<Value> BackwardEmitter::freshAccumulators(int64_t count) {
  return SmallVector<Value>(count, LLVM::PoisonOp::create(b, loc, f32));
}

void BackwardEmitter::completeWgmma(ArrayRef<MutableArrayRef<Value>> accs) {
  wgmmaWait(0);
  for (MutableArrayRef<Value> acc : accs)
    llvm::copy(fenceOperands(b, loc, acc), acc.begin());
}

void BackwardEmitter::waitForTiles(int64_t pending) {
  NVVM::CpAsyncWaitGroupOp::create(b, loc, pending);
  if (shape.wgmma)
    asyncProxyFence();
  gpu::BarrierOp::create(b, loc);
}

SmallVector<Value, 4> BackwardEmitter::packedFragment(ArrayRef<Value> acc,
                                                      int64_t kk) {
  const int64_t t0 = 4 * 2 * kk, t1 = t0 + 4;
  return {pack(acc[t0], acc[t0 + 1]), pack(acc[t0 + 2], acc[t0 + 3]),
          pack(acc[t1], acc[t1 + 1]), pack(acc[t1 + 2], acc[t1 + 3])};
}

/// The class of the tile of queries [mFirst, mLast] x keys [nFirst, nLast]
/// (clamped into the problem by the caller): 0 empty, 1 partial, 2 full.
Value BackwardEmitter::tileClass(Value headIndex, Value mFirst, Value mLast,
                                 Value nFirst, Value nLast) {
  if (!op.hasTileClass())
    return c32(op.hasTrivialMask() ? 2 : 1);
  return inlineRegion(b, op.getTileClass(),
                      {batchIdx, toIndex(headIndex), toIndex(mFirst),
                       toIndex(mLast), toIndex(nFirst), toIndex(nLast)},
                      captures);
}

/// The first block at or after `from` whose class is not empty, and its
/// class; `numBlocks` and 0 when there is none. Uniform over the CTA.
/// Each lane classifies one of 32 consecutive blocks and a ballot picks the
/// first live one: a document mask leaves long runs of empty blocks, and a
/// block-by-block scan would pay one dependent load of the tile summaries
/// per block. Every warp computes the same answer.
std::pair<Value, Value> BackwardEmitter::findLiveBlock(
    Value from, Value numBlocks, function_ref<Value(Value)> classOfBlock) {
  if (!op.hasTileClass()) {
    Value inRange = cmpi(arith::CmpIPredicate::slt, from, numBlocks);
    return {from, select(inRange, tileClass(Value(), Value(), Value(), Value(),
                                            Value()),
                         c32(0))};
  }
  // State: the first block of the next group of 32, the live block found
  // (numBlocks until one is), its class (0 until then).
  auto scan = scf::WhileOp::create(
      b, loc, TypeRange{i32, i32, i32}, ValueRange{from, numBlocks, c32(0)},
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value more = cmpi(arith::CmpIPredicate::slt, state[0], numBlocks);
        Value notFound = cmpi(arith::CmpIPredicate::eq, state[2], c32(0));
        scf::ConditionOp::create(
            b, loc, arith::AndIOp::create(b, loc, more, notFound), state);
      },
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value block = add(state[0], lane);
        Value inRange = cmpi(arith::CmpIPredicate::slt, block, numBlocks);
        auto ifInRange = scf::IfOp::create(b, loc, TypeRange{i32}, inRange,
                                           /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard inner(b);
          b.setInsertionPointToStart(ifInRange.thenBlock());
          scf::YieldOp::create(b, loc, classOfBlock(block));
          b.setInsertionPointToStart(ifInRange.elseBlock());
          scf::YieldOp::create(b, loc, c32(0));
        }
        Value blockClass = ifInRange.getResult(0);
        Value live = cmpi(arith::CmpIPredicate::ne, blockClass, c32(0));
        Value ballot = NVVM::VoteSyncOp::create(b, loc, i32, c32(-1), live,
                                                NVVM::VoteSyncKind::ballot);
        // 32 when no lane found one: then the shuffle reads lane 0's 0.
        Value firstLane = LLVM::CountTrailingZerosOp::create(
            b, loc, i32, ballot, /*is_zero_poison=*/false);
        Value any = cmpi(arith::CmpIPredicate::ne, ballot, c32(0));
        Value firstClass =
            gpu::ShuffleOp::create(b, loc, blockClass,
                                   select(any, firstLane, c32(0)), c32(32),
                                   gpu::ShuffleMode::IDX)
                .getShuffleResult();
        scf::YieldOp::create(
            b, loc,
            ValueRange{add(state[0], c32(32)),
                       select(any, add(state[0], firstLane), numBlocks),
                       select(any, firstClass, c32(0))});
      });
  return {scan.getResult(1), scan.getResult(2)};
}

BackwardEmitter::RowStatistics
BackwardEmitter::rowStatistics(Value row, StatisticSlots slots) {
  RowStatistics stats;
  stats.inRange = cmpi(arith::CmpIPredicate::slt, row, sizeM);
  Value clamped = minsi(row, sub(sizeM, c32(1)));
  stats.index = toIndex(clamped);
  if (readsStatistic()) {
    auto [lse, delta] = slots(clamped);
    stats.shift = normalizer.shiftForLogDenominator(
        b, loc, LLVM::LoadOp::create(b, loc, f32, lse, 4));
    stats.delta = LLVM::LoadOp::create(b, loc, f32, delta, 4);
  }
  return stats;
}

BackwardEmitter::RowStatistics
BackwardEmitter::loadRowStatistics(Value head, Value row, bool splitDelta) {
  return rowStatistics(row, [&](Value clamped) {
    Value offset = statisticOffset(head, clamped);
    Value delta = gep(arg(FixedParam::Delta), f32, offset);
    if (splitDelta)
      delta = gep(delta, f32, deltaPlaneOffset());
    return std::make_pair(gep(arg(FixedParam::Lse), f32, offset), delta);
  });
}

BackwardEmitter::ScoreAdjoint BackwardEmitter::emitWeightAndAdjoint(
    Value product, Value dp, Value head, Value m, Value n, Value inRange,
    bool full, const RowStatistics &row, bool withReadTerm) {
  Value keep = inRange;
  if (!full)
    keep = arith::AndIOp::create(
        b, loc, keep,
        inlineRegion(b, op.getMask(), {batchIdx, head, m, n}, captures));
  Value s = mulf(product, scale), derivative, readDerivative;
  if (!op.hasTrivialScoreMod()) {
    // The derivative's clone reads from above through `captures`.
    FailureOr<ScoreModValues> values = emitScoreModDerivative(
        b, op.getScoreModBlock(), {s, batchIdx, head, m, n}, &captures,
        withReadTerm ? op.getGradReads() : ArrayRef<int64_t>());
    assert(succeeded(values) && "checked by checkGpuBackwardSupport");
    s = values->score;
    derivative = values->derivative;
    if (withReadTerm)
      readDerivative = values->readDerivatives.front();
  }
  Value p = s;
  if (readsStatistic())
    p = normalizer.weight(b, loc, row.shift, s);
  Value ds = normalizer.getScoreAdjoint(b, loc, p, s, dp, row.delta);
  Value zero = cf(0.0);
  ScoreAdjoint result;
  if (readDerivative) {
    result.readTerm = select(keep, mulf(ds, readDerivative), zero);
    // dS' is affine in Delta: its slope is the adjoint at dP = 1, Delta = 0.
    if (readsStatistic())
      result.readDeltaCoefficient = select(
          keep,
          mulf(normalizer.getScoreAdjoint(b, loc, p, s, cf(1.0), zero),
               readDerivative),
          zero);
  }
  if (derivative)
    ds = mulf(ds, derivative);
  result.weight = select(keep, p, zero);
  result.scoreAdjoint = select(keep, ds, zero);
  return result;
}

/// Stores the f32 rows of a 16-row accumulator tile of each warp (`cols`
/// columns) times `factor`, rows firstRow + 16 warp + ... below `rowLimit`,
/// at `rowBase` + row * stride.
void BackwardEmitter::storeGradient(ArrayRef<Value> acc, int64_t cols,
                                    Value factor, Value rowBase,
                                    FixedParam rowStride, Value firstRow,
                                    Value rowLimit) {
  auto pairType = VectorType::get({2}, f32);
  for (int64_t r = 0; r < 2; ++r) {
    Value row = add(add(firstRow, mul(warp, c32(16))),
                    add(quadRow, c32(8 * r)));
    auto ifRow = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, row, rowLimit),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifRow.thenBlock());
    Value rowPtr =
        gep(rowBase, f32,
            add(mul(ext64(row), arg(rowStride)), ext64(mul(quadCol, c32(2)))));
    // Pairs of adjacent columns, 4-byte aligned: a gradient's base and row
    // stride may be odd multiples of 4 bytes.
    for (int64_t j = 0; j < cols / 8; ++j) {
      Value pair = vector::FromElementsOp::create(
          b, loc, pairType,
          ValueRange{mulf(acc[slot(j, r, 0)], factor),
                     mulf(acc[slot(j, r, 1)], factor)});
      LLVM::StoreOp::create(b, loc, pair, gep(rowPtr, f32, c32(8 * j)), 4);
    }
  }
}

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
  Value dOBase = gep(arg(FixedParam::DO), doElement,
                     rowOffset(FixedParam::DOStrideB,
                               FixedParam::DOStrideH, head));
  Value oBase = gep(arg(FixedParam::O), f32,
                    rowOffset(FixedParam::OStrideB,
                              FixedParam::OStrideH, head));
  Value do16Base = gep(arg(FixedParam::DO16), elementType,
                       rowOffset(FixedParam::OStrideB,
                                 FixedParam::OStrideH, head));
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
    Value dORow = gep(dOBase, doElement,
                      mul(ext64(clamped), arg(FixedParam::DOStrideM)));
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
      auto ifValid = scf::IfOp::create(
          b, loc, SmallVector<Type, 2>(numSums, f32), valid,
          /*withElseRegion=*/true);
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifValid.thenBlock());
      Value g = LLVM::LoadOp::create(b, loc, doElement,
                                     gep(dORow, doElement, col));
      Value o = LLVM::LoadOp::create(b, loc, f32, gep(oRow, f32, col));
      Value rounded = g;
      if (doElement != elementType)
        rounded = doElement.isF32()
                      ? arith::TruncFOp::create(b, loc, elementType, g)
                      : arith::TruncFOp::create(
                            b, loc, elementType,
                            arith::ExtFOp::create(b, loc, f32, g));
      LLVM::StoreOp::create(b, loc, rounded,
                            gep(do16Row, elementType, col));
      // Delta from the dO the products read, so that each row's score
      // adjoints P (dP - Delta) still sum to 0: gradients that weigh them
      // by position (ALiBi's slopes) would otherwise add up the rounding
      // of dO over the whole row.
      Value high = arith::ExtFOp::create(b, loc, f32, rounded);
      SmallVector<Value, 2> terms = {mulf(high, o)};
      if (splitsOutputGrad) {
        Value low = arith::TruncFOp::create(b, loc, elementType,
                                            subf(g, high));
        LLVM::StoreOp::create(b, loc, low,
                              gep(gep(do16Row, elementType, lowPartOffset()),
                                  elementType, col));
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
        Value lseGradOffset =
            add(rowOffset(FixedParam::DLseStrideB, FixedParam::DLseStrideH,
                          head),
                mul(ext64(row), arg(FixedParam::DLseStrideM)));
        Value lseGrad = LLVM::LoadOp::create(
            b, loc, f32, gep(arg(FixedParam::DLse), f32, lseGradOffset), 4);
        Value share =
            normalizer.getLseAdjointShare(b, loc, lseGrad, lse, sink);
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
      LLVM::StoreOp::create(
          b, loc, scoreDeltas[i],
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
void BackwardEmitter::loadOwnedTiles(const TilePair &tiles, Value first) {
  const int64_t rows = shape.ownedRows();
  loadTileAsync(0, rows, shape.headDim, shape.qkPitch(), tiles.dBase,
                tiles.dStride, first, tiles.limit, nullptr, shape.wgmma);
  loadTileAsync(rows * shape.qkPitch(), rows, shape.valueDim, shape.vPitch(),
                tiles.eBase, tiles.eStride, first, tiles.limit, nullptr,
                shape.wgmma);
}

Value BackwardEmitter::stagePointer(Value stage) {
  return gep(smem, elementType,
             add(c32(shape.ownedElements()),
                 mul(stage, c32(shape.stageElements()))));
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
  // loadTileAsync copies to offsets from `smem`: the stage's base stands in.
  Value savedSmem = smem;
  smem = stagePointer(stage);
  loadTileAsync(0, stream, shape.headDim, shape.qkPitch(), tiles.dBase,
                tiles.dStride, first, tiles.limit, nullptr, shape.wgmma);
  loadTileAsync(stream * shape.qkPitch(), stream, shape.valueDim,
                shape.vPitch(), tiles.eBase, tiles.eStride, first, tiles.limit,
                nullptr, shape.wgmma);
  smem = savedSmem;
  // Fused: the stage's mbarrier completes once every thread's copies have
  // (each arrives once per stage's fill).
  if (shape.fusedQuery)
    arriveOnCopies(stageBarrier(stage));
  b.setInsertionPointToStart(guard.elseBlock());
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
  NVVM::CpAsyncCommitGroupOp::create(b, loc);
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
          asyncProxyFence();
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

Value BackwardEmitter::scoreGradTile(Value turn) {
  return gep(
      smem, elementType,
      add(c32(shape.ownedElements() + shape.stages() * shape.stageElements()),
          mul(turn, c32(shape.ownedRows() * shape.stream()))));
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

SmallVector<Value>
BackwardEmitter::evaluateByClass(Value tileClass, TypeRange types,
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
  if (shape.queryGradMap) {
    // The runtime passes an all-zero map where TMA cannot describe dQ.
    queryGradMap = args[kNumFixedParams];
    Value bits = c64(0);
    for (int64_t word = 0; word < 16; ++word)
      bits = arith::OrIOp::create(
          b, loc, bits,
          LLVM::LoadOp::create(b, loc, i64, gep(queryGradMap, i64, c32(word)),
                               8));
    queryGradByTensor = cmpi(arith::CmpIPredicate::ne, bits, c64(0));
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
            st = freshAccumulators(st.size());
            dpt = freshAccumulators(dpt.size());
            issueWgmma(st, shape.headDim / 16, groupKeys, nullptr, qTile,
                       stream, /*contractRows=*/false, /*overwrite=*/true);
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
            // dQ's product reads both warp groups' dSᵀ. dV and dK run
            // while the CTA waits for it; they complete first, so that P's
            // and dS's registers are free for dQ's accumulators.
            // The last block's tensor reductions (or atomics) have read the
            // dQ boxes before this barrier; they are written after it.
            asyncProxyFence();
            if (shape.queryGradMap)
              bulkWait(/*readOnly=*/true);
            gpu::BarrierOp::create(b, loc);
            completeWgmma({dV, dK});
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
        Value streamed = shape.fusedQuery ? carried.back() : Value();
        SmallVector<Value> results = emitStreamLoop(
            queries, classOf, carried.take_front(grads.size()), body, streamed);
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
  Value dOBase = gep(arg(FixedParam::DO16), elementType,
                     rowOffset(FixedParam::OStrideB, FixedParam::OStrideH,
                               head));
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
      dOFrag.push_back(
          ldmatrix(gep(dOAddr, elementType, c32(16 * kk)), false));
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
        loadRowStatistics(head, add(m0, add(warpRow, add(quadRow,
                                                         c32(8 * r)))),
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
            Value keep = arith::AndIOp::create(b, loc, nInRange,
                                               rows[r].inRange);
            ScoreAdjoint adjoint = emitWeightAndAdjoint(
                s[k], dp[k], headIndex, rows[r].index, nIdx, keep, full,
                rows[r], sumsRead);
            ds[k] = adjoint.scoreAdjoint;
            if (!sumsRead)
              continue;
            Value *rowSums = &sums[kRowSums * r];
            rowSums[kReadSum] = addf(rowSums[kReadSum], adjoint.readTerm);
            if (!correctsDelta)
              continue;
            rowSums[kWeightedAdjointSum] =
                addf(rowSums[kWeightedAdjointSum],
                     mulf(adjoint.weight, dp[k]));
            rowSums[kDeltaCoefficientSum] =
                addf(rowSums[kDeltaCoefficientSum],
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
      Value corrected =
          mulf(factor, addf(sum, mulf(subf(dOO, ownDelta),
                                      rowSums[kDeltaCoefficientSum])));
      sum = select(cmpf(arith::CmpFPredicate::OGT, mass, cf(0.0)), corrected,
                   sum);
    }
    LLVM::StoreOp::create(b, loc, sum, slotPtr, 4);
  }
}

//===----------------------------------------------------------------------===//
// Entry points.
//===----------------------------------------------------------------------===//

/// 64 streamed rows at D, E <= 64; at 128, 32 keep the products' results
/// within the registers beside the gradient accumulators, and 16 where the
/// mask or score_mod reads tensors, whose loads need registers too
/// (calibrated with ptxas on the examples).
static int64_t chooseStreamRows(AttentionBackwardOp op) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  if (query.getDimSize(3) <= 64 && value.getDimSize(3) <= 64)
    return 64;
  bool readsTensors = false;
  for (Region *region : {&op.getScoreMod(), &op.getMask()})
    region->walk([&](Operation *nested) {
      readsTensors |= isa<ReadOp, tensor::ExtractOp>(nested);
    });
  return readsTensors ? 16 : 32;
}

bool mlir::attn::backwardSplitsOutputGrad(AttentionBackwardOp op) {
  return !op.getGradReads().empty() &&
         cast<RankedTensorType>(op.getOutputGrad().getType())
             .getElementType()
             .isF32();
}

LogicalResult mlir::attn::checkGpuBackwardSupport(AttentionBackwardOp op) {
  if (op.getNormalizer() == Normalizer::Normalize &&
      op.getMap() == WeightMap::Identity)
    return op.emitError() << "attn-nvgpu: the GPU backward supports softmax, "
                             "normalize with a weight map and none";
  if (op.getGradReads().size() > 1)
    return op.emitError() << "attn-nvgpu: the GPU backward sums the gradient "
                             "of one tensor score_mod reads, not "
                          << op.getGradReads().size()
                          << "; hold the others constant (--grad-constant) "
                             "or run on the CPU";
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  Type element = query.getElementType();
  if (!element.isBF16() && !element.isF16())
    return op.emitError() << "attn-nvgpu: Q, K and V must hold bf16 or f16, "
                             "got "
                          << element;
  int64_t d = query.getDimSize(3), e = value.getDimSize(3);
  if (ShapedType::isDynamic(d) || ShapedType::isDynamic(e))
    return op.emitError() << "attn-nvgpu: the head dims D and E must be "
                             "static";
  if (d % 16 != 0 || d > 128 || e % 16 != 0 || e > 128)
    return op.emitError() << "attn-nvgpu: the GPU backward needs D and E "
                             "multiples of 16, at most 128; got D = "
                          << d << ", E = " << e;
  Type doElement =
      cast<RankedTensorType>(op.getOutputGrad().getType()).getElementType();
  if (!doElement.isF32() && !doElement.isBF16() && !doElement.isF16())
    return op.emitError() << "attn-nvgpu: dO must hold f32, bf16 or f16";
  // Every op of score_mod must have a derivative rule: build it once on a
  // scratch block.
  if (!op.hasTrivialScoreMod()) {
    OpBuilder scratch(op.getContext());
    Block *block = new Block();
    Block &scoreMod = op.getScoreModBlock();
    for (BlockArgument arg : scoreMod.getArguments())
      block->addArgument(arg.getType(), arg.getLoc());
    scratch.setInsertionPointToStart(block);
    FailureOr<ScoreModValues> values =
        emitScoreModDerivative(scratch, scoreMod, block->getArguments());
    // Clones read values from above; drop them before the block.
    block->dropAllDefinedValueUses();
    for (Operation &nested : llvm::make_early_inc_range(llvm::reverse(*block)))
      nested.erase();
    delete block;
    if (failed(values))
      return failure();
  }
  return success();
}

FailureOr<gpu::GPUModuleOp>
mlir::attn::buildBackwardGpuModule(OpBuilder &builder, AttentionBackwardOp op,
                                   StringRef moduleName, StringRef kernelPrefix,
                                   const GpuOptions &options,
                                   GpuBackwardKernels &kernels) {
  if (failed(checkGpuBackwardSupport(op)))
    return failure();
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  BackwardShape shape{query.getDimSize(3), value.getDimSize(3), 0};
  // The swizzled layout holds 64-column chunks.
  shape.wgmma = options.usesWgmma() && shape.headDim % 64 == 0 &&
                shape.valueDim % 64 == 0;
  shape.lowPartTile = shape.wgmma && backwardSplitsOutputGrad(op);
  // dQ from the dK/dV kernel, unless asked for the same bits on every run
  // or the dQ kernel's row sums are needed (grad_reads); 64 queries per
  // block keep dQ's product on whole wgmma rows.
  shape.fusedQuery =
      shape.wgmma && !options.deterministic && op.getGradReads().empty();
  shape.queryGradMap = shape.fusedQuery && options.queryGradTensorMap;
  shape.streamRows = shape.fusedQuery ? 64 : chooseStreamRows(op);
  Type elementType = query.getElementType();
  KernelModuleBuilder module(builder, op, kernels.signature);
  FailureOr<gpu::GPUModuleOp> gpuModule =
      module.create(moduleName, /*tensorMaps=*/shape.queryGradMap ? 1 : 0);
  if (failed(gpuModule))
    return failure();
  kernels.preprocessName = (kernelPrefix + "_pre").str();
  kernels.keyValueName = (kernelPrefix + "_dkdv").str();
  kernels.queryName =
      shape.fusedQuery ? std::string() : (kernelPrefix + "_dq").str();
  kernels.queryBlock = kWarpGroupRows;
  kernels.keyBlock = shape.ownedRows();
  kernels.preprocessThreads = kernels.queryThreads = 32 * kBackwardWarps;
  kernels.keyValueThreads = 32 * shape.keyValueWarps();
  // At D = E = 128 the fused kernel takes all of a Hopper CTA's 227 KiB.
  assert(shape.sharedBytes() <= 227 * 1024 && "more shared memory than a CTA");
  kernels.keyValueSharedBytes = kernels.querySharedBytes = shape.sharedBytes();
  if (shape.queryGradMap) {
    kernels.queryGradBoxRows = shape.stream();
    kernels.queryGradBoxColumns = BackwardShape::kQueryGradBoxColumns;
  }
  auto add = [&](StringRef name, int64_t threads,
                 void (BackwardEmitter::*emit)()) {
    return module.addRegionKernel(
        name, threads, [&](ValueRange args, const IRMapping &captures) {
          BackwardEmitter emitter(builder, op.getLoc(), op, shape, elementType,
                                  threads / 32, args, captures);
          (emitter.*emit)();
        });
  };
  if (failed(add(kernels.preprocessName, kernels.preprocessThreads,
                 &BackwardEmitter::emitPreprocess)) ||
      failed(add(kernels.keyValueName, kernels.keyValueThreads,
                 &BackwardEmitter::emitKeyValue)))
    return failure();
  if (!kernels.queryName.empty() &&
      failed(add(kernels.queryName, kernels.queryThreads,
                 &BackwardEmitter::emitQuery)))
    return failure();
  return gpuModule;
}
