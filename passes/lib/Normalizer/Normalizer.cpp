//===- Normalizer.cpp - One definition of each attention normalizer -------===//
//
// The formulas, once (see Normalizer.h):
//
//   softmax    state (m, l): m = max of kept s, l = sum exp(s - m)
//              block: m' = max(m, max_block s), alpha = exp(m - m'),
//                     p = exp(s - m'), l' = alpha l + sum p, O' = alpha O + P V
//              merge: m = max(m1, m2), l = e^(m1 - m) l1 + e^(m2 - m) l2
//              final: O / l, LSE = m + log l; with a sink logit z,
//                     t = max(m, z): O e^(m - t) / (l e^(m - t) + e^(z - t))
//   normalize  state (l, k): l = sum of kept s, k = number kept; p = s;
//              final: O / l
//   normalize  with map f (exp, softplus, sigmoid): as softmax with
//              shift c = m (exp) or min(m, 0) (softplus, sigmoid):
//              p = s < T ? exp(s - c) : f(s) e^-c (T the tail where
//              f(s) = e^s in f32; always exp(s - c) for exp); final: O / l,
//              statistic c + log l (= log sum f(s))
//   none       no state; p = s, O as accumulated
//
// A row that kept nothing gets factor 0 and LSE -inf. While a softmax row's
// max is -inf its weights subtract 0 instead, so that exp(-inf - -inf)
// never makes a NaN.
//
//===----------------------------------------------------------------------===//

#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::attn;

static constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// Below this score softplus(s) and sigmoid(s) equal e^s in f32: their
/// relative difference from e^s is about e^s / 2 and e^s.
static constexpr double kExpTail = -20.0;
/// The largest sink excess z - LSE getLseAdjointShare takes as it is: e^80
/// times an LSE adjoint below e^8 stays finite in f32.
static constexpr double kMaxSinkExcess = 80.0;

NormalizerDefinition::NormalizerDefinition(Normalizer normalizer, bool hasSink,
                                           NormalizerMath math, WeightMap map)
    : normalizer(normalizer), sink(hasSink), math(std::move(math)), map(map) {
  assert((!hasSink || normalizer == Normalizer::Softmax) &&
         "only softmax has a sink logit");
  assert((map == WeightMap::Identity || normalizer == Normalizer::Normalize) &&
         "only normalize has a weight map");
}

//===----------------------------------------------------------------------===//
// Primitives, through the backend's hooks.
//===----------------------------------------------------------------------===//

Value NormalizerDefinition::constant(OpBuilder &b, Location loc, Type type,
                                     double value) const {
  if (auto shaped = dyn_cast<ShapedType>(type))
    return arith::ConstantOp::create(
        b, loc,
        DenseElementsAttr::get(shaped,
                               FloatAttr::get(shaped.getElementType(), value)));
  return arith::ConstantOp::create(b, loc, FloatAttr::get(type, value));
}

Value NormalizerDefinition::exp(OpBuilder &b, Location loc, Value x) const {
  if (math.exp)
    return math.exp(b, loc, x);
  if (math.base == NormalizerMath::Base::Two)
    return math::Exp2Op::create(b, loc, x);
  return math::ExpOp::create(b, loc, x);
}

Value NormalizerDefinition::expOfDifference(OpBuilder &b, Location loc, Value x,
                                            Value y) const {
  Value difference = arith::SubFOp::create(b, loc, x, y);
  if (math.base == NormalizerMath::Base::Natural)
    return exp(b, loc, difference);
  return exp(b, loc,
             arith::MulFOp::create(b, loc, difference,
                                   constant(b, loc, x.getType(), M_LOG2E)));
}

Value NormalizerDefinition::expShifted(OpBuilder &b, Location loc, Value x,
                                       const BlockShift &shift) const {
  if (math.base == NormalizerMath::Base::Natural)
    return exp(b, loc, arith::SubFOp::create(b, loc, x, shift.shift));
  // 2^(x log2 e - max log2 e), in one fma per score.
  return exp(b, loc,
             fma(b, loc, x, constant(b, loc, x.getType(), M_LOG2E),
                 shift.negatedShift));
}

Value NormalizerDefinition::log(OpBuilder &b, Location loc, Value x) const {
  if (math.base == NormalizerMath::Base::Natural)
    return math.log ? math.log(b, loc, x) : math::LogOp::create(b, loc, x);
  Value log2 = math.log ? math.log(b, loc, x) : math::Log2Op::create(b, loc, x);
  return arith::MulFOp::create(b, loc, log2,
                               constant(b, loc, x.getType(), M_LN2));
}

