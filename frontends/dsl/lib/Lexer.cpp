//===- Lexer.cpp - Tokens of the .attn language ---------------------------===//

#include "attn/Frontend/Lexer.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

using namespace attn::dsl;
using llvm::SMLoc;
using llvm::SourceMgr;
using llvm::StringRef;

StringRef attn::dsl::describeTokenKind(TokenKind kind) {
  switch (kind) {
  case TokenKind::eof:
    return "end of file";
  case TokenKind::error:
    return "an invalid token";
  case TokenKind::identifier:
    return "an identifier";
  case TokenKind::integer:
    return "an integer";
  case TokenKind::floating:
    return "a number";
  case TokenKind::l_square:
    return "'['";
  case TokenKind::r_square:
    return "']'";
  case TokenKind::l_paren:
    return "'('";
  case TokenKind::r_paren:
    return "')'";
  case TokenKind::l_brace:
    return "'{'";
  case TokenKind::r_brace:
    return "'}'";
  case TokenKind::comma:
    return "','";
  case TokenKind::colon:
    return "':'";
  case TokenKind::equal:
    return "'='";
  case TokenKind::less:
    return "'<'";
  case TokenKind::less_equal:
    return "'<='";
  case TokenKind::greater:
    return "'>'";
  case TokenKind::greater_equal:
    return "'>='";
  case TokenKind::equal_equal:
    return "'=='";
  case TokenKind::not_equal:
    return "'!='";
  case TokenKind::plus:
    return "'+'";
  case TokenKind::minus:
    return "'-'";
  case TokenKind::star:
    return "'*'";
  case TokenKind::slash:
    return "'/'";
  case TokenKind::percent:
    return "'%'";
  case TokenKind::caret:
    return "'^'";
  case TokenKind::at:
    return "'@'";
  case TokenKind::kw_attention:
    return "'attention'";
  case TokenKind::kw_dims:
    return "'dims'";
  case TokenKind::kw_in:
    return "'in'";
  case TokenKind::kw_param:
    return "'param'";
  case TokenKind::kw_out:
    return "'out'";
  case TokenKind::kw_let:
    return "'let'";
  case TokenKind::kw_keep:
    return "'keep'";
  case TokenKind::kw_where:
    return "'where'";
  case TokenKind::kw_and:
    return "'and'";
  case TokenKind::kw_or:
    return "'or'";
  case TokenKind::kw_not:
    return "'not'";
  case TokenKind::kw_select:
    return "'select'";
  case TokenKind::kw_sum:
    return "'sum'";
  case TokenKind::kw_max:
    return "'max'";
  case TokenKind::kw_min:
    return "'min'";
  case TokenKind::kw_mean:
    return "'mean'";
  case TokenKind::kw_logsumexp:
    return "'logsumexp'";
  case TokenKind::kw_softmax:
    return "'softmax'";
  case TokenKind::kw_normalize:
    return "'normalize'";
  case TokenKind::kw_sink:
    return "'sink'";
  }
  return "a token";
}

Lexer::Lexer(SourceMgr &sourceMgr, StringRef buffer)
    : sourceMgr(sourceMgr), cur(buffer.begin()), end(buffer.end()) {}

Token Lexer::makeToken(TokenKind kind, const char *start) {
  Token tok;
  tok.kind = kind;
  tok.spelling = StringRef(start, cur - start);
  tok.startsLine = atLineStart;
  atLineStart = false;
  return tok;
}

Token Lexer::lexError(const char *start, const llvm::Twine &message) {
  ++numErrors;
  sourceMgr.PrintMessage(SMLoc::getFromPointer(start), SourceMgr::DK_Error,
                         message);
  return makeToken(TokenKind::error, start);
}

static bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool isDigit(char c) { return c >= '0' && c <= '9'; }
static bool isIdentChar(char c) { return isIdentStart(c) || isDigit(c); }

