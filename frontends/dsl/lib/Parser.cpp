//===- Parser.cpp - Parser of the .attn language --------------------------===//

#include "attn/Frontend/Parser.h"
#include "attn/Frontend/Lexer.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/SourceMgr.h"

#include <limits>

using namespace attn::dsl;
using llvm::failure;
using llvm::LogicalResult;
using llvm::SMLoc;
using llvm::SMRange;
using llvm::SourceMgr;
using llvm::StringRef;
using llvm::success;

std::optional<ElemType> attn::dsl::parseElemType(StringRef name) {
  return llvm::StringSwitch<std::optional<ElemType>>(name)
      .Case("f16", ElemType::F16)
      .Case("bf16", ElemType::BF16)
      .Case("f32", ElemType::F32)
      .Case("f64", ElemType::F64)
      .Case("i1", ElemType::I1)
      .Case("i8", ElemType::I8)
      .Case("i32", ElemType::I32)
      .Case("i64", ElemType::I64)
      .Default(std::nullopt);
}

StringRef attn::dsl::stringifyElemType(ElemType type) {
  switch (type) {
  case ElemType::F16:
    return "f16";
  case ElemType::BF16:
    return "bf16";
  case ElemType::F32:
    return "f32";
  case ElemType::F64:
    return "f64";
  case ElemType::I1:
    return "i1";
  case ElemType::I8:
    return "i8";
  case ElemType::I32:
    return "i32";
  case ElemType::I64:
    return "i64";
  }
  return "?";
}

namespace {

/// Scalar functions: name, builtin and number of arguments.
struct BuiltinInfo {
  StringRef name;
  Builtin builtin;
  unsigned arity;
};

const BuiltinInfo kBuiltins[] = {
    {"exp", Builtin::Exp, 1},           {"log", Builtin::Log, 1},
    {"sqrt", Builtin::Sqrt, 1},         {"rsqrt", Builtin::Rsqrt, 1},
    {"tanh", Builtin::Tanh, 1},         {"sigmoid", Builtin::Sigmoid, 1},
    {"softplus", Builtin::Softplus, 1}, {"relu", Builtin::Relu, 1},
    {"abs", Builtin::Abs, 1},           {"min", Builtin::Min, 2},
    {"max", Builtin::Max, 2},           {"select", Builtin::Select, 3},
};

/// The most errors one run reports; the rest would mostly be follow-ups.
constexpr unsigned kMaxErrors = 20;

class Parser {
public:
  Parser(SourceMgr &sourceMgr, StringRef buffer)
      : sourceMgr(sourceMgr), lexer(sourceMgr, buffer) {
    consume();
  }

  LogicalResult parse(Spec &spec);

private:
  //===--------------------------------------------------------------------===//
  // Tokens and diagnostics
  //===--------------------------------------------------------------------===//

  void consume() {
    prevEnd = tok.spelling.data() ? tok.getEndLoc() : SMLoc();
    // Lexical errors were reported by the lexer; skip their tokens so that
    // the parser sees a clean stream (the run fails anyway).
    do {
      tok = lexer.lex();
    } while (tok.is(TokenKind::error));
  }

  bool consumeIf(TokenKind kind) {
    if (!tok.is(kind))
      return false;
    consume();
    return true;
  }

  /// Reports an error at `range` (underlined), unless too many were.
  void emitError(SMRange range, const llvm::Twine &message) {
    ++numErrors;
    if (numErrors > kMaxErrors)
      return;
    if (numErrors == kMaxErrors) {
      sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Error,
                             "too many errors; stopping here");
      return;
    }
    sourceMgr.PrintMessage(range.Start, SourceMgr::DK_Error, message, {range});
  }

  /// Describes the current token for "expected X, found Y" messages.
  std::string describeCurrent() {
    if (tok.is(TokenKind::eof))
      return "end of file";
    return "'" + tok.spelling.str() + "'";
  }

  LogicalResult expect(TokenKind kind, StringRef context) {
    if (consumeIf(kind))
      return success();
    emitError(tok.getRange(), "expected " + describeTokenKind(kind) + " " +
                                  context + ", found " + describeCurrent());
    return failure();
  }