Value NormalizerDefinition::fma(OpBuilder &b, Location loc, Value x, Value y,
                                Value z) const {
  if (math.fma)
    return math.fma(b, loc, x, y, z);
  return math::FmaOp::create(b, loc, x, y, z);
}

Value NormalizerDefinition::maxOf(OpBuilder &b, Location loc, Value x,
                                  Value y) const {
  if (math.max)
    return math.max(b, loc, x, y);
  return arith::MaximumFOp::create(b, loc, x, y);
}

Value NormalizerDefinition::clampShift(OpBuilder &b, Location loc,
                                       Value max) const {
  if (map != WeightMap::Softplus && map != WeightMap::Sigmoid)
    return max;
  Value zero = constant(b, loc, max.getType(), 0.0);
  Value below = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, max,
                                      zero);
  return arith::SelectOp::create(b, loc, below, max, zero);
}

Value NormalizerDefinition::expNatural(OpBuilder &b, Location loc,
                                       Value x) const {
  if (math.base == NormalizerMath::Base::Natural)
    return exp(b, loc, x);
  return exp(b, loc,
             arith::MulFOp::create(b, loc, x,
                                   constant(b, loc, x.getType(), M_LOG2E)));
}

Value NormalizerDefinition::applyMap(OpBuilder &b, Location loc,
                                     Value x) const {
  Type type = x.getType();
  Value zero = constant(b, loc, type, 0.0);
  Value one = constant(b, loc, type, 1.0);
  if (map == WeightMap::Sigmoid) {
    // 1 / (1 + e^-x)
    Value e = expNatural(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::DivFOp::create(b, loc, one,
                                 arith::AddFOp::create(b, loc, one, e));
  }
  assert(map == WeightMap::Softplus && "no other map is applied as written");
  // max(x, 0) + log1p(e^-|x|): no overflow for large |x|.
  Value positive = arith::SelectOp::create(
      b, loc,
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x, zero), x,
      zero);
  Value magnitude = math::AbsFOp::create(b, loc, x);
  Value e = expNatural(b, loc, arith::NegFOp::create(b, loc, magnitude));
  return arith::AddFOp::create(b, loc, positive,
                               math::Log1pOp::create(b, loc, e));
}

Value NormalizerDefinition::usableMax(OpBuilder &b, Location loc,
                                      Value max) const {
  Type type = max.getType();
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, max,
                                      constant(b, loc, type, kNegInf));
  return arith::SelectOp::create(b, loc, empty, constant(b, loc, type, 0.0),
                                 max);
}

//===----------------------------------------------------------------------===//
// State and block update.
//===----------------------------------------------------------------------===//

NormalizerState NormalizerDefinition::getInitialState(OpBuilder &b,
                                                      Location loc, Type type,
                                                      Value sinkLogit) const {
  assert((!sinkLogit || sink) && "only a sink logit seeds the max");
  NormalizerState state;
  if (hasMax())
    state.max = sinkLogit ? sinkLogit : constant(b, loc, type, kNegInf);
  if (hasSum())
    state.sum = constant(b, loc, type, 0.0);
  if (hasKeptCount())
    state.keptCount = constant(b, loc, type, 0.0);
  return state;
}

SmallVector<Value>
NormalizerDefinition::flattenState(const NormalizerState &state) const {
  SmallVector<Value> fields;
  if (hasMax())
    fields.push_back(state.max);
  if (hasSum())
    fields.push_back(state.sum);
  if (hasKeptCount())
    fields.push_back(state.keptCount);
  return fields;
}

NormalizerState NormalizerDefinition::unflattenState(ValueRange fields) const {
  NormalizerState state;
  auto take = [&](Value &field) {
    field = fields.front();
    fields = fields.drop_front();
  };
  if (hasMax())
    take(state.max);
  if (hasSum())
    take(state.sum);
  if (hasKeptCount())
    take(state.keptCount);
  assert(fields.empty() && "more fields than the normalizer's state has");
  return state;
}

Value NormalizerDefinition::getAbsentScore(OpBuilder &b, Location loc,
                                           Type type) const {
  return constant(b, loc, type, hasMax() ? kNegInf : 0.0);
}

BlockShift NormalizerDefinition::shiftFor(OpBuilder &b, Location loc,
                                          Value max) const {
  if (!hasMax())
    return {};
  return makeShift(b, loc, max, clampShift(b, loc, max));
}

