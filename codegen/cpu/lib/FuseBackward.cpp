//===- FuseBackward.cpp - attn.attention_backward, FlashAttention-2 style -===//
//
// Every attn.attention_backward (on tensors, in a function) becomes, on
// memrefs, two loop nests (FlashAttention-2's backward), with the scores and
// weights recomputed from Q, K and the forward's row statistic:
//
//   dQ pass: scf.parallel (b, h, query tile)         -> OpenMP
//     Qt[d][lane] = scale Q[m0 + lane, d], dOt[e][lane] = dO[m0 + lane, e]
//     Delta = sum_e dOt[e] O[m0 + lane, e];  LSE' = LSE (+) sink
//     Delta' = Delta - dLSE e^(LSE' - LSE)   (with an LSE adjoint dLSE)
//                         (LSE' and Delta' stored per row for the dK/dV pass)
//     scf.for key tile                               empty: skipped
//       St[j]  = sum_d K[n0 + j, d] Qt[d];  dPt[j] = sum_e V[n0 + j, e] dOt[e]
//       P = exp(score_mod(St) - LSE'), dS = P (dPt - Delta') score_mod'
//                         (normalize with a map f: P = f(s) e^-LSE and
//                          dS times f'/f; none: P = score_mod(St),
//                          dS = dPt score_mod';
//                          full tiles: no mask, else mask + bounds)
//       dQt[d] += sum_j K[n0 + j, d] dS[j]
//     dQ = scale dQt;  dSink = -P_sink Delta
//     (and for each grad_reads read r of score_mod, its per-row sum
//      sum_j dS'[j] d score_mod / d r, kept per lane)
//
//   dK/dV pass: scf.parallel (b, g, key tile)
//     Kt[d][lane] = scale K[n0 + lane, d], Vt[e][lane] = V[n0 + lane, e]
//     for each query head h of the group g, scf.for query tile
//       St[j]  = sum_d Q[m0 + j, d] Kt[d];  dPt[j] = sum_e dO[m0 + j, e] Vt[e]
//       P, dS as above, from the row's stored LSE' and Delta'
//       dVt[e] += sum_j dO[m0 + j, e] P[j];  dKt[d] += sum_j Q[m0 + j, d] dS[j]
//     dK = scale dKt, dV = dVt
//
// Each pass writes only the rows of its own parallel iteration and sums
// every element in one fixed order: no atomics, no races, the same bits on
// every run and thread count. The price is that S and dP are computed twice
// (14·D FLOPs per kept pair for 10·D of useful work). The micro-kernels are
// attn-fuse-online's (LaneKernels.h): one row per vector lane, the other
// operand's rows broadcast, so nothing is transposed per inner tile.
//
//===----------------------------------------------------------------------===//

#include "LaneCloning.h"
#include "LaneKernels.h"

#include "attn/CPU/Passes.h"
#include "attn/Grad/ScoreModDerivative.h"
#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"

#include <memory>

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNFUSEBACKWARD
#include "attn/CPU/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Where the points of row j of a tile are: the indices (one of m and n
/// varies along the lanes), whether the row is before the end, and the
/// per-query statistics (vectors in the dQ pass, where queries are lanes;
/// scalars of the row's query in the dK/dV pass).
struct TileRow {
  LaneValue query, key;
  Value inRange;
  /// Where the weights are recomputed: the query's log-denominator LSE'
  /// and Delta (Delta' with an LSE adjoint).
  LaneValue logDenominator, delta;
};

/// Builds the two loop nests of one attn.attention_backward.
class FusedBackwardBuilder : public LaneKernelBuilder {
public:
  FusedBackwardBuilder(AttentionBackwardOp op, int64_t laneTile,
                       int64_t rowTile)
      : LaneKernelBuilder(op, laneTile), op(op), rowTile(rowTile),
        normalizer(op.getNormalizer(), bool(op.getSink()), NormalizerMath(),
                   op.getMap()) {}