Token Lexer::lex() {
  while (true) {
    // Skip white space and comments, remembering line breaks.
    while (cur != end) {
      char c = *cur;
      if (c == '\n') {
        atLineStart = true;
        ++cur;
      } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
        ++cur;
      } else if (c == '/' && cur + 1 != end && cur[1] == '/') {
        while (cur != end && *cur != '\n')
          ++cur;
      } else {
        break;
      }
    }
    const char *start = cur;
    if (cur == end)
      return makeToken(TokenKind::eof, start);
    char c = *cur++;
    if (isIdentStart(c))
      return lexIdentifier(start);
    if (isDigit(c))
      return lexNumber(start);
    auto twoChar = [&](char next, TokenKind two, TokenKind one) {
      if (cur != end && *cur == next) {
        ++cur;
        return makeToken(two, start);
      }
      return makeToken(one, start);
    };
    switch (c) {
    case '[':
      return makeToken(TokenKind::l_square, start);
    case ']':
      return makeToken(TokenKind::r_square, start);
    case '(':
      return makeToken(TokenKind::l_paren, start);
    case ')':
      return makeToken(TokenKind::r_paren, start);
    case '{':
      return makeToken(TokenKind::l_brace, start);
    case '}':
      return makeToken(TokenKind::r_brace, start);
    case ',':
      return makeToken(TokenKind::comma, start);
    case ':':
      return makeToken(TokenKind::colon, start);
    case '+':
      return makeToken(TokenKind::plus, start);
    case '-':
      return makeToken(TokenKind::minus, start);
    case '*':
      return makeToken(TokenKind::star, start);
    case '/':
      return makeToken(TokenKind::slash, start);
    case '%':
      return makeToken(TokenKind::percent, start);
    case '^':
      return makeToken(TokenKind::caret, start);
    case '@':
      return makeToken(TokenKind::at, start);
    case '=':
      return twoChar('=', TokenKind::equal_equal, TokenKind::equal);
    case '<':
      return twoChar('=', TokenKind::less_equal, TokenKind::less);
    case '>':
      return twoChar('=', TokenKind::greater_equal, TokenKind::greater);
    case '!':
      if (cur != end && *cur == '=') {
        ++cur;
        return makeToken(TokenKind::not_equal, start);
      }
      return lexError(start, "unexpected '!'; write 'not' for negation or "
                             "'!=' for inequality");
    default:
      break;
    }
    std::string text;
    llvm::raw_string_ostream os(text);
    if (c >= 0x20 && c < 0x7f)
      os << "unexpected character '" << c << "'";
    else
      os << "unexpected character with code "
         << llvm::format_hex(static_cast<unsigned char>(c), 4);
    return lexError(start, os.str());
  }
}

Token Lexer::lexIdentifier(const char *start) {
  while (cur != end && isIdentChar(*cur))
    ++cur;
  StringRef spelling(start, cur - start);
  TokenKind kind = llvm::StringSwitch<TokenKind>(spelling)
                       .Case("attention", TokenKind::kw_attention)
                       .Case("dims", TokenKind::kw_dims)
                       .Case("in", TokenKind::kw_in)
                       .Case("param", TokenKind::kw_param)
                       .Case("out", TokenKind::kw_out)
                       .Case("let", TokenKind::kw_let)
                       .Case("keep", TokenKind::kw_keep)
                       .Case("where", TokenKind::kw_where)
                       .Case("and", TokenKind::kw_and)
                       .Case("or", TokenKind::kw_or)
                       .Case("not", TokenKind::kw_not)
                       .Case("select", TokenKind::kw_select)
                       .Case("sum", TokenKind::kw_sum)
                       .Case("max", TokenKind::kw_max)
                       .Case("min", TokenKind::kw_min)
                       .Case("mean", TokenKind::kw_mean)
                       .Case("logsumexp", TokenKind::kw_logsumexp)
                       .Case("softmax", TokenKind::kw_softmax)
                       .Case("normalize", TokenKind::kw_normalize)
                       .Case("sink", TokenKind::kw_sink)
                       .Default(TokenKind::identifier);
  return makeToken(kind, start);
}

Token Lexer::lexNumber(const char *start) {
  bool isFloat = false;
  while (cur != end && isDigit(*cur))
    ++cur;
  if (cur != end && *cur == '.' && cur + 1 != end && isDigit(cur[1])) {
    isFloat = true;
    ++cur;
    while (cur != end && isDigit(*cur))
      ++cur;
  }
  if (cur != end && (*cur == 'e' || *cur == 'E')) {
    const char *exp = cur + 1;
    if (exp != end && (*exp == '+' || *exp == '-'))
      ++exp;
    if (exp != end && isDigit(*exp)) {
      isFloat = true;
      cur = exp;
      while (cur != end && isDigit(*cur))
        ++cur;
    }
  }
  if (cur != end && (isIdentChar(*cur) || *cur == '.')) {
    while (cur != end && (isIdentChar(*cur) || *cur == '.'))
      ++cur;
    ++numErrors;
    sourceMgr.PrintMessage(SMLoc::getFromPointer(start), SourceMgr::DK_Error,
                           "invalid number '" + StringRef(start, cur - start) +
                               "'",
                           llvm::SMRange(SMLoc::getFromPointer(start),
                                         SMLoc::getFromPointer(cur)));
    return makeToken(TokenKind::error, start);
  }
  return makeToken(isFloat ? TokenKind::floating : TokenKind::integer, start);
}
