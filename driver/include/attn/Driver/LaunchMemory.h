//===- LaunchMemory.h - The memory a launch needs ---------------*- C++ -*-===//
//
// Sizes are free text at the front doors, and a launch allocates tensors of
// their product: inputs (random data), outputs, the intermediate tensors of
// an unfused kernel and, when checked, every tensor of the float64
// reference. Sizes far beyond the machine would end the process in the
// allocator, and sizes whose products overflow 64 bits would wrap into
// small, wrong allocations. The estimate adds those tensors up with checked
// arithmetic before anything is allocated, so that such a launch is refused
// with what it needs, tensor by tensor, and what the machine has.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_LAUNCHMEMORY_H
#define ATTN_DRIVER_LAUNCHMEMORY_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace attn {

/// The largest size a dim takes at a launch. Every dim is an i64 in the
/// kernels, and products of a few dims (offsets, element counts) must stay
/// far inside i64 for the kernels' index arithmetic.
constexpr int64_t kMaxDimSize = int64_t(1) << 32;

/// The reason a dim size is refused when it is outside [0, kMaxDimSize];
/// `value` is the size as it was written (it may not fit in an int64).
std::string describeDimOutOfRange(llvm::StringRef name, llvm::StringRef value);

/// Refuses a dim size outside [0, kMaxDimSize], naming the dim and the range.
llvm::Error checkDimSize(llvm::StringRef name, int64_t size);

/// Refuses a launch whose dims are outside the range of a dim.
llvm::Error checkDimSizes(mlir::attn::KernelOp kernel,
                          llvm::ArrayRef<int64_t> dims);

/// The number of elements of a tensor called `name` with `shape`, or an
/// error naming it when the count does not fit in an int64.
llvm::Expected<int64_t> countElements(llvm::StringRef name,
                                      llvm::ArrayRef<int64_t> shape);

/// `bytes` for people: "512 B", "1.5 KiB", "74.5 GiB".
std::string formatBytes(uint64_t bytes);

/// The bytes this process can still allocate without swapping: MemAvailable
/// of /proc/meminfo (else the available physical pages), less where a
/// cgroup's memory limit or the address-space limit (ulimit -v) leaves less;
/// nullopt when the system says nothing.
std::optional<uint64_t> getAvailableMemory();

/// The tensors a launch allocates, by what holds them.
struct LaunchAllocations {
  /// How many copies of the inputs are allocated: random inputs, copies
  /// into the front door's own arrays.
  unsigned inputCopies = 0;
  bool outputs = false;
  /// The float64 reference evaluator: a float64 copy of every input, every
  /// tensor of the cascade as written, its float64 outputs.
  bool reference = false;
  /// The intermediate tensors of a kernel compiled by the unfused pipeline,
  /// which allocates each tensor of the cascade (the fused one keeps its
  /// working set in tiles).
  bool unfusedWorkspaces = false;
  /// A launch of the kernel's adjoint (attn-grad), counted on the forward
  /// kernel: the adjoint the caller passes for every float output (f32,
  /// "dO") and the gradient of every float input (f32, "dQ"). The forward
  /// inputs the adjoint also reads are `inputCopies`.
  bool outputAdjoints = false;
  bool gradients = false;
  /// Reverse mode of the float64 reference: what `reference` counts, plus a
  /// float64 adjoint of every float tensor it computes and of every float
  /// input, and the float64 gradients and scales it returns.
  bool referenceGradients = false;
};

/// One tensor, or tensors of one name, that a launch allocates.
struct MemoryItem {
  /// "Q", "the reference's Q", "the reference's [B, H, M, N] tensors".
  std::string label;
  uint64_t bytes = 0;
};

/// What a launch of `kernel` at `dims` allocates.
class LaunchMemory {
public:
  /// The estimate of `allocations`; an element or byte count that does not
  /// fit in 64 bits is an error naming the tensor.
  static llvm::Expected<LaunchMemory>
  estimate(mlir::attn::KernelOp kernel, llvm::ArrayRef<int64_t> dims,
           const LaunchAllocations &allocations);

  llvm::ArrayRef<MemoryItem> getItems() const { return items; }
  uint64_t getTotalBytes() const { return total; }

  /// Refuses the launch when it needs more than `availableBytes`, naming the
  /// tensors and their sizes; the error's code is
  /// std::errc::not_enough_memory, so front doors can raise their own kind of
  /// memory error.
  llvm::Error checkFits(uint64_t availableBytes) const;

private:
  /// Adds `bytes` under `label`, merging with an item of the same label.
  llvm::Error add(llvm::StringRef label, uint64_t bytes);
  /// Adds `count` elements of `elementBytes` each.
  llvm::Error addElements(llvm::StringRef label, int64_t count,
                          uint64_t elementBytes);

  std::vector<MemoryItem> items;
  uint64_t total = 0;
};

/// Estimates `allocations` for a launch of `kernel` at `dims` and refuses it
/// when it cannot be allocated: counts that overflow, or more bytes than
/// `available` (the machine's available memory unless given; no limit when
/// that is unknown).
llvm::Error
checkLaunchMemory(mlir::attn::KernelOp kernel, llvm::ArrayRef<int64_t> dims,
                  const LaunchAllocations &allocations,
                  std::optional<uint64_t> available = getAvailableMemory());

} // namespace attn

#endif // ATTN_DRIVER_LAUNCHMEMORY_H
