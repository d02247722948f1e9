//===- TensorMap.cpp - TMA tensor maps of a launch ------------------------===//

#include "TensorMap.h"

#include "attn/Runtime/LaunchCheck.h"

#include <cstdio>

namespace attn {
namespace cuda {

namespace {

/// cuTensorMapEncodeTiled's documented limits (without interleaving).
constexpr uint64_t kMaxExtent = uint64_t(1) << 32;
constexpr uint64_t kMaxStrideBytes = uint64_t(1) << 40;
constexpr uint64_t kAlignment = 16;

int dataTypeOf(DType type) {
  switch (type) {
  case DType::F32:
    return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  case DType::F16:
    return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  case DType::BF16:
    return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  case DType::F64:
    return CU_TENSOR_MAP_DATA_TYPE_FLOAT64;
  case DType::I32:
    return CU_TENSOR_MAP_DATA_TYPE_INT32;
  case DType::I64:
    return CU_TENSOR_MAP_DATA_TYPE_INT64;
  case DType::I8:
  case DType::I1: // Refused by the manifest.
    // The driver has no signed byte type; a load copies bits, so the
    // unsigned one serves.
    return CU_TENSOR_MAP_DATA_TYPE_UINT8;
  }
  return CU_TENSOR_MAP_DATA_TYPE_UINT8;
}

int swizzleOf(TmaSwizzle swizzle) {
  switch (swizzle) {
  case TmaSwizzle::None:
    return CU_TENSOR_MAP_SWIZZLE_NONE;
  case TmaSwizzle::B32:
    return CU_TENSOR_MAP_SWIZZLE_32B;
  case TmaSwizzle::B64:
    return CU_TENSOR_MAP_SWIZZLE_64B;
  case TmaSwizzle::B128:
    return CU_TENSOR_MAP_SWIZZLE_128B;
  }
  return CU_TENSOR_MAP_SWIZZLE_NONE;
}

int l2PromotionOf(TmaL2Promotion promotion) {
  switch (promotion) {
  case TmaL2Promotion::None:
    return CU_TENSOR_MAP_L2_PROMOTION_NONE;
  case TmaL2Promotion::B64:
    return CU_TENSOR_MAP_L2_PROMOTION_L2_64B;
  case TmaL2Promotion::B128:
    return CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  case TmaL2Promotion::B256:
    return CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  }
  return CU_TENSOR_MAP_L2_PROMOTION_NONE;
}

/// The strides of `t` in elements; DLPack's NULL means compact row-major.
std::vector<int64_t> elementStrides(const attnc_tensor &t) {
  std::vector<int64_t> strides(static_cast<size_t>(t.ndim));
  int64_t compact = 1;
  for (int32_t k = t.ndim - 1; k >= 0; --k) {
    strides[k] = t.strides ? t.strides[k] : compact;
    if (__builtin_mul_overflow(compact, t.shape[k], &compact))
      compact = INT64_MAX; // Too far apart for TMA anyway.
  }
  return strides;
}

} // namespace

Status tensorMapLayout(const ArgSpec &arg, const ParamSlot &slot,
                       const attnc_tensor &tensor, TensorMapLayout &out) {
  // The map's axes as a view of the tensor: an axis the tensor lacks has
  // extent 1 (and any stride; see below).
  attnc_tensor t = tensor;
  std::vector<int64_t> viewShape, viewStrides;
  if (!slot.tile.axes.empty()) {
    std::vector<int64_t> strides = elementStrides(tensor);
    for (int64_t axis : slot.tile.axes) {
      viewShape.push_back(axis < 0 ? 1 : tensor.shape[axis]);
      viewStrides.push_back(axis < 0 ? 0 : strides[static_cast<size_t>(axis)]);
    }
    t.ndim = static_cast<int32_t>(viewShape.size());
    t.shape = viewShape.data();
    t.strides = viewStrides.data();
  }
  out = TensorMapLayout();
  auto needs = [&](const std::string &what) {
    return invalidArgument("argument '" + arg.name + "': TMA needs " + what);
  };
  int32_t rank = t.ndim;
  uint64_t elementBytes = dtypeSize(arg.dtype);
  out.dataType = dataTypeOf(arg.dtype);
  out.rank = static_cast<uint32_t>(rank);
  out.swizzle = swizzleOf(slot.tile.swizzle);
  out.l2Promotion = l2PromotionOf(slot.tile.l2Promotion);
  out.oobFill = slot.tile.oobFill == TmaOobFill::Nan
                    ? CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA
                    : CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  for (int32_t k = 0; k < rank; ++k) {
    int32_t axis = rank - 1 - k;
    out.dims[axis] = static_cast<uint64_t>(t.shape[k]);
    out.box[axis] = static_cast<uint32_t>(slot.tile.box[k]);
    out.elementStrides[axis] = 1;
    out.empty |= t.shape[k] == 0;
  }
  if (out.empty)
    return Status::ok();
  for (int32_t k = 0; k < rank; ++k)
    if (out.dims[rank - 1 - k] > kMaxExtent)
      return needs("extents up to 2^32; axis " + std::to_string(k) + " has " +
                   std::to_string(t.shape[k]));

  std::vector<int64_t> strides = elementStrides(t);
  int32_t inner = rank - 1;
  if (t.shape[inner] > 1 && strides[inner] != 1)
    return needs("the innermost axis contiguous; stride of axis " +
                 std::to_string(inner) + " is " +
                 std::to_string(strides[inner]) + " elements");
  // The bytes the axes inside axis k span, to stand in for the stride of an
  // axis of extent 1.
  uint64_t span = out.dims[0] * elementBytes;
  for (int32_t k = inner - 1; k >= 0; --k) {
    uint64_t bytes = 0;
    bool tooLarge = __builtin_mul_overflow(static_cast<uint64_t>(strides[k]),
                                           elementBytes, &bytes) ||
                    bytes >= kMaxStrideBytes;
    if (t.shape[k] == 1 &&
        (tooLarge || bytes == 0 || bytes % kAlignment != 0)) {
      // An axis of extent 1 is never stepped along, so its stride is free
      // (PyTorch leaves any value there, 0 where it broadcasts; a map's axis
      // the tensor lacks has 0), but the driver wants a valid one.
      bytes = (span + kAlignment - 1) / kAlignment * kAlignment;
      if (span > kMaxStrideBytes || bytes >= kMaxStrideBytes)
        bytes = kAlignment;
    } else if (tooLarge) {
      return needs("strides below 2^40 bytes; stride of axis " +
                   std::to_string(k) + " is " + std::to_string(strides[k]) +
                   " elements");
    } else if (bytes % kAlignment != 0) {
      return needs("16-byte aligned strides; stride of axis " +
                   std::to_string(k) + " is " + std::to_string(bytes) +
                   " bytes");
    }
    out.strides[inner - 1 - k] = bytes;
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(t.shape[k]), &span))
      span = UINT64_MAX;
  }
  return Status::ok();
}

