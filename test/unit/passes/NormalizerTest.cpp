//===- NormalizerTest.cpp - The normalizer definitions' math --------------===//
//
// Emits the normalizer definitions on constants the way a consumer does
// (blocks of scores, merges, finalisation), folds the function with the
// canonicalizer and compares the folded results with the same quantities
// computed directly in double precision.
//
//===----------------------------------------------------------------------===//

#include "attn/Normalizer/Normalizer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include "gtest/gtest.h"

#include <cmath>
#include <limits>
#include <vector>

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// One key of a row: its score, whether the mask keeps it, its value.
struct Key {
  double score;
  bool kept;
  double value;
};

/// A softmax row computed directly from its kept keys: the output and LSE.
struct Expected {
  double output;
  double lse;
};

Expected directSoftmax(ArrayRef<Key> keys) {
  double max = -kInf;
  for (const Key &key : keys)
    if (key.kept)
      max = std::max(max, key.score);
  double sum = 0, weighted = 0;
  for (const Key &key : keys)
    if (key.kept) {
      sum += std::exp(key.score - max);
      weighted += std::exp(key.score - max) * key.value;
    }
  return {weighted / sum, max + std::log(sum)};
}

/// The output of a normalize row computed directly from its kept keys.
double directNormalize(ArrayRef<Key> keys) {
  double sum = 0, weighted = 0;
  for (const Key &key : keys)
    if (key.kept) {
      sum += key.score;
      weighted += key.score * key.value;
    }
  return weighted / sum;
}

/// map(s) in double precision.
double applyMap(WeightMap map, double s) {
  switch (map) {
  case WeightMap::Identity:
    return s;
  case WeightMap::Exp:
    return std::exp(s);
  case WeightMap::Softplus:
    return std::max(s, 0.0) + std::log1p(std::exp(-std::fabs(s)));
  case WeightMap::Sigmoid:
    return 1.0 / (1.0 + std::exp(-s));
  }
  return 0;
}

/// The output of a normalize row with a weight map, directly in double
/// precision (where the maps of the scores used below do not underflow).
double directMapped(WeightMap map, ArrayRef<Key> keys) {
  double sum = 0, weighted = 0;
  for (const Key &key : keys)
    if (key.kept) {
      sum += applyMap(map, key.score);
      weighted += applyMap(map, key.score) * key.value;
    }
  return weighted / sum;
}

class NormalizerTest : public ::testing::Test {
protected:
  NormalizerTest() {
    context.loadDialect<arith::ArithDialect, func::FuncDialect,
                        math::MathDialect>();
  }

  /// Emits `body` into a function returning what it returns, folds the
  /// function and returns each result as a double (f32 results).
  std::vector<double>
  fold(function_ref<SmallVector<Value>(OpBuilder &, Location)> body) {
    Location loc = UnknownLoc::get(&context);
    OpBuilder b(&context);
    auto module = ModuleOp::create(loc);
    b.setInsertionPointToEnd(module.getBody());
    auto func = func::FuncOp::create(b, loc, "row", b.getFunctionType({}, {}));
    b.setInsertionPointToStart(func.addEntryBlock());
    SmallVector<Value> results = body(b, loc);
    func::ReturnOp::create(b, loc, results);
    func.setFunctionType(b.getFunctionType({}, TypeRange(ValueRange(results))));

    PassManager pm(&context);
    pm.addPass(createCanonicalizerPass());
    EXPECT_TRUE(succeeded(pm.run(module)));
    std::vector<double> values;
    auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
    for (Value result : ret.getOperands()) {
      FloatAttr folded;
      EXPECT_TRUE(matchPattern(result, m_Constant(&folded)))
          << "a result did not fold to a constant";
      values.push_back(folded ? folded.getValueAsDouble()
                              : std::numeric_limits<double>::quiet_NaN());
    }
    module->erase();
    return values;
  }

