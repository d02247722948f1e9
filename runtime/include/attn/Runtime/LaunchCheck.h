//===- LaunchCheck.h - Argument checks before a launch ----------*- C++ -*-===//
//
// Everything about a launch that can be checked without the GPU is checked
// here, before any driver call: devices, dtypes, ranks, shapes against the
// dims (binding symbolic dims from the tensors), strides against the layout
// each tensor needs, params, constraints, which entries run (their `when`),
// grid sizes and workspace sizes. A kernel launched with a wrong shape reads
// or writes out of bounds silently, so these checks are the runtime's main
// safety net.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_LAUNCHCHECK_H
#define ATTN_RUNTIME_LAUNCHCHECK_H

#include "attn/Runtime/Package.h"
#include "attnc/attnc.h"

#include <array>
#include <vector>

namespace attn {

/// The result of a successful check: everything the launch needs.
struct BoundLaunch {
  int device = 0;
  /// Value of every dim, in manifest order.
  std::vector<int64_t> dims;
  /// Value of every param (given or defaulted), indexed like manifest.args
  /// (entries for tensors are unused).
  std::vector<double> argValues;
  /// Per entry: whether its `when` formula holds (true without one; for a
  /// fallback, that of the entry it stands in for), and false for every
  /// entry of a launch without output entries (a zero-size dim in every
  /// output). A disabled entry is not launched, and neither its grid nor its
  /// expr slots are evaluated, so they may fail (divide by zero) for its
  /// dims.
  std::vector<bool> enabled;
  /// Per entry: grid x, y, z (a zero means the launch is empty and skipped;
  /// all zero for a disabled entry).
  std::vector<std::array<int64_t, 3>> grids;
};

/// Converts between the C API's dtype triple and DType.
attnc_dtype toCDType(DType type);
bool fromCDType(attnc_dtype dt, DType &out);

/// Checks the arguments of a launch of `pkg`. Never touches the driver.
Status checkLaunch(const Package &pkg, const attnc_tensor *inputs,
                   size_t numInputs, const double *params, size_t numParams,
                   const attnc_tensor *outputs, size_t numOutputs,
                   BoundLaunch &out);

/// The shape of the tensor workspace `w` begins with
/// (WorkspaceSpec::tensor), for the dims of a checked launch.
Status workspaceTensorShape(const Package &pkg, size_t w,
                            const std::vector<int64_t> &dims,
                            std::vector<int64_t> &out);

/// The size in bytes of every workspace (indexed like manifest.workspaces)
/// that the enabled ones among `entries` pass to their kernels (or load
/// through tensor maps), 0 for the others. A formula error or a negative size
/// is an invalid-argument error naming the workspace. Never touches the driver.
Status workspaceBytes(const Package &pkg, const BoundLaunch &bound,
                      const std::vector<size_t> &entries,
                      std::vector<int64_t> &out);

} // namespace attn

#endif // ATTN_RUNTIME_LAUNCHCHECK_H
