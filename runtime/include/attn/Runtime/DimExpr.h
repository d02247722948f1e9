//===- DimExpr.h - Integer formulas over dims -------------------*- C++ -*-===//
//
// Grid sizes and constraints in a package manifest are small integer
// formulas over the kernel's dims, e.g. "ceil(M/128)" or "H % G == 0". They
// are parsed once when the package is read (so that an unknown dim is a
// package error, not a launch error) and evaluated at every launch.
//
// Grammar: integers, dim names, + - * / % (truncating division), unary -,
// parentheses, comparisons == != < <= > >= (1 or 0), and the functions
// ceil(a/b) (ceiling division), cdiv(a, b), min(a, b), max(a, b).
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_DIMEXPR_H
#define ATTN_RUNTIME_DIMEXPR_H

#include "attn/Runtime/Status.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

/// A parsed formula. Nodes live in a flat vector (children before parents),
/// so evaluation is a loop and destruction never recurses.
class DimExpr {
public:
  /// Parses `text`; identifiers must be in `dimNames`.
  static Status parse(std::string_view text,
                      const std::vector<std::string> &dimNames, DimExpr &out);

  /// Evaluates with `dimValues[i]` the value of `dimNames[i]`. Fails on
  /// division by zero and on int64 overflow.
  Status evaluate(const std::vector<int64_t> &dimValues, int64_t &out) const;

  const std::string &getText() const { return text; }

  enum class Op : uint8_t {
    Const,
    Dim,
    Neg,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    CeilDiv,
    Min,
    Max,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge
  };
  struct Node {
    Op op;
    int64_t value; ///< Const: the value; Dim: the dim index.
    int32_t lhs, rhs;
  };

private:
  friend class DimExprParser;
  std::string text;
  std::vector<Node> nodes;
};

} // namespace attn

#endif // ATTN_RUNTIME_DIMEXPR_H