  /// Updates `state` and the output accumulator `output` by one block of
  /// keys, as a consumer does.
  static void updateByBlock(OpBuilder &b, Location loc,
                            const NormalizerDefinition &def, ArrayRef<Key> keys,
                            NormalizerState &state, Value &output) {
    Type f32 = b.getF32Type();
    auto constant = [&](double v) -> Value {
      return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
    };
    Value absent = def.getAbsentScore(b, loc, f32);
    SmallVector<Value> scores;
    Value blockMax = def.hasMax() ? constant(-kInf) : Value();
    Value kept = state.keptCount;
    for (const Key &key : keys) {
      Value keep = arith::ConstantOp::create(b, loc, b.getBoolAttr(key.kept));
      Value score =
          arith::SelectOp::create(b, loc, keep, constant(key.score), absent);
      scores.push_back(score);
      if (def.hasMax())
        blockMax = def.maxOf(b, loc, blockMax, score);
      if (kept)
        kept = def.countKept(b, loc, kept, keep);
    }
    BlockShift shift = def.beginBlock(b, loc, state, blockMax);
    Value sum = def.hasSum() ? def.rescale(b, loc, state.sum, shift) : Value();
    output = def.rescale(b, loc, output, shift);
    for (auto [key, score] : llvm::zip(keys, scores)) {
      Value p = def.weight(b, loc, shift, score);
      if (sum)
        sum = def.accumulate(b, loc, sum, p);
      output = arith::AddFOp::create(
          b, loc, output,
          arith::MulFOp::create(b, loc, p, constant(key.value)));
    }
    state = def.endBlock(shift, sum, kept);
  }

  /// The row's output and statistic after the blocks `blocks`, one state;
  /// `seedWithSink` starts the max from the sink logit.
  std::vector<double> runRow(const NormalizerDefinition &def,
                             ArrayRef<ArrayRef<Key>> blocks,
                             std::optional<double> sink = std::nullopt,
                             bool seedWithSink = false) {
    return fold([&](OpBuilder &b, Location loc) -> SmallVector<Value> {
      Type f32 = b.getF32Type();
      Value seed;
      if (seedWithSink)
        seed = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(*sink));
      NormalizerState state = def.getInitialState(b, loc, f32, seed);
      Value output = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
      for (ArrayRef<Key> block : blocks)
        updateByBlock(b, loc, def, block, state, output);
      return finish(b, loc, def, state, output, sink);
    });
  }

  /// [output * factor, statistic (or 0)] of a finished row.
  static SmallVector<Value> finish(OpBuilder &b, Location loc,
                                   const NormalizerDefinition &def,
                                   const NormalizerState &state, Value output,
                                   std::optional<double> sink) {
    Value sinkLogit;
    if (sink)
      sinkLogit = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(*sink));
    Value factor = def.getOutputFactor(b, loc, state, sinkLogit);
    Value scaled =
        factor ? arith::MulFOp::create(b, loc, output, factor) : output;
    Value statistic =
        def.hasStatistic() ? def.getStatistic(b, loc, state)
                     : arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
    return {scaled, statistic};
  }

  MLIRContext context;
};

const SmallVector<Key> kFirstBlock = {
    {0.5, true, 1.0}, {-1.25, true, -2.0}, {3.0, false, 7.0}, {2.0, true, 0.5}};
const SmallVector<Key> kSecondBlock = {
    {4.5, true, 3.0}, {-8.0, true, 1.5}, {1.0, false, -4.0}, {0.25, true, 2.0}};

SmallVector<Key> concat(ArrayRef<Key> first, ArrayRef<Key> second) {
  SmallVector<Key> all(first);
  all.append(second.begin(), second.end());
  return all;
}

/// Base-2 exponentials, as on NVPTX; the fma as a multiply and an add,
/// since math.fma has no folder.
NormalizerMath baseTwo() {
  NormalizerMath math;
  math.base = NormalizerMath::Base::Two;
  math.fma = [](OpBuilder &b, Location loc, Value x, Value y,
                Value z) -> Value {
    return arith::AddFOp::create(b, loc, arith::MulFOp::create(b, loc, x, y),
                                 z);
  };
  return math;
}

TEST_F(NormalizerTest, SoftmaxBlocksEqualDirectSoftmax) {
  Expected expected = directSoftmax(concat(kFirstBlock, kSecondBlock));
  for (const NormalizerMath &math : {NormalizerMath(), baseTwo()}) {
    NormalizerDefinition def(Normalizer::Softmax, false, math);
    std::vector<double> got = runRow(def, {kFirstBlock, kSecondBlock});
    EXPECT_NEAR(got[0], expected.output, 1e-5);
    EXPECT_NEAR(got[1], expected.lse, 1e-5);
  }
}

