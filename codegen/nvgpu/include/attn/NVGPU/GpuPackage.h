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
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace attn {

/// Whether `target` names a CUDA chip (sm_NN or sm_NNa).
bool isGpuTarget(llvm::StringRef target);

/// Rewrites the `dims` line of the spec so that every dim named in `sizes`
/// reads `NAME = SIZE`: the DSL's own syntax for a compile-time size. The
/// front end then gives the tensors static extents and the GPU backend its
/// static head dims, with no second way of fixing a dim. Errors (a dim the
/// spec does not have, or fixes already) start with `what`, the name of the
/// caller's option.
llvm::Expected<std::string>
fixDimsInSource(llvm::StringRef text, const llvm::StringMap<int64_t> &sizes,
                llvm::StringRef what = "--shape");

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