BlockShift
NormalizerDefinition::shiftForLogDenominator(OpBuilder &b, Location loc,
                                             Value logDenominator) const {
  assert(hasStatistic() && "only a normalizer with a statistic has one");
  // Softplus and sigmoid rows are not clamped here: their log-denominator
  // is at most log N + the largest map(s), so e^-it stays finite.
  return makeShift(b, loc, logDenominator, logDenominator);
}

BlockShift NormalizerDefinition::makeShift(OpBuilder &b, Location loc,
                                           Value max, Value shiftValue) const {
  BlockShift shift;
  shift.max = max;
  shift.shift = usableMax(b, loc, shiftValue);
  if (map == WeightMap::Softplus || map == WeightMap::Sigmoid) {
    // e^-shift multiplies map(s) only above the tail, where s, hence the
    // max and the shift, are at least kExpTail: clamping there keeps the
    // factor finite for rows that never use it.
    Type type = max.getType();
    Value tail = constant(b, loc, type, kExpTail);
    Value aboveTail = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT,
                                            shift.shift, tail);
    Value used = arith::SelectOp::create(b, loc, aboveTail, shift.shift, tail);
    shift.mapScale = expNatural(b, loc, arith::NegFOp::create(b, loc, used));
  }
  if (math.base == NormalizerMath::Base::Natural)
    return shift;
  shift.shift = arith::MulFOp::create(b, loc, shift.shift,
                                      constant(b, loc, max.getType(), M_LOG2E));
  shift.negatedShift = arith::NegFOp::create(b, loc, shift.shift);
  return shift;
}

BlockShift NormalizerDefinition::beginBlock(OpBuilder &b, Location loc,
                                            const NormalizerState &state,
                                            Value blockMax) const {
  if (!hasMax())
    return {};
  if (math.maxAcrossLanes)
    blockMax = math.maxAcrossLanes(b, loc, blockMax);
  BlockShift shift = shiftFor(b, loc, maxOf(b, loc, state.max, blockMax));
  // The old shift, unguarded: -inf while the row has kept nothing, so that
  // alpha is 0 (the old sum and output are 0 then).
  Value oldShift = clampShift(b, loc, state.max);
  if (math.base == NormalizerMath::Base::Natural) {
    shift.alpha = expShifted(b, loc, oldShift, shift);
    return shift;
  }
  // alpha, once per block, as a product and a difference (the form the
  // NVPTX kernels were tuned with); the many weights take one fma each.
  Value scaledMax = arith::MulFOp::create(
      b, loc, oldShift, constant(b, loc, state.max.getType(), M_LOG2E));
  shift.alpha =
      exp(b, loc, arith::SubFOp::create(b, loc, scaledMax, shift.shift));
  return shift;
}

Value NormalizerDefinition::weight(OpBuilder &b, Location loc,
                                   const BlockShift &shift, Value score) const {
  if (!hasMax())
    return score;
  Value shifted = expShifted(b, loc, score, shift);
  if (map != WeightMap::Softplus && map != WeightMap::Sigmoid)
    return shifted;
  Value inTail = arith::CmpFOp::create(
      b, loc, arith::CmpFPredicate::OLT, score,
      constant(b, loc, score.getType(), kExpTail));
  Value scaled =
      arith::MulFOp::create(b, loc, applyMap(b, loc, score), shift.mapScale);
  return arith::SelectOp::create(b, loc, inTail, shifted, scaled);
}

Value NormalizerDefinition::rescale(OpBuilder &b, Location loc,
                                    Value accumulated,
                                    const BlockShift &shift) const {
  if (!shift.alpha)
    return accumulated;
  return arith::MulFOp::create(b, loc, accumulated, shift.alpha);
}

Value NormalizerDefinition::accumulate(OpBuilder &b, Location loc, Value sum,
                                       Value weight) const {
  return arith::AddFOp::create(b, loc, sum, weight);
}

Value NormalizerDefinition::countKept(OpBuilder &b, Location loc, Value count,
                                      Value keep) const {
  return arith::AddFOp::create(
      b, loc, count, arith::UIToFPOp::create(b, loc, count.getType(), keep));
}

NormalizerState NormalizerDefinition::endBlock(const BlockShift &shift,
                                               Value sum,
                                               Value keptCount) const {
  NormalizerState next;
  next.max = shift.max;
  next.sum = sum;
  next.keptCount = keptCount;
  return next;
}