  LogicalResult expectIdentifier(std::string &name, SMRange &range,
                                 StringRef what) {
    if (!tok.is(TokenKind::identifier)) {
      if (tok.isKeyword())
        emitError(tok.getRange(), "expected " + what + ", found keyword " +
                                      describeCurrent() +
                                      " (keywords cannot be names)");
      else
        emitError(tok.getRange(),
                  "expected " + what + ", found " + describeCurrent());
      return failure();
    }
    name = tok.spelling.str();
    range = tok.getRange();
    consume();
    return success();
  }

  SMRange rangeFrom(SMLoc start) { return {start, prevEnd}; }

  //===--------------------------------------------------------------------===//
  // Declarations and statements
  //===--------------------------------------------------------------------===//

  LogicalResult parseItem(Spec &spec);
  LogicalResult parseDims(Spec &spec);
  LogicalResult parseTensorDecl(Spec &spec, bool isOutput);
  LogicalResult parseParam(Spec &spec);
  LogicalResult parseElemTypeName(ElemType &type, SMRange &range);
  LogicalResult parseKeep(Spec &spec, SMLoc start,
                          std::vector<Annotation> annotations);
  LogicalResult parseAnnotation(Annotation &annotation);
  LogicalResult parseIndexDecl(IndexDecl &decl);
  LogicalResult parseSignedInteger(int64_t &value, SMRange &range);
  void skipToNextLine(const char *statementStart);

  //===--------------------------------------------------------------------===//
  // Expressions
  //===--------------------------------------------------------------------===//

  /// Bounds the parser's recursion.
  struct DepthGuard {
    Parser &parser;
    explicit DepthGuard(Parser &parser) : parser(parser) { ++parser.depth; }
    ~DepthGuard() { --parser.depth; }
  };
  bool tooDeep() {
    if (depth <= kMaxExprDepth)
      return false;
    reportTooDeep(tok.getRange());
    return true;
  }
  void reportTooDeep(SMRange range) {
    if (reportedTooDeep)
      return;
    reportedTooDeep = true;
    emitError(range, "expression is nested too deeply (more than " +
                         llvm::Twine(kMaxExprDepth) +
                         " levels); split it into several statements");
  }

  ExprPtr parseExpr();
  ExprPtr parseOr();
  ExprPtr parseAnd();
  ExprPtr parseNot();
  ExprPtr parseComparison();
  ExprPtr parseAdditive();
  ExprPtr parseMultiplicative();
  ExprPtr parseNegation();
  ExprPtr parsePower();
  ExprPtr parsePrimary();
  ExprPtr parseReduction(SMLoc start, ReduceOp op);
  ExprPtr parseNormalizer(SMLoc start, NormalizerOp op);
  ExprPtr parseCall(SMLoc start, StringRef name, SMRange nameRange);
  LogicalResult parseExprList(std::vector<ExprPtr> &list, TokenKind close,
                              StringRef context);

  /// Finishes a node: sets its range and height; nullptr if it is too deep.
  ExprPtr finish(ExprPtr expr, SMLoc start) {
    expr->range = rangeFrom(start);
    unsigned height = 0;
    for (const ExprPtr &op : expr->operands)
      height = std::max(height, op->height);
    if (expr->sink)
      height = std::max(height, expr->sink->height);
    for (const IndexDecl &decl : expr->indices)
      if (decl.bound)
        height = std::max(height, decl.bound->height);
    expr->height = height + 1;
    if (expr->height > kMaxExprDepth) {
      reportTooDeep(expr->range);
      return nullptr;
    }
    return expr;
  }

  ExprPtr makeBinary(BinaryOp op, ExprPtr lhs, ExprPtr rhs, SMLoc start) {
    auto expr = std::make_unique<Expr>(ExprKind::Binary, SMRange());
    expr->binaryOp = op;
    expr->operands.push_back(std::move(lhs));
    expr->operands.push_back(std::move(rhs));
    return finish(std::move(expr), start);
  }

  SourceMgr &sourceMgr;
  Lexer lexer;
  Token tok;
  SMLoc prevEnd;
  unsigned numErrors = 0;
  unsigned depth = 0;
  bool reportedTooDeep = false;
};

} // namespace

