//===- JsonTest.cpp - The runtime's tiny JSON -----------------------------===//

#include "attn/Runtime/Json.h"

#include <gtest/gtest.h>

using namespace attn;

namespace {

TEST(JsonTest, ParsesValues) {
  json::Value v;
  ASSERT_FALSE(json::parse(
      R"( {"a": [1, -2.5e3, true, false, null], "b": {"c": "x\ny\u00e9\ud83d\ude00"}} )",
      v));
  ASSERT_TRUE(v.isObject());
  const json::Value *a = v.get("a");
  ASSERT_TRUE(a && a->isArray());
  ASSERT_EQ(a->getArray().size(), 5u);
  EXPECT_EQ(a->getArray()[0].getNumber(), 1);
  EXPECT_TRUE(a->getArray()[0].isInteger());
  EXPECT_EQ(a->getArray()[1].getNumber(), -2500);
  EXPECT_TRUE(a->getArray()[2].getBool());
  EXPECT_TRUE(a->getArray()[4].isNull());
  EXPECT_EQ(v.get("b")->get("c")->getString(), "x\ny\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v.get("missing"), nullptr);
}

TEST(JsonTest, RoundTrips) {
  json::Value v;
  ASSERT_FALSE(json::parse(
      R"({"k": [1, 2, {"x": "q\"\\"}], "n": 0.125, "big": 123456789012})", v));
  std::string text = json::write(v);
  json::Value again;
  ASSERT_FALSE(json::parse(text, again));
  EXPECT_EQ(json::write(again), text);
  EXPECT_EQ(again.get("big")->getNumber(), 123456789012.0);
}

TEST(JsonTest, RejectsMalformed) {
  const char *bad[] = {
      "",           "{",     "[1,]",        "{\"a\" 1}",         "01",
      "1.",         "-",     "\"abc",       "\"\\x\"",           "tru",
      "{\"a\":1,}", "[1] 2", "\"\\ud800\"", "{\"a\":1,\"a\":2}", "\"a\nb\"",
      "1e"};
  for (const char *text : bad) {
    json::Value v;
    Status s = json::parse(text, v);
    EXPECT_TRUE(s) << "accepted: " << text;
    EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_PACKAGE);
  }
}

TEST(JsonTest, LimitsNesting) {
  std::string deep(100000, '[');
  json::Value v;
  Status s = json::parse(deep, v);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("nesting"), std::string::npos);
  std::string ok = std::string(60, '[') + std::string(60, ']');
  EXPECT_FALSE(json::parse(ok, v));
}

} // namespace