NormalizerState
NormalizerDefinition::combineLanes(OpBuilder &b, Location loc,
                                   const NormalizerState &state) const {
  if (!math.sumAcrossLanes)
    return state;
  NormalizerState combined = state;
  if (hasSum())
    combined.sum = math.sumAcrossLanes(b, loc, state.sum);
  if (hasKeptCount())
    combined.keptCount = math.sumAcrossLanes(b, loc, state.keptCount);
  return combined;
}

//===----------------------------------------------------------------------===//
// Merge of partial states.
//===----------------------------------------------------------------------===//

Value NormalizerDefinition::getMergeShift(OpBuilder &b, Location loc,
                                          Value partsMax) const {
  return usableMax(b, loc, clampShift(b, loc, partsMax));
}

Value NormalizerDefinition::partWeight(OpBuilder &b, Location loc,
                                       Value mergeShift, Value partMax) const {
  return expOfDifference(b, loc, clampShift(b, loc, partMax), mergeShift);
}

MergedState NormalizerDefinition::merge(OpBuilder &b, Location loc,
                                        const NormalizerState &first,
                                        const NormalizerState &second) const {
  MergedState merged;
  if (hasMax()) {
    // The merged max stays -inf when both parts are empty, so that a later
    // merge with a part of very negative scores does not underflow.
    Value max = maxOf(b, loc, first.max, second.max);
    Value shift = getMergeShift(b, loc, max);
    merged.firstWeight = partWeight(b, loc, shift, first.max);
    merged.secondWeight = partWeight(b, loc, shift, second.max);
    merged.state.max = max;
    merged.state.sum = accumulate(
        b, loc, arith::MulFOp::create(b, loc, first.sum, merged.firstWeight),
        arith::MulFOp::create(b, loc, second.sum, merged.secondWeight));
    return merged;
  }
  if (hasSum())
    merged.state.sum = accumulate(b, loc, first.sum, second.sum);
  if (hasKeptCount())
    merged.state.keptCount =
        accumulate(b, loc, first.keptCount, second.keptCount);
  return merged;
}

//===----------------------------------------------------------------------===//
// Finalisation.
//===----------------------------------------------------------------------===//

Value NormalizerDefinition::getOutputFactor(OpBuilder &b, Location loc,
                                            const NormalizerState &state,
                                            Value sinkLogit) const {
  assert(!sinkLogit == !sink && "the sink logit is given exactly with a sink");
  if (!hasSum())
    return Value();
  Type type = state.sum.getType();
  Value zero = constant(b, loc, type, 0.0);
  // softmax: the sum of a row that kept anything is at least 1 (its max's
  // term), with a weight map at least 1/2; normalize: the count says it,
  // since kept scores may sum to 0.
  Value empty =
      arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                            hasKeptCount() ? state.keptCount : state.sum, zero);
  Value factor;
  if (sinkLogit) {
    Value top = maxOf(b, loc, state.max, sinkLogit);
    Value keep = expOfDifference(b, loc, state.max, top);
    Value scaledSum = arith::MulFOp::create(b, loc, state.sum, keep);
    Value denominator = arith::AddFOp::create(
        b, loc, scaledSum, expOfDifference(b, loc, sinkLogit, top));
    factor = arith::DivFOp::create(b, loc, keep, denominator);
  } else {
    factor =
        arith::DivFOp::create(b, loc, constant(b, loc, type, 1.0), state.sum);
  }
  return arith::SelectOp::create(b, loc, empty, zero, factor);
}

Value NormalizerDefinition::getStatistic(OpBuilder &b, Location loc,
                                         const NormalizerState &state) const {
  assert(hasStatistic() && "the normalizer has no statistic");
  Type type = state.sum.getType();
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ,
                                      state.sum, constant(b, loc, type, 0.0));
  // The sum is relative to the shift of the row's max (the max itself for
  // softmax, where a row with a sum has a finite max).
  Value shift = usableMax(b, loc, clampShift(b, loc, state.max));
  Value lse = arith::AddFOp::create(b, loc, shift, log(b, loc, state.sum));
  return arith::SelectOp::create(b, loc, empty, constant(b, loc, type, kNegInf),
                                 lse);
}

//===----------------------------------------------------------------------===//
// The adjoint.
//===----------------------------------------------------------------------===//

