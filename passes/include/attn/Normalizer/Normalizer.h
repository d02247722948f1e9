//===- Normalizer.h - One definition of each normalizer ---------*- C++ -*-===//
//
// How attention weights are made from scores, once: for softmax (with or
// without a sink logit), normalize (with its weight map) and none, the
// running state of a row, its
// initial value, the update by a block of scores, the merge of partial states
// of one row, the finalisation into the factor that scales the output and the
// row's statistic (LSE). Every backend builds its normalizer arithmetic with
// these emitters:
//
//  - attn-fuse-online (CPU): one query per vector lane, Values are
//    vector<lanes x f32>;
//  - the NVGPU attention kernel: f32 scalars of mma fragments, a row spread
//    over a quad of lanes, base-2 exponentials;
//  - the NVGPU decode merge: f32 scalars, one partial state per key split;
//  - convert-attn-to-linalg: f32 scalars inside linalg.generic bodies.
//
// Why a C++ interface and not an explicit online-form op (as IREE's
// `online_attention`): the consumers emit at different granularities (vector
// lanes, mma fragments, linalg bodies), so an op would need one lowering per
// consumer, each re-deriving the same math. One interface that emits arith
// and math ops on whatever Values the consumer has keeps the math in one
// place; what legitimately differs between backends (the exponential's base
// and approximation, the max's NaN semantics, reductions across lanes) is a
// hook of NormalizerMath, not a second copy of the formulas. The adjoint for
// training belongs to the same definitions.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NORMALIZER_NORMALIZER_H
#define ATTN_NORMALIZER_NORMALIZER_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Value.h"

#include <functional>

namespace mlir::attn {

/// The primitive operations whose form a backend chooses. An empty hook
/// means the math/arith dialect op; every hook receives and returns Values of
/// the type the normalizer is applied to (f32, vector<...xf32>).
struct NormalizerMath {
  using UnaryFn = std::function<Value(OpBuilder &, Location, Value)>;
  using BinaryFn = std::function<Value(OpBuilder &, Location, Value, Value)>;
  using TernaryFn =
      std::function<Value(OpBuilder &, Location, Value, Value, Value)>;

  /// The base of `exp` and `log`. A target whose hardware has only 2^x and
  /// log2 (NVPTX's ex2/lg2.approx) uses Two: exp(x) becomes
  /// 2^(x log2(e)), with the shift of a block's weights scaled once so that
  /// each weight costs one fma.
  enum class Base { Natural, Two };
  Base base = Base::Natural;
  /// e^x, or 2^x for Base::Two (default math.exp / math.exp2).
  UnaryFn exp;
  /// ln x, or log2 x for Base::Two (default math.log / math.log2).
  UnaryFn log;
  /// The max of two scores (default arith.maximumf, which propagates NaN;
  /// NVVM needs llvm.maxnum, since convert-gpu-to-nvvm turns arith's max
  /// into a libdevice call).
  BinaryFn max;
  /// x * y + z, rounded once (default math.fma).
  TernaryFn fma;
  /// The max and the sum of a value over the lanes that hold parts of one
  /// row (a quad of lanes in an mma fragment); empty when a lane holds the
  /// whole row.
  UnaryFn maxAcrossLanes;
  UnaryFn sumAcrossLanes;
};

/// The running state of one row. Which fields a normalizer has is given by
/// NormalizerDefinition::hasMax/hasSum/hasKeptCount; the others are null.
struct NormalizerState {
  /// softmax, and normalize with a weight map: the max of the kept scores
  /// so far (and of the sink logit when it seeded the state), -inf before
  /// any.
  Value max;
  /// softmax: the sum of exp(s - shift) over the kept scores; normalize
  /// with a map: the sum of map(s) e^-shift; normalize: the sum of the kept
  /// scores. The shift follows the max (see BlockShift).
  Value sum;
  /// normalize without a map: how many scores were kept, as a float. A row
  /// that kept scores whose sum is 0 is not empty, so the sum cannot tell.
  Value keptCount;
};

/// The shift a block's weights subtract, and how the block rescales the
/// row's earlier results (normalizers with a max only; all null otherwise).
struct BlockShift {
  /// The running max after the block.
  Value max;
  /// What `weight` subtracts from a score: the new max (for softplus and
  /// sigmoid maps, the new max clamped to at most 0), or 0 while the max is
  /// -inf (so that a row that has kept nothing gets weights 0, not NaN); for
  /// Base::Two, times log2(e).
  Value shift;
  /// Softplus and sigmoid maps: e^-shift, the factor of map(s) for scores
  /// above the map's exponential tail.
  Value mapScale;
  /// Base::Two: -shift, the addend of the one fma per weight.
  Value negatedShift;
  /// exp(old max - new max): what the old sum and the output accumulator
  /// are multiplied by. Null for a shift made by shiftFor.
  Value alpha;
};

/// The states of two parts of one row combined, and the weights of the
/// parts' accumulators: O = firstWeight O1 + secondWeight O2 (null weights
/// mean 1).
struct MergedState {
  NormalizerState state;
  Value firstWeight;
  Value secondWeight;
};

/// One normalizer: softmax, softmax with a sink logit, normalize (with a
/// weight map) or none.
///
/// normalize with map exp, softplus or sigmoid keeps a running max, as
/// softmax does: map(s) / sum map(s) is computed as w(s) / sum w(s) with
/// w(s) = map(s) e^-c, c the row's max (clamped to at most 0 for softplus
/// and sigmoid, which never overflow); below the maps' exponential tail,
/// where map(s) = e^s in f32, w(s) = e^(s - c). A row whose map(s) all
/// underflow in f32 is then exact.
///
/// A row's life: getInitialState; for every block of scores, the consumer
/// gives absent scores getAbsentScore, reduces the block's kept scores with
/// maxOf (when hasMax), calls beginBlock, turns each score into its weight
/// (`weight`) for the P·V product, accumulates the weights onto the
/// rescaled sum and adds the kept scores to the count (countKept),
/// multiplies its output accumulator by `rescale`, and ends the block with
/// endBlock; at the end, combineLanes, getOutputFactor and getStatistic.
/// Partial states of a row (split keys) are combined with merge, or for
/// many parts with getMergeShift and partWeight.
class NormalizerDefinition {
public:
  NormalizerDefinition(Normalizer normalizer, bool hasSink,
                       NormalizerMath math = {},
                       WeightMap map = WeightMap::Identity);

