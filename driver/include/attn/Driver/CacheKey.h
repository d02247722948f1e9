//===- CacheKey.h - The key of a compiled artifact --------------*- C++ -*-===//
//
// An artifact depends on the kernel as written (before lowering), what it is
// (a CPU object, a GPU package), the target and options its code generator
// was given, and the compiler that built it (attnc's version, a fingerprint
// of the code generator's sources, LLVM's version). The key hashes all of
// them, so a cache hit needs only the pre-lowering module: no pass runs on a
// hit, and an artifact built by another code generator is never served.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_CACHEKEY_H
#define ATTN_DRIVER_CACHEKEY_H

#include "mlir/IR/BuiltinOps.h"

#include <array>
#include <cstdint>
#include <string>

namespace attn {

/// A SHA-256 of everything an artifact depends on.
using CacheKey = std::array<uint8_t, 32>;

/// What an artifact is; part of its key and of its cache entry.
enum class ArtifactKind : uint32_t {
  /// A relocatable object for a CPU (codegen/cpu).
  CpuObject = 1,
  /// An .attnpkg kernel package for a CUDA chip (codegen/nvgpu).
  GpuPackage = 2,
  /// A Halide pipeline's object for the host (codegen/halide).
  HalideObject = 3,
  /// The Halide runtime those objects link against.
  HalideRuntime = 4,
};

/// The key as 64 lowercase hex digits (the entry's file name stem).
std::string toHex(const CacheKey &key);

/// The module's text in a form that depends on its content only: generic op
/// form, no locations (a spec moved to another file keeps its key).
std::string printCanonicalIR(mlir::ModuleOp module);

/// The key of the `kind` artifact of `module`; `fields` are everything else
/// its code generator depends on (target, features, options), each as text,
/// in an order the code generator fixes.
CacheKey computeCacheKey(mlir::ModuleOp module, ArtifactKind kind,
                         llvm::ArrayRef<std::string> fields);

} // namespace attn

#endif // ATTN_DRIVER_CACHEKEY_H
