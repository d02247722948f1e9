//===- Lexer.h - Tokens of the .attn language -------------------*- C++ -*-===//
//
// The lexer turns the main buffer of a SourceMgr into tokens. Tokens keep a
// pointer into the buffer so that every diagnostic can point at the exact
// spelling, and a flag saying whether they start a line: statements of the
// language are not terminated, so the parser uses line starts to tell where
// one statement ends.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_LEXER_H
#define ATTN_FRONTEND_LEXER_H

#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/SMLoc.h"

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace attn::dsl {

/// The kinds of tokens of the language.
enum class TokenKind {
  eof,
  error,
  identifier,
  integer,
  floating,
  // Punctuation.
  l_square,
  r_square,
  l_paren,
  r_paren,
  l_brace,
  r_brace,
  comma,
  colon,
  equal,
  less,
  less_equal,
  greater,
  greater_equal,
  equal_equal,
  not_equal,
  plus,
  minus,
  star,
  slash,
  percent,
  caret,
  at,
  // Keywords.
  kw_attention,
  kw_dims,
  kw_in,
  kw_param,
  kw_out,
  kw_let,
  kw_keep,
  kw_where,
  kw_and,
  kw_or,
  kw_not,
  kw_select,
  kw_sum,
  kw_max,
  kw_min,
  kw_mean,
  kw_logsumexp,
  kw_softmax,
  kw_normalize,
  kw_sink,
};

/// A token: its kind, its spelling in the source buffer, and whether it is
/// the first token of its line.
struct Token {
  TokenKind kind = TokenKind::eof;
  llvm::StringRef spelling;
  bool startsLine = false;

  bool is(TokenKind k) const { return kind == k; }
  bool isKeyword() const {
    return kind >= TokenKind::kw_attention && kind <= TokenKind::kw_sink;
  }
  llvm::SMLoc getLoc() const {
    return llvm::SMLoc::getFromPointer(spelling.data());
  }
  llvm::SMLoc getEndLoc() const {
    return llvm::SMLoc::getFromPointer(spelling.data() + spelling.size());
  }
  llvm::SMRange getRange() const { return {getLoc(), getEndLoc()}; }
};

/// Returns a printable description of a token kind for diagnostics, e.g.
/// "']'" or "an identifier".
llvm::StringRef describeTokenKind(TokenKind kind);

/// Splits a buffer into tokens on demand. Invalid characters are reported
/// through the SourceMgr and give an `error` token; the lexer then goes on
/// with the next character, so it never stops early.
class Lexer {
public:
  Lexer(llvm::SourceMgr &sourceMgr, llvm::StringRef buffer);

  /// Returns the next token; `eof` forever once the buffer is exhausted.
  Token lex();

  /// The number of errors reported so far.
  unsigned getNumErrors() const { return numErrors; }

private:
  Token makeToken(TokenKind kind, const char *start);
  Token lexIdentifier(const char *start);
  Token lexNumber(const char *start);
  Token lexError(const char *start, const llvm::Twine &message);

  llvm::SourceMgr &sourceMgr;
  const char *cur;
  const char *end;
  bool atLineStart = true;
  unsigned numErrors = 0;
};

} // namespace attn::dsl

#endif // ATTN_FRONTEND_LEXER_H
