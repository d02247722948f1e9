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
// one broadcast element per FMA, so no per-key-tile transposes are needed.
// The queries of a tile are `query-tile` lanes; keys go `key-tile` at a time.
//
//===----------------------------------------------------------------------===//

#include "LaneCloning.h"

#include "attn/CPU/Passes.h"
#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNFUSEONLINE
#include "attn/CPU/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Keys per block of the Q·Kᵀ micro-kernel and value columns per block of
/// the P·V micro-kernel: 8 vector accumulators, leaving registers for the
/// broadcasts on AVX2 (two ymm per 16 lanes) and AVX-512.
constexpr int64_t kKeyBlock = 8;
constexpr int64_t kValueBlock = 8;

/// Builds the fused loop nest of one attn.attention.
class OnlineAttentionBuilder {
public:
  OnlineAttentionBuilder(AttentionOp op, int64_t queryTile, int64_t keyTile)
      : op(op), lanes(queryTile), keyTile(keyTile), b(op), loc(op.getLoc()),
        normalizer(op.getNormalizer(), bool(op.getSink()), NormalizerMath(),
                   op.getMap()) {}

  LogicalResult run();

private:
  // Small builders.
  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value f32(float v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
  }
  Value splat(float v) {
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(laneType, b.getF32FloatAttr(v)));
  }
  Value minIndex(Value x, Value y) {
    return arith::MinSIOp::create(b, loc, x, y);
  }
  Value dimOf(Value buffer, int64_t axis);
  /// Loads an element of a Q, K or V buffer as f32 (bf16/f16 are extended).
  Value loadF32(Value buffer, ValueRange indices);
  Value toBuffer(Value tensor);
  /// scf.for from 0 to `ub` step `step` whose body `body` yields the
  /// updated iter args.
  scf::ForOp forLoop(
      Value ub, int64_t step, ValueRange inits,
      function_ref<SmallVector<Value>(Value iv, ValueRange args)> body);

  // Pieces of the loop nest, in the order they run.
  /// Copies rows min(first + j, last), j < `rows`, of head `head` of `src`
  /// ([B, heads, rows, width]) into the f32 scratch `dst` [rows x width].
  void emitRowCopy(Value src, Value head, Value first, Value last,
                   int64_t rows, Value width, Value dst);
  /// emitRowCopy for the K or V rows n0 .. n0 + rows of the kv head.
  void emitWiden(Value src, Value dst, Value width, Value n0, int64_t rows) {
    emitRowCopy(src, gIv, n0, arith::SubIOp::create(b, loc, numKeys, index(1)),
                rows, width, dst);
  }
  void emitQueryTranspose();
  /// The sink logits of the tile's queries, one per lane.
  Value emitSinkLogits();
  void emitScores(Value n0);
  /// Applies score_mod and (when `masked`) the mask and bounds to St in
  /// place, updates the normalizer's state, and leaves P in St. Returns the
  /// new state's fields followed, when the normalizer rescales, by alpha.
  FailureOr<SmallVector<Value>>
  emitUpdate(Value n0, const NormalizerState &state, bool masked);
  void emitValueProduct(Value n0, const BlockShift &shift);
  void emitValueBlock(Value e0, int64_t width, Value n0,
                      const BlockShift &shift);
  void emitEpilogue(const NormalizerState &state);

  AttentionOp op;
  int64_t lanes, keyTile;
  OpBuilder b;
  Location loc;
  VectorType laneType;
  NormalizerDefinition normalizer;
  bool failedRegion = false;

  // Function-level values.
  Value qBuf, kBuf, vBuf, sinkBuf, oBuf, lseBuf;
  Value numQueries, headDim, numKeys, valueDim, headsPerGroup;
  DenseMap<Value, Value> readBuffers;
  // Values of one iteration of the parallel loop.
  Value bIv, hIv, gIv, m0, queryLanes;
  Value qT, sT, accT;
  /// f32 copies of the K rows of one key block and the V rows of one key
  /// tile when K and V are bf16/f16 (null for f32).
  Value kWide, vWide;
};

