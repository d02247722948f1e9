//===- FuseOnline.cpp - attn.attention to the one-pass online form --------===//
//
// Every attn.attention (on tensors, in a function) becomes, on memrefs:
//
//   scf.parallel (b, h, query tile)            -> OpenMP
//     Qt[d][lane] = scale * Q[b, h, m0 + lane, d]  (transposed once per tile)
//     scf.for key tile iter_args(m, l)        (acc lives in an L1 buffer)
//       class = tile_class(...)                empty: skipped
//       St[j][lane] = sum_d K[b, g, n0 + j, d] * Qt[d][lane]
//       full tile: no mask; else mask + bounds per element
//       state' = the normalizer's update by the tile (softmax: m' = max(m,
//       max_j St), alpha = exp(m - m'), P = exp(St - m'), l' = alpha l +
//       sum_j P);  accT[e] = alpha * accT[e] + sum_j V[j,e] P[j]
//     O = accT * factor, LSE: the normalizer's finalisation
//
// One vector lane per query: the running max, denominator and rescaling are
// lane-wise vector ops with no horizontal reductions, Q is transposed once
// per query tile (amortized over all keys) and K and V are read in place,
// one broadcast element per FMA, so no per-key-tile transposes are needed
// (the micro-kernels of LaneKernels.h, shared with attn-fuse-backward).
// The queries of a tile are `query-tile` lanes; keys go `key-tile` at a time.
//
//===----------------------------------------------------------------------===//

#include "LaneCloning.h"
#include "LaneKernels.h"

#include "attn/CPU/Passes.h"
#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNFUSEONLINE
#include "attn/CPU/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Builds the fused loop nest of one attn.attention.
class OnlineAttentionBuilder : public LaneKernelBuilder {
public:
  OnlineAttentionBuilder(AttentionOp op, int64_t queryTile, int64_t keyTile)
      : LaneKernelBuilder(op, queryTile), op(op), keyTile(keyTile),
        normalizer(op.getNormalizer(), bool(op.getSink()), NormalizerMath(),
                   op.getMap()) {}

  LogicalResult run();

private:
  // Pieces of the loop nest, in the order they run.
  /// The sink logits of the tile's queries, one per lane.
  Value emitSinkLogits() {
    return emitLaneGather(sinkBuf, bIv, hIv, m0,
                          subIndex(numQueries, index(1)));
  }
  /// The K (V) rows n0 .. of the key tile, as the micro-kernels read them.
  RowBlock keyRows(Value n0) {
    return {kBuf, bIv, gIv, n0, subIndex(numKeys, index(1)), kWide,
            /*widenPerBlock=*/bool(kWide)};
  }
  RowBlock valueRows(Value n0) {
    return {vBuf, bIv, gIv, n0, subIndex(numKeys, index(1)), vWide};
  }
  void emitScores(Value n0);
  /// Applies score_mod and (when `masked`) the mask and bounds to St in
  /// place, updates the normalizer's state, and leaves P in St. Returns the
  /// new state's fields followed, when the normalizer rescales, by alpha.
  FailureOr<SmallVector<Value>>
  emitUpdate(Value n0, const NormalizerState &state, bool masked);
  void emitValueProduct(Value n0, const BlockShift &shift);
  void emitEpilogue(const NormalizerState &state);

  AttentionOp op;
  int64_t keyTile;
  NormalizerDefinition normalizer;
  bool failedRegion = false;

  // Function-level values.
  Value qBuf, kBuf, vBuf, sinkBuf, oBuf, lseBuf;
  Value numQueries, headDim, numKeys, valueDim, headsPerGroup;
  DenseMap<Value, Value> readBuffers;
  // Values of one iteration of the parallel loop.
  Value bIv, hIv, gIv, m0, queryLanes, count;
  Value qT, sT, accT;
  /// f32 copies of the K rows of one key block and the V rows of one key
  /// tile when K and V are bf16/f16 (null for f32).
  Value kWide, vWide;
};