  LogicalResult run();

private:
  /// Whether the weights are recomputed from the rows' statistic (softmax,
  /// normalize with a map), rather than being the scores (none).
  bool readsStatistic() { return normalizer.hasStatistic(); }
  /// Builds `derivative`, unless score_mod is trivial.
  LogicalResult buildDerivativeBlock();
  /// Turns the scores sT and the products dpT of a tile, in place, into the
  /// weights P (left in sT when `keepWeights`) and the score adjoints dS (in
  /// dpT), row j at `rowAt(j)`. `masked` tiles evaluate bounds and mask.
  /// With `readSums` ([grad_reads x lanes]), each grad_reads read's terms
  /// dS' * d score_mod / d read are added to its row of the lanes' sums.
  LogicalResult emitScoreAdjoints(bool masked, bool keepWeights, Value batchIv,
                                  Value headIv,
                                  function_ref<TileRow(Value j)> rowAt,
                                  Value readSums = Value());
  /// The lanes' operands of one parallel iteration, in per-iteration
  /// scratch: scale Xt [D x lanes] and Yt [E x lanes] for rows `first` ..
  /// (clamped to `last`) of head `head` of X (Q or K) and Y (dO or V), and
  /// the f32 copies [rowTile x D], [rowTile x E] of the rows streamed past
  /// them (K and V, or Q and dO), where those are not f32. Also allocates
  /// sT and dpT.
  struct LaneOperands {
    Value scoreTile, gradTile, scoreWide, gradWide;
  };
  LaneOperands emitLaneOperands(Value scoreBuf, Value gradBuf, Value batchIv,
                                Value headIv, Value first, Value last,
                                Value streamedScoreBuf, Value streamedGradBuf);
  /// St and dPt of a tile: the dots of `scoreRows` (K or Q rows, width D)
  /// with the lanes' `scoreTile` (scale Qt or scale Kt) and of `gradRows`
  /// (V or dO rows, width E) with `gradTile` (dOt or Vt); rows that are not
  /// f32 are widened first.
  void emitProducts(const RowBlock &scoreRows, Value scoreTile,
                    const RowBlock &gradRows, Value gradTile);
  /// One tile of TileClass `tileClass` whose inner extent holds `rows` of
  /// its rowTile rows: skipped when empty, else `products` (sT, dpT), the
  /// adjoints (full tiles without mask and bounds), then `accumulate`.
  LogicalResult emitTile(Value tileClass, Value rows,
                         function_ref<void()> products,
                         function_ref<LogicalResult(bool masked)> adjoints,
                         function_ref<void()> accumulate);
  LogicalResult emitQueryPass();
  LogicalResult emitKeyPass();

  AttentionBackwardOp op;
  int64_t rowTile;
  NormalizerDefinition normalizer;
  /// A block computing (score_mod, d score_mod / d score, then the
  /// derivative with respect to each grad_reads read) from score_mod's
  /// arguments, cloned along lanes for every row; null for a trivial
  /// score_mod (derivative 1).
  std::unique_ptr<Block> derivative;

  // Function-level values.
  Value qBuf, kBuf, vBuf, oBuf, lseBuf, doBuf, sinkBuf, dlseBuf;
  Value dqBuf, dkBuf, dvBuf, dsinkBuf;
  /// The per-row sums of the grad_reads reads' adjoints, [B, H, M] each.
  SmallVector<Value> readGradBufs;
  /// LSE' and Delta' of every row (weights recomputed), written by the dQ
  /// pass.
  Value logDenominatorBuf, deltaBuf;
  Value batch, heads, numQueries, headDim, numKeys, valueDim, headsPerGroup;
  DenseMap<Value, Value> readBuffers;
  /// The scores (then weights) and dP (then dS) of the current pass's
  /// tile: [rowTile x lanes].
  Value sT, dpT;
};