  bool hasSink() const { return sink; }

  /// The fields of the running state.
  bool hasMax() const {
    return normalizer == Normalizer::Softmax || map != WeightMap::Identity;
  }
  bool hasSum() const { return normalizer != Normalizer::None; }
  bool hasKeptCount() const {
    return normalizer == Normalizer::Normalize && map == WeightMap::Identity;
  }
  /// Whether a finished row has a statistic, the log of its denominator
  /// (softmax: the LSE; normalize with a map: log sum map(s)), from which a
  /// backward recomputes the weights.
  bool hasStatistic() const {
    return normalizer == Normalizer::Softmax ||
           (normalizer == Normalizer::Normalize && map != WeightMap::Identity);
  }
  /// Whether a block's weights depend on the running max: the block's max is
  /// then needed before its weights, and every block rescales the row's
  /// earlier sum and output.
  bool rescales() const { return hasMax(); }
  /// Whether the output is scaled when the row is finished.
  bool scalesOutput() const { return hasSum(); }

  /// The state of a row before any score, with fields of type `type`. With
  /// a sink, `sinkLogit` (when given) seeds the running max: any start works,
  /// as the max is only the shift the sum is kept relative to, and the sink
  /// still joins only the denominator, not the sum or the LSE. A sink far
  /// above every score then underflows the sum, as the weights do.
  NormalizerState getInitialState(OpBuilder &b, Location loc, Type type,
                                  Value sinkLogit = Value()) const;
  /// The fields of `state` this normalizer has, in a fixed order (for loop
  /// iteration arguments), and the state they came from.
  SmallVector<Value> flattenState(const NormalizerState &state) const;
  NormalizerState unflattenState(ValueRange fields) const;

  /// The score an absent entry (masked, or past the end) takes inside a
  /// block so that it contributes nothing: -inf for softmax (weight 0, max
  /// unchanged), 0 otherwise (weight 0).
  Value getAbsentScore(OpBuilder &b, Location loc, Type type) const;

  /// The max the state keeps, of two scores or partial maxes.
  Value maxOf(OpBuilder &b, Location loc, Value x, Value y) const;

