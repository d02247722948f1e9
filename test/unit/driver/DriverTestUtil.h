//===- DriverTestUtil.h - Specs for the driver's unit tests -----*- C++ -*-===//

#ifndef ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H
#define ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H

#include "attn/Frontend/Frontend.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <gtest/gtest.h>

namespace attn::test {

/// Loads every dialect a kernel is compiled through into `context`.
inline void loadCodegenDialects(mlir::MLIRContext &context) {
  mlir::DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
}

/// `spec` through the front end; null, with a test failure, when it does not
/// compile.
inline mlir::OwningOpRef<mlir::ModuleOp> parseSpec(mlir::MLIRContext &context,
                                                   llvm::StringRef spec) {
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(spec),
                               llvm::SMLoc());
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
      dsl::compileSpec(sourceMgr, context);
  if (mlir::failed(module)) {
    ADD_FAILURE() << "the spec does not compile";
    return nullptr;
  }
  return std::move(*module);
}

} // namespace attn::test

#endif // ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H