LogicalResult FusedBackwardBuilder::buildDerivativeBlock() {
  if (op.hasTrivialScoreMod())
    return success();
  Block &scoreMod = op.getScoreModBlock();
  derivative = std::make_unique<Block>();
  for (BlockArgument arg : scoreMod.getArguments())
    derivative->addArgument(arg.getType(), arg.getLoc());
  // The block has no parent region yet: the builder takes the context from
  // the op.
  OpBuilder builder(op.getContext());
  builder.setInsertionPointToEnd(derivative.get());
  FailureOr<ScoreModValues> values = emitScoreModDerivative(
      builder, scoreMod, derivative->getArguments(), nullptr,
      op.getGradReads());
  if (failed(values))
    return failure();
  SmallVector<Value> yielded = {values->score, values->derivative};
  llvm::append_range(yielded, values->readDerivatives);
  YieldOp::create(builder, loc, yielded);
  return success();
}

LogicalResult FusedBackwardBuilder::emitScoreAdjoints(
    bool masked, bool keepWeights, Value batchIv, Value headIv,
    function_ref<TileRow(Value j)> rowAt, Value readSums) {
  bool evaluatesMask = masked && !op.hasTrivialMask();
  Value zero = splat(0.0f);
  bool failedRegion = false;
  forLoop(index(rowTile), 1, {}, [&](Value j, ValueRange) {
    TileRow row = rowAt(j);
    SmallVector<LaneValue> point = {
        {batchIv, false}, {headIv, false}, row.query, row.key};
    Value s =
        vector::LoadOp::create(b, loc, laneType, sT, ValueRange{j, index(0)});
    Value modDerivative;
    SmallVector<Value> readDerivatives;
    if (derivative) {
      SmallVector<LaneValue> args = {{s, true}};
      args.append(point);
      FailureOr<SmallVector<LaneValue>> values =
          cloneAllAlongLanes(b, *derivative, args, lanes, readBuffers);
      if (failed(values)) {
        failedRegion = true;
        return SmallVector<Value>();
      }
      s = broadcastToLanes(b, loc, (*values)[0], lanes);
      modDerivative = broadcastToLanes(b, loc, (*values)[1], lanes);
      if (readSums)
        for (const LaneValue &value : llvm::drop_begin(*values, 2))
          readDerivatives.push_back(broadcastToLanes(b, loc, value, lanes));
    }
    Value dp =
        vector::LoadOp::create(b, loc, laneType, dpT, ValueRange{j, index(0)});
    // The normalizer's weight and score adjoint: P (dP - Delta) times the
    // map's factor, none's dP.
    Value p = s, delta;
    if (readsStatistic()) {
      BlockShift shift = normalizer.shiftForLogDenominator(
          b, loc, broadcastToLanes(b, loc, row.logDenominator, lanes));
      p = normalizer.weight(b, loc, shift, s);
      delta = broadcastToLanes(b, loc, row.delta, lanes);
    }
    Value ds = normalizer.getScoreAdjoint(b, loc, p, s, dp, delta);
    SmallVector<Value> readTerms = llvm::map_to_vector(
        readDerivatives, [&](Value d) -> Value {
          return arith::MulFOp::create(b, loc, ds, d);
        });
    if (modDerivative)
      ds = arith::MulFOp::create(b, loc, ds, modDerivative);
    if (masked) {
      FailureOr<Value> keep =
          emitKeptLanes(evaluatesMask ? &op.getMaskBlock() : nullptr, point,
                        row.inRange, readBuffers);
      if (failed(keep)) {
        failedRegion = true;
        return SmallVector<Value>();
      }
      p = arith::SelectOp::create(b, loc, *keep, p, zero);
      ds = arith::SelectOp::create(b, loc, *keep, ds, zero);
      for (Value &term : readTerms)
        term = arith::SelectOp::create(b, loc, *keep, term, zero);
    }
    for (auto [k, term] : llvm::enumerate(readTerms)) {
      Value at[] = {index(k), index(0)};
      Value sum = vector::LoadOp::create(b, loc, laneType, readSums, at);
      vector::StoreOp::create(b, loc, arith::AddFOp::create(b, loc, sum, term),
                              readSums, at);
    }
    if (keepWeights)
      vector::StoreOp::create(b, loc, p, sT, ValueRange{j, index(0)});
    vector::StoreOp::create(b, loc, ds, dpT, ValueRange{j, index(0)});
    return SmallVector<Value>();
  });
  return failure(failedRegion);
}

