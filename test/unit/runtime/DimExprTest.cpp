//===- DimExprTest.cpp - Grid and constraint formulas ---------------------===//

#include "attn/Runtime/DimExpr.h"

#include <gtest/gtest.h>

using namespace attn;

namespace {

int64_t eval(const std::string &text, std::vector<int64_t> values = {}) {
  std::vector<std::string> names = {"M", "N", "H", "G"};
  if (values.empty())
    values = {1000, 4096, 16, 4};
  DimExpr e;
  Status s = DimExpr::parse(text, names, e);
  EXPECT_FALSE(s) << s.getMessage();
  int64_t out = -999;
  Status r = e.evaluate(values, out);
  EXPECT_FALSE(r) << r.getMessage();
  return out;
}

Status parseError(const std::string &text) {
  DimExpr e;
  return DimExpr::parse(text, {"M", "N"}, e);
}

TEST(DimExprTest, Evaluates) {
  EXPECT_EQ(eval("ceil(M/128)"), 8);
  EXPECT_EQ(eval("ceil(N/128)"), 32);
  EXPECT_EQ(eval("cdiv(M, 128)"), 8);
  EXPECT_EQ(eval("M/128"), 7);
  EXPECT_EQ(eval("M % 128"), 104);
  EXPECT_EQ(eval("H"), 16);
  EXPECT_EQ(eval("1 + 2 * 3"), 7);
  EXPECT_EQ(eval("(1 + 2) * 3"), 9);
  EXPECT_EQ(eval("-M + 1"), -999);
  EXPECT_EQ(eval("min(M, N) + max(H, G)"), 1016);
  EXPECT_EQ(eval("H % G == 0"), 1);
  EXPECT_EQ(eval("H % G != 0"), 0);
  EXPECT_EQ(eval("M <= N"), 1);
  EXPECT_EQ(eval("M > N"), 0);
  EXPECT_EQ(eval("ceil(M)"), 1000);
  EXPECT_EQ(eval("ceil(0/128)"), 0);
  EXPECT_EQ(eval(" H * ( M / 64 ) "), 240);
}

TEST(DimExprTest, EvaluationErrors) {
  DimExpr e;
  ASSERT_FALSE(DimExpr::parse("M / N", {"M", "N"}, e));
  int64_t out;
  Status s = e.evaluate({1, 0}, out);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("division by zero"), std::string::npos);
  ASSERT_FALSE(DimExpr::parse("M * N", {"M", "N"}, e));
  s = e.evaluate({INT64_MAX / 2, 3}, out);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("overflow"), std::string::npos);
}

TEST(DimExprTest, ParseErrors) {
  EXPECT_NE(parseError("Q + 1").getMessage().find("unknown dim 'Q'"),
            std::string::npos);
  EXPECT_NE(parseError("foo(M)").getMessage().find("unknown function"),
            std::string::npos);
  for (const char *bad : {"", "M +", "(M", "M)", "min(M)", "M $ N", "ceil(M",
                          "99999999999999999999", "M N"})
    EXPECT_TRUE(parseError(bad)) << bad;
  EXPECT_TRUE(parseError(std::string(10000, '(') + "M"));
  EXPECT_TRUE(parseError(std::string(10000, '-') + "M"));
}

} // namespace
