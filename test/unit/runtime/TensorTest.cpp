//===- TensorTest.cpp - Host tensors and element conversions --------------===//

#include "attn/Runtime/Tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

using namespace attn;

TEST(DTypeTest, NamesRoundTrip) {
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::F64,
                     DType::I1, DType::I8, DType::I32, DType::I64})
    EXPECT_EQ(parseDType(dtypeName(type)), type);
  EXPECT_FALSE(parseDType("f8").has_value());
}

TEST(DTypeTest, BF16RoundsToNearestEven) {
  EXPECT_EQ(bf16ToFloat(floatToBF16(1.0f)), 1.0f);
  // 1 + 2^-8 lies halfway between two bf16 values; ties go to even (1.0).
  EXPECT_EQ(bf16ToFloat(floatToBF16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(bf16ToFloat(floatToBF16(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBF16(NAN))));
}

TEST(DTypeTest, F16RoundTripsExactValues) {
  for (float value : {0.0f, 1.0f, -2.5f, 65504.0f, 0.000061035156f})
    EXPECT_EQ(f16ToFloat(floatToF16(value)), value);
  EXPECT_TRUE(std::isinf(f16ToFloat(floatToF16(1e6f))));
}

TEST(HostTensorTest, ShapeStridesAndAlignment) {
  HostTensor tensor(DType::BF16, {2, 3, 5});
  EXPECT_EQ(tensor.getNumElements(), 30);
  EXPECT_EQ(tensor.getStrides(), (std::vector<int64_t>{15, 5, 1}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor.data()) % 64, 0u);
  EXPECT_EQ(tensor.describe(), "bf16[2, 3, 5]");
}

TEST(HostTensorTest, CopiesHoldTheSameElementsWhereverTheirStorageLies) {
  // The aligned base lies at an offset into the storage that depends on
  // the allocation's address: copies made between allocations of every
  // size up to the alignment land at several such offsets.
  HostTensor source(DType::F64, {4, 6});
  for (int64_t i = 0; i < source.getNumElements(); ++i)
    source.setFromDouble(i, 1.0 + i);
  std::vector<std::vector<char>> padding;
  std::vector<HostTensor> copies;
  copies.reserve(2 * 64);
  for (size_t bytes = 1; bytes <= 64; ++bytes) {
    padding.emplace_back(bytes);
    copies.push_back(source);
    HostTensor assigned(DType::F64, {1});
    padding.emplace_back(bytes + 8);
    assigned = copies.back();
    copies.push_back(std::move(assigned));
  }
  for (const HostTensor &copy : copies) {
    ASSERT_EQ(copy.getShape(), source.getShape());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(copy.data()) % 64, 0u);
    for (int64_t i = 0; i < source.getNumElements(); ++i)
      ASSERT_EQ(copy.getAsDouble(i), 1.0 + i) << "element " << i;
  }
}

TEST(HostTensorTest, ValuesAreRoundedToTheElementType) {
  HostTensor ints(DType::I32, {4});
  ints.setFromDouble(2, 7.0);
  EXPECT_EQ(ints.getAsDouble(2), 7.0);
  HostTensor halfs(DType::BF16, {1});
  halfs.setFromDouble(0, 1.00390625); // needs 9 mantissa bits
  EXPECT_EQ(halfs.getAsDouble(0), 1.0);
}

TEST(RelativeErrorTest, MatchesNormRatioAndRejectsNaN) {
  HostTensor ref(DType::F64, {2}), out(DType::F64, {2});
  ref.setFromDouble(0, 3);
  ref.setFromDouble(1, 4);
  out.setFromDouble(0, 3);
  out.setFromDouble(1, 4.5);
  EXPECT_DOUBLE_EQ(relativeError(out, ref), 0.5 / 5.0);
  out.setFromDouble(1, NAN);
  EXPECT_TRUE(std::isinf(relativeError(out, ref)));
  // Matching infinities (LSE of a fully masked row) are not an error.
  ref.setFromDouble(1, -std::numeric_limits<double>::infinity());
  out.setFromDouble(1, -std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(relativeError(out, ref), 0.0);
  // Nor is NaN where the reference has NaN (0 * rsqrt(0) with D = 0); a
  // NaN on one side only still is.
  ref.setFromDouble(1, NAN);
  EXPECT_TRUE(std::isinf(relativeError(out, ref)));
  out.setFromDouble(1, NAN);
  EXPECT_DOUBLE_EQ(relativeError(out, ref), 0.0);
  // Empty tensors agree.
  EXPECT_DOUBLE_EQ(relativeError(HostTensor(DType::F32, {2, 0}),
                                 HostTensor(DType::F64, {2, 0})),
                   0.0);
}