TEST_F(NormalizerTest, SinkJoinsTheDenominatorOnly) {
  // With every value 1 the output is 1 minus the sink's share of the
  // denominator; the LSE is that of the kept scores alone, whether the sink
  // seeded the max or not. Unseeded, even a sink 120 above the scores leaves
  // their sum (and so the LSE) intact.
  SmallVector<Key> keys = {
      {0.5, true, 1.0}, {-1.0, true, 1.0}, {2.0, false, 1.0}, {1.5, true, 1.0}};
  double sum = std::exp(0.5) + std::exp(-1.0) + std::exp(1.5);
  for (double sink : {0.75, -3.0, 60.0, 120.0})
    for (bool seeded : {false, true}) {
      if (seeded && sink > 80)
        continue;
      double share = 1.0 / (sum * std::exp(-sink) + 1.0);
      for (const NormalizerMath &math : {NormalizerMath(), baseTwo()}) {
        NormalizerDefinition def(Normalizer::Softmax, true, math);
        std::vector<double> got = runRow(def, {keys}, sink, seeded);
        EXPECT_NEAR(got[0], 1.0 - share, 1e-5)
            << "sink " << sink << (seeded ? ", seeded" : "");
        EXPECT_NEAR(got[1], std::log(sum), 1e-5)
            << "sink " << sink << (seeded ? ", seeded" : "");
      }
    }
}

TEST_F(NormalizerTest, NormalizeBlocksEqualDirectNormalize) {
  SmallVector<Key> first = {{0.5, true, 1.0}, {2.0, false, 9.0}};
  SmallVector<Key> second = {{1.5, true, -2.0}, {0.25, true, 4.0}};
  NormalizerDefinition def(Normalizer::Normalize, false);
  std::vector<double> got = runRow(def, {first, second});
  EXPECT_NEAR(got[0], directNormalize(concat(first, second)), 1e-5);
}

TEST_F(NormalizerTest, NoneKeepsTheScoresAsWeights) {
  SmallVector<Key> keys = {
      {0.5, true, 2.0}, {3.0, false, 9.0}, {-1.5, true, 4.0}};
  NormalizerDefinition def(Normalizer::None, false);
  std::vector<double> got = runRow(def, {keys});
  EXPECT_NEAR(got[0], 0.5 * 2.0 - 1.5 * 4.0, 1e-6);
}

TEST_F(NormalizerTest, MergeOfHalvesEqualsTheWhole) {
  struct Case {
    Normalizer normalizer;
    std::optional<double> sink;
  };
  for (Case c :
       {Case{Normalizer::Softmax, std::nullopt}, Case{Normalizer::Softmax, 1.5},
        Case{Normalizer::Normalize, std::nullopt},
        Case{Normalizer::None, std::nullopt}}) {
    NormalizerDefinition def(c.normalizer, c.sink.has_value());
    std::vector<double> whole =
        runRow(def, {kFirstBlock, kSecondBlock}, c.sink);
    std::vector<double> merged = fold([&](OpBuilder &b,
                                          Location loc) -> SmallVector<Value> {
      Type f32 = b.getF32Type();
      NormalizerState states[2];
      Value outputs[2];
      for (int part = 0; part < 2; ++part) {
        states[part] = def.getInitialState(b, loc, f32);
        outputs[part] = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
        updateByBlock(b, loc, def, part ? kSecondBlock : kFirstBlock,
                      states[part], outputs[part]);
      }
      MergedState m = def.merge(b, loc, states[0], states[1]);
      auto weigh = [&](Value output, Value weight) -> Value {
        return weight ? arith::MulFOp::create(b, loc, output, weight) : output;
      };
      Value output =
          arith::AddFOp::create(b, loc, weigh(outputs[0], m.firstWeight),
                                weigh(outputs[1], m.secondWeight));
      return finish(b, loc, def, m.state, output, c.sink);
    });
    EXPECT_NEAR(merged[0], whole[0], 1e-5);
    EXPECT_NEAR(merged[1], whole[1], 1e-5);
  }
}