void OnlineAttentionBuilder::emitScores(Value n0) {
  // St[j][lane] = sum_d K[b, g, n0 + j, d] * Qt[d][lane]. Keys past the end
  // read the last key; the mask drops them. Sums start at 0 * scale, not 0:
  // Qt holds the scale, so with D = 0 (no term) the score is still
  // 0 * scale, as the cascade defines it (NaN for rsqrt(0)).
  Value emptySum = vector::BroadcastOp::create(
      b, loc, laneType,
      arith::MulFOp::create(b, loc, f32(0.0f), op.getScale()));
  emitDots(keyRows(n0), headDim, qT, keyTile, emptySum, sT);
}

FailureOr<SmallVector<Value>>
OnlineAttentionBuilder::emitUpdate(Value n0, const NormalizerState &state,
                                   bool masked) {
  bool modifies = !op.hasTrivialScoreMod();
  bool evaluatesMask = masked && !op.hasTrivialMask();
  Value lastKey = arith::SubIOp::create(b, loc, numKeys, index(1));
  Value dropped = normalizer.getAbsentScore(b, loc, laneType);
  auto laneMaskType = VectorType::get({lanes}, b.getI1Type());
  Value allKept = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(laneMaskType, true));

  // Pass 1: the final scores (score_mod, mask) and which lanes keep them.
  auto scores = [&](Value j) -> FailureOr<std::pair<Value, Value>> {
    Value s = vector::LoadOp::create(b, loc, laneType, sT,
                                     ValueRange{j, index(0)});
    Value n = arith::AddIOp::create(b, loc, n0, j);
    Value key = minIndex(n, lastKey);
    if (modifies) {
      FailureOr<LaneValue> mod = cloneAlongLanes(
          b, op.getScoreModBlock(),
          {{s, true}, {bIv, false}, {hIv, false}, {queryLanes, true},
           {key, false}},
          lanes, readBuffers);
      if (failed(mod))
        return failure();
      s = broadcastToLanes(b, loc, *mod, lanes);
    }
    Value keep = allKept;
    if (masked) {
      Value inRange =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, n, numKeys);
      FailureOr<Value> kept = emitKeptLanes(
          evaluatesMask ? &op.getMaskBlock() : nullptr,
          {{bIv, false}, {hIv, false}, {queryLanes, true}, {key, false}},
          inRange, readBuffers);
      if (failed(kept))
        return failure();
      keep = *kept;
      s = arith::SelectOp::create(b, loc, keep, s, dropped);
    }
    if (modifies || masked)
      vector::StoreOp::create(b, loc, s, sT, ValueRange{j, index(0)});
    return std::make_pair(s, keep);
  };

  // softmax: pass 1 finds the block's max (from the absent score, which
  // changes no max). Otherwise the weights are the scores themselves: pass 1
  // accumulates them and counts the kept keys onto the state.
  SmallVector<Value> reduced = normalizer.rescales()
                                   ? SmallVector<Value>{dropped}
                                   : normalizer.flattenState(state);
  if (reduced.empty() && !modifies && !masked)
    return reduced;
  scf::ForOp reduce =
      forLoop(index(keyTile), 1, reduced, [&](Value j, ValueRange acc) {
        FailureOr<std::pair<Value, Value>> score = scores(j);
        if (failed(score)) {
          failedRegion = true;
          return SmallVector<Value>(acc);
        }
        auto [s, keep] = *score;
        if (normalizer.rescales())
          return SmallVector<Value>{normalizer.maxOf(b, loc, acc[0], s)};
        NormalizerState next = normalizer.unflattenState(acc);
        if (normalizer.hasSum())
          next.sum = normalizer.accumulate(
              b, loc, next.sum, normalizer.weight(b, loc, BlockShift(), s));
        if (normalizer.hasKeptCount())
          next.keptCount = normalizer.countKept(b, loc, next.keptCount, keep);
        return normalizer.flattenState(next);
      });
  if (!normalizer.rescales())
    return SmallVector<Value>(reduce.getResults());

  // Pass 2: P = the weights, in place, accumulated onto the rescaled sum.
  BlockShift shift = normalizer.beginBlock(b, loc, state, reduce.getResult(0));
  scf::ForOp sum = forLoop(
      index(keyTile), 1, normalizer.rescale(b, loc, state.sum, shift),
      [&](Value j, ValueRange acc) {
        Value s = vector::LoadOp::create(b, loc, laneType, sT,
                                         ValueRange{j, index(0)});
        Value p = normalizer.weight(b, loc, shift, s);
        vector::StoreOp::create(b, loc, p, sT, ValueRange{j, index(0)});
        return SmallVector<Value>{normalizer.accumulate(b, loc, acc[0], p)};
      });
  SmallVector<Value> results = normalizer.flattenState(
      normalizer.endBlock(shift, sum.getResult(0), Value()));
  results.push_back(shift.alpha);
  return results;
}

