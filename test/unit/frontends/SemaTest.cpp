//===- SemaTest.cpp - Tests of the .attn semantic checks ------------------===//

#include "attn/Frontend/Sema.h"
#include "TestUtil.h"
#include "attn/Frontend/Parser.h"

#include "gtest/gtest.h"

using namespace attn::dsl;
using attn::dsl::test::CapturedSource;

namespace {

/// Lines 1-7 of every case; the case's body is line 8, then O is defined.
constexpr const char *kHeader = R"(attention t {
  dims B, M, N, D = 64
  in Q: f32[B, M, D]
  in K: f32[B, N, D]
  in Ids: i32[B, N]
  param w: i32 = 3
  out O: f32[B, M, D]
)";

std::string wrap(llvm::StringRef body) {
  return std::string(kHeader) + body.str() + "\n  O[b, m, e] = Q[b, m, e]\n}\n";
}

struct Checked {
  bool parsed = false;
  bool ok = false;
  std::string diagnostics;
  Spec spec;
  SemaResult sema;
};

std::unique_ptr<Checked> check(llvm::StringRef text) {
  auto result = std::make_unique<Checked>();
  CapturedSource source(text);
  result->parsed = llvm::succeeded(parseSpec(source.sourceMgr, result->spec));
  if (result->parsed)
    result->ok = llvm::succeeded(
        checkSpec(source.sourceMgr, result->spec, result->sema));
  result->diagnostics = source.diagnostics;
  return result;
}

struct ErrorCase {
  const char *name;
  const char *body;
  const char *expected;
  const char *note = nullptr;
};

class SemaErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(SemaErrorTest, ReportsAtLocation) {
  auto result = check(wrap(GetParam().body));
  ASSERT_TRUE(result->parsed) << result->diagnostics;
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->diagnostics.find(GetParam().expected), std::string::npos)
      << "got:\n"
      << result->diagnostics;
  if (GetParam().note)
    EXPECT_NE(result->diagnostics.find(GetParam().note), std::string::npos)
        << "got:\n"
        << result->diagnostics;
}

