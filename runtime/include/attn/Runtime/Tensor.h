//===- Tensor.h - Host tensors and element types ----------------*- C++ -*-===//
//
// A dense, row-major host tensor that owns its bytes. It is the currency
// between the driver, the reference evaluator and the CPU kernels; it has no
// MLIR or LLVM dependency.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_TENSOR_H
#define ATTN_RUNTIME_TENSOR_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

/// Element types a kernel argument can have.
enum class DType : uint8_t { F32, F16, BF16, F64, I1, I8, I32, I64 };

/// Size of one element in bytes.
size_t dtypeSize(DType type);
/// The spelling used in specs and messages: "f32", "bf16", ...
std::string_view dtypeName(DType type);
/// Parses a spelling of `dtypeName`; nullopt if unknown.
std::optional<DType> parseDType(std::string_view name);
bool isFloatDType(DType type);
bool isIntegerDType(DType type);
/// Whether `value` is an integer that the integer type `type` can hold.
bool fitsIntegerDType(double value, DType type);

/// Rounds a float to bf16 (round to nearest even) and back.
uint16_t floatToBF16(float value);
float bf16ToFloat(uint16_t bits);
uint16_t floatToF16(float value);
float f16ToFloat(uint16_t bits);

/// A dense row-major tensor in host memory, 64-byte aligned.
class HostTensor {
public:
  HostTensor() = default;
  HostTensor(DType type, std::vector<int64_t> shape);
  /// A copy has storage of its own, whose aligned base may lie at another
  /// offset into it: the elements are copied from base to base. A move
  /// keeps the storage, and so the offset.
  HostTensor(const HostTensor &other);
  HostTensor &operator=(const HostTensor &other);
  HostTensor(HostTensor &&other) = default;
  HostTensor &operator=(HostTensor &&other) = default;

  DType getDType() const { return type; }
  const std::vector<int64_t> &getShape() const { return shape; }
  int64_t getRank() const { return static_cast<int64_t>(shape.size()); }
  /// Number of elements (1 for a rank-0 tensor).
  int64_t getNumElements() const { return numElements; }
  /// Row-major strides in elements.
  std::vector<int64_t> getStrides() const;

  void *data() { return storage.empty() ? nullptr : alignedBase(); }
  const void *data() const {
    return storage.empty() ? nullptr
                           : const_cast<HostTensor *>(this)->alignedBase();
  }

  /// Reads element `i` (row-major linear index) converted to double.
  double getAsDouble(int64_t i) const;
  /// Writes element `i`, rounding `value` to the element type.
  void setFromDouble(int64_t i, double value);

  /// A description such as "bf16[2, 16, 128, 64]".
  std::string describe() const;

private:
  void *alignedBase();

  DType type = DType::F32;
  std::vector<int64_t> shape;
  int64_t numElements = 0;
  std::vector<unsigned char> storage;
};

/// ‖out − ref‖₂ / ‖ref‖₂ over all elements, treating NaN as an infinite
/// error unless the reference has NaN there too (equal infinities agree
/// likewise); when ‖ref‖ is 0 it is ‖out‖ (absolute).
double relativeError(const HostTensor &out, const HostTensor &ref);

} // namespace attn

#endif // ATTN_RUNTIME_TENSOR_H