FusedBackwardBuilder::LaneOperands FusedBackwardBuilder::emitLaneOperands(
    Value scoreBuf, Value gradBuf, Value batchIv, Value headIv, Value first,
    Value last, Value streamedScoreBuf, Value streamedGradBuf) {
  LaneOperands operands;
  operands.scoreTile = laneScratch(headDim);
  operands.gradTile = laneScratch(valueDim);
  sT = laneScratch(index(rowTile));
  dpT = laneScratch(index(rowTile));
  operands.scoreWide = wideScratch(streamedScoreBuf, headDim, rowTile);
  operands.gradWide = wideScratch(streamedGradBuf, valueDim, rowTile);
  emitTranspose(scoreBuf, batchIv, headIv, first, last, headDim,
                op.getScale(), operands.scoreTile);
  emitTranspose(gradBuf, batchIv, headIv, first, last, valueDim, Value(),
                operands.gradTile);
  return operands;
}

void FusedBackwardBuilder::emitProducts(const RowBlock &scoreRows,
                                        Value scoreTile,
                                        const RowBlock &gradRows,
                                        Value gradTile) {
  if (scoreRows.wide)
    widen(scoreRows, rowTile, headDim);
  if (gradRows.wide)
    widen(gradRows, rowTile, valueDim);
  // Sums start at 0 * scale (the tile holds the scale): with D = 0 the
  // score is still 0 * scale, as in the forward.
  Value emptySum = vector::BroadcastOp::create(
      b, loc, laneType,
      arith::MulFOp::create(b, loc, f32(0.0f), op.getScale()));
  emitDots(scoreRows, headDim, scoreTile, rowTile, emptySum, sT);
  emitDots(gradRows, valueDim, gradTile, rowTile, splat(0.0f), dpT);
}

