//===- HalideBackend.h - The Halide backend, loaded on first use -*- C++
//-*-===//
//
// The driver's side of the Halide backend's plugin (attn/Halide/
// HalideWing.h): the first compile through Halide loads libattnc_halide.so,
// and with it libHalide14; everything else (GPU packages, fused CPU kernels,
// cache keys and hits, running Halide objects) works without it.
//
// The plugin is looked up beside the library that holds this code (the
// Python package's extension module), in ../lib from the executable (an
// installed or built attnc), then where the build put it.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_HALIDEBACKEND_H
#define ATTN_DRIVER_HALIDEBACKEND_H

#include "attn/CPU/CpuKernel.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <string>
#include <vector>

namespace attn {

/// Compiles the one attn.kernel of `module` for the host through Halide
/// (the object links against compileHalideRuntime's).
llvm::Expected<CpuKernelObject>
compileHalideObject(mlir::ModuleOp module,
                    const HalideScheduleOptions &options);

/// Halide's runtime for the host, as an object for kernels to link against.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> compileHalideRuntime();

/// Everything the runtime object depends on, as text: its cache key fields
/// (Halide's library and the host CPU Halide targets).
std::vector<std::string> describeHalideRuntime();

/// Everything a kernel object depends on besides its IR: the runtime's
/// fields, the scheduler, the parallelism and the size estimates.
std::vector<std::string>
describeHalideCompile(const HalideScheduleOptions &options);

/// The plugin file the first Halide compile loads (or has loaded), without
/// loading it; an error naming the places looked in when there is none.
llvm::Expected<std::string> findHalideBackend();

/// Whether this process has loaded the plugin.
bool isHalideBackendLoaded();

} // namespace attn

#endif // ATTN_DRIVER_HALIDEBACKEND_H