TEST_F(NormalizerTest, MergeOfFinalizedPartsEqualsTheWhole) {
  // The decode form: each part stored as its normalised output and its LSE,
  // i.e. the state (LSE, 1); parts weighed against the shift of the max LSE.
  NormalizerDefinition part(Normalizer::Softmax, false);
  std::vector<double> first = runRow(part, {kFirstBlock});
  std::vector<double> second = runRow(part, {kSecondBlock});
  const Key dropped[] = {{1.0, false, 1.0}};
  std::vector<double> empty = runRow(part, {dropped});
  double sink = 2.5;
  NormalizerDefinition def(Normalizer::Softmax, true, baseTwo());
  std::vector<double> whole = runRow(def, {kFirstBlock, kSecondBlock}, sink);
  std::vector<double> merged =
      fold([&](OpBuilder &b, Location loc) -> SmallVector<Value> {
        auto constant = [&](double v) -> Value {
          return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
        };
        SmallVector<std::vector<double>> parts = {first, empty, second};
        Value partsMax = constant(-kInf);
        for (const std::vector<double> &p : parts)
          partsMax = def.maxOf(b, loc, partsMax, constant(p[1]));
        Value shift = def.getMergeShift(b, loc, partsMax);
        Value output = constant(0), sum = constant(0);
        for (const std::vector<double> &p : parts) {
          Value weight = def.partWeight(b, loc, shift, constant(p[1]));
          output = arith::AddFOp::create(
              b, loc, output,
              arith::MulFOp::create(b, loc, weight, constant(p[0])));
          sum = def.accumulate(b, loc, sum, weight);
        }
        NormalizerState state;
        state.max = shift;
        state.sum = sum;
        return finish(b, loc, def, state, output, sink);
      });
  EXPECT_TRUE(std::isinf(empty[1]) && empty[1] < 0);
  EXPECT_NEAR(merged[0], whole[0], 1e-5);
  EXPECT_NEAR(merged[1], whole[1], 1e-5);
}

TEST_F(NormalizerTest, EmptyRowGivesZeroAndNegativeInfinity) {
  // Nothing kept, or only -inf scores: factor 0, LSE -inf, never NaN, with
  // and without a sink, and after merging two empty parts.
  SmallVector<Key> dropped = {{1.0, false, 5.0}, {2.0, false, 5.0}};
  SmallVector<Key> minusInf = {{-kInf, true, 5.0}};
  for (ArrayRef<Key> keys : {ArrayRef<Key>(dropped), ArrayRef<Key>(minusInf)})
    for (std::optional<double> sink :
         {std::optional<double>(), std::optional<double>(0.5)}) {
      NormalizerDefinition def(Normalizer::Softmax, sink.has_value());
      std::vector<double> got = runRow(def, {keys, keys}, sink);
      EXPECT_EQ(got[0], 0.0);
      EXPECT_TRUE(std::isinf(got[1]) && got[1] < 0);
    }

  NormalizerDefinition normalize(Normalizer::Normalize, false);
  EXPECT_EQ(runRow(normalize, {dropped})[0], 0.0);

  NormalizerDefinition softmax(Normalizer::Softmax, false);
  std::vector<double> merged = fold([&](OpBuilder &b,
                                        Location loc) -> SmallVector<Value> {
    Type f32 = b.getF32Type();
    NormalizerState first = softmax.getInitialState(b, loc, f32);
    NormalizerState second = softmax.getInitialState(b, loc, f32);
    MergedState m = softmax.merge(b, loc, first, second);
    return {softmax.getOutputFactor(b, loc, m.state, Value()),
            softmax.getStatistic(b, loc, m.state), m.firstWeight, m.state.max};
  });
  EXPECT_EQ(merged[0], 0.0);
  EXPECT_TRUE(std::isinf(merged[1]) && merged[1] < 0);
  EXPECT_EQ(merged[2], 0.0);
  // The merged max stays -inf, so a later merge is not shifted by 0.
  EXPECT_TRUE(std::isinf(merged[3]) && merged[3] < 0);
}

