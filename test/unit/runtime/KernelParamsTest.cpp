//===- KernelParamsTest.cpp - Kernel parameter values of a launch ---------===//
//
// The values handed to cuLaunchKernel, computed on the host: expr slots,
// workspace slots and the range checks of the slot types.
//
//===----------------------------------------------------------------------===//

#include "../../../runtime/lib/KernelParams.h"
#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

using namespace attn;
using namespace attn::test;

namespace {

class KernelParamsTest : public ::testing::Test {
protected:
  /// Reads `m`, checks a launch with Q[b, 64], K[b, n, 64] and builds the
  /// slots of entry `e`.
  Status build(const PackageManifest &m, int64_t b, int64_t n, size_t e) {
    Status s = readPackage(serialized(m, kSplitKPtx), pkg);
    if (s)
      return s;
    q = {b, 64};
    k = {b, n, 64};
    tensors = {bf16Tensor(q, nullptr, reinterpret_cast<void *>(0x10000)),
               bf16Tensor(k, nullptr, reinterpret_cast<void *>(0x20000)),
               bf16Tensor(q, nullptr, reinterpret_cast<void *>(0x30000))};
    if (Status s = checkLaunch(pkg, tensors.data(), 2, nullptr, 0, &tensors[2],
                               1, bound))
      return s;
    return buildSlots(pkg, e, bound, {&tensors[0], &tensors[1], &tensors[2]},
                      slots);
  }

  Package pkg;
  BoundLaunch bound;
  std::vector<int64_t> q, k;
  std::vector<attnc_tensor> tensors;
  std::vector<SlotValue> slots;
};

TEST_F(KernelParamsTest, ExprAndWorkspaceSlots) {
  Status s = build(splitKManifest(), 2, 1000, /*merge*/ 2);
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(slots.size(), 5u);
  // Workspace slots stay null until the buffers exist.
  EXPECT_EQ(slots[0].ptr, nullptr);
  EXPECT_EQ(slots[1].ptr, nullptr);
  EXPECT_EQ(slots[2].ptr, reinterpret_cast<void *>(0x30000));
  EXPECT_EQ(slots[3].i32, 4); // cdiv(1000, 256)
  EXPECT_EQ(slots[4].f32, 2000.0f);
  int a, b;
  setWorkspaceSlots(pkg, 2, {&a, &b}, slots);
  EXPECT_EQ(slots[0].ptr, &a);
  EXPECT_EQ(slots[1].ptr, &b);
  EXPECT_EQ(slots[2].ptr, reinterpret_cast<void *>(0x30000));

  s = build(splitKManifest(), 3, 100, /*prefill*/ 0);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(slots[3].i32, 100);
  EXPECT_EQ(slots[4].i64, 300);
}

TEST_F(KernelParamsTest, ExprValuesAreRangeChecked) {
  PackageManifest m = splitKManifest();
  m.entries[2].params[3].arg = "N * 10000000";
  Status s = build(m, 2, 1000, 2);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(s.getMessage(), "entry 'merge': kernel param 3 (N * 10000000) = "
                            "10000000000 does not fit i32");
  m.entries[2].params[3].arg = "-2147483648 + 0 * N";
  s = build(m, 2, 1000, 2);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(slots[3].i32, INT32_MIN);
  // i64 values are exact beyond 2^53.
  m.entries[0].params[4].arg = "N * 100000000000000 + 1";
  s = build(m, 2, 100, 0);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(slots[4].i64, 10000000000000001);
  // Evaluation errors name the entry and the slot.
  m.entries[0].params[4].arg = "B / (N - 100)";
  s = build(m, 2, 100, 0);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "entry 'prefill': kernel param 4: formula \"B / "
                            "(N - 100)\": division by zero");
}

TEST_F(KernelParamsTest, OtherSlotKinds) {
  // The attention package: pointers, strides, dims and params.
  Status s = readPackage(serializedAttention(), pkg);
  ASSERT_FALSE(s) << s.getMessage();
  std::vector<int64_t> qs = {1, 4, 100, 64}, ks = {1, 2, 300, 64};
  std::vector<int64_t> kStrides = {2 * 512 * 64, 512 * 64, 64, 1};
  std::vector<attnc_tensor> t = {bf16Tensor(qs), bf16Tensor(ks, &kStrides),
                                 bf16Tensor(ks), bf16Tensor(qs)};
  double params[2] = {-7, 0.5};
  ASSERT_FALSE(checkLaunch(pkg, t.data(), 3, params, 2, &t[3], 1, bound));
  ASSERT_FALSE(buildSlots(
      pkg, 0, bound, {&t[0], &t[1], &t[2], nullptr, nullptr, &t[3]}, slots));
  ASSERT_EQ(slots.size(), 11u);
  EXPECT_EQ(slots[4].i64, 2 * 512 * 64);
  EXPECT_EQ(slots[6].i64, 64);
  EXPECT_EQ(slots[7].i32, 100);
  EXPECT_EQ(slots[8].i32, 300);
  EXPECT_EQ(slots[9].i32, -7);
  EXPECT_EQ(slots[10].f32, 0.5f);
}

} // namespace
