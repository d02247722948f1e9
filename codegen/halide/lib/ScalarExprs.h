//===- ScalarExprs.h - Cascade scalar ops as Halide expressions -*- C++ -*-===//
//
// The scalar ops of cascade bodies (docs/cascade-ir.md: arith, math,
// attn.read) become Halide expressions, with the semantics of the MLIR ops:
// truncating and floored integer division where Halide's is Euclidean, C's
// fmod for remf, NaN-aware float comparisons. The same translator turns the
// arithmetic the normalizer definitions emit into expressions (a
// ScalarTemplate), so the Halide backend shares their math instead of
// re-deriving it.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_LIB_SCALAREXPRS_H
#define ATTN_HALIDE_LIB_SCALAREXPRS_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <Halide.h>

#include <functional>
#include <memory>

namespace attn::halide {

/// The Halide type of a scalar MLIR type; `index` is Int(64), as wide as
/// the values (i64 params) index arithmetic may meet. Coordinates of Funcs
/// are Int(32): subscripts are narrowed once they are inside their axis.
mlir::FailureOr<Halide::Type> getHalideType(mlir::Type type);

/// Translates scalar ops to expressions, op by op, in program order.
class ScalarTranslator {
public:
  /// What a read of a tensor gives at the subscripts (already translated).
  using ReadFn = std::function<mlir::FailureOr<Halide::Expr>(
      mlir::attn::ReadOp, llvm::ArrayRef<Halide::Expr>)>;

  /// Values not translated here are looked up in `parent` (the kernel's
  /// top-level scalars, for a body).
  explicit ScalarTranslator(ReadFn read = nullptr,
                            const ScalarTranslator *parent = nullptr)
      : read(std::move(read)), parent(parent) {}

  void map(mlir::Value value, Halide::Expr expr) { exprs[value] = expr; }
  bool contains(mlir::Value value) const {
    return exprs.count(value) || (parent && parent->contains(value));
  }
  /// The expression of a translated value; an error at `user` otherwise.
  mlir::FailureOr<Halide::Expr> lookup(mlir::Value value,
                                       mlir::Operation *user) const;

  /// Translates `op` and maps its result.
  mlir::LogicalResult translate(mlir::Operation &op);
  /// Translates every op of `block` but its terminator.
  mlir::LogicalResult translateBody(mlir::Block &block);

private:
  mlir::FailureOr<Halide::Expr> translateExpr(mlir::Operation &op);

  ReadFn read;
  const ScalarTranslator *parent;
  llvm::DenseMap<mlir::Value, Halide::Expr> exprs;
};

/// Scalar arithmetic built by an MLIR emitter (the normalizer definitions)
/// on f32 arguments, instantiated on Halide expressions. The ops live in a
/// scratch block that dies with the template.
class ScalarTemplate {
public:
  ScalarTemplate(mlir::MLIRContext *context, unsigned numArgs);
  ~ScalarTemplate();

  mlir::OpBuilder &getBuilder() { return builder; }
  mlir::Location getLoc() const { return loc; }
  mlir::Value getArg(unsigned i) const { return block->getArgument(i); }

  /// `result` (a value the builder made) with the arguments replaced by
  /// `args`.
  mlir::FailureOr<Halide::Expr> instantiate(mlir::Value result,
                                            llvm::ArrayRef<Halide::Expr> args);

private:
  std::unique_ptr<mlir::Block> block;
  mlir::OpBuilder builder;
  mlir::Location loc;
};

} // namespace attn::halide

#endif // ATTN_HALIDE_LIB_SCALAREXPRS_H