  /// Opens the update of `state` by a block whose kept scores have the max
  /// `blockMax` in this lane (ignored without hasMax); combines it across
  /// the row's lanes.
  BlockShift beginBlock(OpBuilder &b, Location loc,
                        const NormalizerState &state, Value blockMax) const;
  /// The shift of a row whose final max is `max`, for consumers that know
  /// the max before any weight (two passes over the scores).
  BlockShift shiftFor(OpBuilder &b, Location loc, Value max) const;
  /// The weight of a kept score: exp(score - shift) for softmax, the
  /// shifted map of the score for normalize with a map, the score itself
  /// otherwise.
  Value weight(OpBuilder &b, Location loc, const BlockShift &shift,
               Value score) const;
  /// `accumulated` (the sum, or the output accumulator) rescaled to the
  /// block's max: times alpha, unchanged without one.
  Value rescale(OpBuilder &b, Location loc, Value accumulated,
                const BlockShift &shift) const;
  /// `sum` plus one weight, or plus a partial sum or count.
  Value accumulate(OpBuilder &b, Location loc, Value sum, Value weight) const;
  /// `count` plus 1 where `keep` (i1, or a vector of i1) holds.
  Value countKept(OpBuilder &b, Location loc, Value count, Value keep) const;
  /// The state after a block: the shift's max, the sum the block's weights
  /// were accumulated onto (starting from `rescale` of the old sum), and the
  /// count its kept scores were added to (null without hasKeptCount).
  NormalizerState endBlock(const BlockShift &shift, Value sum,
                           Value keptCount) const;

  /// The state of a row whose lanes each hold a part of the sums: the sums
  /// and counts combined across the lanes (the max already is).
  NormalizerState combineLanes(OpBuilder &b, Location loc,
                               const NormalizerState &state) const;

  /// The merge of two partial states of one row (disjoint sets of keys).
  MergedState merge(OpBuilder &b, Location loc, const NormalizerState &first,
                    const NormalizerState &second) const;
  /// For a merge of many parts: what the parts' weights are relative to,
  /// given the max of the parts' maxes (maxOf): that max, or 0 where it is
  /// -inf, so that parts that kept nothing get weight 0, not NaN. It is the
  /// merged state's max wherever that state is not empty (whose
  /// finalisation ignores the max).
  Value getMergeShift(OpBuilder &b, Location loc, Value partsMax) const;
  /// The weight of a part with max `partMax` (its sum and accumulator are
  /// multiplied by it): exp(partMax - mergeShift). A part stored finalized
  /// (its output divided by its sum, its LSE) is the state (LSE, 1).
  Value partWeight(OpBuilder &b, Location loc, Value mergeShift,
                   Value partMax) const;

  /// What the accumulated output (the sum of weight * V) of a finished row
  /// is multiplied by: the inverse of the denominator, 0 for a row that
  /// kept nothing; null for none, which leaves the output as it is.
  /// `sinkLogit` is the row's sink logit exactly when hasSink(): it joins
  /// the denominator only, not the max the state tracked.
  Value getOutputFactor(OpBuilder &b, Location loc,
                        const NormalizerState &state, Value sinkLogit) const;
  /// The statistic of a finished row (hasStatistic): the log of the sum
  /// of its kept scores' exp (softmax, the sink excluded) or map (normalize),
  /// -inf for a row that kept nothing.
  Value getStatistic(OpBuilder &b, Location loc,
                     const NormalizerState &state) const;

  //===--------------------------------------------------------------------===//
  // The adjoint (training). With P the row's weights, g the adjoint of P and
  // Delta = sum over the row of P g, the adjoint of a kept score s is
  //   softmax, normalize with a map f:  P (f'(s) / f(s)) (g - Delta)
  //   normalize without a map:          (g - Delta) / sum of the row's s
  //   none:                             g
  // A backward recomputes P from the row's log-denominator (getStatistic,
  // with the sink joined by getRowLogDenominator) as
  // weight(shiftForLogDenominator(it), s).
  // and the adjoint of a sink logit z is -P_z Delta, P_z = sigmoid(z - LSE)
  // its weight (the LSE of the scores alone). A softmax whose LSE statistic
  // has an adjoint dLSE keeps that form with Delta lowered by
  // getLseAdjointShare.
  //===--------------------------------------------------------------------===//

