//===- GradientCheckTest.cpp - The error of a checked gradient ------------===//
//
// A gradient's error is measured against the larger of its float64
// reference and the scale of the terms the reference sums: relatively where
// the terms add up, against their scale where they cancel (the rounding of
// each term is then what a correct kernel is off by). A wrong value, a NaN
// or an infinity must fail either way.
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

TEST(GradientCheckTest, TermsOfOneSignAreCheckedRelatively) {
  // Each entry sums two terms of its sign (1e-3 = 4e-4 + 6e-4, ...): the
  // terms' scale is below the reference.
  HostTensor expected = tensorOf(DType::F64, {1e-3, -2e-3, 3e-3, 0});
  HostTensor scale =
      tensorOf(DType::F64, {std::hypot(4e-4, 6e-4), std::hypot(1e-3, 1e-3),
                            std::hypot(1e-3, 2e-3), 0});
  HostTensor gradient = tensorOf(DType::F32, {1.1e-3, -2e-3, 3e-3, 0});
  GradientError checked = getGradientError(gradient, expected, scale);
  EXPECT_FALSE(checked.cancels);
  EXPECT_DOUBLE_EQ(checked.error, relativeError(gradient, expected));
  EXPECT_GT(checked.error, 1e-2);
}

TEST(GradientCheckTest, ACancellingReferenceIsCheckedAgainstItsTerms) {
  // Terms of size about 1 that cancel to the reference's float64 rounding
  // (a bias added to a whole softmax row), and a kernel whose float32
  // rounding of them (u = 6e-8 each) leaves a few 1e-8: far apart
  // relatively, both rounding.
  HostTensor expected = tensorOf(DType::F64, {1e-17, -3e-18, 0, 2e-17});
  HostTensor scale = tensorOf(DType::F64, {1.0, 0.5, 2.0, 1.5});
  HostTensor rounded = tensorOf(DType::F32, {2e-8, -1e-8, 0, 3e-8});
  GradientError checked = getGradientError(rounded, expected, scale);
  EXPECT_TRUE(checked.cancels);
  EXPECT_GT(relativeError(rounded, expected), 1e8);
  double scaleNorm = std::sqrt(1.0 + 0.25 + 4.0 + 2.25);
  EXPECT_NEAR(checked.error, std::sqrt(4e-16 + 1e-16 + 9e-16) / scaleNorm,
              1e-12);
  EXPECT_LT(checked.error, 1e-4);
}

TEST(GradientCheckTest, APartlyCancellingReferenceIsCheckedAgainstItsTerms) {
  // One entry whose terms of random sign happen to cancel to 1e-4 of their
  // scale: a kernel off by their float32 rounding is off by 3e-4 of the
  // reference (a false alarm against the fp32 tolerance of 1e-4), 3e-8 of
  // the scale.
  HostTensor expected = tensorOf(DType::F64, {0.06379, 0});
  HostTensor scale = tensorOf(DType::F64, {637.9, 0});
  HostTensor rounded = tensorOf(DType::F32, {0.06379 * (1 + 3e-4), 0});
  GradientError checked = getGradientError(rounded, expected, scale);
  EXPECT_TRUE(checked.cancels);
  EXPECT_GT(relativeError(rounded, expected), 1e-4);
  EXPECT_LT(checked.error, 1e-7);
}

TEST(GradientCheckTest, AWrongGradientWhoseReferenceCancelsFails) {
  HostTensor expected = tensorOf(DType::F64, {1e-17, -3e-18, 0, 2e-17});
  HostTensor scale = tensorOf(DType::F64, {1.0, 0.5, 2.0, 1.5});
  // A gradient that should cancel and does not.
  HostTensor wrong = tensorOf(DType::F32, {0.5, 0, 0, 0});
  EXPECT_GT(getGradientError(wrong, expected, scale).error, 1e-1);
  // One of 100 terms of size 1 that cancel, dropped: an error of
  // 1/sqrt(100) of their scale.
  HostTensor hundredTerms = tensorOf(DType::F64, {0});
  HostTensor hundredScale = tensorOf(DType::F64, {10});
  HostTensor oneTermDropped = tensorOf(DType::F32, {1});
  GradientError dropped =
      getGradientError(oneTermDropped, hundredTerms, hundredScale);
  EXPECT_TRUE(dropped.cancels);
  EXPECT_DOUBLE_EQ(dropped.error, 0.1);
  EXPECT_GT(dropped.error, getGradientCheckTolerance(DType::BF16));
}

TEST(GradientCheckTest, NaNAndInfinitiesStayErrors) {
  HostTensor zeros = tensorOf(DType::F64, {0, 0});
  HostTensor cancelling = tensorOf(DType::F64, {1e-17, 0});
  HostTensor notCancelling = tensorOf(DType::F64, {1, 2});
  HostTensor scale = tensorOf(DType::F64, {1, 1});
  for (double bad : {NAN, INFINITY, -INFINITY}) {
    HostTensor gradient = tensorOf(DType::F32, {bad, 0});
    EXPECT_TRUE(std::isinf(getGradientError(gradient, zeros, zeros).error));
    EXPECT_TRUE(
        std::isinf(getGradientError(gradient, cancelling, scale).error));
    EXPECT_TRUE(
        std::isinf(getGradientError(gradient, notCancelling, scale).error));
  }
  // The same non-finite value in the reference agrees, as in relativeError;
  // another does not.
  HostTensor infinite = tensorOf(DType::F64, {-INFINITY, 1});
  EXPECT_EQ(
      getGradientError(tensorOf(DType::F32, {-INFINITY, 1}), infinite, scale)
          .error,
      0.0);
  EXPECT_TRUE(std::isinf(
      getGradientError(tensorOf(DType::F32, {INFINITY, 1}), infinite, scale)
          .error));
  EXPECT_TRUE(std::isinf(
      getGradientError(tensorOf(DType::F32, {0, 1}), infinite, scale).error));
}

TEST(GradientCheckTest, MismatchedShapesFail) {
  HostTensor expected = tensorOf(DType::F64, {1, 2});
  HostTensor scale = tensorOf(DType::F64, {1, 2});
  EXPECT_TRUE(std::isinf(
      getGradientError(tensorOf(DType::F32, {1}), expected, scale).error));
}

} // namespace
