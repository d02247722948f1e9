//===- Frontend.cpp - Entry point of the .attn front end ------------------===//

#include "attn/Frontend/Frontend.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Frontend/MLIRGen.h"
#include "attn/Frontend/Parser.h"
#include "attn/Frontend/Sema.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/Support/SourceMgr.h"

using namespace attn::dsl;

/// Fixes the dims of `options.fixedDims` in `spec`; errors point at the
/// spec's name or at the dim.
static mlir::LogicalResult fixDims(llvm::SourceMgr &sourceMgr, Spec &spec,
                                   const FrontendOptions &options) {
  bool ok = true;
  auto error = [&](llvm::SMLoc where, const llvm::Twine &message) {
    sourceMgr.PrintMessage(where, llvm::SourceMgr::DK_Error,
                           options.fixedDimsOption + ": " + message);
    ok = false;
  };
  for (const auto &[name, size] : options.fixedDims) {
    auto dim = llvm::find_if(
        spec.dims, [&](const DimDecl &decl) { return decl.name == name; });
    if (dim == spec.dims.end())
      error(spec.nameRange.Start, "the spec has no dim '" + name + "'");
    else if (dim->size)
      error(dim->range.Start,
            "dim '" + name + "' is already fixed by the spec");
    else if (size <= 0)
      error(dim->range.Start, "size of dim '" + name +
                                  "' must be positive, got " +
                                  llvm::Twine(size));
    else
      dim->size = size;
  }
  return mlir::success(ok);
}

mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
attn::dsl::compileSpec(llvm::SourceMgr &sourceMgr, mlir::MLIRContext &context,
                       const FrontendOptions &options) {
  if (sourceMgr.getNumBuffers() == 0) {
    sourceMgr.PrintMessage(llvm::SMLoc(), llvm::SourceMgr::DK_Error,
                           "no spec to compile");
    return mlir::failure();
  }
  context.loadDialect<mlir::attn::AttnDialect, mlir::arith::ArithDialect,
                      mlir::math::MathDialect, mlir::tensor::TensorDialect>();
  Spec spec;
  if (mlir::failed(parseSpec(sourceMgr, spec)) ||
      mlir::failed(fixDims(sourceMgr, spec, options)))
    return mlir::failure();
  SemaResult sema;
  if (mlir::failed(checkSpec(sourceMgr, spec, sema)))
    return mlir::failure();
  return generateModule(sourceMgr, context, spec, sema, options);
}
