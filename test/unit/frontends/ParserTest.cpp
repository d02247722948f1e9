//===- ParserTest.cpp - Tests of the .attn parser -------------------------===//

#include "attn/Frontend/Parser.h"
#include "TestUtil.h"

#include "gtest/gtest.h"

using namespace attn::dsl;
using attn::dsl::test::CapturedSource;

namespace {

bool parse(llvm::StringRef text, Spec &spec, std::string &diagnostics) {
  CapturedSource source(text);
  bool ok = llvm::succeeded(parseSpec(source.sourceMgr, spec));
  diagnostics = source.diagnostics;
  return ok;
}

TEST(ParserTest, StreamingExample) {
  Spec spec;
  std::string diags;
  ASSERT_TRUE(parse(test::kStreamingLLM, spec, diags)) << diags;
  EXPECT_EQ(spec.name, "streaming_llm");
  ASSERT_EQ(spec.dims.size(), 6u);
  EXPECT_EQ(spec.dims[5].name, "D");
  EXPECT_EQ(spec.dims[5].size, 128);
  EXPECT_FALSE(spec.dims[0].size.has_value());
  ASSERT_EQ(spec.inputs.size(), 4u);
  EXPECT_EQ(spec.inputs[0].elemType, ElemType::BF16);
  EXPECT_EQ(spec.inputs[3].elemType, ElemType::I32);
  ASSERT_EQ(spec.params.size(), 2u);
  EXPECT_TRUE(spec.params[0].hasDefault);
  EXPECT_EQ(spec.params[0].intDefault, 1024);
  ASSERT_EQ(spec.outputs.size(), 2u);
  ASSERT_EQ(spec.stmts.size(), 6u);
  EXPECT_EQ(spec.stmts[0].kind, StmtKind::Let);
  EXPECT_EQ(spec.stmts[1].kind, StmtKind::Assign);
  EXPECT_TRUE(spec.stmts[1].hasIndexList);
  EXPECT_EQ(spec.stmts[2].kind, StmtKind::Keep);
  ASSERT_EQ(spec.stmts[2].annotations.size(), 1u);
  EXPECT_EQ(spec.stmts[2].annotations[0].name, "sinks");
  EXPECT_EQ(spec.stmts[3].value->kind, ExprKind::Normalizer);
  EXPECT_FALSE(spec.stmts[3].hasIndexList);
  // S = (sum[d](...)) * rsqrt(D): the product is the root.
  const Expr &s = *spec.stmts[1].value;
  EXPECT_EQ(s.kind, ExprKind::Binary);
  EXPECT_EQ(s.binaryOp, BinaryOp::Mul);
  EXPECT_EQ(s.operands[0]->kind, ExprKind::Reduce);
  EXPECT_EQ(s.operands[1]->kind, ExprKind::Call);
}

TEST(ParserTest, Precedence) {
  Spec spec;
  std::string diags;
  ASSERT_TRUE(parse("attention p {\n  X = -a ^ 2 * b + c < d and not e or f\n}",
                    spec, diags))
      << diags;
  const Expr &root = *spec.stmts[0].value;
  ASSERT_EQ(root.kind, ExprKind::Binary);
  EXPECT_EQ(root.binaryOp, BinaryOp::Or);
  const Expr &conj = *root.operands[0];
  EXPECT_EQ(conj.binaryOp, BinaryOp::And);
  const Expr &cmp = *conj.operands[0];
  EXPECT_EQ(cmp.binaryOp, BinaryOp::Lt);
  const Expr &sum = *cmp.operands[0];
  EXPECT_EQ(sum.binaryOp, BinaryOp::Add);
  const Expr &product = *sum.operands[0];
  EXPECT_EQ(product.binaryOp, BinaryOp::Mul);
  const Expr &neg = *product.operands[0];
  ASSERT_EQ(neg.kind, ExprKind::Unary);
  EXPECT_EQ(neg.operands[0]->binaryOp, BinaryOp::Pow);
  EXPECT_EQ(conj.operands[1]->kind, ExprKind::Unary);
}

TEST(ParserTest, FormsOfTheLanguage) {
  Spec spec;
  std::string diags;
  const char *text = R"(attention forms {
  dims B, D = 64, N
  in X: f32[B, N, 16]
  in S0: f32
  param eps: f32 = -1e-3
  param k: i64
  out Y: f32[]
  A[b, n < N] = max[t < N / 2, u](X[b, t, u]) + min(1, 2) + select(b < 1, 2, 3)
  P = softmax[n](A, sink = 0.5)
  E = normalize[n](softplus(A))
  @block(64, 32) @per_head keep A where not (n % 2 == 1) and b != 0
  Y = mean[b, n](A)
}
)";
  ASSERT_TRUE(parse(text, spec, diags)) << diags;
  EXPECT_EQ(spec.params[0].floatDefault, -1e-3);
  EXPECT_FALSE(spec.params[1].hasDefault);
  EXPECT_TRUE(spec.inputs[1].shape.empty());
  ASSERT_EQ(spec.stmts[0].lhsIndices.size(), 2u);
  EXPECT_TRUE(spec.stmts[0].lhsIndices[1].bound != nullptr);
  const Expr &reduce = *spec.stmts[0].value->operands[0]->operands[0];
  ASSERT_EQ(reduce.kind, ExprKind::Reduce);
  EXPECT_EQ(reduce.reduceOp, ReduceOp::Max);
  EXPECT_EQ(reduce.indices.size(), 2u);
  EXPECT_TRUE(spec.stmts[1].value->sink != nullptr);
  EXPECT_EQ(spec.stmts[2].value->normalizerOp, NormalizerOp::Normalize);
  EXPECT_EQ(spec.stmts[3].annotations.size(), 2u);
  EXPECT_EQ(spec.stmts[3].annotations[0].args, (std::vector<int64_t>{64, 32}));
}

