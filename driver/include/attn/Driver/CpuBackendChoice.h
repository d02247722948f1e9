//===- CpuBackendChoice.h - Which code generator a CPU kernel takes -*- C++ -*-===//
//
// `--backend auto` (the default): a kernel attn-raise fuses takes the fused
// MLIR path; a cascade it does not fuse takes the Halide backend, which was
// faster than convert-attn-to-linalg on every unfused spec measured side by
// side (bench/cpu_suite.py). `mlir` and `halide` force one.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_CPUBACKENDCHOICE_H
#define ATTN_DRIVER_CPUBACKENDCHOICE_H

#include "attn/CPU/CpuKernel.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

namespace attn {

/// Parses `mlir`, `halide` or `auto`; `option` is how the caller spells the
/// option, for the error.
llvm::Expected<CpuBackend> parseCpuBackend(llvm::StringRef name,
                                           llvm::StringRef option);

/// The backend `module` takes when `requested` is asked for: Auto resolved
/// by running attn-raise on a copy (its remarks, on why a cascade stays
/// unfused, are reported when the copy decides for Halide).
CpuBackend resolveCpuBackend(mlir::ModuleOp module, CpuBackend requested);

} // namespace attn

#endif // ATTN_DRIVER_CPUBACKENDCHOICE_H