  /// The shift that makes `weight` the finished row's P, given the log of
  /// its denominator (natural base, -inf for a row that kept nothing):
  /// unlike shiftFor's max, it is used unclamped.
  BlockShift shiftForLogDenominator(OpBuilder &b, Location loc,
                                    Value logDenominator) const;
  /// The adjoint of a kept score `score` whose weight is `weight`, given the
  /// adjoint g of the weight and the row's Delta (see above); for
  /// normalizers with a statistic and none.
  Value getScoreAdjoint(OpBuilder &b, Location loc, Value weight, Value score,
                        Value weightAdjoint, Value delta) const;
  /// f'(s) / f(s) for the weight map (1 for softmax and exp; sigmoid(s) /
  /// softplus(s), 1 in the exponential tail, for softplus; sigmoid(-s) for
  /// sigmoid); null where the adjoint does not use it (normalize without a
  /// map, none).
  Value getScoreAdjointFactor(OpBuilder &b, Location loc, Value score) const;
  /// The log of a finished row's whole denominator, from the row's
  /// statistic `lse` and, exactly when hasSink(), its sink logit:
  /// LSE (+) z = max + log1p(e^(min - max)) of the two, LSE without a sink;
  /// -inf for a row that kept nothing and has no sink. Natural base,
  /// whatever the backend's.
  Value getRowLogDenominator(OpBuilder &b, Location loc, Value lse,
                             Value sinkLogit) const;
  /// P_z = sigmoid(z - LSE): the sink's share of a finished softmax row
  /// whose scores alone have log-sum-exp `lse` (-inf for a row that kept
  /// nothing: P_z = 1).
  Value getSinkWeight(OpBuilder &b, Location loc, Value sinkLogit,
                      Value lse) const;
  /// What the adjoint dLSE of a finished softmax row's statistic `lse`
  /// takes off the row's Delta: dLSE e^(LSE' - LSE), LSE' the row's log
  /// denominator, i.e. dLSE (1 + e^(z - LSE)) with the sink logit z (exactly
  /// when hasSink()), dLSE without; 0 where LSE = -inf (a row that kept
  /// nothing, whose scores have no adjoint, so that no NaN reaches Delta).
  /// The LSE is of the scores alone, so dLSE adds dLSE e^(s - LSE) =
  /// P dLSE e^(LSE' - LSE) to a kept score's adjoint P (g - Delta); the sink
  /// logit's adjoint keeps reading Delta itself.
  ///
  /// In f32 the product P e^(LSE' - LSE) is only as good as P: where the
  /// sink holds all but e^-80 of the row, z - LSE is clamped at 80, so that
  /// the term shrinks instead of overflowing (and Delta' times a weight that
  /// underflowed to 0 is no NaN); beyond e^-87 every P of the row
  /// underflows and the term is lost anyway.
  Value getLseAdjointShare(OpBuilder &b, Location loc, Value lseGrad,
                           Value lse, Value sinkLogit) const;

private:
  Value constant(OpBuilder &b, Location loc, Type type, double value) const;
  Value exp(OpBuilder &b, Location loc, Value x) const;
  /// exp(x - y), subtracting first: for one-off differences.
  Value expOfDifference(OpBuilder &b, Location loc, Value x, Value y) const;
  /// exp(x - the max behind `shift`).
  Value expShifted(OpBuilder &b, Location loc, Value x,
                   const BlockShift &shift) const;
  /// The natural logarithm.
  Value log(OpBuilder &b, Location loc, Value x) const;
  Value fma(OpBuilder &b, Location loc, Value x, Value y, Value z) const;
  /// `max`, or 0 where it is -inf.
  Value usableMax(OpBuilder &b, Location loc, Value max) const;
  /// What a max becomes as a shift, before usableMax: min(max, 0) for
  /// softplus and sigmoid maps, the max itself otherwise.
  Value clampShift(OpBuilder &b, Location loc, Value max) const;
  /// The shift that subtracts `shiftValue` (natural base, -inf allowed),
  /// recorded as following `max`.
  BlockShift makeShift(OpBuilder &b, Location loc, Value max,
                       Value shiftValue) const;
  /// e^x in the natural base, whatever the backend's base.
  Value expNatural(OpBuilder &b, Location loc, Value x) const;
  /// map(x) for softplus and sigmoid, in f32.
  Value applyMap(OpBuilder &b, Location loc, Value x) const;

  Normalizer normalizer;
  bool sink;
  NormalizerMath math;
  WeightMap map;
};

} // namespace mlir::attn

#endif // ATTN_NORMALIZER_NORMALIZER_H
