//===- TensorValue.h - Tensors while the reference evaluates ----*- C++ -*-===//
//
// Internal to the reference evaluator.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_TENSORVALUE_H
#define ATTN_REFERENCE_LIB_TENSORVALUE_H

#include <cstdint>
#include <vector>

namespace attn::ref {

/// A tensor computed by the cascade: float64 data, a presence bitmap and a
/// row-major shape. Every element type is held as double, so one reader serves
/// floats, integers and i1 alike; `isInteger` says whether reads yield
/// integers.
struct TensorValue {
  std::vector<int64_t> shape;
  /// Row-major strides in elements, precomputed because every read needs them.
  std::vector<int64_t> strides;
  std::vector<double> data;
  /// One byte per entry, 1 when present. Empty means every entry is present,
  /// which is the common case and lets reads skip the check.
  std::vector<uint8_t> present;
  bool isInteger = false;

  int64_t getNumElements() const { return static_cast<int64_t>(data.size()); }
  int64_t getRank() const { return static_cast<int64_t>(shape.size()); }
  bool isPresent(int64_t i) const { return present.empty() || present[i]; }
  /// Drops the bitmap when it marks everything present.
  void compactPresence() {
    for (uint8_t p : present)
      if (!p)
        return;
    present.clear();
  }
};

/// The largest number of elements one tensor may have. A float64 oracle
/// holding more than this would need tens of gigabytes; reporting it is
/// better than dying in the allocator.
constexpr int64_t kMaxElements = int64_t(1) << 31;

/// Number of elements of `shape`, or -1 if a size is negative or the product
/// exceeds kMaxElements.
inline int64_t countElements(const std::vector<int64_t> &shape) {
  int64_t count = 1;
  for (int64_t size : shape) {
    if (size < 0)
      return -1;
    if (size != 0 && count > kMaxElements / size)
      return -1;
    count *= size;
  }
  return count > kMaxElements ? -1 : count;
}

/// Allocates a tensor of `shape` (which countElements accepted), all present.
inline TensorValue makeTensor(std::vector<int64_t> shape, bool isInteger) {
  TensorValue tensor;
  tensor.strides.assign(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    tensor.strides[i] = tensor.strides[i + 1] * shape[i + 1];
  tensor.data.assign(countElements(shape), 0.0);
  tensor.shape = std::move(shape);
  tensor.isInteger = isInteger;
  return tensor;
}

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_TENSORVALUE_H