Value OnlineAttentionBuilder::dimOf(Value buffer, int64_t axis) {
  auto type = cast<MemRefType>(buffer.getType());
  if (!type.isDynamicDim(axis))
    return index(type.getDimSize(axis));
  return memref::DimOp::create(b, loc, buffer, axis);
}

Value OnlineAttentionBuilder::loadF32(Value buffer, ValueRange indices) {
  Value value = memref::LoadOp::create(b, loc, buffer, indices);
  if (!value.getType().isF32())
    value = arith::ExtFOp::create(b, loc, b.getF32Type(), value);
  return value;
}

Value OnlineAttentionBuilder::toBuffer(Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return bufferization::ToBufferOp::create(b, loc, memrefType, tensor,
                                           /*read_only=*/true);
}

scf::ForOp OnlineAttentionBuilder::forLoop(
    Value ub, int64_t step, ValueRange inits,
    function_ref<SmallVector<Value>(Value iv, ValueRange args)> body) {
  auto loop = scf::ForOp::create(b, loc, index(0), ub, index(step), inits);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  SmallVector<Value> results =
      body(loop.getInductionVar(), loop.getRegionIterArgs());
  // ForOp's builder adds an empty yield only when there are no iter args.
  if (inits.empty()) {
    b.setInsertionPoint(loop.getBody()->getTerminator());
    return loop;
  }
  scf::YieldOp::create(b, loc, results);
  return loop;
}

void OnlineAttentionBuilder::emitRowCopy(Value src, Value head, Value first,
                                         Value last, int64_t rows,
                                         Value width, Value dst) {
  // Whole rows, 16 elements per vector load and conversion. A bf16 K or V
  // element read in the FMA loops cost a scalar load, a shift and a
  // broadcast from a general register per FMA, which halved the bf16
  // kernels' speed; the f32 copies (a few KiB, in L1) let the FMAs
  // broadcast straight from memory.
  constexpr int64_t kChunk = 16;
  auto srcType = cast<MemRefType>(src.getType());
  auto wideType = VectorType::get({kChunk}, b.getF32Type());
  auto narrowType = VectorType::get({kChunk}, srcType.getElementType());
  Value chunk = index(kChunk);
  Value mainEnd = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, width, chunk), chunk);
  bool hasTail = srcType.isDynamicDim(3) || srcType.getDimSize(3) % kChunk;
  forLoop(index(rows), 1, {}, [&](Value j, ValueRange) {
    Value row = minIndex(arith::AddIOp::create(b, loc, first, j), last);
    forLoop(mainEnd, kChunk, {}, [&](Value c, ValueRange) {
      Value v = vector::LoadOp::create(b, loc, narrowType, src,
                                       ValueRange{bIv, head, row, c});
      if (v.getType() != wideType)
        v = arith::ExtFOp::create(b, loc, wideType, v);
      vector::StoreOp::create(b, loc, v, dst, ValueRange{j, c});
      return SmallVector<Value>();
    });
    if (hasTail)
      forLoop(arith::SubIOp::create(b, loc, width, mainEnd), 1, {},
              [&](Value i, ValueRange) {
                Value c = arith::AddIOp::create(b, loc, mainEnd, i);
                memref::StoreOp::create(b, loc,
                                        loadF32(src, {bIv, head, row, c}), dst,
                                        ValueRange{j, c});
                return SmallVector<Value>();
              });
    return SmallVector<Value>();
  });
}

void OnlineAttentionBuilder::emitQueryTranspose() {
  // Qt[d][lane] = scale * Q[b, h, min(m0 + lane, M - 1), d]. Lanes past the
  // end repeat the last query so that no lane ever computes a NaN.
  Value lastQuery = arith::SubIOp::create(b, loc, numQueries, index(1));
  Value scale = op.getScale();
  forLoop(index(lanes), 1, {}, [&](Value lane, ValueRange) {
    Value row = minIndex(arith::AddIOp::create(b, loc, m0, lane), lastQuery);
    forLoop(headDim, 1, {}, [&](Value d, ValueRange) {
      Value q = loadF32(qBuf, {bIv, hIv, row, d});
      q = arith::MulFOp::create(b, loc, q, scale);
      memref::StoreOp::create(b, loc, q, qT, {d, lane});
      return SmallVector<Value>();
    });
    return SmallVector<Value>();
  });
}

