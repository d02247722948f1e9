//===- MLIRGen.h - From checked .attn specs to the attn dialect -*- C++ -*-===//
//
// MLIRGen lowers a spec that Sema accepted to one attn.kernel in the cascade
// form fixed by docs/cascade-ir.md: f32 compute, index arithmetic on
// `index`, nested reductions hoisted into their own attn.einsum, masks as
// attn.keep, normalizers as attn.softmax / attn.normalize. It reports no user
// errors: anything it cannot lower is a Sema bug, reported as an internal
// error.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_FRONTEND_MLIRGEN_H
#define ATTN_FRONTEND_MLIRGEN_H

#include "attn/Frontend/AST.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Frontend/Sema.h"

namespace attn::dsl {

/// Generates the module for `spec`, which `checkSpec` accepted with `sema`.
/// Op locations are FileLineColLoc into `sourceMgr`'s main buffer.
mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>>
generateModule(llvm::SourceMgr &sourceMgr, mlir::MLIRContext &context,
               const Spec &spec, const SemaResult &sema,
               const FrontendOptions &options);

} // namespace attn::dsl

#endif // ATTN_FRONTEND_MLIRGEN_H
