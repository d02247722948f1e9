//===- LexerTest.cpp - Tests of the .attn lexer ---------------------------===//

#include "attn/Frontend/Lexer.h"
#include "TestUtil.h"

#include "gtest/gtest.h"

#include <vector>

using namespace attn::dsl;
using attn::dsl::test::CapturedSource;

namespace {

std::vector<Token> lexAll(CapturedSource &source, Lexer *&lexerOut) {
  static std::unique_ptr<Lexer> lexer;
  const llvm::MemoryBuffer *buffer = source.sourceMgr.getMemoryBuffer(1);
  lexer = std::make_unique<Lexer>(source.sourceMgr, buffer->getBuffer());
  lexerOut = lexer.get();
  std::vector<Token> tokens;
  for (unsigned i = 0; i < 10000; ++i) {
    Token tok = lexer->lex();
    tokens.push_back(tok);
    if (tok.is(TokenKind::eof))
      break;
  }
  return tokens;
}

std::vector<TokenKind> kinds(const std::vector<Token> &tokens) {
  std::vector<TokenKind> result;
  for (const Token &tok : tokens)
    result.push_back(tok.kind);
  return result;
}

TEST(LexerTest, PunctuationAndOperators) {
  CapturedSource source("[ ] ( ) { } , : = < <= > >= == != + - * / % ^ @");
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  using K = TokenKind;
  std::vector<K> expected = {
      K::l_square,      K::r_square,    K::l_paren,    K::r_paren,
      K::l_brace,       K::r_brace,     K::comma,      K::colon,
      K::equal,         K::less,        K::less_equal, K::greater,
      K::greater_equal, K::equal_equal, K::not_equal,  K::plus,
      K::minus,         K::star,        K::slash,      K::percent,
      K::caret,         K::at,          K::eof};
  EXPECT_EQ(kinds(tokens), expected);
  EXPECT_EQ(lexer->getNumErrors(), 0u);
  EXPECT_TRUE(source.diagnostics.empty());
}

TEST(LexerTest, KeywordsAndIdentifiers) {
  CapturedSource source(
      "attention dims in param out let keep where and or not select sum max "
      "min mean logsumexp softmax normalize sink foo bf16 _x1");
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  ASSERT_EQ(tokens.size(), 24u);
  for (unsigned i = 0; i < 20; ++i)
    EXPECT_TRUE(tokens[i].isKeyword()) << tokens[i].spelling.str();
  EXPECT_EQ(tokens[0].kind, TokenKind::kw_attention);
  EXPECT_EQ(tokens[19].kind, TokenKind::kw_sink);
  EXPECT_EQ(tokens[20].kind, TokenKind::identifier);
  // Element types are identifiers; the parser interprets them.
  EXPECT_EQ(tokens[21].kind, TokenKind::identifier);
  EXPECT_EQ(tokens[21].spelling, "bf16");
  EXPECT_EQ(tokens[22].spelling, "_x1");
}

TEST(LexerTest, Numbers) {
  CapturedSource source("1 0.125 1e-3 2E+5 128 7.5e2");
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  using K = TokenKind;
  EXPECT_EQ(kinds(tokens),
            (std::vector<K>{K::integer, K::floating, K::floating, K::floating,
                            K::integer, K::floating, K::eof}));
  EXPECT_EQ(tokens[2].spelling, "1e-3");
  EXPECT_EQ(tokens[5].spelling, "7.5e2");
}

TEST(LexerTest, CommentsAndLineStarts) {
  CapturedSource source("a b // comment with ! and #\n  c\n// only\nd");
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  ASSERT_EQ(tokens.size(), 5u);
  EXPECT_TRUE(tokens[0].startsLine);
  EXPECT_FALSE(tokens[1].startsLine);
  EXPECT_TRUE(tokens[2].startsLine);
  EXPECT_EQ(tokens[2].spelling, "c");
  EXPECT_TRUE(tokens[3].startsLine);
  EXPECT_EQ(tokens[3].spelling, "d");
  EXPECT_EQ(lexer->getNumErrors(), 0u);
}

TEST(LexerTest, InvalidCharacters) {
  CapturedSource source("a # b\n!c 12abc");
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  EXPECT_EQ(lexer->getNumErrors(), 3u);
  EXPECT_NE(
      source.diagnostics.find("test.attn:1:3: error: unexpected character '#'"),
      std::string::npos)
      << source.diagnostics;
  EXPECT_NE(source.diagnostics.find("test.attn:2:1: error: unexpected '!'"),
            std::string::npos)
      << source.diagnostics;
  EXPECT_NE(
      source.diagnostics.find("test.attn:2:4: error: invalid number '12abc'"),
      std::string::npos)
      << source.diagnostics;
  // The caret line is printed under the source line.
  EXPECT_NE(source.diagnostics.find("a # b\n  ^"), std::string::npos)
      << source.diagnostics;
  EXPECT_EQ(tokens.back().kind, TokenKind::eof);
}

TEST(LexerTest, EmbeddedNulAndHighBytes) {
  std::string text = std::string("a\0b", 3) + "\xff";
  CapturedSource source(text);
  Lexer *lexer;
  std::vector<Token> tokens = lexAll(source, lexer);
  EXPECT_EQ(lexer->getNumErrors(), 2u);
  EXPECT_EQ(tokens.back().kind, TokenKind::eof);
}

} // namespace