Value OnlineAttentionBuilder::emitSinkLogits() {
  Value lastQuery = arith::SubIOp::create(b, loc, numQueries, index(1));
  Value result = splat(0.0f);
  for (int64_t lane = 0; lane < lanes; ++lane) {
    Value row = minIndex(arith::AddIOp::create(b, loc, m0, index(lane)),
                         lastQuery);
    Value sink = memref::LoadOp::create(b, loc, sinkBuf,
                                        ValueRange{bIv, hIv, row});
    result = vector::InsertOp::create(b, loc, sink, result, lane);
  }
  return result;
}

void OnlineAttentionBuilder::emitScores(Value n0) {
  // St[j][lane] = sum_d K[b, g, n0 + j, d] * Qt[d][lane], kKeyBlock keys at
  // a time: one vector load of Qt and kKeyBlock broadcast FMAs per d. Keys
  // past the end read the last key; the mask drops them.
  Value lastKey = arith::SubIOp::create(b, loc, numKeys, index(1));
  // Sums start at 0 * scale, not 0: Qt holds the scale, so with D = 0 (no
  // term) the score is still 0 * scale, as the cascade defines it (NaN for
  // rsqrt(0)).
  Value zero = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.0f));
  Value emptySum = vector::BroadcastOp::create(
      b, loc, laneType, arith::MulFOp::create(b, loc, zero, op.getScale()));
  forLoop(index(keyTile), kKeyBlock, {}, [&](Value j0, ValueRange) {
    Value first = arith::AddIOp::create(b, loc, n0, j0);
    SmallVector<Value> rows, zeros;
    if (kWide)
      emitWiden(kBuf, kWide, headDim, first, kKeyBlock);
    for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
      rows.push_back(
          kWide ? index(jj)
                : minIndex(arith::AddIOp::create(b, loc, first, index(jj)),
                           lastKey));
      zeros.push_back(emptySum);
    }
    scf::ForOp dot = forLoop(headDim, 1, zeros, [&](Value d, ValueRange acc) {
      Value q = vector::LoadOp::create(b, loc, laneType, qT,
                                       ValueRange{d, index(0)});
      SmallVector<Value> next;
      for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
        Value k = kWide ? memref::LoadOp::create(b, loc, kWide,
                                                 ValueRange{rows[jj], d})
                        : loadF32(kBuf, {bIv, gIv, rows[jj], d});
        Value kb = vector::BroadcastOp::create(b, loc, laneType, k);
        next.push_back(vector::FMAOp::create(b, loc, kb, q, acc[jj]));
      }
      return next;
    });
    for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
      Value j = arith::AddIOp::create(b, loc, j0, index(jj));
      vector::StoreOp::create(b, loc, dot.getResult(jj), sT,
                              ValueRange{j, index(0)});
    }
    return SmallVector<Value>();
  });
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
      LaneValue keepLanes{inRange, false};
      if (evaluatesMask) {
        FailureOr<LaneValue> pred = cloneAlongLanes(
            b, op.getMaskBlock(),
            {{bIv, false}, {hIv, false}, {queryLanes, true}, {key, false}},
            lanes, readBuffers);
        if (failed(pred))
          return failure();
        Value both = arith::AndIOp::create(
            b, loc, broadcastToLanes(b, loc, *pred, lanes),
            broadcastToLanes(b, loc, keepLanes, lanes));
        keepLanes = {both, true};
      }
      keep = broadcastToLanes(b, loc, keepLanes, lanes);
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