void OnlineAttentionBuilder::emitValueProduct(Value n0,
                                              const BlockShift &shift) {
  // accT[e] = alpha * accT[e] + sum_j V[b, g, n0 + j, e] * P[j].
  RowBlock rows = valueRows(n0);
  if (vWide)
    widen(rows, keyTile, valueDim);
  emitAccumulate(rows, valueDim, sT, keyTile, accT, [&](Value a) {
    return normalizer.rescale(b, loc, a, shift);
  });
}

void OnlineAttentionBuilder::emitEpilogue(const NormalizerState &state) {
  // O = accT * factor; LSE: the normalizer's statistic.
  Value scaleRows;
  if (normalizer.scalesOutput())
    scaleRows = normalizer.getOutputFactor(
        b, loc, state, sinkBuf ? emitSinkLogits() : Value());
  if (scaleRows)
    forLoop(valueDim, 1, {}, [&](Value e, ValueRange) {
      Value a = vector::LoadOp::create(b, loc, laneType, accT,
                                       ValueRange{e, index(0)});
      a = arith::MulFOp::create(b, loc, a, scaleRows);
      vector::StoreOp::create(b, loc, a, accT, ValueRange{e, index(0)});
      return SmallVector<Value>();
    });
  emitStoreLanes(accT, valueDim, Value(), count, oBuf, bIv, hIv, m0);
  if (lseBuf)
    emitStoreLaneVector(normalizer.getStatistic(b, loc, state), count, lseBuf,
                        bIv, hIv, m0);
}

