//===- Spec.cpp - A spec as the front doors hold it -----------------------===//

#include "attn/Driver/Spec.h"
#include "attn/Reference/Evaluator.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/SourceMgr.h"

using namespace attn;

bool attn::isGpuTarget(llvm::StringRef target) {
  return target.starts_with("sm_");
}

llvm::Expected<std::string> attn::resolveGpuChip(llvm::StringRef target,
                                                 llvm::StringRef option) {
  if (target == "sm_80" || target == "sm_90a")
    return target.str();
  if (llvm::is_contained({"sm_86", "sm_87", "sm_89", "sm_90"}, target))
    return std::string("sm_80");
  return llvm::createStringError(
      option + ": '" + target +
      "' is not a chip the GPU backend supports (sm_80 and sm_90a; sm_86, "
      "sm_87, sm_89 and sm_90 get the sm_80 kernels)");
}

llvm::Expected<std::optional<std::string>>
attn::checkFloatTypeOverride(std::optional<std::string> dtype,
                             llvm::StringRef target, llvm::StringRef option) {
  if (!dtype || *dtype == "declared")
    return std::nullopt;
  bool gpu = isGpuTarget(target);
  bool ok = *dtype == "bf16" || *dtype == "f16" || (!gpu && *dtype == "f32");
  if (!ok)
    return llvm::createStringError(
        option + ": " +
        (gpu ? "the GPU backend takes bf16 or f16"
             : "expected f32, bf16, f16 or declared") +
        ", got '" + *dtype + "'");
  return dtype;
}

mlir::FailureOr<LoadedSpec>
LoadedSpec::load(llvm::SourceMgr &sourceMgr, mlir::MLIRContext &context,
                 const dsl::FrontendOptions &options) {
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
      dsl::compileSpec(sourceMgr, context, options);
  if (mlir::failed(module))
    return mlir::failure();
  llvm::Expected<KernelSignature> signature = KernelSignature::read(**module);
  if (!signature) {
    sourceMgr.PrintMessage(llvm::SMLoc(), llvm::SourceMgr::DK_Error,
                           llvm::toString(signature.takeError()));
    return mlir::failure();
  }
  return LoadedSpec(std::move(*module), std::move(*signature));
}

llvm::Expected<LoadedSpec>
LoadedSpec::fromModule(mlir::OwningOpRef<mlir::ModuleOp> module) {
  llvm::Expected<KernelSignature> signature = KernelSignature::read(*module);
  if (!signature)
    return signature.takeError();
  return LoadedSpec(std::move(module), std::move(*signature));
}

mlir::attn::KernelOp LoadedSpec::getKernel() const {
  return *getModule().getOps<mlir::attn::KernelOp>().begin();
}

llvm::Expected<std::unique_ptr<CpuKernel>>
LoadedSpec::compileForHost(const CpuKernelOptions &options,
                           const CacheOptions &cache) const {
  mlir::OwningOpRef<mlir::ModuleOp> module = cloneCascade();
  return compileCpuKernel(*module, options, cache);
}

llvm::Expected<CpuKernelObject>
LoadedSpec::compileForCpu(const CpuTarget &target,
                          const CpuKernelOptions &options,
                          const CacheOptions &cache) const {
  mlir::OwningOpRef<mlir::ModuleOp> module = cloneCascade();
  return compileCpuObject(*module, target, options, cache);
}

llvm::Expected<GpuPackageArtifact>
LoadedSpec::compileForGpu(const GpuPackageOptions &options,
                          const CacheOptions &cache) const {
  mlir::OwningOpRef<mlir::ModuleOp> module = cloneCascade();
  return compileGpuPackage(*module, options, cache);
}

llvm::Expected<std::vector<HostTensor>>
LoadedSpec::evaluateReference(llvm::ArrayRef<int64_t> dims,
                              llvm::ArrayRef<const HostTensor *> inputs,
                              llvm::ArrayRef<double> params) const {
  ref::KernelArguments arguments;
  arguments.dims.assign(dims.begin(), dims.end());
  arguments.inputs.assign(inputs.begin(), inputs.end());
  arguments.params.assign(params.begin(), params.end());
  std::string message;
  mlir::ScopedDiagnosticHandler handler(getModule().getContext(),
                                        [&](mlir::Diagnostic &diag) {
                                          if (message.empty())
                                            message = diag.str();
                                          return mlir::success();
                                        });
  mlir::FailureOr<std::vector<HostTensor>> outputs =
      ref::evaluate(getKernel(), arguments);
  if (mlir::failed(outputs))
    return llvm::createStringError("the reference evaluator failed" +
                                   (message.empty() ? "" : ": " + message));
  return std::move(*outputs);
}

double attn::getCheckTolerance(DType type) {
  switch (type) {
  case DType::BF16:
    return 1e-2;
  case DType::F16:
    return 2e-3;
  default:
    return 1e-5;
  }
}
