//===- GradientCheckTest.cpp - The error of a checked gradient ------------===//
//
// A gradient is checked by its relative error, except where its float64
// reference vanishes (the rounding of a sum that cancels): there by the root
// mean square of its error, which still catches a wrong value, a NaN or an
// infinity.
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/Gradient.h"

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>

using namespace attn;

namespace {

HostTensor tensorOf(DType type, std::initializer_list<double> values) {
  HostTensor tensor(type, {static_cast<int64_t>(values.size())});
  int64_t i = 0;
  for (double value : values)
    tensor.setFromDouble(i++, value);
  return tensor;
}

TEST(GradientCheckTest, AGradientThatDoesNotVanishIsCheckedRelatively) {
  HostTensor expected = tensorOf(DType::F64, {1e-3, -2e-3, 3e-3, 0});
  HostTensor gradient = tensorOf(DType::F32, {1.1e-3, -2e-3, 3e-3, 0});
  GradientError checked = getGradientError(gradient, expected);
  EXPECT_FALSE(checked.vanishes);
  EXPECT_DOUBLE_EQ(checked.error, relativeError(gradient, expected));
  EXPECT_GT(checked.error, 1e-2);
}

TEST(GradientCheckTest, AVanishingGradientIsCheckedByItsRootMeanSquare) {
  // The reference's rounding around 0, the kernel's larger rounding: far
  // apart relatively, both noise.
  HostTensor expected = tensorOf(DType::F64, {1e-17, -3e-18, 0, 2e-17});
  HostTensor rounded = tensorOf(DType::F32, {2e-8, -1e-8, 0, 3e-8});
  GradientError checked = getGradientError(rounded, expected);
  EXPECT_TRUE(checked.vanishes);
  EXPECT_GT(relativeError(rounded, expected), 1e8);
  EXPECT_NEAR(checked.error, std::sqrt((4e-16 + 1e-16 + 9e-16) / 4), 1e-12);
  EXPECT_LT(checked.error, 1e-4);
  // A gradient that should vanish and does not is an error.
  HostTensor wrong = tensorOf(DType::F32, {0.5, 0, 0, 0});
  EXPECT_GT(getGradientError(wrong, expected).error, 1e-1);
}

TEST(GradientCheckTest, NaNAndInfinitiesStayErrors) {
  HostTensor vanishing = tensorOf(DType::F64, {0, 0});
  HostTensor notVanishing = tensorOf(DType::F64, {1, 2});
  for (double bad : {NAN, INFINITY}) {
    HostTensor gradient = tensorOf(DType::F32, {bad, 0});
    EXPECT_TRUE(std::isinf(getGradientError(gradient, vanishing).error));
    EXPECT_TRUE(std::isinf(getGradientError(gradient, notVanishing).error));
  }
}

} // namespace