LogicalResult FusedBackwardBuilder::emitTile(
    Value tileClass, Value rows, function_ref<void()> products,
    function_ref<LogicalResult(bool masked)> adjoints,
    function_ref<void()> accumulate) {
  // scf.if without results: the builder ends both regions with a yield.
  auto tile = scf::IfOp::create(b, loc, TypeRange{}, isNonEmptyTile(tileClass),
                                /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(&tile.getThenRegion().front());
  products();
  auto update = scf::IfOp::create(b, loc, TypeRange{},
                                  isFullTile(tileClass, rows, rowTile),
                                  /*withElseRegion=*/true);
  for (bool masked : {false, true}) {
    OpBuilder::InsertionGuard updateGuard(b);
    Region &region = masked ? update.getElseRegion() : update.getThenRegion();
    b.setInsertionPointToStart(&region.front());
    if (failed(adjoints(masked)))
      return failure();
  }
  accumulate();
  return success();
}

LogicalResult FusedBackwardBuilder::emitQueryPass() {
  Value keyTiles = arith::CeilDivUIOp::create(b, loc, numKeys, index(rowTile));
  OpBuilder::InsertionGuard guard(b);
  LaneTile queries = emitParallelLaneTiles(batch, heads, numQueries);
  Value bIv = queries.batch, hIv = queries.head, m0 = queries.first;
  Value gIv = arith::DivUIOp::create(b, loc, hIv, headsPerGroup);
  Value lastQuery = queries.lastRow;
  Value lastKey = subIndex(numKeys, index(1));
  Value count = queries.count;

  // Per-iteration scratch: scale Qt, dOt, dQt [D x lanes].
  LaneOperands lanesOf =
      emitLaneOperands(qBuf, doBuf, bIv, hIv, m0, lastQuery, kBuf, vBuf);
  Value dqT = laneScratch(headDim);
  emitZero(dqT, headDim);
  // The grad_reads reads' per-row sums.
  Value readSums;
  if (!readGradBufs.empty()) {
    readSums = laneScratch(index(readGradBufs.size()));
    emitZero(readSums, index(readGradBufs.size()));
  }

  // Each row's Delta = dO·O and log-denominator, for this pass and,
  // stored, for the dK/dV pass; the scores read Delta' (Delta less the LSE
  // adjoint's share), the sink's gradient Delta.
  Value delta, scoreDelta, lse, sinkLogit, logDenominator;
  if (readsStatistic()) {
    Value oT = laneScratch(valueDim);
    emitTranspose(oBuf, bIv, hIv, m0, lastQuery, valueDim, Value(), oT);
    scf::ForOp dot =
        forLoop(valueDim, 1, splat(0.0f), [&](Value e, ValueRange acc) {
          Value o = vector::LoadOp::create(b, loc, laneType, oT,
                                           ValueRange{e, index(0)});
          Value g = vector::LoadOp::create(b, loc, laneType, lanesOf.gradTile,
                                           ValueRange{e, index(0)});
          return SmallVector<Value>{
              vector::FMAOp::create(b, loc, g, o, acc[0])};
        });
    delta = dot.getResult(0);
    lse = emitLaneGather(lseBuf, bIv, hIv, m0, lastQuery);
    if (sinkBuf)
      sinkLogit = emitLaneGather(sinkBuf, bIv, hIv, m0, lastQuery);
    logDenominator = normalizer.getRowLogDenominator(b, loc, lse, sinkLogit);
    scoreDelta = delta;
    if (dlseBuf)
      scoreDelta = arith::SubFOp::create(
          b, loc, delta,
          normalizer.getLseAdjointShare(
              b, loc, emitLaneGather(dlseBuf, bIv, hIv, m0, lastQuery), lse,
              sinkLogit));
    emitStoreLaneVector(scoreDelta, count, deltaBuf, bIv, hIv, m0);
    emitStoreLaneVector(logDenominator, count, logDenominatorBuf, bIv, hIv,
                        m0);
  }

  bool failedRegion = false;
  forLoop(keyTiles, 1, {}, [&](Value kt, ValueRange) {
    Value n0 = arith::MulIOp::create(b, loc, kt, index(rowTile));
    Value nEnd = minIndex(addIndex(n0, index(rowTile)), numKeys);
    FailureOr<Value> tileClass = emitTileClass(
        b, loc, op.getTileClass(), op.hasTrivialMask(),
        {bIv, hIv, m0, queries.lastInTile, n0, subIndex(nEnd, index(1))},
        lanes, readBuffers);
    RowBlock keyRows{kBuf, bIv, gIv, n0, lastKey, lanesOf.scoreWide};
    RowBlock valueRows{vBuf, bIv, gIv, n0, lastKey, lanesOf.gradWide};
    auto products = [&] {
      emitProducts(keyRows, lanesOf.scoreTile, valueRows, lanesOf.gradTile);
    };
    auto adjoints = [&](bool masked) {
      return emitScoreAdjoints(masked, /*keepWeights=*/false, bIv, hIv,
                               [&](Value j) {
        Value n = addIndex(n0, j);
        TileRow row;
        row.query = {queries.laneRows, true};
        row.key = {minIndex(n, lastKey), false};
        row.inRange = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                            n, numKeys);
        row.logDenominator = {logDenominator, true};
        row.delta = {scoreDelta, true};
        return row;
      }, readSums);
    };
    auto accumulate = [&] {
      emitAccumulate(keyRows, headDim, dpT, rowTile, dqT);
    };
    if (failed(tileClass) ||
        failed(emitTile(*tileClass, subIndex(nEnd, n0), products, adjoints,
                        accumulate)))
      failedRegion = true;
    return SmallVector<Value>();
  });
  if (failedRegion)
    return failure();

  emitStoreLanes(dqT, headDim, op.getScale(), count, dqBuf, bIv, hIv, m0);
  for (auto [k, buffer] : llvm::enumerate(readGradBufs)) {
    Value at[] = {index(k), index(0)};
    emitStoreLaneVector(
        vector::LoadOp::create(b, loc, laneType, readSums, at), count, buffer,
        bIv, hIv, m0);
  }
  if (dsinkBuf) {
    // dSink = -P_sink Delta.
    Value share = normalizer.getSinkWeight(b, loc, sinkLogit, lse);
    Value dSink = arith::NegFOp::create(
        b, loc, arith::MulFOp::create(b, loc, share, delta));
    emitStoreLaneVector(dSink, count, dsinkBuf, bIv, hIv, m0);
  }
  return success();
}

