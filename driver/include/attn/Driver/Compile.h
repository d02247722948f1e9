//===- Compile.h - A kernel compiled for a target, through the cache ----===//
//
// The one way the front doors (attnc, the Python module) turn the kernel the
// front end made into an artifact: the artifact cache is asked first, with a
// key of the module as written and everything the target's code generator
// depends on; only a miss runs the code generator, whose artifact is then
// stored. Code generators and the loader run in a region where LLVM's fatal
// errors come back as errors (FatalErrors.h), once a front door has
// installed the handlers.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_COMPILE_H
#define ATTN_DRIVER_COMPILE_H

#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/CpuTarget.h"
#include "attn/NVGPU/GpuPackage.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn {

/// Where artifacts are cached: a directory, or nowhere (nullopt neither reads
/// nor writes a cache).
struct CacheOptions {
  std::optional<std::string> directory;

  /// The usual directory (ArtifactCache::getDefaultDirectory()), or nowhere
  /// when `disabled`.
  static CacheOptions standard(bool disabled = false);
};

/// The one attn.kernel of `module` (which may be modified) compiled for the
/// CPU `target`, from the cache when it holds it.
llvm::Expected<CpuKernelObject>
compileCpuObject(mlir::ModuleOp module, const CpuTarget &target,
                 const CpuKernelOptions &options, const CacheOptions &cache);

/// The same for the host, linked into the process.
llvm::Expected<std::unique_ptr<CpuKernel>>
compileCpuKernel(mlir::ModuleOp module, const CpuKernelOptions &options,
                 const CacheOptions &cache);

/// A GPU kernel package and how it was obtained.
struct GpuPackageArtifact {
  /// The .attnpkg file's bytes.
  std::string bytes;
  bool cacheHit = false;
  /// Problems that did not stop compilation (a corrupt entry that was
  /// rebuilt, a cache that could not be written), for the caller to print.
  std::vector<std::string> warnings;
};

/// The one attn.kernel of `module` (which may be modified) compiled into a
/// package for `options.target`, from the cache when it holds it.
llvm::Expected<GpuPackageArtifact>
compileGpuPackage(mlir::ModuleOp module, const GpuPackageOptions &options,
                  const CacheOptions &cache);

/// Runs `hook` at the start of every code generator and loader run, inside
/// the region that turns LLVM's fatal errors into errors: tests report one
/// there, as code generation would. An empty hook (the default) runs nothing.
void setCodegenHookForTesting(std::function<void()> hook);

} // namespace attn

#endif // ATTN_DRIVER_COMPILE_H
