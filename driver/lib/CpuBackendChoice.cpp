//===- CpuBackendChoice.cpp - Which code generator a CPU kernel takes -----===//

#include "attn/Driver/CpuBackendChoice.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"

#include <string>
#include <vector>

using namespace attn;

llvm::Expected<CpuBackend> attn::parseCpuBackend(llvm::StringRef name,
                                                 llvm::StringRef option) {
  if (name == "mlir")
    return CpuBackend::Mlir;
  if (name == "halide")
    return CpuBackend::Halide;
  if (name == "auto")
    return CpuBackend::Auto;
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "unknown " + option + " '" + name +
                                     "' (mlir, halide or auto)");
}

namespace {

bool holdsFusedOp(mlir::ModuleOp module) {
  bool fused = false;
  module.walk([&](mlir::Operation *op) {
    if (mlir::isa<mlir::attn::AttentionOp, mlir::attn::AttentionBackwardOp>(
            op))
      fused = true;
  });
  return fused;
}

} // namespace

CpuBackend attn::resolveCpuBackend(mlir::ModuleOp module,
                                   CpuBackend requested) {
  if (requested != CpuBackend::Auto)
    return requested;
  // A kernel made from a raised one (an adjoint of a fused forward).
  if (holdsFusedOp(module))
    return CpuBackend::Mlir;
  mlir::DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  module->getContext()->appendDialectRegistry(registry);
  mlir::OwningOpRef<mlir::ModuleOp> copy(module.clone());
  struct Held {
    mlir::Location loc;
    mlir::DiagnosticSeverity severity;
    std::string message;
  };
  std::vector<Held> held;
  bool fused = false;
  {
    mlir::ScopedDiagnosticHandler handler(
        module->getContext(), [&](mlir::Diagnostic &diag) {
          held.push_back({diag.getLocation(), diag.getSeverity(), diag.str()});
          return mlir::success();
        });
    mlir::PassManager pm(module->getContext());
    mlir::attn::buildAttentionRecognitionPipeline(pm);
    // A raise that fails is reported by the MLIR path's own run.
    if (mlir::failed(pm.run(*copy)))
      return CpuBackend::Mlir;
    fused = holdsFusedOp(*copy);
  }
  if (fused)
    return CpuBackend::Mlir;
  for (const Held &diag : held) {
    if (diag.severity == mlir::DiagnosticSeverity::Remark)
      mlir::emitRemark(diag.loc) << diag.message;
    else if (diag.severity == mlir::DiagnosticSeverity::Warning)
      mlir::emitWarning(diag.loc) << diag.message;
  }
  return CpuBackend::Halide;
}