LogicalResult FusedBackwardBuilder::emitKeyPass() {
  Value queryTiles =
      arith::CeilDivUIOp::create(b, loc, numQueries, index(rowTile));
  OpBuilder::InsertionGuard guard(b);
  LaneTile keys = emitParallelLaneTiles(batch, dimOf(kBuf, 1), numKeys);
  Value bIv = keys.batch, gIv = keys.head, n0 = keys.first;
  Value lastQuery = subIndex(numQueries, index(1));
  Value lastKey = keys.lastRow;

  // Per-iteration scratch: scale Kt, Vt, dKt [D x lanes], dVt [E x lanes].
  LaneOperands lanesOf =
      emitLaneOperands(kBuf, vBuf, bIv, gIv, n0, lastKey, qBuf, doBuf);
  Value dkT = laneScratch(headDim);
  Value dvT = laneScratch(valueDim);
  emitZero(dkT, headDim);
  emitZero(dvT, valueDim);

  // The query heads of the group: g (H / G) up to H (none when H = 0).
  Value firstHead = arith::MulIOp::create(b, loc, gIv, headsPerGroup);
  Value groupHeads = subIndex(
      minIndex(addIndex(firstHead, headsPerGroup), heads), firstHead);
  bool failedRegion = false;
  forLoop(groupHeads, 1, {}, [&](Value hi, ValueRange) {
    Value hIv = addIndex(firstHead, hi);
    forLoop(queryTiles, 1, {}, [&](Value qt, ValueRange) {
      Value m0 = arith::MulIOp::create(b, loc, qt, index(rowTile));
      Value mEnd = minIndex(addIndex(m0, index(rowTile)), numQueries);
      FailureOr<Value> tileClass = emitTileClass(
          b, loc, op.getTileClass(), op.hasTrivialMask(),
          {bIv, hIv, m0, subIndex(mEnd, index(1)), n0, keys.lastInTile},
          lanes, readBuffers);
      RowBlock queryRows{qBuf, bIv, hIv, m0, lastQuery, lanesOf.scoreWide};
      RowBlock gradRows{doBuf, bIv, hIv, m0, lastQuery, lanesOf.gradWide};
      auto products = [&] {
        emitProducts(queryRows, lanesOf.scoreTile, gradRows, lanesOf.gradTile);
      };
      auto adjoints = [&](bool masked) {
        return emitScoreAdjoints(masked, /*keepWeights=*/true, bIv, hIv,
                                 [&](Value j) {
          Value m = addIndex(m0, j);
          Value query = minIndex(m, lastQuery);
          TileRow row;
          row.query = {query, false};
          row.key = {keys.laneRows, true};
          row.inRange = arith::CmpIOp::create(
              b, loc, arith::CmpIPredicate::slt, m, numQueries);
          if (readsStatistic()) {
            row.logDenominator = {
                memref::LoadOp::create(b, loc, logDenominatorBuf,
                                       ValueRange{bIv, hIv, query}),
                false};
            row.delta = {memref::LoadOp::create(b, loc, deltaBuf,
                                                ValueRange{bIv, hIv, query}),
                         false};
          }
          return row;
        });
      };
      auto accumulate = [&] {
        emitAccumulate(gradRows, valueDim, sT, rowTile, dvT);
        emitAccumulate(queryRows, headDim, dpT, rowTile, dkT);
      };
      if (failed(tileClass) ||
          failed(emitTile(*tileClass, subIndex(mEnd, m0), products, adjoints,
                          accumulate)))
        failedRegion = true;
      return SmallVector<Value>();
    });
    return SmallVector<Value>();
  });
  if (failedRegion)
    return failure();

  emitStoreLanes(dkT, headDim, op.getScale(), keys.count, dkBuf, bIv, gIv,
                 n0);
  emitStoreLanes(dvT, valueDim, Value(), keys.count, dvBuf, bIv, gIv, n0);
  return success();
}

