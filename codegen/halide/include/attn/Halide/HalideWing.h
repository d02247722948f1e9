//===- HalideWing.h - The Halide backend as a loadable plugin ---*- C++ -*-===//
//
// libHalide14 and the LLVM 14 it links cost every process that loads them
// about 60 ms of relocations at start-up, while only kernels that take the
// Halide backend need them. The backend is therefore its own shared object,
// libattnc_halide.so, which the driver loads on its first Halide compile
// (attn/Driver/HalideBackend.h): GPU packages, fused CPU kernels and cache
// hits never load it.
//
// This header is the plugin's whole interface: one C entry point returning a
// table of functions. Kernels cross it as MLIR bytecode and objects come
// back as bytes, so that no MLIR object is shared between the plugin's own
// copy of attnc's libraries and the caller's; the plugin parses the kernel
// into a context of its own.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_HALIDEWING_H
#define ATTN_HALIDE_HALIDEWING_H

#include "attn/CPU/CpuKernel.h"

#include "llvm/ADT/StringRef.h"

#include <string>
#include <vector>

namespace attn {

/// What a compile in the plugin produced.
struct HalideWingResult {
  /// The relocatable object; empty when `error` is set.
  std::string object;
  std::string error;
  /// Problems that did not stop the compile (a failed autoscheduler).
  std::vector<std::string> warnings;
  double lowerSeconds = 0;
  double codegenSeconds = 0;
};

/// The functions libattnc_halide.so exports, through kHalideWingEntryName.
struct HalideWingInterface {
  /// The code generator's fingerprint of the plugin's build: the caller
  /// refuses a plugin of another build, since C++ objects cross the table.
  const char *fingerprint;
  /// Compiles the one attn.kernel of `bytecode` (a module as MLIR bytecode,
  /// the kernel's cascade) into an object for the host.
  void (*compileKernel)(llvm::StringRef bytecode,
                        const HalideScheduleOptions &options,
                        HalideWingResult &result);
  /// Compiles Halide's runtime for the host: the object kernels link with.
  void (*compileRuntime)(HalideWingResult &result);
};

/// The file name of the plugin and the symbol of its entry point, a C
/// function `const HalideWingInterface *()`.
inline constexpr const char *kHalideWingFileName = "libattnc_halide.so";
inline constexpr const char *kHalideWingEntryName = "attnc_halide_wing";

} // namespace attn

#endif // ATTN_HALIDE_HALIDEWING_H