struct SyntaxCase {
  const char *body;
  const char *expected;
};

class SyntaxErrorTest : public ::testing::TestWithParam<SyntaxCase> {};

TEST_P(SyntaxErrorTest, ReportsAtLocation) {
  std::string text =
      std::string("attention e {\n  dims N\n") + GetParam().body + "\n}\n";
  Spec spec;
  std::string diags;
  EXPECT_FALSE(parse(text, spec, diags));
  EXPECT_NE(diags.find(GetParam().expected), std::string::npos) << "got:\n"
                                                                << diags;
}

INSTANTIATE_TEST_SUITE_P(
    Parser, SyntaxErrorTest,
    ::testing::Values(
        SyntaxCase{"  X[n = 1",
                   "test.attn:3:7: error: expected ']' after the indices, "
                   "found '='"},
        SyntaxCase{"  X = foo(1)",
                   "test.attn:3:7: error: unknown function 'foo'"},
        SyntaxCase{"  X = exp(1, 2)",
                   "test.attn:3:7: error: 'exp' takes 1 argument, got 2"},
        SyntaxCase{"  X = select(1, 2)",
                   "test.attn:3:7: error: 'select' takes 3 arguments, got 2"},
        SyntaxCase{"  in Q: f33[N]",
                   "test.attn:3:9: error: expected an element type"},
        SyntaxCase{"  param p: bf16",
                   "test.attn:3:12: error: a param must be i32, i64 or f32"},
        SyntaxCase{"  X = a < b < c",
                   "test.attn:3:13: error: comparisons do not chain"},
        SyntaxCase{"  X = 1 +", "test.attn:4:1: error: expected an expression, "
                                "found '}'"},
        SyntaxCase{"  X = 1 Y = 2",
                   "test.attn:3:9: error: expected the end of the statement"},
        SyntaxCase{"  @sinks(4) X = 1",
                   "test.attn:3:13: error: expected 'keep' after annotations"},
        SyntaxCase{"  X = softmax[n, m](S)",
                   "test.attn:3:16: error: 'softmax' normalizes along one "
                   "index"},
        SyntaxCase{"  X = normalize[n](S, sink = 1)",
                   "only 'softmax' takes a sink"},
        SyntaxCase{"  X = 99999999999999999999",
                   "test.attn:3:7: error: integer literal is too large"},
        SyntaxCase{"  in = 3", "test.attn:3:6: error: expected an input name, "
                               "found '='"},
        SyntaxCase{"  let in = 3", "keywords cannot be names"},
        SyntaxCase{"  dims M = 0",
                   "test.attn:3:12: error: the size of dim 'M' must be "
                   "positive"}));

TEST(ParserTest, RecoversAndReportsSeveralErrors) {
  Spec spec;
  std::string diags;
  EXPECT_FALSE(
      parse("attention r {\n  X = (1\n  Y = 2\n  Z = )\n}\n", spec, diags));
  EXPECT_NE(diags.find("test.attn:3:3: error: expected ')'"), std::string::npos)
      << diags;
  EXPECT_NE(diags.find("test.attn:4:7: error: expected an expression"),
            std::string::npos)
      << diags;
}

TEST(ParserTest, DeepNestingIsAnErrorNotACrash) {
  std::string text = "attention deep {\n  X = ";
  text += std::string(5000, '(') + "1" + std::string(5000, ')') + "\n}\n";
  Spec spec;
  std::string diags;
  EXPECT_FALSE(parse(text, spec, diags));
  EXPECT_NE(diags.find("nested too deeply"), std::string::npos) << diags;

  std::string chain = "attention chain {\n  X = 1";
  for (int i = 0; i < 5000; ++i)
    chain += " + 1";
  chain += "\n}\n";
  EXPECT_FALSE(parse(chain, spec, diags));
  EXPECT_NE(diags.find("nested too deeply"), std::string::npos) << diags;

  std::string unary =
      "attention unary {\n  X = " + std::string(5000, '-') + "1\n}\n";
  EXPECT_FALSE(parse(unary, spec, diags));
  EXPECT_NE(diags.find("nested too deeply"), std::string::npos) << diags;
}

TEST(ParserTest, MissingHeaderAndTrailingText) {
  Spec spec;
  std::string diags;
  EXPECT_FALSE(parse("", spec, diags));
  EXPECT_NE(diags.find("expected 'attention'"), std::string::npos) << diags;
  EXPECT_FALSE(parse("attention a {\n}\nextra", spec, diags));
  EXPECT_NE(diags.find("test.attn:3:1: error: unexpected 'extra' after the "
                       "end of the spec"),
            std::string::npos)
      << diags;
  EXPECT_FALSE(parse("attention a {\n  X = 1\n", spec, diags));
  EXPECT_NE(diags.find("expected '}' at the end of the spec"),
            std::string::npos)
      << diags;
}

} // namespace