LogicalResult FusedBackwardBuilder::run() {
  if (failed(buildDerivativeBlock()))
    return failure();
  // Every tensor the regions read, in memory, once per op.
  if (failed(collectReadBuffers(b, op, readBuffers)))
    return failure();

  qBuf = toBuffer(op.getQuery());
  kBuf = toBuffer(op.getKey());
  vBuf = toBuffer(op.getValue());
  oBuf = toBuffer(op.getOutput());
  lseBuf = toBuffer(op.getStatistic());
  doBuf = toBuffer(op.getOutputGrad());
  if (op.getSink())
    sinkBuf = toBuffer(op.getSink());
  if (op.getLseGrad())
    dlseBuf = toBuffer(op.getLseGrad());
  batch = dimOf(qBuf, 0);
  heads = dimOf(qBuf, 1);
  numQueries = dimOf(qBuf, 2);
  headDim = dimOf(qBuf, 3);
  numKeys = dimOf(kBuf, 2);
  valueDim = dimOf(vBuf, 3);
  headsPerGroup = emitHeadsPerGroup(heads, dimOf(kBuf, 1));

  auto resultType = [](Value v) { return cast<RankedTensorType>(v.getType()); };
  dqBuf = allocResult(resultType(op.getQueryGrad()),
                      {batch, heads, numQueries, headDim});
  dkBuf = allocResult(resultType(op.getKeyGrad()),
                      {batch, dimOf(kBuf, 1), numKeys, headDim});
  dvBuf = allocResult(resultType(op.getValueGrad()),
                      {batch, dimOf(vBuf, 1), numKeys, valueDim});
  if (Value sinkGrad = op.getSinkGrad())
    dsinkBuf = allocResult(resultType(sinkGrad), {batch, heads, numQueries});
  for (Value readGrad : op.getReadGrads())
    readGradBufs.push_back(
        allocResult(resultType(readGrad), {batch, heads, numQueries}));
  if (readsStatistic()) {
    auto rowType = RankedTensorType::get(
        {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic},
        b.getF32Type());
    logDenominatorBuf = allocResult(rowType, {batch, heads, numQueries});
    deltaBuf = allocResult(rowType, {batch, heads, numQueries});
  }

  // The dQ pass first: it stores the rows' statistics the dK/dV pass reads.
  if (failed(emitQueryPass()) || failed(emitKeyPass()))
    return failure();

  SmallVector<Value> buffers = {dqBuf, dkBuf, dvBuf};
  if (dsinkBuf)
    buffers.push_back(dsinkBuf);
  llvm::append_range(buffers, readGradBufs);
  SmallVector<Value> results;
  for (auto [result, buffer] : llvm::zip(op->getResults(), buffers))
    results.push_back(bufferization::ToTensorOp::create(
        b, loc, resultType(result), buffer, /*restrict=*/true,
        /*writable=*/true));
  op->replaceAllUsesWith(results);
  derivative.reset();
  op->erase();
  return success();
}

} // namespace

namespace mlir::attn {
namespace {

struct AttnFuseBackward : impl::AttnFuseBackwardBase<AttnFuseBackward> {
  using Base::Base;

  void runOnOperation() override {
    if (failed(checkTileSizes(getOperation(), getArgument(), "lane-tile",
                              laneTile, "row-tile", rowTile)))
      return signalPassFailure();
    for (AttentionBackwardOp op :
         collectOutsideKernels<AttentionBackwardOp>(getOperation())) {
      FusedBackwardBuilder builder(op, laneTile, rowTile);
      if (failed(builder.run()))
        return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::attn
