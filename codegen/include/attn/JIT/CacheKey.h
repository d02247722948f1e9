//===- CacheKey.h - The key of a compiled kernel object ---------*- C++ -*-===//
//
// An object depends on the kernel as written (before lowering), the CPU it
// is compiled for, the pipeline and LLVM options, and the compiler that
// built it. The key hashes all of them, so a cache hit needs only the
// pre-lowering module: no pass runs on a hit.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_JIT_CACHEKEY_H
#define ATTN_JIT_CACHEKEY_H

#include "attn/JIT/CpuTarget.h"
#include "attn/JIT/ObjectCache.h"
#include "attn/Pipelines/Pipelines.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace attn {

/// The module's text in a form that depends on its content only: generic op
/// form, no locations (a spec moved to another file keeps its key).
std::string printCanonicalIR(mlir::ModuleOp module);

CacheKey computeCacheKey(mlir::ModuleOp module, const CpuTarget &target,
                         const mlir::attn::CpuPipelineOptions &pipeline,
                         unsigned optLevel);

} // namespace attn

#endif // ATTN_JIT_CACHEKEY_H