TEST_F(NormalizerTest, NormalizeCountsKeptScoresForEmptiness) {
  // Kept scores that sum to 0 are not an empty row: the factor is 1/0, the
  // division the op defines, not the 0 of a row that kept nothing.
  NormalizerDefinition def(Normalizer::Normalize, false);
  std::vector<double> got = fold([&](OpBuilder &b, Location loc) {
    Type f32 = b.getF32Type();
    NormalizerState state = def.getInitialState(b, loc, f32);
    Value output = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
    updateByBlock(b, loc, def, {{0.0, true, 1.0}, {0.0, true, 2.0}}, state,
                  output);
    return SmallVector<Value>{def.getOutputFactor(b, loc, state, Value())};
  });
  EXPECT_TRUE(std::isinf(got[0]));
}

TEST_F(NormalizerTest, HooksShapeTheEmittedOps) {
  // Base two: each weight is one fma and one exponential of the backend's;
  // the block max is combined across lanes once, the sums at the end.
  int exps = 0, fmas = 0, laneMaxes = 0, laneSums = 0;
  NormalizerMath math = baseTwo();
  math.exp = [&](OpBuilder &b, Location loc, Value x) -> Value {
    ++exps;
    return math::Exp2Op::create(b, loc, x);
  };
  math.fma = [&](OpBuilder &b, Location loc, Value x, Value y,
                 Value z) -> Value {
    ++fmas;
    return math::FmaOp::create(b, loc, x, y, z);
  };
  math.maxAcrossLanes = [&](OpBuilder &, Location, Value x) {
    ++laneMaxes;
    return x;
  };
  math.sumAcrossLanes = [&](OpBuilder &, Location, Value x) {
    ++laneSums;
    return x;
  };
  NormalizerDefinition def(Normalizer::Softmax, false, math);
  fold([&](OpBuilder &b, Location loc) -> SmallVector<Value> {
    Type lanes = VectorType::get({4}, b.getF32Type());
    NormalizerState state = def.getInitialState(b, loc, lanes);
    Value score = def.getAbsentScore(b, loc, lanes);
    BlockShift shift = def.beginBlock(b, loc, state, score);
    EXPECT_EQ(laneMaxes, 1);
    int expsBefore = exps, fmasBefore = fmas;
    Value p = def.weight(b, loc, shift, score);
    EXPECT_EQ(exps - expsBefore, 1);
    EXPECT_EQ(fmas - fmasBefore, 1);
    EXPECT_EQ(p.getType(), lanes);
    state = def.endBlock(
        shift, def.accumulate(b, loc, def.rescale(b, loc, state.sum, shift), p),
        Value());
    state = def.combineLanes(b, loc, state);
    EXPECT_EQ(laneSums, 1);
    return {};
  });
}

} // namespace

/// Rows for the weight maps: moderate scores, and a row that crosses the
/// maps' exponential tail.
const SmallVector<SmallVector<Key>> kMapRows = {
    {{0.5, true, 1.0}, {-1.25, true, -2.0}, {3.0, false, 7.0},
     {2.0, true, 0.5}, {4.5, true, 3.0}, {0.25, true, 2.0}},
    {{-25.0, true, 1.0}, {-3.0, true, -2.0}, {-19.5, true, 4.0},
     {-40.0, true, 0.5}}};

