//===- HalideKernel.h - A cascade compiled through Halide -------*- C++ -*-===//
//
// The Halide backend's compile entry: the kernel's cascade (as the front end
// or attn-grad wrote it; attn-raise is not run) becomes a Halide pipeline,
// scheduled for the launch's sizes and compiled by libHalide14 in process
// into an object that CpuKernel links and runs like the MLIR pipelines'
// objects (flag kHalidePath). Halide's errors, thrown inside libHalide,
// come back as llvm::Errors. The driver reaches these through the plugin
// libattnc_halide.so (HalideWing.h), so that only processes that compile
// through Halide load libHalide.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_HALIDEKERNEL_H
#define ATTN_HALIDE_HALIDEKERNEL_H

#include "attn/CPU/CpuKernel.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace attn {

/// Compiles the one attn.kernel of `module` (which may be modified) for the
/// host through Halide. The object holds the pipeline alone: it links
/// against the Halide runtime object (compileHalideRuntimeObject), which
/// costs most of a compile and is the same for every kernel.
llvm::Expected<CpuKernelObject>
compileHalideKernelObject(mlir::ModuleOp module,
                          const HalideScheduleOptions &options);

/// Halide's runtime (thread pool, errors, allocation) for the host, as an
/// object for kernels to link against.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
compileHalideRuntimeObject();

} // namespace attn

#endif // ATTN_HALIDE_HALIDEKERNEL_H
