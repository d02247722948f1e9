//===- OpenMPRuntime.h - libomp for the JIT-compiled kernels ----*- C++ -*-===//
//
// The fused kernels are OpenMP-parallel: they call `__kmpc_*` in libomp,
// which attnc does not link. The runtime is loaded into the process on
// first need, and the thread count goes through its `omp_set_num_threads`.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_OPENMPRUNTIME_H
#define ATTN_CPU_OPENMPRUNTIME_H

#include "llvm/Support/Error.h"

namespace attn {

/// Loads libomp with global symbol visibility, once per process. Looks at
/// `$ATTN_LIBOMP`, then LLVM's library directory, then the loader's path.
llvm::Error loadOpenMPRuntime();

/// Whether libomp is loaded (by loadOpenMPRuntime or linked in).
bool isOpenMPRuntimeLoaded();

/// Sets the thread count of the parallel regions the calling thread starts
/// next; does nothing when libomp is not loaded (a serial kernel).
void setOpenMPThreads(unsigned threads);

/// The default thread count: every logical core this process may run on.
unsigned getDefaultThreadCount();

} // namespace attn

#endif // ATTN_CPU_OPENMPRUNTIME_H