TEST_F(NormalizerTest, WeightMapsEqualDirectNormalize) {
  // Moderate scores, a row that crosses the exponential tail, a row whose
  // maps all underflow in f32 (below -104 even softplus(s) = e^s is 0), and
  // for exp scores whose maps overflow f32: each is exact relative to the
  // row's max, with natural and base-2 exponentials, in one block or two.
  SmallVector<SmallVector<Key>> rows(kMapRows);
  rows.push_back({{-220.0, true, 1.0}, {-200.5, true, -2.0},
                  {-205.0, false, 9.0}, {-201.0, true, 3.0},
                  {-260.0, true, 2.0}});
  for (WeightMap map :
       {WeightMap::Exp, WeightMap::Softplus, WeightMap::Sigmoid}) {
    for (bool two : {false, true}) {
      NormalizerDefinition def(Normalizer::Normalize, false,
                               two ? baseTwo() : NormalizerMath(), map);
      EXPECT_TRUE(def.hasMax());
      EXPECT_FALSE(def.hasKeptCount());
      for (ArrayRef<Key> row : rows) {
        double expected;
        if (row.front().score < -100) {
          // e^s relative to the max, as the maps equal e^s there.
          double max = -kInf, sum = 0, weighted = 0;
          for (const Key &key : row)
            if (key.kept)
              max = std::max(max, key.score);
          for (const Key &key : row)
            if (key.kept) {
              sum += std::exp(key.score - max);
              weighted += std::exp(key.score - max) * key.value;
            }
          expected = weighted / sum;
        } else {
          expected = directMapped(map, row);
        }
        ArrayRef<Key> first = row.take_front(2), second = row.drop_front(2);
        for (std::vector<double> got :
             {runRow(def, {row}), runRow(def, {first, second})})
          EXPECT_NEAR(got[0], expected, 2e-5 * std::fabs(expected) + 1e-6)
              << stringifyWeightMap(map).str() << (two ? " base 2" : "")
              << ", row from " << row.front().score;
      }
    }
  }
  // exp of scores near 150 overflows f32; relative to the max it does not.
  SmallVector<Key> large = {{150.0, true, 1.0}, {149.0, true, 3.0}};
  NormalizerDefinition exp(Normalizer::Normalize, false, {}, WeightMap::Exp);
  double e = std::exp(-1.0);
  EXPECT_NEAR(runRow(exp, {large})[0], (1.0 + 3.0 * e) / (1.0 + e), 1e-5);
}

TEST_F(NormalizerTest, WeightMapStatisticRecomputesTheWeights) {
  // What a backward does: the forward's statistic is log sum map(s); the
  // weights recomputed from it (shiftForLogDenominator, weight) are
  // map(s) / sum map(s), including rows through the maps' e^s tail and
  // rows whose log-denominator is above 0 (not clamped as a max is).
  for (WeightMap map :
       {WeightMap::Exp, WeightMap::Softplus, WeightMap::Sigmoid}) {
    for (bool two : {false, true}) {
      NormalizerDefinition def(Normalizer::Normalize, false,
                               two ? baseTwo() : NormalizerMath(), map);
      ASSERT_TRUE(def.hasStatistic());
      for (ArrayRef<Key> row : kMapRows) {
        double sum = 0;
        for (const Key &key : row)
          if (key.kept)
            sum += applyMap(map, key.score);
        std::vector<double> got =
            fold([&](OpBuilder &b, Location loc) -> SmallVector<Value> {
              Type f32 = b.getF32Type();
              NormalizerState state = def.getInitialState(b, loc, f32);
              Value output =
                  arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
              updateByBlock(b, loc, def, row, state, output);
              Value lse = def.getStatistic(b, loc, state);
              BlockShift shift = def.shiftForLogDenominator(
                  b, loc, def.getRowLogDenominator(b, loc, lse, Value()));
              SmallVector<Value> results = {lse};
              for (const Key &key : row)
                results.push_back(def.weight(
                    b, loc, shift,
                    arith::ConstantOp::create(b, loc,
                                              b.getF32FloatAttr(key.score))));
              return results;
            });
        std::string where = (stringifyWeightMap(map) + (two ? " base 2" : "") +
                             ", row from " + std::to_string(row.front().score))
                                .str();
        EXPECT_NEAR(got[0], std::log(sum), 2e-5 * std::fabs(std::log(sum)))
            << where;
        for (auto [key, weight] : llvm::zip(row, llvm::drop_begin(got)))
          if (key.kept)
            EXPECT_NEAR(weight, applyMap(map, key.score) / sum,
                        2e-5 * applyMap(map, key.score) / sum)
                << where << ", score " << key.score;
      }
    }
  }
}

TEST_F(NormalizerTest, WeightMapRowWithNothingKeptIsZero) {
  SmallVector<Key> keys = {{1.0, false, 2.0}, {-300.0, false, 4.0}};
  NormalizerDefinition def(Normalizer::Normalize, false, {},
                           WeightMap::Softplus);
  EXPECT_EQ(runRow(def, {keys})[0], 0.0);
}
