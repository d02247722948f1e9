//===- GpuPackage.h - A GPU kernel package from a spec ----------*- C++ -*-===//
//
// Turns the kernel the front end made into a package for a CUDA chip: the
// PTX of its kernels and the manifest the runtime launches them with.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_GPUPACKAGE_H
#define ATTN_NVGPU_GPUPACKAGE_H

#include "attn/Runtime/Package.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace attn {

struct GpuPackageOptions {
  /// The CUDA chip: sm_90a, sm_80.
  std::string target;
  /// Who made the package, for its manifest.
  std::string producer;
  /// How the caller fixes dims, for messages that ask for it.
  std::string shapeOption = "--shape";
  std::string shapeExample = "--shape D=128";
  /// Add the split-key decode kernel and its merge (run instead of the
  /// attention kernel for launches with few query rows per key/value head)
  /// where the variant allows.
  bool decode = true;
  /// Add the Hopper forward kernel where the chip is sm_90a and the kernel
  /// serves the attention (run instead of the mma.sync one wherever TMA can
  /// load the launch's Q, K and V).
  bool wgmma = true;
  /// Backward kernels that give the same bits on every run (no atomics).
  bool deterministic = false;
  /// Report the time of each pass that lowers the kernels to PTX
  /// (GpuOptions::timePasses); the package does not depend on it.
  bool timePasses = false;
};

/// Every field of `options` that the package depends on, as text, for the
/// artifact cache's key: a new field must be added here.
std::vector<std::string>
describeGpuPackageOptions(const GpuPackageOptions &options);

/// Compiles the one attn.kernel of `module` (as the front end made it; it is
/// modified) for a CUDA chip into a package. Remarks of the passes (why a
/// cascade is not raised) go to the context's diagnostic handlers; errors
/// name the kernel and what the GPU backend does not support.
llvm::Expected<PackageWriter> buildGpuPackage(mlir::ModuleOp module,
                                              const GpuPackageOptions &options);

} // namespace attn

#endif // ATTN_NVGPU_GPUPACKAGE_H