LogicalResult OnlineAttentionBuilder::run() {
  // Every tensor the regions read, in memory, once per attention.
  if (failed(collectReadBuffers(b, op, readBuffers)))
    return failure();

  qBuf = toBuffer(op.getQuery());
  kBuf = toBuffer(op.getKey());
  vBuf = toBuffer(op.getValue());
  if (op.getSink())
    sinkBuf = toBuffer(op.getSink());
  Value batch = dimOf(qBuf, 0), heads = dimOf(qBuf, 1);
  numQueries = dimOf(qBuf, 2);
  headDim = dimOf(qBuf, 3);
  numKeys = dimOf(kBuf, 2);
  valueDim = dimOf(vBuf, 3);
  headsPerGroup = emitHeadsPerGroup(heads, dimOf(kBuf, 1));

  auto outputType = cast<RankedTensorType>(op.getOutput().getType());
  oBuf = allocResult(outputType, {batch, heads, numQueries, valueDim});
  RankedTensorType lseType;
  if (Value lse = op.getLse()) {
    lseType = cast<RankedTensorType>(lse.getType());
    lseBuf = allocResult(lseType, {batch, heads, numQueries});
  }

  Value keyTiles = arith::CeilDivUIOp::create(b, loc, numKeys, index(keyTile));
  OpBuilder::InsertionGuard guard(b);
  LaneTile queries = emitParallelLaneTiles(batch, heads, numQueries);
  bIv = queries.batch;
  hIv = queries.head;
  gIv = arith::DivUIOp::create(b, loc, hIv, headsPerGroup);
  m0 = queries.first;
  queryLanes = queries.laneRows;
  count = queries.count;
  Value lastQuery = queries.lastRow;
  Value lastRow = queries.lastInTile;

  // Per-iteration scratch: Qt [D x lanes], St [keyTile x lanes], accT
  // [E x lanes]; a few KiB, in L1.
  qT = laneScratch(headDim);
  sT = laneScratch(index(keyTile));
  accT = laneScratch(valueDim);
  kWide = wideScratch(kBuf, headDim, kRowBlock);
  vWide = wideScratch(vBuf, valueDim, keyTile);
  // Qt[d][lane] = scale * Q[b, h, min(m0 + lane, M - 1), d]. Lanes past the
  // end repeat the last query so that no lane ever computes a NaN.
  emitTranspose(qBuf, bIv, hIv, m0, lastQuery, headDim, op.getScale(), qT);
  emitZero(accT, valueDim);

  // The sink logit seeds the running max: from the constant -inf, LLVM
  // compiles the key loop of a sink variant about 7% slower (measured on
  // sink_logit).
  SmallVector<Value> initialState =
      normalizer.flattenState(normalizer.getInitialState(
          b, loc, laneType, sinkBuf ? emitSinkLogits() : Value()));
  SmallVector<Type> stateTypes(initialState.size(), laneType);
  auto keyLoop = forLoop(
      keyTiles, 1, initialState,
      [&](Value kt, ValueRange fields) -> SmallVector<Value> {
        NormalizerState state = normalizer.unflattenState(fields);
        Value n0 = arith::MulIOp::create(b, loc, kt, index(keyTile));
        Value nEnd = minIndex(addIndex(n0, index(keyTile)), numKeys);
        Value nLast = subIndex(nEnd, index(1));
        FailureOr<Value> tileClass = emitTileClass(
            b, loc, op.getTileClass(), op.hasTrivialMask(),
            {bIv, hIv, m0, lastRow, n0, nLast}, lanes, readBuffers);
        if (failed(tileClass)) {
          failedRegion = true;
          return SmallVector<Value>(fields);
        }
        // An scf.if without results already ends its regions with a yield.
        auto yield = [&](ValueRange values) {
          if (!values.empty())
            scf::YieldOp::create(b, loc, values);
        };
        auto tile = scf::IfOp::create(b, loc, stateTypes,
                                      isNonEmptyTile(*tileClass),
                                      /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard tileGuard(b);
          b.setInsertionPointToStart(&tile.getElseRegion().front());
          yield(fields);
          b.setInsertionPointToStart(&tile.getThenRegion().front());
          emitScores(n0);
          // Full tiles that end before N evaluate neither mask nor bounds.
          Value full = isFullTile(*tileClass, subIndex(nEnd, n0), keyTile);
          SmallVector<Type> types = stateTypes;
          if (normalizer.rescales())
            types.push_back(laneType);
          auto update = scf::IfOp::create(b, loc, types, full, true);
          for (bool masked : {false, true}) {
            OpBuilder::InsertionGuard updateGuard(b);
            Region &region =
                masked ? update.getElseRegion() : update.getThenRegion();
            b.setInsertionPointToStart(&region.front());
            FailureOr<SmallVector<Value>> next = emitUpdate(n0, state, masked);
            if (failed(next)) {
              failedRegion = true;
              next = SmallVector<Value>(fields);
              if (normalizer.rescales())
                next->push_back(splat(1.0f));
            }
            yield(*next);
          }
          BlockShift shift;
          if (normalizer.rescales())
            shift.alpha = update.getResults().back();
          emitValueProduct(n0, shift);
          yield(update.getResults().take_front(stateTypes.size()));
        }
        return SmallVector<Value>(tile.getResults());
      });
  if (failedRegion)
    return failure();
  emitEpilogue(normalizer.unflattenState(keyLoop.getResults()));

  b.setInsertionPointAfter(queries.loop);
  SmallVector<Value> results = {bufferization::ToTensorOp::create(
      b, loc, outputType, oBuf, /*restrict=*/true, /*writable=*/true)};
  if (lseBuf)
    results.push_back(bufferization::ToTensorOp::create(
        b, loc, lseType, lseBuf, /*restrict=*/true, /*writable=*/true));
  op->replaceAllUsesWith(results);
  op->erase();
  return success();
}

} // namespace

namespace mlir::attn {
namespace {

struct AttnFuseOnline : impl::AttnFuseOnlineBase<AttnFuseOnline> {
  using Base::Base;

  void runOnOperation() override {
    if (failed(checkTileSizes(getOperation(), getArgument(), "query-tile",
                              queryTile, "key-tile", keyTile)))
      return signalPassFailure();
    for (AttentionOp op : collectOutsideKernels<AttentionOp>(getOperation())) {
      OnlineAttentionBuilder builder(op, queryTile, keyTile);
      if (failed(builder.run()))
        return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::attn
