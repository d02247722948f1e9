//===- KernelParams.h - Kernel parameter values of a launch -----*- C++ -*-===//
//
// Private to the runtime library: turns a checked launch into the bytes of
// each kernel parameter. Host code only, so that the tests check the values
// without a GPU; the CUDA half of the C API hands them to cuLaunchKernel.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_LIB_KERNELPARAMS_H
#define ATTN_RUNTIME_LIB_KERNELPARAMS_H

#include "attn/Runtime/LaunchCheck.h"

#include <cstdint>
#include <vector>

namespace attn {

/// The 8-byte storage of one kernel parameter.
union SlotValue {
  uint64_t u64;
  int64_t i64;
  int32_t i32;
  float f32;
  double f64;
  void *ptr;
};

/// Computes every kernel parameter of entry `e` (which must be enabled),
/// converting to its slot type with range checks. `tensorOf[a]` is the tensor
/// of argument `a` (null for params). Workspace slots are left null: the
/// buffers are allocated later, with the driver, and set by
/// setWorkspaceSlots. Tma slots are left null too: their tensor maps do not
/// fit a SlotValue and are encoded by the driver (cuda/TensorMap.h).
Status buildSlots(const Package &pkg, size_t e, const BoundLaunch &bound,
                  const std::vector<const attnc_tensor *> &tensorOf,
                  std::vector<SlotValue> &out);

/// Sets the Workspace slots of entry `e` to `workspaces[w]`, the device
/// pointer of workspace `w`.
void setWorkspaceSlots(const Package &pkg, size_t e,
                       const std::vector<void *> &workspaces,
                       std::vector<SlotValue> &slots);

} // namespace attn

#endif // ATTN_RUNTIME_LIB_KERNELPARAMS_H
