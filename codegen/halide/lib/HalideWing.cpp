//===- HalideWing.cpp - libattnc_halide.so, the Halide backend's plugin ---===//
//
// The entry point of the plugin (see HalideWing.h): each compile parses the
// kernel into a context of its own and runs compileHalideKernelObject on it.
//
//===----------------------------------------------------------------------===//

#include "attn/Halide/HalideWing.h"
#include "attn/Halide/HalideKernel.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "CodegenFingerprint.h"

using namespace attn;

namespace {

void compileKernel(llvm::StringRef bytecode,
                   const HalideScheduleOptions &options,
                   HalideWingResult &result) {
  mlir::DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  mlir::MLIRContext context(registry);
  context.printOpOnDiagnostic(false);
  // Errors come back in the result (compileHalideKernelObject puts the
  // first one, with its location, into its message): none is printed here.
  mlir::ScopedDiagnosticHandler quiet(
      &context, [](mlir::Diagnostic &) { return mlir::success(); });
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(bytecode,
                                              mlir::ParserConfig(&context));
  if (!module) {
    result.error = "the Halide backend could not read the kernel it was given";
    return;
  }
  llvm::Expected<CpuKernelObject> object =
      compileHalideKernelObject(*module, options);
  if (!object) {
    result.error = llvm::toString(object.takeError());
    return;
  }
  result.object = object->object->getBuffer().str();
  result.warnings = std::move(object->stats.warnings);
  result.lowerSeconds = object->stats.lowerSeconds;
  result.codegenSeconds = object->stats.codegenSeconds;
}

void compileRuntime(HalideWingResult &result) {
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> object =
      compileHalideRuntimeObject();
  if (!object) {
    result.error = llvm::toString(object.takeError());
    return;
  }
  result.object = (*object)->getBuffer().str();
}

const HalideWingInterface wing = {ATTN_CODEGEN_FINGERPRINT, compileKernel,
                                  compileRuntime};

} // namespace

extern "C" __attribute__((visibility("default"))) const HalideWingInterface *
attnc_halide_wing() {
  return &wing;
}