//===----------------------------------------------------------------------===//
// Spec, declarations, statements
//===----------------------------------------------------------------------===//

LogicalResult Parser::parse(Spec &spec) {
  if (failed(expect(TokenKind::kw_attention, "at the start of the spec")))
    return failure();
  if (failed(expectIdentifier(spec.name, spec.nameRange, "the kernel name")) ||
      failed(expect(TokenKind::l_brace, "after the kernel name")))
    return failure();
  while (!tok.is(TokenKind::r_brace) && !tok.is(TokenKind::eof)) {
    const char *start = tok.spelling.data();
    reportedTooDeep = false;
    if (failed(parseItem(spec))) {
      skipToNextLine(start);
      continue;
    }
    if (!tok.startsLine && !tok.is(TokenKind::r_brace) &&
        !tok.is(TokenKind::eof)) {
      emitError(tok.getRange(), "expected the end of the statement, found " +
                                    describeCurrent());
      skipToNextLine(start);
    }
  }
  if (succeeded(expect(TokenKind::r_brace, "at the end of the spec")) &&
      !tok.is(TokenKind::eof))
    emitError(tok.getRange(),
              "unexpected " + describeCurrent() + " after the end of the spec");
  if (numErrors || lexer.getNumErrors())
    return failure();
  return success();
}

void Parser::skipToNextLine(const char *statementStart) {
  if (tok.spelling.data() == statementStart && !tok.is(TokenKind::eof) &&
      !tok.is(TokenKind::r_brace))
    consume();
  while (!tok.is(TokenKind::eof) && !tok.startsLine)
    consume();
}

LogicalResult Parser::parseItem(Spec &spec) {
  SMLoc start = tok.getLoc();
  switch (tok.kind) {
  case TokenKind::kw_dims:
    return parseDims(spec);
  case TokenKind::kw_in:
    return parseTensorDecl(spec, /*isOutput=*/false);
  case TokenKind::kw_out:
    return parseTensorDecl(spec, /*isOutput=*/true);
  case TokenKind::kw_param:
    return parseParam(spec);
  case TokenKind::kw_let: {
    consume();
    Stmt stmt(StmtKind::Let, SMRange());
    if (failed(expectIdentifier(stmt.target, stmt.targetRange,
                                "a name after 'let'")) ||
        failed(expect(TokenKind::equal, "after the let name")))
      return failure();
    stmt.value = parseExpr();
    if (!stmt.value)
      return failure();
    stmt.range = rangeFrom(start);
    spec.stmts.push_back(std::move(stmt));
    return success();
  }
  case TokenKind::at: {
    std::vector<Annotation> annotations;
    while (tok.is(TokenKind::at)) {
      Annotation annotation;
      if (failed(parseAnnotation(annotation)))
        return failure();
      annotations.push_back(std::move(annotation));
    }
    if (!tok.is(TokenKind::kw_keep)) {
      emitError(tok.getRange(), "expected 'keep' after annotations (they "
                                "apply only to masks), found " +
                                    describeCurrent());
      return failure();
    }
    return parseKeep(spec, start, std::move(annotations));
  }
  case TokenKind::kw_keep:
    return parseKeep(spec, start, {});
  case TokenKind::identifier: {
    Stmt stmt(StmtKind::Assign, SMRange());
    stmt.target = tok.spelling.str();
    stmt.targetRange = tok.getRange();
    consume();
    if (consumeIf(TokenKind::l_square)) {
      stmt.hasIndexList = true;
      if (!tok.is(TokenKind::r_square)) {
        do {
          IndexDecl decl;
          if (failed(parseIndexDecl(decl)))
            return failure();
          stmt.lhsIndices.push_back(std::move(decl));
        } while (consumeIf(TokenKind::comma));
      }
      if (failed(expect(TokenKind::r_square, "after the indices")))
        return failure();
    }
    if (failed(expect(TokenKind::equal, "in the statement")))
      return failure();
    stmt.value = parseExpr();
    if (!stmt.value)
      return failure();
    stmt.range = rangeFrom(start);
    spec.stmts.push_back(std::move(stmt));
    return success();
  }
  default:
    emitError(tok.getRange(), "expected a declaration or a statement, found " +
                                  describeCurrent());
    return failure();
  }
}