void OnlineAttentionBuilder::emitValueBlock(Value e0, int64_t width, Value n0,
                                            const BlockShift &shift) {
  // accT[e0 + i] = alpha * accT[e0 + i] + sum_j V[b, g, n0 + j, e0 + i] *
  // P[j], `width` accumulators held in registers over the key tile.
  Value lastKey = arith::SubIOp::create(b, loc, numKeys, index(1));
  SmallVector<Value> columns, acc;
  for (int64_t i = 0; i < width; ++i) {
    Value e = arith::AddIOp::create(b, loc, e0, index(i));
    columns.push_back(e);
    Value a = vector::LoadOp::create(b, loc, laneType, accT,
                                     ValueRange{e, index(0)});
    acc.push_back(normalizer.rescale(b, loc, a, shift));
  }
  scf::ForOp loop =
      forLoop(index(keyTile), 1, acc, [&](Value j, ValueRange args) {
        Value p = vector::LoadOp::create(b, loc, laneType, sT,
                                         ValueRange{j, index(0)});
        Value row =
            vWide ? j
                  : minIndex(arith::AddIOp::create(b, loc, n0, j), lastKey);
        SmallVector<Value> next;
        for (int64_t i = 0; i < width; ++i) {
          Value v = vWide ? memref::LoadOp::create(b, loc, vWide,
                                                   ValueRange{row, columns[i]})
                          : loadF32(vBuf, {bIv, gIv, row, columns[i]});
          Value vb = vector::BroadcastOp::create(b, loc, laneType, v);
          next.push_back(vector::FMAOp::create(b, loc, vb, p, args[i]));
        }
        return next;
      });
  for (int64_t i = 0; i < width; ++i)
    vector::StoreOp::create(b, loc, loop.getResult(i), accT,
                            ValueRange{columns[i], index(0)});
}

void OnlineAttentionBuilder::emitValueProduct(Value n0,
                                              const BlockShift &shift) {
  if (vWide)
    emitWiden(vBuf, vWide, valueDim, n0, keyTile);
  // Blocks of kValueBlock columns, then the remaining columns one by one.
  Value block = index(kValueBlock);
  Value mainEnd = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, valueDim, block), block);
  forLoop(mainEnd, kValueBlock, {}, [&](Value e0, ValueRange) {
    emitValueBlock(e0, kValueBlock, n0, shift);
    return SmallVector<Value>();
  });
  auto valueType = cast<MemRefType>(vBuf.getType());
  if (!valueType.isDynamicDim(3) &&
      valueType.getDimSize(3) % kValueBlock == 0)
    return;
  Value rest = arith::SubIOp::create(b, loc, valueDim, mainEnd);
  forLoop(rest, 1, {}, [&](Value i, ValueRange) {
    emitValueBlock(arith::AddIOp::create(b, loc, mainEnd, i), 1, n0, shift);
    return SmallVector<Value>();
  });
}

void OnlineAttentionBuilder::emitEpilogue(const NormalizerState &state) {
  // O = accT * factor; LSE: the normalizer's statistic.
  Value scaleRows;
  if (normalizer.scalesOutput())
    scaleRows = normalizer.getOutputFactor(
        b, loc, state, sinkBuf ? emitSinkLogits() : Value());
  Value count =
      arith::SubIOp::create(b, loc, minIndex(arith::AddIOp::create(
                                                 b, loc, m0, index(lanes)),
                                             numQueries),
                            m0);
  if (scaleRows)
    forLoop(valueDim, 1, {}, [&](Value e, ValueRange) {
      Value a = vector::LoadOp::create(b, loc, laneType, accT,
                                       ValueRange{e, index(0)});
      a = arith::MulFOp::create(b, loc, a, scaleRows);
      vector::StoreOp::create(b, loc, a, accT, ValueRange{e, index(0)});
      return SmallVector<Value>();
    });
  forLoop(count, 1, {}, [&](Value lane, ValueRange) {
    Value row = arith::AddIOp::create(b, loc, m0, lane);
    forLoop(valueDim, 1, {}, [&](Value e, ValueRange) {
      Value o = memref::LoadOp::create(b, loc, accT, ValueRange{e, lane});
      memref::StoreOp::create(b, loc, o, oBuf, ValueRange{bIv, hIv, row, e});
      return SmallVector<Value>();
    });
    return SmallVector<Value>();
  });

  if (!lseBuf)
    return;
  Value lse = normalizer.getStatistic(b, loc, state);
  auto rowType = MemRefType::get({lanes}, b.getF32Type());
  Value rowBuf = memref::AllocaOp::create(b, loc, rowType);
  vector::StoreOp::create(b, loc, lse, rowBuf, ValueRange{index(0)});
  forLoop(count, 1, {}, [&](Value lane, ValueRange) {
    Value row = arith::AddIOp::create(b, loc, m0, lane);
    Value v = memref::LoadOp::create(b, loc, rowBuf, ValueRange{lane});
    memref::StoreOp::create(b, loc, v, lseBuf, ValueRange{bIv, hIv, row});
    return SmallVector<Value>();
  });
}

