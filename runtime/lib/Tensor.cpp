//===- Tensor.cpp - Host tensors and element types ------------------------===//

#include "attn/Runtime/Tensor.h"

#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

namespace attn {

size_t dtypeSize(DType type) {
  switch (type) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::I1:
  case DType::I8:
    return 1;
  }
  return 0;
}

std::string_view dtypeName(DType type) {
  switch (type) {
  case DType::F32:
    return "f32";
  case DType::F16:
    return "f16";
  case DType::BF16:
    return "bf16";
  case DType::F64:
    return "f64";
  case DType::I1:
    return "i1";
  case DType::I8:
    return "i8";
  case DType::I32:
    return "i32";
  case DType::I64:
    return "i64";
  }
  return "?";
}

std::optional<DType> parseDType(std::string_view name) {
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::F64,
                     DType::I1, DType::I8, DType::I32, DType::I64})
    if (dtypeName(type) == name)
      return type;
  return std::nullopt;
}

bool isFloatDType(DType type) {
  return type == DType::F32 || type == DType::F16 || type == DType::BF16 ||
         type == DType::F64;
}

bool isIntegerDType(DType type) { return !isFloatDType(type); }

bool fitsIntegerDType(double value, DType type) {
  if (!std::isfinite(value) || std::floor(value) != value)
    return false;
  switch (type) {
  case DType::I1:
    return value == 0 || value == 1;
  case DType::I8:
    return value >= -128 && value <= 127;
  case DType::I32:
    return value >= -2147483648.0 && value <= 2147483647.0;
  default:
    return value >= -9223372036854775808.0 && value < 9223372036854775808.0;
  }
}

uint16_t floatToBF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (std::isnan(value))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float bf16ToFloat(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, 4);
  return value;
}

uint16_t floatToF16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  uint32_t sign = (bits >> 16) & 0x8000;
  int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xff) - 127 + 15;
  uint32_t mantissa = bits & 0x7fffff;
  if (std::isnan(value))
    return static_cast<uint16_t>(sign | 0x7e00);
  if (exponent >= 31)
    return static_cast<uint16_t>(sign | 0x7c00);
  if (exponent <= 0) {
    if (exponent < -10)
      return static_cast<uint16_t>(sign);
    mantissa |= 0x800000;
    uint32_t shift = static_cast<uint32_t>(14 - exponent);
    uint32_t half = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1)))
      ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(exponent) << 10) |
                  (mantissa >> 13);
  uint32_t rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
    ++half;
  return static_cast<uint16_t>(half);
}

float f16ToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  uint32_t exponent = (bits >> 10) & 0x1f;
  uint32_t mantissa = bits & 0x3ff;
  float magnitude;
  if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  else if (exponent == 31)
    magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN()
                         : std::numeric_limits<float>::infinity();
  else
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400),
                           static_cast<int>(exponent) - 25);
  return sign ? -magnitude : magnitude;
}

static constexpr size_t kAlignment = 64;

HostTensor::HostTensor(DType type, std::vector<int64_t> shape)
    : type(type), shape(std::move(shape)) {
  numElements = 1;
  for (int64_t size : this->shape) {
    assert(size >= 0 && "negative tensor size");
    numElements *= size;
  }
  storage.assign(numElements * dtypeSize(type) + kAlignment, 0);
}

HostTensor::HostTensor(const HostTensor &other)
    : HostTensor(other.type, other.shape) {
  if (numElements > 0)
    std::memcpy(data(), other.data(), numElements * dtypeSize(type));
}

HostTensor &HostTensor::operator=(const HostTensor &other) {
  if (this != &other)
    *this = HostTensor(other);
  return *this;
}

void *HostTensor::alignedBase() {
  auto address = reinterpret_cast<uintptr_t>(storage.data());
  return reinterpret_cast<void *>((address + kAlignment - 1) &
                                  ~(uintptr_t)(kAlignment - 1));
}

std::vector<int64_t> HostTensor::getStrides() const {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t i = getRank() - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

double HostTensor::getAsDouble(int64_t i) const {
  assert(i >= 0 && i < numElements && "element index out of range");
  const auto *base = static_cast<const unsigned char *>(data());
  switch (type) {
  case DType::F32:
    return reinterpret_cast<const float *>(base)[i];
  case DType::F64:
    return reinterpret_cast<const double *>(base)[i];
  case DType::BF16:
    return bf16ToFloat(reinterpret_cast<const uint16_t *>(base)[i]);
  case DType::F16:
    return f16ToFloat(reinterpret_cast<const uint16_t *>(base)[i]);
  case DType::I1:
  case DType::I8:
    return reinterpret_cast<const int8_t *>(base)[i];
  case DType::I32:
    return reinterpret_cast<const int32_t *>(base)[i];
  case DType::I64:
    return static_cast<double>(reinterpret_cast<const int64_t *>(base)[i]);
  }
  return 0;
}

void HostTensor::setFromDouble(int64_t i, double value) {
  assert(i >= 0 && i < numElements && "element index out of range");
  auto *base = static_cast<unsigned char *>(data());
  switch (type) {
  case DType::F32:
    reinterpret_cast<float *>(base)[i] = static_cast<float>(value);
    return;
  case DType::F64:
    reinterpret_cast<double *>(base)[i] = value;
    return;
  case DType::BF16:
    reinterpret_cast<uint16_t *>(base)[i] =
        floatToBF16(static_cast<float>(value));
    return;
  case DType::F16:
    reinterpret_cast<uint16_t *>(base)[i] =
        floatToF16(static_cast<float>(value));
    return;
  case DType::I1:
    reinterpret_cast<int8_t *>(base)[i] = value != 0;
    return;
  case DType::I8:
    reinterpret_cast<int8_t *>(base)[i] = static_cast<int8_t>(value);
    return;
  case DType::I32:
    reinterpret_cast<int32_t *>(base)[i] = static_cast<int32_t>(value);
    return;
  case DType::I64:
    reinterpret_cast<int64_t *>(base)[i] = static_cast<int64_t>(value);
    return;
  }
}

std::string HostTensor::describe() const {
  std::string text(dtypeName(type));
  text += "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i)
      text += ", ";
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

double relativeError(const HostTensor &out, const HostTensor &ref) {
  if (out.getNumElements() != ref.getNumElements())
    return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < ref.getNumElements(); ++i) {
    double expected = ref.getAsDouble(i), actual = out.getAsDouble(i);
    if (std::isinf(expected) && actual == expected)
      continue; // e.g. LSE = -inf of a fully masked row
    if (std::isnan(expected) && std::isnan(actual))
      continue; // the same undefined value, e.g. LSE where D = 0: 0 * inf
    if (std::isnan(actual) || std::isnan(expected) || std::isinf(actual) ||
        std::isinf(expected))
      return std::numeric_limits<double>::infinity();
    diff += (actual - expected) * (actual - expected);
    norm += expected * expected;
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

} // namespace attn
