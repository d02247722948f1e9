//===- AST.h - Syntax tree of the .attn language ----------------*- C++ -*-===//
//
// The parser builds this tree; Sema resolves names and fills the fields
// marked "set by Sema"; MLIRGen reads both. Nodes keep source ranges so that
// every diagnostic and every MLIR location points back at the spec text.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_AST_H
#define ATTN_FRONTEND_AST_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn::dsl {

/// Element types a tensor or param may declare.
enum class ElemType { F16, BF16, F32, F64, I1, I8, I32, I64 };

/// Parses an element type name ("bf16"); nullopt if it is not one.
std::optional<ElemType> parseElemType(llvm::StringRef name);
/// The spelling of an element type.
llvm::StringRef stringifyElemType(ElemType type);
inline bool isFloatElemType(ElemType type) {
  return type == ElemType::F16 || type == ElemType::BF16 ||
         type == ElemType::F32 || type == ElemType::F64;
}

/// The kind of scalar an expression computes: integers (indices, dims,
/// integer tensors; `index` in the IR), floats (f32 in the IR) or booleans.
enum class ScalarKind { Int, Float, Bool };

enum class ExprKind {
  IntLit,     ///< `12`
  FloatLit,   ///< `0.125`
  Name,       ///< `n`, `D`, `window`, `g` (a let), `S` (a whole tensor)
  Access,     ///< `K[b, g, n, d]`
  Unary,      ///< `-x`, `not p`
  Binary,     ///< `a + b`, `a < b`, `p and q`
  Call,       ///< `exp(x)`, `max(a, b)`, `select(c, a, b)`
  Reduce,     ///< `sum[d](...)`
  Normalizer, ///< `softmax[n](S, sink = E)`, `normalize[n](E)`
};

enum class UnaryOp { Neg, Not };
enum class BinaryOp {
  Add,
  Sub,
  Mul,
  Div,
  Mod,
  Pow,
  Lt,
  Le,
  Gt,
  Ge,
  Eq,
  Ne,
  And,
  Or
};
enum class ReduceOp { Sum, Max, Min, Mean, LogSumExp };
enum class NormalizerOp { Softmax, Normalize };

/// Scalar functions the language knows.
enum class Builtin {
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Tanh,
  Sigmoid,
  Softplus,
  Relu,
  Abs,
  Min,
  Max,
  Select
};

/// What a `Name` refers to (set by Sema).
enum class NameRef { Unresolved, Index, Dim, Param, Let, Tensor };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

/// An index bound by a reduction or on the left of a statement, with an
/// optional explicit range (`t < 64`).
struct IndexDecl {
  std::string name;
  llvm::SMRange range;
  ExprPtr bound;
};

/// An expression node. One struct for all kinds keeps the tree simple; the
/// fields used by each kind are documented by ExprKind.
struct Expr {
  ExprKind kind;
  /// The text of the whole expression, for diagnostics and locations.
  llvm::SMRange range;
  int64_t intValue = 0;
  double floatValue = 0;
  /// Name, tensor of an Access, function of a Call.
  std::string name;
  llvm::SMRange nameRange;
  UnaryOp unaryOp = UnaryOp::Neg;
  BinaryOp binaryOp = BinaryOp::Add;
  ReduceOp reduceOp = ReduceOp::Sum;
  NormalizerOp normalizerOp = NormalizerOp::Softmax;
  Builtin builtin = Builtin::Exp;
  /// Reduced or normalized indices of a Reduce / Normalizer.
  std::vector<IndexDecl> indices;
  /// Operands, subscripts or arguments, in source order.
  std::vector<ExprPtr> operands;
  /// `sink = ...` of a softmax.
  ExprPtr sink;
  /// The height of the tree below this node (a leaf has height 1).
  unsigned height = 1;

  // Set by Sema.
  NameRef ref = NameRef::Unresolved;
  /// Dim, param or let number for Name nodes.
  unsigned refId = 0;
  ScalarKind type = ScalarKind::Float;
  /// Free indices of a Reduce, in order of first appearance; for a Name
  /// that names a whole computed tensor, that tensor's indices.
  std::vector<std::string> freeIndices;

  explicit Expr(ExprKind kind, llvm::SMRange range)
      : kind(kind), range(range) {}
  llvm::SMLoc getLoc() const { return range.Start; }
};

/// `dims B, H, D = 128`: one entry per dim.
struct DimDecl {
  std::string name;
  llvm::SMRange range;
  std::optional<int64_t> size;
};

/// One axis of a declared tensor shape: a dim name or a literal size.
struct AxisDecl {
  std::string dim; ///< empty for a literal size
  int64_t size = 0;
  llvm::SMRange range;
};

/// `in Q: bf16[B, H, M, D]` or `out O: ...`.
struct TensorDecl {
  std::string name;
  llvm::SMRange range;
  ElemType elemType = ElemType::F32;
  llvm::SMRange typeRange;
  std::vector<AxisDecl> shape;
  bool isOutput = false;
};

/// `param window: i32 = 1024`.
struct ParamDecl {
  std::string name;
  llvm::SMRange range;
  ElemType type = ElemType::I32;
  llvm::SMRange typeRange;
  /// The default, if any: `intDefault` for integer params, `floatDefault`
  /// for f32 params.
  bool hasDefault = false;
  int64_t intDefault = 0;
  double floatDefault = 0;
  llvm::SMRange defaultRange;
};

/// `@sinks(4)`, `@block(128, 128)`, `@per_head`.
struct Annotation {
  std::string name;
  llvm::SMRange range;
  std::vector<int64_t> args;
};

enum class StmtKind { Let, Assign, Keep };

/// A statement of the kernel body.
struct Stmt {
  StmtKind kind;
  llvm::SMRange range;
  /// The let name, the defined tensor, or the kept tensor.
  std::string target;
  llvm::SMRange targetRange;
  /// `T[i, j] = ...`: the indices on the left (with optional ranges).
  bool hasIndexList = false;
  std::vector<IndexDecl> lhsIndices;
  /// The right-hand side, the let value, or the keep predicate.
  ExprPtr value;
  std::vector<Annotation> annotations;

  Stmt(StmtKind kind, llvm::SMRange range) : kind(kind), range(range) {}
};

/// A whole spec: `attention NAME { ... }`.
struct Spec {
  std::string name;
  llvm::SMRange nameRange;
  std::vector<DimDecl> dims;
  std::vector<TensorDecl> inputs;
  std::vector<TensorDecl> outputs;
  std::vector<ParamDecl> params;
  std::vector<Stmt> stmts;
};

} // namespace attn::dsl

#endif // ATTN_FRONTEND_AST_H
