//===- DimExpr.cpp - Integer formulas over dims ---------------------------===//

#include "attn/Runtime/DimExpr.h"

#include <cctype>

namespace attn {

/// Recursive descent with a depth limit: the input comes from a file that may
/// be hostile.
class DimExprParser {
public:
  DimExprParser(std::string_view text, const std::vector<std::string> &dims,
                DimExpr &out)
      : text(text), dims(dims), out(out) {}

  Status run() {
    int32_t root;
    if (Status s = parseCompare(root, 0))
      return s;
    skipSpace();
    if (pos != text.size())
      return error("unexpected '" + std::string(1, text[pos]) + "'");
    (void)root; // The root is the last node pushed.
    return Status::ok();
  }

private:
  using Op = DimExpr::Op;
  static constexpr int kMaxDepth = 32;

  Status error(const std::string &what) const {
    return invalidPackage("formula \"" + std::string(text) + "\": " + what);
  }

  void skipSpace() {
    while (pos < text.size() &&
           std::isspace(static_cast<unsigned char>(text[pos])))
      ++pos;
  }

  bool consume(std::string_view tok) {
    skipSpace();
    if (text.substr(pos, tok.size()) != tok)
      return false;
    pos += tok.size();
    return true;
  }

  int32_t push(Op op, int64_t value, int32_t lhs = -1, int32_t rhs = -1) {
    out.nodes.push_back({op, value, lhs, rhs});
    return static_cast<int32_t>(out.nodes.size() - 1);
  }

  Status parseCompare(int32_t &result, int depth) {
    if (Status s = parseAdd(result, depth))
      return s;
    static const std::pair<const char *, Op> ops[] = {
        {"==", Op::Eq}, {"!=", Op::Ne}, {"<=", Op::Le},
        {">=", Op::Ge}, {"<", Op::Lt},  {">", Op::Gt}};
    for (const auto &[tok, op] : ops) {
      if (consume(tok)) {
        int32_t rhs;
        if (Status s = parseAdd(rhs, depth))
          return s;
        result = push(op, 0, result, rhs);
        return Status::ok();
      }
    }
    return Status::ok();
  }

  Status parseAdd(int32_t &result, int depth) {
    if (Status s = parseMul(result, depth))
      return s;
    while (true) {
      Op op;
      if (consume("+"))
        op = Op::Add;
      else if (consume("-"))
        op = Op::Sub;
      else
        return Status::ok();
      int32_t rhs;
      if (Status s = parseMul(rhs, depth))
        return s;
      result = push(op, 0, result, rhs);
    }
  }

  Status parseMul(int32_t &result, int depth) {
    if (Status s = parseUnary(result, depth))
      return s;
    while (true) {
      Op op;
      if (consume("*"))
        op = Op::Mul;
      else if (consume("/"))
        op = Op::Div;
      else if (consume("%"))
        op = Op::Rem;
      else
        return Status::ok();
      int32_t rhs;
      if (Status s = parseUnary(rhs, depth))
        return s;
      result = push(op, 0, result, rhs);
    }
  }

  Status parseUnary(int32_t &result, int depth) {
    if (depth > kMaxDepth)
      return error("nested too deeply");
    if (consume("-")) {
      int32_t operand;
      if (Status s = parseUnary(operand, depth + 1))
        return s;
      result = push(Op::Neg, 0, operand);
      return Status::ok();
    }
    return parsePrimary(result, depth);
  }

