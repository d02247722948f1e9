//===- CascadeTest.cpp - The evaluator on single cascade ops --------------===//
//
// Reductions (every kind, including over nothing), masks that read tensors,
// top-level extent arithmetic, and the integer and float scalar semantics.
//
//===----------------------------------------------------------------------===//

#include "ReferenceTestSupport.h"

using namespace attn;
using namespace attn::ref;
using namespace attn::ref::test;

namespace {

using CascadeTest = ReferenceTest;


TEST_F(CascadeTest, EveryReductionKindSkipsAbsentTerms) {
  const int64_t M = 5, N = 4;
  HostTensor x = randomTensor(DType::F32, {M, N}, 11);
  // Large values check that logsumexp is computed stably.
  x.setFromDouble(linearIndex(x, {4, 0}), 800.0);
  x.setFromDouble(linearIndex(x, {4, 1}), 799.0);
  std::vector<HostTensor> out = run(parse(kReductions), {{M, N}, {&x}, {}});
  ASSERT_EQ(out.size(), 5u);
  for (int64_t m = 0; m < M; ++m) {
    double sum = 0, max = kNegInf, min = -kNegInf;
    int64_t count = 0;
    for (int64_t n = 0; n < std::min(m, N); ++n) {
      double v = at(x, {m, n});
      sum += v;
      max = std::max(max, v);
      min = std::min(min, v);
      ++count;
    }
    double lse = kNegInf;
    if (count) {
      double s = 0;
      for (int64_t n = 0; n < std::min(m, N); ++n)
        s += std::exp(at(x, {m, n}) - max);
      lse = max + std::log(s);
    }
    SCOPED_TRACE("row " + std::to_string(m));
    EXPECT_NEAR(at(out[0], {m}), sum, 1e-12);
    EXPECT_EQ(at(out[1], {m}), max);
    EXPECT_EQ(at(out[2], {m}), min);
    EXPECT_NEAR(at(out[3], {m}), count ? sum / count : 0.0, 1e-12);
    if (count)
      EXPECT_NEAR(at(out[4], {m}), lse, 1e-9);
    else
      EXPECT_EQ(at(out[4], {m}), kNegInf);
  }
  EXPECT_NEAR(at(out[4], {4}), 800.0 + std::log1p(std::exp(-1.0)), 1e-3);
}

TEST_F(CascadeTest, EmptyReductionsGiveTheirIdentities) {
  const int64_t M = 3, N = 0;
  HostTensor x(DType::F32, {M, N});
  std::vector<HostTensor> out = run(parse(kReductions), {{M, N}, {&x}, {}});
  ASSERT_EQ(out.size(), 5u);
  for (int64_t m = 0; m < M; ++m) {
    EXPECT_EQ(at(out[0], {m}), 0.0);
    EXPECT_EQ(at(out[1], {m}), kNegInf);
    EXPECT_EQ(at(out[2], {m}), -kNegInf);
    EXPECT_EQ(at(out[3], {m}), 0.0);
    EXPECT_EQ(at(out[4], {m}), kNegInf);
  }
}

TEST_F(CascadeTest, MaskReadingATensorAndTopLevelExtents) {
  // Document masking: keep X[m, n] where Doc[m] == Doc[n]; the result is
  // summed over the first half of the keys (an extent computed at the top).
  const char *text = R"mlir(
attn.kernel @documents attributes {
    dim_names = ["N"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X", "Doc"], param_names = [], param_defaults = [],
    output_names = ["Y", "Z"], output_types = [f32, f32],
    shapes = [["N", "N"], ["N"], ["N", "N"], ["N"]]} {
^bb0(%N: index, %X: tensor<?x?xf32>, %Doc: tensor<?xi32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %a = attn.read %Doc[%m] : tensor<?xi32>
    %b = attn.read %Doc[%n] : tensor<?xi32>
    %c = arith.cmpi eq, %a, %b : i32
    attn.yield %c : i1
  }
  %c2 = arith.constant 2 : index
  %half = arith.floordivsi %N, %c2 : index
  %z = attn.einsum <sum> ["m"] reduce ["n"] extents(%N, %half) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  attn.return %kept, %z : tensor<?x?xf32>, tensor<?xf32>
}
)mlir";
  const int64_t N = 7;
  HostTensor x = randomTensor(DType::F32, {N, N}, 5);
  HostTensor doc(DType::I32, {N});
  int ids[N] = {0, 0, 1, 1, 1, 2, 2};
  for (int64_t i = 0; i < N; ++i)
    doc.setFromDouble(i, ids[i]);
  std::vector<HostTensor> out = run(parse(text), {{N}, {&x, &doc}, {}});
  ASSERT_EQ(out.size(), 2u);
  ASSERT_EQ(out[1].getShape(), std::vector<int64_t>{N});
  for (int64_t m = 0; m < N; ++m) {
    double z = 0;
    for (int64_t n = 0; n < N; ++n) {
      bool same = ids[m] == ids[n];
      // Absent entries of a returned tensor are stored as 0.
      EXPECT_EQ(at(out[0], {m, n}), same ? at(x, {m, n}) : 0.0);
      if (same && n < N / 2)
        z += at(x, {m, n});
    }
    EXPECT_NEAR(at(out[1], {m}), z, 1e-12);
  }
}

TEST_F(CascadeTest, IntegerSemantics) {
  // Integer outputs: floor division, C remainder, truncating division,
  // max/min, the language's floored modulo (remsi plus a sign fix-up with
  // select), and an i1 comparison.
  const char *text = R"mlir(
attn.kernel @ints attributes {
    dim_names = ["I"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["A", "B"], param_names = [], param_defaults = [],
    output_names = ["Fdiv", "Rem", "Div", "Max", "Mod", "Lt"],
    output_types = [i32, i32, i32, i32, i32, i1],
    shapes = [["I"], ["I"], ["I"], ["I"], ["I"], ["I"], ["I"], ["I"]]} {
^bb0(%I: index, %A: tensor<?xi32>, %B: tensor<?xi32>):
  %fdiv = attn.einsum <none> ["i"] extents(%I) : tensor<?xi32> {
  ^bb0(%i: index):
    %a = attn.read %A[%i] : tensor<?xi32>
    %b = attn.read %B[%i] : tensor<?xi32>
    %r = arith.floordivsi %a, %b : i32
    attn.yield %r : i32
  }
  %rem = attn.einsum <none> ["i"] extents(%I) : tensor<?xi32> {
  ^bb0(%i: index):
    %a = attn.read %A[%i] : tensor<?xi32>
    %b = attn.read %B[%i] : tensor<?xi32>
    %r = arith.remsi %a, %b : i32
    attn.yield %r : i32
  }
  %div = attn.einsum <none> ["i"] extents(%I) : tensor<?xi32> {
  ^bb0(%i: index):
    %a = attn.read %A[%i] : tensor<?xi32>
    %b = attn.read %B[%i] : tensor<?xi32>
    %r = arith.divsi %a, %b : i32
    attn.yield %r : i32
  }
  %max = attn.einsum <none> ["i"] extents(%I) : tensor<?xi32> {
  ^bb0(%i: index):
    %a = attn.read %A[%i] : tensor<?xi32>
    %b = attn.read %B[%i] : tensor<?xi32>
    %r = arith.maxsi %a, %b : i32
    %s = arith.minsi %r, %a : i32
    %t = arith.subi %r, %s : i32
    %u = arith.addi %t, %s : i32
    attn.yield %u : i32
  }
  %mod = attn.einsum <none> ["i"] extents(%I) : tensor<?xi32> {
  ^bb0(%i: index):
    %a32 = attn.read %A[%i] : tensor<?xi32>
    %b32 = attn.read %B[%i] : tensor<?xi32>
    %a = arith.index_cast %a32 : i32 to index
    %b = arith.index_cast %b32 : i32 to index
    %r = arith.remsi %a, %b : index
    %zero = arith.constant 0 : index
    %rneg = arith.cmpi slt, %r, %zero : index
    %bneg = arith.cmpi slt, %b, %zero : index
    %differ = arith.xori %rneg, %bneg : i1
    %nonzero = arith.cmpi ne, %r, %zero : index
    %fix = arith.andi %differ, %nonzero : i1
    %rb = arith.addi %r, %b : index
    %m = arith.select %fix, %rb, %r : index
    %m32 = arith.index_cast %m : index to i32
    attn.yield %m32 : i32
  }
  %lt = attn.einsum <none> ["i"] extents(%I) : tensor<?xi1> {
  ^bb0(%i: index):
    %a = attn.read %A[%i] : tensor<?xi32>
    %b = attn.read %B[%i] : tensor<?xi32>
    %c = arith.cmpi slt, %a, %b : i32
    %t = arith.constant true
    %f = arith.constant false
    %o = arith.ori %c, %f : i1
    %x = arith.andi %o, %t : i1
    attn.yield %x : i1
  }
  attn.return %fdiv, %rem, %div, %max, %mod, %lt : tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi32>, tensor<?xi1>
}
)mlir";
  std::vector<std::pair<int, int>> cases = {{7, 2}, {-7, 2}, {7, -2}, {-7, -2},
                                            {6, 3}, {-6, 3}, {0, 5},  {1, -1}};
  const int64_t I = cases.size();
  HostTensor a(DType::I32, {I}), b(DType::I32, {I});
  for (int64_t i = 0; i < I; ++i) {
    a.setFromDouble(i, cases[i].first);
    b.setFromDouble(i, cases[i].second);
  }
  std::vector<HostTensor> out = run(parse(text), {{I}, {&a, &b}, {}});
  ASSERT_EQ(out.size(), 6u);
  for (int64_t i = 0; i < I; ++i) {
    int64_t x = cases[i].first, y = cases[i].second;
    int64_t floorDiv = x / y - ((x % y != 0) && ((x < 0) != (y < 0)));
    int64_t mod = x - floorDiv * y;
    SCOPED_TRACE(std::to_string(x) + " and " + std::to_string(y));
    EXPECT_EQ(at(out[0], {i}), floorDiv);
    EXPECT_EQ(at(out[1], {i}), x % y);
    EXPECT_EQ(at(out[2], {i}), x / y);
    EXPECT_EQ(at(out[3], {i}), std::max(x, y));
    EXPECT_EQ(at(out[4], {i}), mod);
    EXPECT_EQ(at(out[5], {i}), x < y ? 1.0 : 0.0);
  }
}

TEST_F(CascadeTest, FloatScalarOpsInDouble) {
  // One output per group of math, checked against <cmath> in double.
  const char *text = R"mlir(
attn.kernel @floats attributes {
    dim_names = ["I"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = ["p"], param_defaults = [2.5 : f32],
    output_names = ["A", "B", "C", "D"], output_types = [f32, f32, f32, f32],
    shapes = [["I"], ["I"], ["I"], ["I"], ["I"]]} {
^bb0(%I: index, %X: tensor<?xf32>, %p: f32):
  %a = attn.einsum <none> ["i"] extents(%I) : tensor<?xf32> {
  ^bb0(%i: index):
    %x = attn.read %X[%i] : tensor<?xf32>
    %ax = math.absf %x : f32
    %s = math.sqrt %ax : f32
    %r = math.rsqrt %ax : f32
    %e2 = math.exp2 %x : f32
    %t = math.tanh %x : f32
    %l = math.log %ax : f32
    %y0 = arith.mulf %s, %r : f32
    %y1 = arith.addf %y0, %e2 : f32
    %y2 = arith.subf %y1, %t : f32
    %y3 = arith.divf %y2, %l : f32
    attn.yield %y3 : f32
  }
  %b = attn.einsum <none> ["i"] extents(%I) : tensor<?xf32> {
  ^bb0(%i: index):
    %x = attn.read %X[%i] : tensor<?xf32>
    %f = math.floor %x : f32
    %c = math.ceil %x : f32
    %r = arith.remf %x, %p : f32
    %w = math.powf %p, %x : f32
    %y0 = arith.addf %f, %c : f32
    %y1 = arith.mulf %y0, %r : f32
    %y2 = arith.addf %y1, %w : f32
    %mn = arith.minimumf %y2, %x : f32
    %y3 = arith.addf %y2, %mn : f32
    attn.yield %y3 : f32
  }
  %c = attn.einsum <none> ["i"] extents(%I) : tensor<?xf32> {
  ^bb0(%i: index):
    %x = attn.read %X[%i] : tensor<?xf32>
    %n = arith.fptosi %x : f32 to i64
    %nf = arith.sitofp %n : i64 to f32
    %ii = arith.index_cast %i : index to i64
    %iif = arith.sitofp %ii : i64 to f32
    %pos = arith.cmpf ogt, %x, %nf : f32
    %pf = arith.uitofp %pos : i1 to f32
    %pi = arith.extui %pos : i1 to i32
    %pif = arith.sitofp %pi : i32 to f32
    %y0 = arith.addf %nf, %iif : f32
    %y1 = arith.addf %y0, %pf : f32
    %y2 = arith.addf %y1, %pif : f32
    attn.yield %y2 : f32
  }
  %d = attn.einsum <none> ["i"] extents(%I) : tensor<?xf32> {
  ^bb0(%i: index):
    %x = attn.read %X[%i] : tensor<?xf32>
    %h = arith.truncf %x : f32 to bf16
    %w = arith.extf %h : bf16 to f32
    %nan = arith.cmpf uno, %w, %w : f32
    %one = arith.constant 1.0 : f32
    %neg = arith.negf %one : f32
    %s = arith.select %nan, %neg, %w : f32
    %sq = arith.mulf %s, %s : f32
    %l = math.log1p %sq : f32
    %e = math.exp %l : f32
    attn.yield %e : f32
  }
  attn.return %a, %b, %c, %d : tensor<?xf32>, tensor<?xf32>, tensor<?xf32>, tensor<?xf32>
}
)mlir";
  std::vector<double> xs = {-2.75, -0.5, 0.3, 1.5, 3.6, 0.1234567890123};
  const int64_t I = xs.size();
  HostTensor x(DType::F64, {I});
  for (int64_t i = 0; i < I; ++i)
    x.setFromDouble(i, xs[i]);
  const double p = 2.5;
  std::vector<HostTensor> out = run(parse(text), {{I}, {&x}, {p}});
  ASSERT_EQ(out.size(), 4u);
  for (int64_t i = 0; i < I; ++i) {
    double v = xs[i], av = std::fabs(v);
    SCOPED_TRACE("x = " + std::to_string(v));
    double a =
        (std::sqrt(av) * (1.0 / std::sqrt(av)) + std::exp2(v) - std::tanh(v)) /
        std::log(av);
    EXPECT_DOUBLE_EQ(at(out[0], {i}), a);
    double y2 =
        (std::floor(v) + std::ceil(v)) * std::fmod(v, p) + std::pow(p, v);
    EXPECT_DOUBLE_EQ(at(out[1], {i}), y2 + std::min(y2, v));
    double n = std::trunc(v);
    double pos = v > n ? 1.0 : 0.0;
    EXPECT_EQ(at(out[2], {i}), n + i + 2 * pos);
    // truncf/extf are identities in the float64 oracle.
    EXPECT_DOUBLE_EQ(at(out[3], {i}), 1.0 + v * v);
  }
}

TEST_F(CascadeTest, ElementwiseOfAbsentStaysAbsent) {
  // exp of a kept tensor is absent where the mask is false, and a sum of it
  // skips those entries instead of adding exp(0).
  const char *text = R"mlir(
attn.kernel @absent attributes {
    dim_names = ["N"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["S"], output_types = [f32],
    shapes = [["N"], []]} {
^bb0(%N: index, %X: tensor<?xf32>):
  %kept = attn.keep %X ["n"] : tensor<?xf32> {
  ^bb0(%n: index):
    %c3 = arith.constant 3 : index
    %c = arith.cmpi uge, %n, %c3 : index
    attn.yield %c : i1
  }
  %e = attn.einsum <none> ["n"] extents(%N) : tensor<?xf32> {
  ^bb0(%n: index):
    %x = attn.read %kept[%n] : tensor<?xf32>
    %y = math.exp %x : f32
    attn.yield %y : f32
  }
  %s = attn.einsum <sum> [] reduce ["n"] extents(%N) : tensor<f32> {
  ^bb0(%n: index):
    %x = attn.read %e[%n] : tensor<?xf32>
    attn.yield %x : f32
  }
  attn.return %s : tensor<f32>
}
)mlir";
  HostTensor x = randomTensor(DType::F32, {6}, 9);
  std::vector<HostTensor> out = run(parse(text), {{6}, {&x}, {}});
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].getRank(), 0);
  double expected = 0;
  for (int64_t n = 3; n < 6; ++n)
    expected += std::exp(x.getAsDouble(n));
  EXPECT_NEAR(out[0].getAsDouble(0), expected, 1e-12);
}

} // namespace
