//===- FuzzDsl.cpp - libFuzzer target for the compiler behind the front end -===//
//
// Feeds arbitrary bytes to attn::dsl::compileSpec with diagnostics
// discarded and, for every spec the front end accepts, runs what a launch
// runs next: the attention recognition pipeline (raise, analyze-mask) and
// both CPU pipelines (fused and unfused) down to the LLVM dialect, with the
// verifier after every pass. Nothing may crash, assert, leak or hang on any
// input: a pass may reject a spec, with a diagnostic, but the verifier must
// never find invalid IR.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/Pipeline.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>

/// A pass that leaves invalid IR behind is a compiler bug whatever the
/// input: stop the run so that libFuzzer saves it.
static void checkValid(mlir::ModuleOp module, const char *stage) {
  if (mlir::failed(mlir::verify(module))) {
    llvm::errs() << "attn-fuzz-dsl: invalid IR after " << stage << "\n";
    std::abort();
  }
}

/// Runs `build`'s pipeline on a copy of `module`, verifying after every
/// pass. A pass may fail (it rejected the spec with a diagnostic); a pass
/// that reports success must leave valid IR.
static void runPipeline(mlir::ModuleOp module, const char *stage,
                        llvm::function_ref<void(mlir::OpPassManager &)> build) {
  mlir::OwningOpRef<mlir::ModuleOp> copy = module.clone();
  mlir::PassManager pm(module.getContext());
  pm.enableVerifier(true);
  build(pm);
  if (mlir::succeeded(pm.run(*copy)))
    checkValid(*copy, stage);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // One context for the whole run: creating one per input would dominate
  // the run time, and the compiler must not depend on a fresh one.
  static mlir::MLIRContext *context = [] {
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    auto *ctx = new mlir::MLIRContext(registry,
                                      mlir::MLIRContext::Threading::DISABLED);
    ctx->loadDialect<mlir::attn::AttnDialect, mlir::arith::ArithDialect,
                     mlir::math::MathDialect, mlir::tensor::TensorDialect>();
    ctx->getDiagEngine().registerHandler([](mlir::Diagnostic &) {});
    return ctx;
  }();
  llvm::SourceMgr sourceMgr;
  sourceMgr.setDiagHandler([](const llvm::SMDiagnostic &, void *) {});
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "fuzz.attn"),
      llvm::SMLoc());
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
      attn::dsl::compileSpec(sourceMgr, *context);
  if (mlir::failed(module))
    return 0;
  checkValid(**module, "the front end");
  runPipeline(**module, "raise and analyze-mask", [](mlir::OpPassManager &pm) {
    mlir::attn::buildAttentionRecognitionPipeline(pm);
  });
  for (bool fused : {true, false})
    runPipeline(**module, fused ? "the fused CPU pipeline"
                                : "the unfused CPU pipeline",
                [&](mlir::OpPassManager &pm) {
                  mlir::attn::CpuPipelineOptions options;
                  options.fused = fused;
                  mlir::attn::buildCpuPipeline(pm, options);
                });
  return 0;
}
