//===- HalideEntry.h - Calling a Halide kernel object -----------*- C++ -*-===//
//
// A Halide kernel object exports `<kernel>_argv(void **args)`: one pointer
// per argument, in the kernel's order (dims as int32, inputs as
// halide_buffer_t, params as their scalar type), then the outputs. It is
// linked beside Halide's runtime object (thread pool, error handler; one
// instance per loaded kernel), which this binds too. Only HalideRuntime.h is
// needed here: a process that runs Halide kernels does not need libHalide.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_HALIDEENTRY_H
#define ATTN_HALIDE_HALIDEENTRY_H

#include "attn/CPU/CpuKernel.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>

namespace attn {

/// The name of the entry a Halide kernel object exports for `kernel`.
std::string getHalideEntryName(llvm::StringRef kernel);

/// The entry of a Halide kernel object linked into the process.
class HalideEntry {
public:
  using LookupFn = llvm::function_ref<llvm::Expected<void *>(llvm::StringRef)>;

  /// Binds the entry of `kernel` and the object's runtime hooks through
  /// `lookup` (a symbol of the linked object).
  static llvm::Expected<std::unique_ptr<HalideEntry>>
  bind(llvm::StringRef kernel, LookupFn lookup);
  /// Stops the object's worker threads: they run its code, which dies with
  /// the object.
  ~HalideEntry();

  /// Runs the kernel with `threads` workers (0: every core). Arguments as
  /// CpuKernel::run, already checked there. Sizes past Halide's 32-bit
  /// coordinates and errors the kernel reports (a buffer smaller than the
  /// sizes say) come back as errors.
  llvm::Error run(const KernelSignature &signature,
                  llvm::ArrayRef<int64_t> dims,
                  llvm::ArrayRef<TensorView> inputs,
                  llvm::ArrayRef<double> params,
                  llvm::ArrayRef<TensorView> outputs, unsigned threads);

private:
  HalideEntry() = default;

  int (*entry)(void **) = nullptr;
  int (*setThreads)(int) = nullptr;
  void (*shutdownThreadPool)() = nullptr;
};

} // namespace attn

#endif // ATTN_HALIDE_HALIDEENTRY_H