INSTANTIATE_TEST_SUITE_P(
    Sema, SemaErrorTest,
    ::testing::Values(
        ErrorCase{"UnknownTensor", "  S[b, m] = X[b, m]",
                  "test.attn:8:13: error: unknown tensor 'X'"},
        ErrorCase{"UnknownIndex", "  S[b, m] = Q[b, m, d]",
                  "test.attn:8:21: error: unknown index 'd' (it is not on the "
                  "left of the statement nor bound by a reduction)"},
        ErrorCase{"UnknownDimInBound", "  S[b, t < X] = Q[b, t, 0]",
                  "test.attn:8:12: error: unknown dim 'X'"},
        ErrorCase{"Redefinition", "  S[b] = Q[b, 0, 0]\n  S[b] = Q[b, 1, 0]",
                  "test.attn:9:3: error: redefinition of 'S'",
                  "test.attn:8:3: note: 'S' is defined here"},
        ErrorCase{"AssignToInput", "  Q[b, m, d] = K[b, m, d]",
                  "test.attn:8:3: error: cannot assign to 'Q', which is an "
                  "input"},
        ErrorCase{"DuplicateDeclaration", "  let w = 1",
                  "test.attn:8:7: error: redefinition of 'w'",
                  "test.attn:6:9: note: 'w' was first defined here as a "
                  "param"},
        ErrorCase{"RankMismatch", "  S[b, m] = Q[b, m]",
                  "test.attn:8:13: error: 'Q' has rank 3 but is subscripted "
                  "with 2 indices",
                  "test.attn:3:6: note: 'Q' is defined here"},
        ErrorCase{"ConflictingRanges",
                  "  S[b, m] = sum[d](Q[b, m, d] * K[b, m, d])",
                  "test.attn:8:38: error: conflicting ranges for index 'm': N "
                  "from axis 1 of 'K', but M from axis 1 of 'Q'",
                  "test.attn:8:25: note: index 'm' gets range M here"},
        ErrorCase{"ConflictWithExplicitRange",
                  "  S[b] = sum[t < 32](Q[b, 0, t])",
                  "test.attn:8:30: error: conflicting ranges for index 't': D "
                  "from axis 2 of 'Q', but 32 from its explicit range"},
        ErrorCase{"FloatMask", "  S[b, m] = Q[b, m, 0]\n  keep S where S * 2.0",
                  "test.attn:9:16: error: the predicate of 'keep' must be a "
                  "boolean (a comparison), but this is a float expression"},
        ErrorCase{"IntegerMask", "  S[b, m] = Q[b, m, 0]\n  keep S where m + 1",
                  "test.attn:9:16: error: the predicate of 'keep' must be a "
                  "boolean (a comparison), but this is an integer "
                  "expression"},
        ErrorCase{"UnknownIndexInMask",
                  "  S[b, m] = Q[b, m, 0]\n  keep S where n < m",
                  "test.attn:9:16: error: unknown index 'n' (the predicate of "
                  "'keep S' may use its indices: b, m)"},
        ErrorCase{"LhsIndexNotOnRight", "  S[b, m, x] = Q[b, m, 0]",
                  "test.attn:8:11: error: index 'x' on the left does not "
                  "appear on the right, so its range is unknown"},
        ErrorCase{"ReductionOverUnusedIndex", "  S[b] = sum[q](Q[b, 0, 0])",
                  "test.attn:8:14: error: reduction over index 'q' that the "
                  "reduced expression does not use"},
        ErrorCase{"ReductionRebindsIndex", "  S[b, m] = sum[m](Q[b, m, 0])",
                  "test.attn:8:17: error: index 'm' is already bound"},
        ErrorCase{"RangeNotInferable", "  S[b, m] = Q[b, m + 1, 0]",
                  "test.attn:8:18: error: cannot infer the range of index 'm'"},
        ErrorCase{"ImplicitRangeNotInferable", "  S = Ids[b, i / 2]",
                  "test.attn:8:14: error: cannot infer the range of index "
                  "'i'"},
        ErrorCase{"ParamAsTensor", "  S[b] = w[b]",
                  "test.attn:8:10: error: 'w' is a param, not a tensor",
                  "test.attn:6:9: note: 'w' is defined here"},
        ErrorCase{"DimAsIndex", "  S[b, D] = Q[b, 0, D]",
                  "test.attn:8:8: error: 'D' is a dim, not an index name"},
        ErrorCase{"InputWithoutSubscripts", "  S = Q + 1.0",
                  "test.attn:8:7: error: input 'Q' has rank 3 and needs "
                  "subscripts"},
        ErrorCase{"FloatSubscript", "  S[b] = Q[b, 0.5, 0]",
                  "test.attn:8:15: error: a subscript must be an integer, but "
                  "this is a float expression"},
        ErrorCase{"BooleanArithmeticOperand", "  S[b] = Q[b, 0, 0] and 1 < 2",
                  "test.attn:8:10: error: 'and' needs boolean operands, but "
                  "this is a float expression"},
        ErrorCase{"SelectCondition", "  S[b] = select(Q[b, 0, 0], 1, 2)",
                  "test.attn:8:17: error: the condition of 'select' must be a "
                  "boolean"},
        ErrorCase{"NestedSoftmax", "  S[b, m] = 1 + softmax[m](Q[b, m, 0])",
                  "test.attn:8:17: error: 'softmax' must be the whole "
                  "right-hand side of a statement"},
        ErrorCase{"SoftmaxOverMissingIndex",
                  "  S[b, m] = Q[b, m, 0]\n  P = softmax[n](S)",
                  "test.attn:9:15: error: 'softmax' over index 'n' that its "
                  "operand does not have"},
        ErrorCase{
            "SinkUsesNormalizedIndex",
            "  S[b, m] = Q[b, m, 0]\n  P = softmax[m](S, sink = Q[b, m, 0])",
            "test.attn:9:33: error: unknown index 'm' (a sink may use "
            "the indices of the softmax operand except 'm')"},
        ErrorCase{"UnknownAnnotation",
                  "  S[b, m] = Q[b, m, 0]\n  @causal keep S where m > 0",
                  "test.attn:9:3: error: unknown annotation '@causal'"},
        ErrorCase{"BadSinksAnnotation",
                  "  S[b, m] = Q[b, m, 0]\n  @sinks(1, 2) keep S where m > 0",
                  "test.attn:9:3: error: '@sinks' takes one non-negative "
                  "integer"},
        ErrorCase{"KeepInput", "  keep Q where b > 0",
                  "test.attn:8:8: error: 'keep' applies to tensors defined by "
                  "statements, but 'Q' is an input"},
        ErrorCase{"LetWithReduction", "  let s = sum[d](Q[0, 0, d])",
                  "test.attn:8:11: error: a let is an index alias"},
        ErrorCase{"ZeroRange", "  S[b] = sum[t < 4 - 4](Q[b, t, 0])",
                  "test.attn:8:18: error: a range must be positive"},
        ErrorCase{"ParamInBound", "  S[b] = sum[t < w](Q[b, t * 2, 0])",
                  "test.attn:8:18: error: a range bound may use only dims and "
                  "integer literals, but 'w' is a param"}),
    [](const ::testing::TestParamInfo<ErrorCase> &info) {
      return std::string(info.param.name);
    });

