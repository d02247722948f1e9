//===- Sema.h - Semantic checks of the .attn language -----------*- C++ -*-===//
//
// Sema resolves names, infers index ranges (Tensor Comprehensions style: an
// index that is a whole subscript of a tensor axis takes that axis's size),
// assigns scalar kinds and rejects everything MLIRGen could not lower. Its
// results (SemaResult plus the annotations it writes into the AST) are all
// that MLIRGen needs, so MLIRGen never reports user errors.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_SEMA_H
#define ATTN_FRONTEND_SEMA_H

#include "attn/Frontend/AST.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/LogicalResult.h"

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace attn::dsl {

/// The size of an index range or of a tensor axis.
struct Extent {
  enum class Kind {
    Const, ///< a literal size (`value`)
    Dim,   ///< the dim `dim` (fixed dims also set `value`)
    Expr,  ///< an expression over dims and literals (`expr`)
  };
  Kind kind = Kind::Const;
  int64_t value = 0;
  unsigned dim = 0;
  const attn::dsl::Expr *expr = nullptr;
  /// Two extents with the same key are the same size.
  std::string key;
  /// How diagnostics print the size.
  std::string text;
};

/// What Sema found out about one statement (unused for lets).
struct StmtInfo {
  /// The indices of the defined tensor (Assign) or of the kept tensor
  /// (Keep), in order.
  std::vector<std::string> outIndices;
  /// The range of every index the statement uses, reductions included.
  llvm::StringMap<Extent> ranges;
  /// The kind of scalar the defined tensor holds.
  ScalarKind valueType = ScalarKind::Float;
  /// For a statement that defines an integer or i1 output: the declared
  /// element type the defined tensor holds.
  std::optional<ElemType> declaredResultType;
};

/// The result of checking a spec.
struct SemaResult {
  /// Parallel to Spec::stmts.
  std::vector<StmtInfo> stmts;
};

/// The largest expression (in nodes, lets expanded) one statement may have.
constexpr unsigned kMaxExpandedNodes = 1u << 16;

/// Checks `spec`, reporting every error found through `sourceMgr` and
/// annotating the AST. Returns failure if any error was reported.
llvm::LogicalResult checkSpec(llvm::SourceMgr &sourceMgr, Spec &spec,
                              SemaResult &result);

} // namespace attn::dsl

#endif // ATTN_FRONTEND_SEMA_H