  Status parsePrimary(int32_t &result, int depth) {
    skipSpace();
    if (pos >= text.size())
      return error("unexpected end");
    char c = text[pos];
    if (c == '(') {
      ++pos;
      if (Status s = parseCompare(result, depth + 1))
        return s;
      if (!consume(")"))
        return error("expected ')'");
      return Status::ok();
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      int64_t v = 0;
      while (pos < text.size() &&
             std::isdigit(static_cast<unsigned char>(text[pos]))) {
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, text[pos] - '0', &v))
          return error("integer too large");
        ++pos;
      }
      result = push(Op::Const, v);
      return Status::ok();
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t start = pos;
      while (pos < text.size() &&
             (std::isalnum(static_cast<unsigned char>(text[pos])) ||
              text[pos] == '_'))
        ++pos;
      std::string name(text.substr(start, pos - start));
      if (consume("("))
        return parseCall(name, result, depth);
      for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] == name) {
          result = push(Op::Dim, static_cast<int64_t>(i));
          return Status::ok();
        }
      }
      return error("unknown dim '" + name + "'");
    }
    return error("unexpected '" + std::string(1, c) + "'");
  }

  Status parseCall(const std::string &name, int32_t &result, int depth) {
    int32_t a, b;
    if (name == "ceil") {
      if (Status s = parseCompare(a, depth + 1))
        return s;
      if (!consume(")"))
        return error("expected ')' after ceil's argument");
      // ceil(x / y) is ceiling division; ceil of an integer is itself.
      DimExpr::Node &n = out.nodes[a];
      if (n.op == Op::Div)
        n.op = Op::CeilDiv;
      result = a;
      return Status::ok();
    }
    Op op;
    if (name == "cdiv")
      op = Op::CeilDiv;
    else if (name == "min")
      op = Op::Min;
    else if (name == "max")
      op = Op::Max;
    else
      return error("unknown function '" + name + "'");
    if (Status s = parseCompare(a, depth + 1))
      return s;
    if (!consume(","))
      return error("expected ',' in " + name + "(a, b)");
    if (Status s = parseCompare(b, depth + 1))
      return s;
    if (!consume(")"))
      return error("expected ')' after " + name + "'s arguments");
    result = push(op, 0, a, b);
    return Status::ok();
  }

  std::string_view text;
  const std::vector<std::string> &dims;
  DimExpr &out;
  size_t pos = 0;
};

Status DimExpr::parse(std::string_view text,
                      const std::vector<std::string> &dimNames, DimExpr &out) {
  out = DimExpr();
  out.text = std::string(text);
  return DimExprParser(text, dimNames, out).run();
}

Status DimExpr::evaluate(const std::vector<int64_t> &dimValues,
                         int64_t &out) const {
  if (nodes.empty())
    return invalidPackage("empty formula");
  std::vector<int64_t> v(nodes.size());
  auto fail = [&](const char *what) {
    return invalidArgument("formula \"" + text + "\": " + what);
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node &n = nodes[i];
    int64_t a = n.lhs >= 0 ? v[n.lhs] : 0, b = n.rhs >= 0 ? v[n.rhs] : 0, r = 0;
    switch (n.op) {
    case Op::Const:
      r = n.value;
      break;
    case Op::Dim:
      if (n.value < 0 || static_cast<size_t>(n.value) >= dimValues.size())
        return fail("dim index out of range");
      r = dimValues[n.value];
      break;
    case Op::Neg:
      if (__builtin_sub_overflow(int64_t(0), a, &r))
        return fail("overflow");
      break;
    case Op::Add:
      if (__builtin_add_overflow(a, b, &r))
        return fail("overflow");
      break;
    case Op::Sub:
      if (__builtin_sub_overflow(a, b, &r))
        return fail("overflow");
      break;
    case Op::Mul:
      if (__builtin_mul_overflow(a, b, &r))
        return fail("overflow");
      break;
    case Op::Div:
    case Op::Rem:
    case Op::CeilDiv:
      if (b == 0)
        return fail("division by zero");
      if (a == INT64_MIN && b == -1)
        return fail("overflow");
      if (n.op == Op::Div)
        r = a / b;
      else if (n.op == Op::Rem)
        r = a % b;
      else
        r = a / b + ((a % b != 0) && ((a < 0) == (b < 0)) ? 1 : 0);
      break;
    case Op::Min:
      r = a < b ? a : b;
      break;
    case Op::Max:
      r = a < b ? b : a;
      break;
    case Op::Eq:
      r = a == b;
      break;
    case Op::Ne:
      r = a != b;
      break;
    case Op::Lt:
      r = a < b;
      break;
    case Op::Le:
      r = a <= b;
      break;
    case Op::Gt:
      r = a > b;
      break;
    case Op::Ge:
      r = a >= b;
      break;
    }
    v[i] = r;
  }
  out = v.back();
  return Status::ok();
}

} // namespace attn