TEST(SemaTest, OutputErrors) {
  auto never = check("attention t {\n  dims N\n  in X: f32[N]\n  out Y: "
                     "f32[N]\n  out Z: f32[N]\n  Y[n] = X[n]\n}\n");
  EXPECT_FALSE(never->ok);
  EXPECT_NE(
      never->diagnostics.find("test.attn:5:7: error: out 'Z' is never defined"),
      std::string::npos)
      << never->diagnostics;

  auto rank = check("attention t {\n  dims N\n  in X: f32[N, N]\n  out Y: "
                    "f32[N]\n  Y = X[i, j]\n}\n");
  EXPECT_FALSE(rank->ok);
  EXPECT_NE(rank->diagnostics.find("test.attn:5:3: error: out 'Y' is declared "
                                   "with rank 1 but its value has 2 indices"),
            std::string::npos)
      << rank->diagnostics;

  auto type = check("attention t {\n  dims N\n  in X: f32[N]\n  out Y: "
                    "i32[N]\n  Y[n] = X[n]\n}\n");
  EXPECT_FALSE(type->ok);
  EXPECT_NE(type->diagnostics.find("test.attn:5:10: error: out 'Y' is "
                                   "declared i32 but its value is a float"),
            std::string::npos)
      << type->diagnostics;

  auto size = check("attention t {\n  dims M, N\n  in X: f32[N]\n  out Y: "
                    "f32[M]\n  Y[n] = X[n]\n}\n");
  EXPECT_FALSE(size->ok);
  EXPECT_NE(size->diagnostics.find("conflicting ranges for index 'n'"),
            std::string::npos)
      << size->diagnostics;
}

TEST(SemaTest, ExplodingLetsAreCapped) {
  std::string text = "attention x {\n  dims N\n  in X: f32[N]\n  out O: "
                     "f32[N]\n  let a0 = n + n\n";
  for (int i = 1; i < 40; ++i)
    text += "  let a" + std::to_string(i) + " = a" + std::to_string(i - 1) +
            " * a" + std::to_string(i - 1) + "\n";
  text += "  O[n] = X[a39 % N]\n}\n";
  auto result = check(text);
  EXPECT_FALSE(result->ok);
  // One error at the first let that is too large, none for its users.
  EXPECT_NE(result->diagnostics.find("test.attn:20:3: error: let 'a15' is too "
                                     "large once the lets it uses are "
                                     "expanded"),
            std::string::npos)
      << result->diagnostics;
  EXPECT_EQ(
      result->diagnostics.find("error", result->diagnostics.find("a15") + 3),
      std::string::npos)
      << result->diagnostics;
}

