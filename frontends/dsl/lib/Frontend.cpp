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
  if (mlir::failed(parseSpec(sourceMgr, spec)))
    return mlir::failure();
  SemaResult sema;
  if (mlir::failed(checkSpec(sourceMgr, spec, sema)))
    return mlir::failure();
  return generateModule(sourceMgr, context, spec, sema, options);
}
