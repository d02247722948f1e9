//===- TensorMap.h - TMA tensor maps of a launch ----------------*- C++ -*-===//
//
// Hopper kernels load tiles with `cp.async.bulk.tensor` through a tensor map
// (CUtensorMap): 128 bytes that the driver encodes on the host from a
// tensor's address, extents and strides and the tile's box, and that the
// kernel takes by value as a parameter. The driver refuses layouts the copy
// engine cannot walk (strides that are not multiples of 16 bytes, a strided
// innermost axis, a misaligned address). Everything it documents is checked
// here first, without it, so that such a tensor runs the entry's fallback, or
// is an argument error naming the tensor, before any driver call.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_LIB_CUDA_TENSORMAP_H
#define ATTN_RUNTIME_LIB_CUDA_TENSORMAP_H

#include "CudaDriver.h"

#include "attn/Runtime/Package.h"
#include "attnc/attnc.h"

#include <cstdint>
#include <vector>

namespace attn {
namespace cuda {

/// The arguments of cuTensorMapEncodeTiled but the address. Axes are the
/// tensor's reversed: the driver's axis 0 is the innermost.
struct TensorMapLayout {
  int dataType = CU_TENSOR_MAP_DATA_TYPE_UINT8;
  uint32_t rank = 0;
  uint64_t dims[5] = {};
  /// Bytes between consecutive indices of axes 1 to rank - 1 (axis 0 is
  /// contiguous).
  uint64_t strides[4] = {};
  uint32_t box[5] = {};
  uint32_t elementStrides[5] = {};
  int swizzle = CU_TENSOR_MAP_SWIZZLE_NONE;
  int l2Promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  int oobFill = CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  /// The map stays all zeros, without asking the driver: the tensor has a
  /// zero extent (which the driver refuses; the kernel loads nothing from
  /// it), or TMA cannot describe it and the slot is optional.
  bool empty = false;
};

/// The layout of the tensor map of Tma slot `slot` over `t`, the tensor of
/// argument `arg` in a checked launch; an invalid-argument error naming the
/// argument when TMA cannot describe the tensor. The data address is not
/// looked at: it changes between launches of a plan (checkTensorMapAddress).
Status tensorMapLayout(const ArgSpec &arg, const ParamSlot &slot,
                       const attnc_tensor &t, TensorMapLayout &out);

/// The layouts of the Tma slots of entry `e`, in parameter order, for a
/// checked launch with dims `dims` whose argument a has the tensor
/// tensorOf[a] (a workspace's tensor is dense, of the shape its formulas
/// give); the first error names the entry. An optional slot's tensor that
/// TMA cannot describe gets an empty layout (an all-zero map) instead of an
/// error. With `checkAddresses` the arguments' data addresses are checked
/// too (a launch; a plan checks each launch's instead; workspaces are
/// always aligned).
Status tensorMapLayouts(const Package &pkg, size_t e,
                        const std::vector<int64_t> &dims,
                        const std::vector<const attnc_tensor *> &tensorOf,
                        bool checkAddresses, std::vector<TensorMapLayout> &out);

/// OK if `address`, the data + byte_offset of argument `arg`, can be a
/// tensor map's base: 16-byte aligned.
Status checkTensorMapAddress(const ArgSpec &arg, const void *address);

/// Encodes the map of `layout` at `address` with the driver, whose
/// cuTensorMapEncodeTiled must exist; an empty layout gives zeros without
/// asking it. A refusal is an ATTNC_ERROR_CUDA naming the argument.
Status encodeTensorMap(const Driver &d, const ArgSpec &arg,
                       const TensorMapLayout &layout, void *address,
                       CUtensorMap &out);

} // namespace cuda
} // namespace attn

#endif // ATTN_RUNTIME_LIB_CUDA_TENSORMAP_H
