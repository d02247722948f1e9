//===- Spec.h - A spec as the front doors hold it ---------------*- C++ -*-===//
//
// What `attnc` and the Python module share between the spec's text and a
// run: the rules of the float-type override, the front end, the cascade kept
// as written (the float64 reference runs on it and launches are checked
// against it) while a clone is compiled for a target through the artifact
// cache, and the reference run itself.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_SPEC_H
#define ATTN_DRIVER_SPEC_H

#include "attn/Driver/Compile.h"
#include "attn/Driver/KernelSignature.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace attn {

/// Whether `target` names a CUDA chip (sm_NN or sm_NNa) rather than "cpu".
bool isGpuTarget(llvm::StringRef target);

/// The chip the GPU backend compiles for when a user asks for `target`:
/// sm_80 and sm_90a as they are; chips that run sm_80 PTX with nothing the
/// backend could use better (sm_86, sm_87, sm_89, sm_90) get the sm_80
/// kernels. Anything else is refused before LLVM runs, naming the chips the
/// backend supports; `option` is how the caller spells the target option.
llvm::Expected<std::string> resolveGpuChip(llvm::StringRef target,
                                           llvm::StringRef option);

/// The float-type override a user asked for with `option` (`--dtype`,
/// `dtype=`): nullopt keeps the spec's declared types (no override, or
/// "declared"); the CPU takes f32, bf16 or f16, a GPU bf16 or f16.
llvm::Expected<std::optional<std::string>>
checkFloatTypeOverride(std::optional<std::string> dtype, llvm::StringRef target,
                       llvm::StringRef option);

/// A spec through the front end, kept as written.
class LoadedSpec {
public:
  /// Runs the front end on `sourceMgr`'s main buffer; errors are reported
  /// through `sourceMgr` (file:line:col, the line and a caret). Later
  /// diagnostics of `context` are the caller's to route.
  static mlir::FailureOr<LoadedSpec> load(llvm::SourceMgr &sourceMgr,
                                          mlir::MLIRContext &context,
                                          const dsl::FrontendOptions &options);

  /// A kernel module made by the compiler rather than the front end (the
  /// adjoint kernel attn-grad builds), held like a spec's cascade; fails on
  /// a signature that no DType can hold.
  static llvm::Expected<LoadedSpec>
  fromModule(mlir::OwningOpRef<mlir::ModuleOp> module);

  mlir::ModuleOp getModule() const { return cascade.get(); }
  mlir::attn::KernelOp getKernel() const;
  const KernelSignature &getSignature() const { return signature; }

  /// The kernel compiled for the host and linked into the process.
  llvm::Expected<std::unique_ptr<CpuKernel>>
  compileForHost(const CpuKernelOptions &options,
                 const CacheOptions &cache) const;
  /// The kernel's object for `target`.
  llvm::Expected<CpuKernelObject>
  compileForCpu(const CpuTarget &target, const CpuKernelOptions &options,
                const CacheOptions &cache) const;
  /// The kernel's package for the CUDA chip `options.target`.
  llvm::Expected<GpuPackageArtifact>
  compileForGpu(const GpuPackageOptions &options,
                const CacheOptions &cache) const;

  /// The float64 reference evaluator on one launch: one F64 tensor per
  /// output. Errors carry the evaluator's first diagnostic.
  llvm::Expected<std::vector<HostTensor>>
  evaluateReference(llvm::ArrayRef<int64_t> dims,
                    llvm::ArrayRef<const HostTensor *> inputs,
                    llvm::ArrayRef<double> params) const;

private:
  LoadedSpec(mlir::OwningOpRef<mlir::ModuleOp> cascade,
             KernelSignature signature)
      : cascade(std::move(cascade)), signature(std::move(signature)) {}

  /// A copy of the cascade for a code generator to rewrite.
  mlir::OwningOpRef<mlir::ModuleOp> cloneCascade() const {
    return cascade.get().clone();
  }

  mlir::OwningOpRef<mlir::ModuleOp> cascade;
  KernelSignature signature;
};

/// The relative-error tolerance of a check against the reference for
/// results computed in `type` (fp32 1e-5, bf16 1e-2, f16 2e-3).
double getCheckTolerance(DType type);

} // namespace attn

#endif // ATTN_DRIVER_SPEC_H