Status tensorMapLayouts(const Package &pkg, size_t e,
                        const std::vector<int64_t> &dims,
                        const std::vector<const attnc_tensor *> &tensorOf,
                        bool checkAddresses,
                        std::vector<TensorMapLayout> &out) {
  out.clear();
  const EntrySpec &entry = pkg.manifest.entries[e];
  for (const ParamSlot &p : entry.params) {
    if (p.kind != ParamSlot::Kind::Tma)
      continue;
    const ArgSpec *arg;
    const attnc_tensor *t;
    attnc_tensor workspaceTensor{};
    std::vector<int64_t> shape;
    int w = pkg.tmaWorkspace(p);
    if (w >= 0) {
      // Dense row-major (null strides); only its shape and type are read.
      arg = &*pkg.workspaceTensors[static_cast<size_t>(w)];
      if (Status s =
              workspaceTensorShape(pkg, static_cast<size_t>(w), dims, shape))
        return s.withContext("entry '" + entry.name + "'");
      workspaceTensor.ndim = static_cast<int32_t>(shape.size());
      workspaceTensor.shape = shape.data();
      workspaceTensor.dtype = toCDType(arg->dtype);
      t = &workspaceTensor;
    } else {
      int a = pkg.findArg(p.arg);
      arg = &pkg.manifest.args[static_cast<size_t>(a)];
      t = tensorOf[static_cast<size_t>(a)];
    }
    TensorMapLayout layout;
    Status s = tensorMapLayout(*arg, p, *t, layout);
    if (s.isOk() && checkAddresses && !layout.empty && w < 0)
      s = checkTensorMapAddress(*arg, static_cast<const char *>(t->data) +
                                          t->byte_offset);
    if (!s.isOk()) {
      if (!p.tile.optional)
        return s.withContext("entry '" + entry.name + "'");
      // The kernel does without the map: all zeros, no driver call.
      layout = TensorMapLayout();
      layout.empty = true;
    }
    out.push_back(layout);
  }
  return Status::ok();
}

Status checkTensorMapAddress(const ArgSpec &arg, const void *address) {
  if (reinterpret_cast<uintptr_t>(address) % kAlignment == 0)
    return Status::ok();
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%p", address);
  return invalidArgument("argument '" + arg.name +
                         "': TMA needs a 16-byte aligned address; data + "
                         "byte_offset is " +
                         buf);
}

Status encodeTensorMap(const Driver &d, const ArgSpec &arg,
                       const TensorMapLayout &layout, void *address,
                       CUtensorMap &out) {
  out = CUtensorMap();
  if (layout.empty)
    return Status::ok();
  return d.check(d.cuTensorMapEncodeTiled(
                     &out, layout.dataType, layout.rank, address, layout.dims,
                     layout.strides, layout.box, layout.elementStrides,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, layout.swizzle,
                     layout.l2Promotion, layout.oobFill),
                 "cuTensorMapEncodeTiled for argument '" + arg.name + "'");
}

} // namespace cuda
} // namespace attn