Value NormalizerDefinition::getScoreAdjoint(OpBuilder &b, Location loc,
                                            Value weight, Value score,
                                            Value weightAdjoint,
                                            Value delta) const {
  if (normalizer == Normalizer::None)
    return weightAdjoint;
  assert(hasStatistic() && "normalize without a map has no adjoint here");
  Value adjoint = arith::MulFOp::create(
      b, loc, weight, arith::SubFOp::create(b, loc, weightAdjoint, delta));
  if (normalizer == Normalizer::Softmax || map == WeightMap::Exp)
    return adjoint;
  return arith::MulFOp::create(b, loc, adjoint,
                               getScoreAdjointFactor(b, loc, score));
}

Value NormalizerDefinition::getScoreAdjointFactor(OpBuilder &b, Location loc,
                                                  Value score) const {
  Type type = score.getType();
  if (normalizer == Normalizer::Softmax || map == WeightMap::Exp)
    return constant(b, loc, type, 1.0);
  if (map == WeightMap::Identity)
    return Value();
  Value one = constant(b, loc, type, 1.0);
  auto sigmoidOf = [&](Value x) {
    Value e = expNatural(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::DivFOp::create(b, loc, one,
                                 arith::AddFOp::create(b, loc, one, e));
  };
  if (map == WeightMap::Sigmoid)
    return sigmoidOf(arith::NegFOp::create(b, loc, score));
  // softplus' = sigmoid: the ratio is 1 - O(e^s) in the tail, where both
  // underflow in f32 long before the ratio moves.
  Value ratio =
      arith::DivFOp::create(b, loc, sigmoidOf(score), applyMap(b, loc, score));
  Value inTail = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, score,
                                       constant(b, loc, type, kExpTail));
  return arith::SelectOp::create(b, loc, inTail, one, ratio);
}

Value NormalizerDefinition::getRowLogDenominator(OpBuilder &b, Location loc,
                                                 Value lse,
                                                 Value sinkLogit) const {
  assert(hasStatistic() && "the normalizer has no statistic");
  assert(bool(sinkLogit) == sink && "a sink logit exactly with a sink");
  if (!sinkLogit)
    return lse;
  // With t = max(LSE, z): t + log1p(e^(min - t)), which neither overflows
  // nor loses the smaller term; t itself where t = -inf (min - t is NaN).
  Type type = lse.getType();
  Value larger = arith::MaximumFOp::create(b, loc, lse, sinkLogit);
  Value smaller = arith::MinimumFOp::create(b, loc, lse, sinkLogit);
  Value joined = arith::AddFOp::create(
      b, loc, larger,
      math::Log1pOp::create(
          b, loc,
          expNatural(b, loc, arith::SubFOp::create(b, loc, smaller, larger))));
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, larger,
                                      constant(b, loc, type, kNegInf));
  return arith::SelectOp::create(b, loc, empty, larger, joined);
}

Value NormalizerDefinition::getSinkWeight(OpBuilder &b, Location loc,
                                          Value sinkLogit, Value lse) const {
  // 1 / (1 + e^(LSE - z)): 1 for LSE = -inf, and no overflow to NaN.
  Type type = sinkLogit.getType();
  Value one = constant(b, loc, type, 1.0);
  Value e = expNatural(b, loc, arith::SubFOp::create(b, loc, lse, sinkLogit));
  return arith::DivFOp::create(b, loc, one,
                               arith::AddFOp::create(b, loc, one, e));
}

Value NormalizerDefinition::getLseAdjointShare(OpBuilder &b, Location loc,
                                               Value lseGrad, Value lse,
                                               Value sinkLogit) const {
  assert(normalizer == Normalizer::Softmax && "only softmax has a statistic");
  assert(bool(sinkLogit) == sink && "a sink logit exactly with a sink");
  Type type = lse.getType();
  Value share = lseGrad;
  if (sinkLogit) {
    // 1 + e^(z - LSE) rather than e^(LSE' - LSE): no rounding of LSE', and
    // 1 for z = -inf.
    Value excess = arith::MinimumFOp::create(
        b, loc, arith::SubFOp::create(b, loc, sinkLogit, lse),
        constant(b, loc, type, kMaxSinkExcess));
    Value ratio = arith::AddFOp::create(b, loc, constant(b, loc, type, 1.0),
                                        expNatural(b, loc, excess));
    share = arith::MulFOp::create(b, loc, lseGrad, ratio);
  }
  Value empty = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, lse,
                                      constant(b, loc, type, kNegInf));
  return arith::SelectOp::create(b, loc, empty, constant(b, loc, type, 0.0),
                                 share);
}