LogicalResult Parser::parseSignedInteger(int64_t &value, SMRange &range) {
  SMLoc start = tok.getLoc();
  bool negative = consumeIf(TokenKind::minus);
  if (!tok.is(TokenKind::integer)) {
    emitError(tok.getRange(),
              "expected an integer, found " + describeCurrent());
    return failure();
  }
  uint64_t magnitude;
  if (tok.spelling.getAsInteger(10, magnitude) ||
      magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    emitError(tok.getRange(), "integer literal is too large");
    return failure();
  }
  consume();
  value = negative ? -static_cast<int64_t>(magnitude)
                   : static_cast<int64_t>(magnitude);
  range = rangeFrom(start);
  return success();
}

LogicalResult Parser::parseDims(Spec &spec) {
  consume();
  do {
    DimDecl dim;
    if (failed(expectIdentifier(dim.name, dim.range, "a dim name")))
      return failure();
    if (consumeIf(TokenKind::equal)) {
      int64_t size;
      SMRange range;
      if (failed(parseSignedInteger(size, range)))
        return failure();
      if (size <= 0) {
        emitError(range, "the size of dim '" + dim.name + "' must be positive");
        return failure();
      }
      dim.size = size;
    }
    spec.dims.push_back(std::move(dim));
  } while (consumeIf(TokenKind::comma));
  return success();
}

LogicalResult Parser::parseElemTypeName(ElemType &type, SMRange &range) {
  range = tok.getRange();
  std::optional<ElemType> parsed;
  if (tok.is(TokenKind::identifier))
    parsed = parseElemType(tok.spelling);
  if (!parsed) {
    emitError(range, "expected an element type (f32, f16, bf16, f64, i1, i8, "
                     "i32 or i64), found " +
                         describeCurrent());
    return failure();
  }
  type = *parsed;
  consume();
  return success();
}

LogicalResult Parser::parseTensorDecl(Spec &spec, bool isOutput) {
  consume();
  TensorDecl decl;
  decl.isOutput = isOutput;
  if (failed(expectIdentifier(decl.name, decl.range,
                              isOutput ? "an output name" : "an input name")) ||
      failed(expect(TokenKind::colon, "after the tensor name")) ||
      failed(parseElemTypeName(decl.elemType, decl.typeRange)))
    return failure();
  // A missing shape declares a scalar (rank 0).
  if (consumeIf(TokenKind::l_square)) {
    if (!tok.is(TokenKind::r_square)) {
      do {
        AxisDecl axis;
        axis.range = tok.getRange();
        if (tok.is(TokenKind::identifier)) {
          axis.dim = tok.spelling.str();
          consume();
        } else if (tok.is(TokenKind::integer)) {
          if (failed(parseSignedInteger(axis.size, axis.range)))
            return failure();
          if (axis.size <= 0) {
            emitError(axis.range, "a tensor size must be positive");
            return failure();
          }
        } else {
          emitError(tok.getRange(), "expected a dim name or a size, found " +
                                        describeCurrent());
          return failure();
        }
        decl.shape.push_back(std::move(axis));
      } while (consumeIf(TokenKind::comma));
    }
    if (failed(expect(TokenKind::r_square, "after the shape")))
      return failure();
  }
  (isOutput ? spec.outputs : spec.inputs).push_back(std::move(decl));
  return success();
}

