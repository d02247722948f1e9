//===- CpuTarget.h - The CPU a kernel object is compiled for ----*- C++ -*-===//
//
// The triple, CPU name and feature string of the machine a kernel object is
// built for: the host (the JIT) or a named CPU (`attnc compile --cpu`, for a
// harness on another machine). All three go into the object cache key.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_CPUTARGET_H
#define ATTN_CPU_CPUTARGET_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace llvm {
class TargetMachine;
} // namespace llvm

namespace attn {

struct CpuTarget {
  std::string triple;
  std::string cpu;
  /// Comma-separated `+feature` / `-feature`; empty for a named CPU, whose
  /// name implies its features.
  std::string features;
};

/// The host: its triple, CPU and every feature it has (AVX2, AVX-512, ...).
llvm::Expected<CpuTarget> getHostCpuTarget();

/// A CPU by LLVM name (`sapphirerapids`, `x86-64-v4`, ...) with the host's
/// triple. Fails on a name the target does not know, instead of LLVM's
/// warning and a baseline object.
llvm::Expected<CpuTarget> getNamedCpuTarget(llvm::StringRef cpu);

/// A target machine for `target` that emits position-independent code, so
/// the object loads anywhere in the JIT and links into a shared library.
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createCpuTargetMachine(const CpuTarget &target, unsigned optLevel);

} // namespace attn

#endif // ATTN_CPU_CPUTARGET_H