LogicalResult OnlineAttentionBuilder::run() {
  laneType = VectorType::get({lanes}, b.getF32Type());

  // Every tensor the regions read, in memory, once per attention.
  WalkResult reads = op->walk([&](ReadOp read) {
    Value tensor = read.getTensor();
    if (op->isAncestor(tensor.getParentRegion()->getParentOp())) {
      read.emitOpError() << "reads a tensor defined inside the attention";
      return WalkResult::interrupt();
    }
    if (!readBuffers.count(tensor))
      readBuffers[tensor] = toBuffer(tensor);
    return WalkResult::advance();
  });
  if (reads.wasInterrupted())
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
  // H / G, kept at least 1 and never dividing by 0: a launch with H = 0
  // (G = 0) runs no head, but the kernel must not trap computing this.
  Value one = index(1);
  headsPerGroup = arith::MaxUIOp::create(
      b, loc,
      arith::DivUIOp::create(
          b, loc, heads, arith::MaxUIOp::create(b, loc, dimOf(kBuf, 1), one)),
      one);

  auto outputType = cast<RankedTensorType>(op.getOutput().getType());
  SmallVector<Value> outputSizes = {batch, heads, numQueries, valueDim};
  auto alloc = [&](RankedTensorType type, ArrayRef<Value> sizes) {
    SmallVector<Value> dynamic;
    for (auto [axis, size] : llvm::enumerate(sizes))
      if (type.isDynamicDim(axis))
        dynamic.push_back(size);
    auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
    return memref::AllocOp::create(b, loc, memrefType, dynamic).getResult();
  };
  oBuf = alloc(outputType, outputSizes);
  RankedTensorType lseType;
  if (Value lse = op.getLse()) {
    lseType = cast<RankedTensorType>(lse.getType());
    lseBuf = alloc(lseType, {batch, heads, numQueries});
  }

  Value queryTiles = arith::CeilDivUIOp::create(b, loc, numQueries,
                                                index(lanes));
  Value keyTiles = arith::CeilDivUIOp::create(b, loc, numKeys, index(keyTile));
  auto parallel = scf::ParallelOp::create(
      b, loc, ValueRange{index(0), index(0), index(0)},
      ValueRange{batch, heads, queryTiles},
      ValueRange{index(1), index(1), index(1)});
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(parallel.getBody());
  bIv = parallel.getInductionVars()[0];
  hIv = parallel.getInductionVars()[1];
  gIv = arith::DivUIOp::create(b, loc, hIv, headsPerGroup);
  m0 = arith::MulIOp::create(b, loc, parallel.getInductionVars()[2],
                             index(lanes));
  Value lastQuery = arith::SubIOp::create(b, loc, numQueries, index(1));
  {
    SmallVector<int64_t> iota = llvm::to_vector(llvm::seq<int64_t>(0, lanes));
    auto indexLanes = VectorType::get({lanes}, b.getIndexType());
    Value offsets = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(indexLanes, ArrayRef(iota)));
    Value rows = arith::AddIOp::create(
        b, loc, vector::BroadcastOp::create(b, loc, indexLanes, m0), offsets);
    queryLanes = arith::MinSIOp::create(
        b, loc, rows, vector::BroadcastOp::create(b, loc, indexLanes, lastQuery));
  }
  Value lastRow = minIndex(arith::AddIOp::create(b, loc, m0, index(lanes - 1)),
                           lastQuery);

  // Per-iteration scratch: Qt [D x lanes], St [keyTile x lanes], accT
  // [E x lanes]; a few KiB, in L1.
  auto f32Type = b.getF32Type();
  auto scratch = [&](Value rows) -> Value {
    std::optional<int64_t> size = getConstantIntValue(rows);
    auto type = MemRefType::get(
        {size ? *size : ShapedType::kDynamic, lanes}, f32Type);
    return memref::AllocaOp::create(b, loc, type,
                                    size ? ValueRange{} : ValueRange{rows});
  };
  qT = scratch(headDim);
  sT = scratch(index(keyTile));
  accT = scratch(valueDim);
  auto wideScratch = [&](Value buffer, Value width, int64_t rows) -> Value {
    if (cast<MemRefType>(buffer.getType()).getElementType().isF32())
      return Value();
    std::optional<int64_t> size = getConstantIntValue(width);
    auto type = MemRefType::get({rows, size ? *size : ShapedType::kDynamic},
                                f32Type);
    return memref::AllocaOp::create(b, loc, type,
                                    size ? ValueRange{} : ValueRange{width});
  };
  kWide = wideScratch(kBuf, headDim, kKeyBlock);
  vWide = wideScratch(vBuf, valueDim, keyTile);
  emitQueryTranspose();
  forLoop(valueDim, 1, {}, [&](Value e, ValueRange) {
    vector::StoreOp::create(b, loc, splat(0.0f), accT, ValueRange{e, index(0)});
    return SmallVector<Value>();
  });

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
        Value nEnd = minIndex(arith::AddIOp::create(b, loc, n0, index(keyTile)),
                              numKeys);
        Value nLast = arith::SubIOp::create(b, loc, nEnd, index(1));
        Value tileClass;
        if (op.hasTileClass()) {
          FailureOr<LaneValue> cls = cloneAlongLanes(
              b, op.getTileClass().front(),
              {{bIv, false}, {hIv, false}, {m0, false}, {lastRow, false},
               {n0, false}, {nLast, false}},
              lanes, readBuffers);
          if (failed(cls)) {
            failedRegion = true;
            return SmallVector<Value>(fields);
          }
          tileClass = cls->value;
        } else {
          tileClass = arith::ConstantOp::create(
              b, loc, b.getI32IntegerAttr(op.hasTrivialMask() ? 2 : 1));
        }
        auto i32Const = [&](int32_t v) {
          return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(v));
        };
        // An scf.if without results already ends its regions with a yield.
        auto yield = [&](ValueRange values) {
          if (!values.empty())
            scf::YieldOp::create(b, loc, values);
        };
        Value nonEmpty = arith::CmpIOp::create(
            b, loc, arith::CmpIPredicate::ne, tileClass, i32Const(0));
        auto tile = scf::IfOp::create(b, loc, stateTypes, nonEmpty,
                                      /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard tileGuard(b);
          b.setInsertionPointToStart(&tile.getElseRegion().front());
          yield(fields);
          b.setInsertionPointToStart(&tile.getThenRegion().front());
          emitScores(n0);
          // Full tiles that end before N evaluate neither mask nor bounds.
          Value full = arith::AndIOp::create(
              b, loc,
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, tileClass,
                                    i32Const(2)),
              arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::eq,
                  arith::SubIOp::create(b, loc, nEnd, n0), index(keyTile)));
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

  b.setInsertionPointAfter(parallel);
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
    if (queryTile < 1 || keyTile < kKeyBlock || keyTile % kKeyBlock != 0) {
      getOperation().emitError()
          << "attn-fuse-online needs query-tile >= 1 and key-tile a multiple "
             "of "
          << kKeyBlock;
      return signalPassFailure();
    }
    SmallVector<AttentionOp> ops;
    // Attention inside an attn.kernel is still cascade IR; only the copies
    // that convert-attn-to-linalg (keep-attention) put into functions are
    // lowered here.
    getOperation().walk([&](AttentionOp op) {
      if (!op->getParentOfType<KernelOp>())
        ops.push_back(op);
    });
    for (AttentionOp op : ops) {
      OnlineAttentionBuilder builder(op, queryTile, keyTile);
      if (failed(builder.run()))
        return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::attn