LogicalResult Parser::parseParam(Spec &spec) {
  consume();
  ParamDecl param;
  if (failed(expectIdentifier(param.name, param.range, "a param name")) ||
      failed(expect(TokenKind::colon, "after the param name")) ||
      failed(parseElemTypeName(param.type, param.typeRange)))
    return failure();
  if (param.type != ElemType::I32 && param.type != ElemType::I64 &&
      param.type != ElemType::F32) {
    emitError(param.typeRange, "a param must be i32, i64 or f32, not " +
                                   stringifyElemType(param.type));
    return failure();
  }
  if (consumeIf(TokenKind::equal)) {
    SMLoc start = tok.getLoc();
    bool negative = consumeIf(TokenKind::minus);
    param.hasDefault = true;
    if (tok.is(TokenKind::integer)) {
      int64_t value;
      SMRange range;
      if (failed(parseSignedInteger(value, range)))
        return failure();
      param.intDefault = negative ? -value : value;
      param.floatDefault = static_cast<double>(param.intDefault);
    } else if (tok.is(TokenKind::floating)) {
      if (param.type != ElemType::F32) {
        emitError(tok.getRange(), "the default of integer param '" +
                                      param.name + "' must be an integer");
        return failure();
      }
      double value = 0;
      if (tok.spelling.getAsDouble(value)) {
        emitError(tok.getRange(), "invalid number '" + tok.spelling + "'");
        return failure();
      }
      consume();
      param.floatDefault = negative ? -value : value;
    } else {
      emitError(tok.getRange(),
                "expected a number as the default, found " + describeCurrent());
      return failure();
    }
    param.defaultRange = rangeFrom(start);
    if (param.type == ElemType::I32 &&
        (param.intDefault > std::numeric_limits<int32_t>::max() ||
         param.intDefault < std::numeric_limits<int32_t>::min())) {
      emitError(param.defaultRange, "the default does not fit in i32");
      return failure();
    }
  }
  spec.params.push_back(std::move(param));
  return success();
}

LogicalResult Parser::parseAnnotation(Annotation &annotation) {
  SMLoc start = tok.getLoc();
  consume(); // '@'
  SMRange nameRange;
  if (failed(expectIdentifier(annotation.name, nameRange,
                              "an annotation name after '@'")))
    return failure();
  if (consumeIf(TokenKind::l_paren)) {
    if (!tok.is(TokenKind::r_paren)) {
      do {
        int64_t value;
        SMRange range;
        if (failed(parseSignedInteger(value, range)))
          return failure();
        annotation.args.push_back(value);
      } while (consumeIf(TokenKind::comma));
    }
    if (failed(expect(TokenKind::r_paren, "after the annotation arguments")))
      return failure();
  }
  annotation.range = rangeFrom(start);
  return success();
}

LogicalResult Parser::parseKeep(Spec &spec, SMLoc start,
                                std::vector<Annotation> annotations) {
  consume(); // 'keep'
  Stmt stmt(StmtKind::Keep, SMRange());
  stmt.annotations = std::move(annotations);
  if (failed(expectIdentifier(stmt.target, stmt.targetRange,
                              "the name of the tensor to mask")) ||
      failed(expect(TokenKind::kw_where, "after the masked tensor")))
    return failure();
  stmt.value = parseExpr();
  if (!stmt.value)
    return failure();
  stmt.range = rangeFrom(start);
  spec.stmts.push_back(std::move(stmt));
  return success();
}

