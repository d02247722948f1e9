//===- Frontend.h - Entry point of the .attn front end ----------*- C++ -*-===//
//
// compileSpec runs the whole front end: lexer and parser (Parser.h), semantic
// checks (Sema.h) and IR generation (MLIRGen.h), and gives a module holding
// one attn.kernel in the form of docs/cascade-ir.md.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_FRONTEND_H
#define ATTN_FRONTEND_FRONTEND_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Support/LLVM.h"

#include <map>
#include <optional>
#include <string>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace mlir {
class MLIRContext;
} // namespace mlir

namespace attn::dsl {

struct FrontendOptions {
  /// When set, every float input/output tensor (f16, bf16, f32) takes this
  /// element type ("f32", "bf16", "f16" or "f64") instead of the declared
  /// one, so that one spec can be compiled for several precisions.
  std::optional<std::string> floatTypeOverride;
  /// Dims fixed at compile time, as if the spec's `dims` line read
  /// `NAME = SIZE`: the tensors get static extents (the GPU backend needs
  /// static head dims), with no second way of fixing a dim.
  std::map<std::string, int64_t> fixedDims;
  /// How the caller's option that fills `fixedDims` is spelt ("--shape",
  /// "shapes="), for the errors about it.
  std::string fixedDimsOption = "--shape";
};

/// Parses, checks and lowers the spec in `sourceMgr`'s main buffer into a
/// module holding one attn.kernel. Errors are reported through `sourceMgr`
/// (llvm::SourceMgr::PrintMessage: "file:line:col: error: message" + the
/// source line + a caret/underline) and give failure(). Never crashes, never
/// asserts, on any input.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
compileSpec(llvm::SourceMgr &sourceMgr, mlir::MLIRContext &context,
            const FrontendOptions &options = {});

} // namespace attn::dsl

#endif // ATTN_FRONTEND_FRONTEND_H