TEST(SemaTest, KeepsGoingAfterErrors) {
  auto result = check(wrap("  S[b] = X[b]\n  T[b] = S[b] + Y[b]"));
  EXPECT_FALSE(result->ok);
  EXPECT_NE(result->diagnostics.find("test.attn:8:10: error: unknown tensor "
                                     "'X'"),
            std::string::npos);
  EXPECT_NE(result->diagnostics.find("test.attn:9:17: error: unknown tensor "
                                     "'Y'"),
            std::string::npos);
  // S is broken; its use on line 9 must not add a follow-up error.
  EXPECT_EQ(result->diagnostics.find("test.attn:9:10"), std::string::npos)
      << result->diagnostics;
}

TEST(SemaTest, RangeInference) {
  auto result = check(R"(attention r {
  dims B, H, G, M, N, D = 64
  in Q: f32[B, H, M, D]
  in K: f32[B, G, N, 64]
  in Kc: f32[NP, 16, G, D]
  in Pages: i32[B, NP]
  out O: f32[B, H, M]
  let g = h / (H / G)
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,g,n,d])
  T = S + 1.0
  U[b, h, m, p < N / 16] = max[t < 16](S[b, h, m, p * 16 + t])
  Pg[b, h, m, n < N] = sum[d](Q[b,h,m,d] * Kc[Pages[b, n / 16], n % 16, h / (H / G), d])
  O = logsumexp[n](T)
}
)");
  ASSERT_TRUE(result->ok) << result->diagnostics;
  const StmtInfo &s = result->sema.stmts[1];
  EXPECT_EQ(s.outIndices, (std::vector<std::string>{"b", "h", "m", "n"}));
  EXPECT_EQ(s.ranges.lookup("b").text, "B");
  EXPECT_EQ(s.ranges.lookup("n").text, "N");
  // D = 64 and the literal 64 agree.
  EXPECT_EQ(s.ranges.lookup("d").key, "64");
  EXPECT_EQ(s.ranges.lookup("d").kind, Extent::Kind::Dim);
  // T keeps S's indices; its ranges come from S's extents.
  const StmtInfo &t = result->sema.stmts[2];
  EXPECT_EQ(t.outIndices, s.outIndices);
  EXPECT_EQ(t.ranges.lookup("m").text, "M");
  const StmtInfo &u = result->sema.stmts[3];
  EXPECT_EQ(u.ranges.lookup("p").kind, Extent::Kind::Expr);
  EXPECT_EQ(u.ranges.lookup("p").text, "N / 16");
  EXPECT_EQ(u.ranges.lookup("t").kind, Extent::Kind::Const);
  EXPECT_EQ(u.ranges.lookup("t").value, 16);
  const StmtInfo &o = result->sema.stmts[5];
  EXPECT_EQ(o.outIndices, (std::vector<std::string>{"b", "h", "m"}));
  // NP was introduced by the shape of Pages.
  EXPECT_EQ(result->spec.dims.back().name, "NP");
}

TEST(SemaTest, ScalarKinds) {
  auto result = check(R"(attention k {
  dims M, N
  in A: f32[M, N]
  in Vis: i1[N]
  in Ids: i32[N]
  param scale: f32 = 0.5
  param n0: i64 = 2
  X[m, n] = A[m, n] * scale + (n - m)
  Y[m < M, n] = Ids[n] + m * n0
  Z[m, n] = Vis[n] and m < n and A[m, n] > 0.0
  W[m < M, n] = select(Vis[n], Ids[n], m)
}
)");
  ASSERT_TRUE(result->ok) << result->diagnostics;
  EXPECT_EQ(result->sema.stmts[0].valueType, ScalarKind::Float);
  EXPECT_EQ(result->sema.stmts[1].valueType, ScalarKind::Int);
  EXPECT_EQ(result->sema.stmts[2].valueType, ScalarKind::Bool);
  EXPECT_EQ(result->sema.stmts[3].valueType, ScalarKind::Int);
}

} // namespace