LogicalResult Parser::parseIndexDecl(IndexDecl &decl) {
  SMLoc start = tok.getLoc();
  SMRange nameRange;
  if (failed(expectIdentifier(decl.name, nameRange, "an index name")))
    return failure();
  if (consumeIf(TokenKind::less)) {
    DepthGuard guard(*this);
    if (tooDeep())
      return failure();
    decl.bound = parseAdditive();
    if (!decl.bound)
      return failure();
  }
  decl.range = decl.bound ? rangeFrom(start) : nameRange;
  return success();
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

ExprPtr Parser::parseExpr() {
  DepthGuard guard(*this);
  if (tooDeep())
    return nullptr;
  return parseOr();
}

ExprPtr Parser::parseOr() {
  SMLoc start = tok.getLoc();
  ExprPtr lhs = parseAnd();
  while (lhs && consumeIf(TokenKind::kw_or)) {
    ExprPtr rhs = parseAnd();
    if (!rhs)
      return nullptr;
    lhs = makeBinary(BinaryOp::Or, std::move(lhs), std::move(rhs), start);
  }
  return lhs;
}

ExprPtr Parser::parseAnd() {
  SMLoc start = tok.getLoc();
  ExprPtr lhs = parseNot();
  while (lhs && consumeIf(TokenKind::kw_and)) {
    ExprPtr rhs = parseNot();
    if (!rhs)
      return nullptr;
    lhs = makeBinary(BinaryOp::And, std::move(lhs), std::move(rhs), start);
  }
  return lhs;
}

ExprPtr Parser::parseNot() {
  if (!tok.is(TokenKind::kw_not))
    return parseComparison();
  SMLoc start = tok.getLoc();
  consume();
  DepthGuard guard(*this);
  if (tooDeep())
    return nullptr;
  ExprPtr operand = parseNot();
  if (!operand)
    return nullptr;
  auto expr = std::make_unique<Expr>(ExprKind::Unary, SMRange());
  expr->unaryOp = UnaryOp::Not;
  expr->operands.push_back(std::move(operand));
  return finish(std::move(expr), start);
}

static std::optional<BinaryOp> getComparison(TokenKind kind) {
  switch (kind) {
  case TokenKind::less:
    return BinaryOp::Lt;
  case TokenKind::less_equal:
    return BinaryOp::Le;
  case TokenKind::greater:
    return BinaryOp::Gt;
  case TokenKind::greater_equal:
    return BinaryOp::Ge;
  case TokenKind::equal_equal:
    return BinaryOp::Eq;
  case TokenKind::not_equal:
    return BinaryOp::Ne;
  default:
    return std::nullopt;
  }
}

ExprPtr Parser::parseComparison() {
  SMLoc start = tok.getLoc();
  ExprPtr lhs = parseAdditive();
  if (!lhs)
    return nullptr;
  std::optional<BinaryOp> op = getComparison(tok.kind);
  if (!op)
    return lhs;
  consume();
  ExprPtr rhs = parseAdditive();
  if (!rhs)
    return nullptr;
  if (getComparison(tok.kind)) {
    emitError(tok.getRange(), "comparisons do not chain; combine them with "
                              "'and'");
    return nullptr;
  }
  return makeBinary(*op, std::move(lhs), std::move(rhs), start);
}

ExprPtr Parser::parseAdditive() {
  SMLoc start = tok.getLoc();
  ExprPtr lhs = parseMultiplicative();
  while (lhs && (tok.is(TokenKind::plus) || tok.is(TokenKind::minus))) {
    BinaryOp op = tok.is(TokenKind::plus) ? BinaryOp::Add : BinaryOp::Sub;
    consume();
    ExprPtr rhs = parseMultiplicative();
    if (!rhs)
      return nullptr;
    lhs = makeBinary(op, std::move(lhs), std::move(rhs), start);
  }
  return lhs;
}

ExprPtr Parser::parseMultiplicative() {
  SMLoc start = tok.getLoc();
  ExprPtr lhs = parseNegation();
  while (lhs && (tok.is(TokenKind::star) || tok.is(TokenKind::slash) ||
                 tok.is(TokenKind::percent))) {
    BinaryOp op = tok.is(TokenKind::star)    ? BinaryOp::Mul
                  : tok.is(TokenKind::slash) ? BinaryOp::Div
                                             : BinaryOp::Mod;
    consume();
    ExprPtr rhs = parseNegation();
    if (!rhs)
      return nullptr;
    lhs = makeBinary(op, std::move(lhs), std::move(rhs), start);
  }
  return lhs;
}

ExprPtr Parser::parseNegation() {
  if (!tok.is(TokenKind::minus))
    return parsePower();
  SMLoc start = tok.getLoc();
  consume();
  DepthGuard guard(*this);
  if (tooDeep())
    return nullptr;
  ExprPtr operand = parseNegation();
  if (!operand)
    return nullptr;
  auto expr = std::make_unique<Expr>(ExprKind::Unary, SMRange());
  expr->unaryOp = UnaryOp::Neg;
  expr->operands.push_back(std::move(operand));
  return finish(std::move(expr), start);
}

ExprPtr Parser::parsePower() {
  SMLoc start = tok.getLoc();
  ExprPtr base = parsePrimary();
  if (!base || !tok.is(TokenKind::caret))
    return base;
  consume();
  DepthGuard guard(*this);
  if (tooDeep())
    return nullptr;
  // Right associative; the exponent may be negated: 2 ^ -x.
  ExprPtr exponent = parseNegation();
  if (!exponent)
    return nullptr;
  return makeBinary(BinaryOp::Pow, std::move(base), std::move(exponent), start);
}

LogicalResult Parser::parseExprList(std::vector<ExprPtr> &list, TokenKind close,
                                    StringRef context) {
  if (!tok.is(close)) {
    do {
      ExprPtr expr = parseExpr();
      if (!expr)
        return failure();
      list.push_back(std::move(expr));
    } while (consumeIf(TokenKind::comma));
  }
  return expect(close, context);
}

ExprPtr Parser::parsePrimary() {
  SMLoc start = tok.getLoc();
  switch (tok.kind) {
  case TokenKind::integer: {
    uint64_t value;
    if (tok.spelling.getAsInteger(10, value) ||
        value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      emitError(tok.getRange(), "integer literal is too large");
      return nullptr;
    }
    consume();
    auto expr = std::make_unique<Expr>(ExprKind::IntLit, SMRange());
    expr->intValue = static_cast<int64_t>(value);
    return finish(std::move(expr), start);
  }
  case TokenKind::floating: {
    double value = 0;
    if (tok.spelling.getAsDouble(value)) {
      emitError(tok.getRange(), "invalid number '" + tok.spelling + "'");
      return nullptr;
    }
    consume();
    auto expr = std::make_unique<Expr>(ExprKind::FloatLit, SMRange());
    expr->floatValue = value;
    return finish(std::move(expr), start);
  }
  case TokenKind::identifier: {
    std::string name = tok.spelling.str();
    SMRange nameRange = tok.getRange();
    consume();
    if (tok.is(TokenKind::l_paren))
      return parseCall(start, name, nameRange);
    if (consumeIf(TokenKind::l_square)) {
      auto expr = std::make_unique<Expr>(ExprKind::Access, SMRange());
      expr->name = name;
      expr->nameRange = nameRange;
      if (failed(parseExprList(expr->operands, TokenKind::r_square,
                               "after the subscripts")))
        return nullptr;
      return finish(std::move(expr), start);
    }
    auto expr = std::make_unique<Expr>(ExprKind::Name, SMRange());
    expr->name = name;
    expr->nameRange = nameRange;
    return finish(std::move(expr), start);
  }
  case TokenKind::kw_select: {
    SMRange nameRange = tok.getRange();
    consume();
    if (!tok.is(TokenKind::l_paren)) {
      emitError(tok.getRange(),
                "expected '(' after 'select', found " + describeCurrent());
      return nullptr;
    }
    return parseCall(start, "select", nameRange);
  }
  case TokenKind::kw_min:
  case TokenKind::kw_max: {
    bool isMax = tok.is(TokenKind::kw_max);
    SMRange nameRange = tok.getRange();
    consume();
    if (tok.is(TokenKind::l_paren))
      return parseCall(start, isMax ? "max" : "min", nameRange);
    return parseReduction(start, isMax ? ReduceOp::Max : ReduceOp::Min);
  }
  case TokenKind::kw_sum:
    consume();
    return parseReduction(start, ReduceOp::Sum);
  case TokenKind::kw_mean:
    consume();
    return parseReduction(start, ReduceOp::Mean);
  case TokenKind::kw_logsumexp:
    consume();
    return parseReduction(start, ReduceOp::LogSumExp);
  case TokenKind::kw_softmax:
    consume();
    return parseNormalizer(start, NormalizerOp::Softmax);
  case TokenKind::kw_normalize:
    consume();
    return parseNormalizer(start, NormalizerOp::Normalize);
  case TokenKind::l_paren: {
    consume();
    ExprPtr inner = parseExpr();
    if (!inner || failed(expect(TokenKind::r_paren, "to close '('")))
      return nullptr;
    return inner;
  }
  default:
    emitError(tok.getRange(),
              "expected an expression, found " + describeCurrent());
    return nullptr;
  }
}

ExprPtr Parser::parseCall(SMLoc start, StringRef name, SMRange nameRange) {
  const BuiltinInfo *info = nullptr;
  for (const BuiltinInfo &candidate : kBuiltins)
    if (candidate.name == name)
      info = &candidate;
  if (!info) {
    emitError(nameRange, "unknown function '" + name + "'");
    return nullptr;
  }
  consume(); // '('
  auto expr = std::make_unique<Expr>(ExprKind::Call, SMRange());
  expr->name = name.str();
  expr->nameRange = nameRange;
  expr->builtin = info->builtin;
  if (failed(parseExprList(expr->operands, TokenKind::r_paren,
                           "after the arguments")))
    return nullptr;
  if (expr->operands.size() != info->arity) {
    emitError(rangeFrom(start), "'" + name + "' takes " +
                                    llvm::Twine(info->arity) + " argument" +
                                    (info->arity == 1 ? "" : "s") + ", got " +
                                    llvm::Twine(expr->operands.size()));
    return nullptr;
  }
  return finish(std::move(expr), start);
}

ExprPtr Parser::parseReduction(SMLoc start, ReduceOp op) {
  auto expr = std::make_unique<Expr>(ExprKind::Reduce, SMRange());
  expr->reduceOp = op;
  if (failed(expect(TokenKind::l_square, "after the reduction (e.g. "
                                         "'sum[d](...)')")))
    return nullptr;
  do {
    IndexDecl decl;
    if (failed(parseIndexDecl(decl)))
      return nullptr;
    expr->indices.push_back(std::move(decl));
  } while (consumeIf(TokenKind::comma));
  if (failed(expect(TokenKind::r_square, "after the reduced indices")) ||
      failed(expect(TokenKind::l_paren, "before the reduced expression")))
    return nullptr;
  ExprPtr operand = parseExpr();
  if (!operand ||
      failed(expect(TokenKind::r_paren, "after the reduced expression")))
    return nullptr;
  expr->operands.push_back(std::move(operand));
  return finish(std::move(expr), start);
}

ExprPtr Parser::parseNormalizer(SMLoc start, NormalizerOp op) {
  auto expr = std::make_unique<Expr>(ExprKind::Normalizer, SMRange());
  expr->normalizerOp = op;
  StringRef name = op == NormalizerOp::Softmax ? "softmax" : "normalize";
  if (failed(expect(TokenKind::l_square, "after '" + name.str() + "' (e.g. '" +
                                             name.str() + "[n](S)')")))
    return nullptr;
  IndexDecl decl;
  if (failed(parseIndexDecl(decl)))
    return nullptr;
  if (decl.bound) {
    emitError(decl.range, "'" + name + "' takes an index without a range");
    return nullptr;
  }
  expr->indices.push_back(std::move(decl));
  if (tok.is(TokenKind::comma)) {
    emitError(tok.getRange(), "'" + name + "' normalizes along one index");
    return nullptr;
  }
  if (failed(expect(TokenKind::r_square, "after the normalized index")) ||
      failed(expect(TokenKind::l_paren, "before the normalized expression")))
    return nullptr;
  ExprPtr operand = parseExpr();
  if (!operand)
    return nullptr;
  expr->operands.push_back(std::move(operand));
  if (consumeIf(TokenKind::comma)) {
    if (op != NormalizerOp::Softmax) {
      emitError(prevEnd.isValid() ? tok.getRange() : SMRange(),
                "only 'softmax' takes a sink");
      return nullptr;
    }
    if (failed(expect(TokenKind::kw_sink, "after ',' (write 'sink = ...')")) ||
        failed(expect(TokenKind::equal, "after 'sink'")))
      return nullptr;
    expr->sink = parseExpr();
    if (!expr->sink)
      return nullptr;
  }
  if (failed(expect(TokenKind::r_paren, "after the normalized expression")))
    return nullptr;
  return finish(std::move(expr), start);
}

LogicalResult attn::dsl::parseSpec(SourceMgr &sourceMgr, Spec &spec) {
  const llvm::MemoryBuffer *buffer =
      sourceMgr.getMemoryBuffer(sourceMgr.getMainFileID());
  Parser parser(sourceMgr, buffer->getBuffer());
  return parser.parse(spec);
}
