//===- LaunchCheckTest.cpp - Argument checks before a launch --------------===//

#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <functional>

using namespace attn;
using namespace attn::test;

namespace {

class LaunchCheckTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(readPackage(serializedAttention(), pkg));
  }

  /// Runs the check with the current fields; returns the status.
  Status check() {
    ins = {bf16Tensor(qShape, qStrides.empty() ? nullptr : &qStrides),
           bf16Tensor(kShape), bf16Tensor(vShape)};
    outs = {bf16Tensor(oShape, oStrides.empty() ? nullptr : &oStrides)};
    for (auto &f : tweaks)
      f();
    return checkLaunch(pkg, ins.data(), ins.size(), params.data(),
                       params.size(), outs.data(), outs.size(), bound);
  }

  void expectError(const std::string &needle) {
    Status s = check();
    ASSERT_TRUE(s) << "accepted; expected: " << needle;
    EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(s.getMessage(), needle);
  }

  Package pkg;
  BoundLaunch bound;
  std::vector<int64_t> qShape = {2, 16, 1000, 64}, kShape = {2, 8, 4096, 64},
                       vShape = {2, 8, 4096, 64}, oShape = {2, 16, 1000, 64};
  std::vector<int64_t> qStrides, oStrides;
  std::vector<double> params = {512, 0.125};
  std::vector<attnc_tensor> ins, outs;
  std::vector<std::function<void()>> tweaks;
};

TEST_F(LaunchCheckTest, BindsDimsAndGrids) {
  Status s = check();
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(bound.device, 0);
  EXPECT_EQ(bound.dims, (std::vector<int64_t>{2, 16, 8, 1000, 4096, 64}));
  ASSERT_EQ(bound.grids.size(), 1u);
  EXPECT_EQ(bound.grids[0][0], 8);
  EXPECT_EQ(bound.grids[0][1], 16);
  EXPECT_EQ(bound.grids[0][2], 2);
  EXPECT_EQ(bound.argValues[3], 512);
  EXPECT_EQ(bound.argValues[4], 0.125);
}

TEST_F(LaunchCheckTest, DefaultsAndMissingParams) {
  params = {};
  expectError("param 'scale' was not given and has no default");
  params = {7};
  expectError("param 'scale' was not given and has no default");
  params = {1.5, 1.0};
  expectError("param 'window': expected an integer that fits i32, got 1.5");
  params = {4294967296.0, 1.0};
  expectError(
      "param 'window': expected an integer that fits i32, got 4294967296");
  params = {1, 2, 3};
  expectError("kernel 'gqa' takes at most 2 params (window, scale), got 3");
}

TEST_F(LaunchCheckTest, ShapeMismatchNamesTheExpectedShape) {
  vShape = {2, 16, 4096, 64};
  expectError("input 'V': expected shape [B=2, G=8, N=4096, D=64] (from Q, K "
              "and the spec), got [2, 16, 4096, 64]");
  vShape = {2, 8, 4096, 64};
  kShape = {2, 8, 4096, 128};
  expectError("input 'K': expected shape [B=2, G=8, N=4096, D=64] (from Q and "
              "the spec), got [2, 8, 4096, 128]");
  kShape = {2, 8, 4096, 64};
  oShape = {2, 16, 999, 64};
  expectError("output 'O': expected shape [B=2, H=16, M=1000, D=64] (from Q "
              "and the spec), got [2, 16, 999, 64]");
  oShape = {2, 16, 1000};
  expectError("output 'O': expected rank 4 [B, H, M, D], got rank 3 [2, 16, "
              "1000]");
}

TEST_F(LaunchCheckTest, Constraints) {
  kShape = vShape = {2, 5, 4096, 64};
  expectError("constraint \"H % G == 0\" of kernel 'gqa' does not hold for "
              "B=2, H=16, G=5, M=1000, N=4096, D=64");
}

TEST_F(LaunchCheckTest, DeviceAndDtype) {
  tweaks.push_back([&] { ins[1].device_type = ATTNC_DEVICE_CPU; });
  expectError("input 'K': expected a CUDA tensor, got device type 1 (CPU)");
  tweaks.clear();
  tweaks.push_back([&] { ins[2].device_id = 1; });
  expectError("input 'V': is on CUDA device 1 but 'Q' is on device 0");
  tweaks.clear();
  tweaks.push_back([&] { ins[0].dtype = {ATTNC_DTYPE_FLOAT, 32, 1}; });
  expectError("input 'Q': expected dtype bf16, got f32");
  tweaks.clear();
  tweaks.push_back([&] { ins[0].dtype = {ATTNC_DTYPE_BFLOAT, 16, 4}; });
  expectError("input 'Q': expected dtype bf16, got (code 4, bits 16, lanes 4)");
  tweaks.clear();
  tweaks.push_back([&] { outs[0].data = nullptr; });
  expectError("output 'O': data pointer is NULL");
  tweaks.clear();
  tweaks.push_back([&] { ins[0].byte_offset = 2; });
  expectError("input 'Q': data address (data + byte_offset) must be aligned "
              "to 16 bytes");
  tweaks.clear();
  tweaks.push_back([&] { ins[0].ndim = -1; });
  expectError("input 'Q': malformed descriptor (ndim -1, shape set)");
}

TEST_F(LaunchCheckTest, Strides) {
  // Q is inner-contiguous: a padded row stride is fine.
  qStrides = {16 * 1000 * 128, 1000 * 128, 128, 1};
  EXPECT_FALSE(check());
  qStrides = {16 * 1000 * 64, 1000 * 64, 1, 1000};
  expectError("input 'Q': the kernel needs innermost stride 1, got strides "
              "[1024000, 64000, 1, 1000]");
  // Q's 16-byte alignment holds for each row: a row stride of 68 bf16
  // (136 bytes) would misalign every other row's vector loads.
  qStrides = {16 * 1000 * 68, 1000 * 68, 68, 1};
  expectError("input 'Q': the kernel reads rows with 16-byte loads, so "
              "strides must be multiples of 8 elements; stride of axis 2 is "
              "68");
  qStrides = {};
  // O must be contiguous.
  oStrides = {16 * 1000 * 128, 1000 * 128, 128, 1};
  expectError("output 'O': the kernel needs a contiguous row-major tensor "
              "(strides [1024000, 64000, 64, 1]), got strides [2048000, "
              "128000, 128, 1]");
  // Size-1 axes may have any stride (PyTorch's convention).
  oShape = {2, 16, 1, 64};
  qShape = {2, 16, 1, 64};
  oStrides = {1024, 64, 12345, 1};
  EXPECT_FALSE(check());
  oStrides = {1024, -64, 64, 1};
  expectError("output 'O': negative strides are not supported, got strides "
              "[1024, -64, 64, 1]");
}

TEST_F(LaunchCheckTest, CountsAndEmptyProblems) {
  tweaks.push_back([&] { ins.pop_back(); });
  expectError("kernel 'gqa' takes 3 inputs (Q, K, V), got 2");
  tweaks.clear();
  tweaks.push_back([&] { outs.clear(); });
  expectError("kernel 'gqa' takes 1 outputs (O), got 0");
  tweaks.clear();
  // M = 0: an empty problem is valid and gets an empty grid.
  qShape = oShape = {2, 16, 0, 64};
  tweaks.push_back([&] { ins[0].data = nullptr; });
  Status s = check();
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(bound.grids[0][0], 0);
}

/// Checks a launch of the split-K package with Q[b, 64], K[b, n, 64].
Status checkSplitK(const Package &pkg, int64_t b, int64_t n,
                   BoundLaunch &bound) {
  std::vector<int64_t> q = {b, 64}, k = {b, n, 64};
  attnc_tensor ins[2] = {bf16Tensor(q), bf16Tensor(k)};
  attnc_tensor outs[1] = {bf16Tensor(q)};
  return checkLaunch(pkg, ins, 2, nullptr, 0, outs, 1, bound);
}

Package readSplitK(const PackageManifest &m = splitKManifest()) {
  Package pkg;
  Status s = readPackage(serialized(m, kSplitKPtx), pkg);
  EXPECT_FALSE(s) << s.getMessage();
  return pkg;
}

TEST(LaunchCheckWhenTest, WhenSelectsEntries) {
  Package pkg = readSplitK();
  BoundLaunch bound;
  Status s = checkSplitK(pkg, 2, 100, bound);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(bound.enabled, (std::vector<bool>{true, false, false}));
  ASSERT_EQ(bound.grids.size(), 3u);
  EXPECT_EQ(bound.grids[0], (std::array<int64_t, 3>{2, 1, 1}));
  EXPECT_EQ(bound.grids[1], (std::array<int64_t, 3>{0, 0, 0}));

  s = checkSplitK(pkg, 2, 1000, bound);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(bound.enabled, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(bound.grids[0], (std::array<int64_t, 3>{0, 0, 0}));
  EXPECT_EQ(bound.grids[1], (std::array<int64_t, 3>{2, 4, 1}));
  EXPECT_EQ(bound.grids[2], (std::array<int64_t, 3>{2, 1, 1}));

  // Without a `when` an entry always runs.
  BoundLaunch plain;
  Package att;
  ASSERT_FALSE(readPackage(serializedAttention(), att));
  std::vector<int64_t> q = {1, 4, 100, 64}, k = {1, 2, 300, 64};
  attnc_tensor ins[3] = {bf16Tensor(q), bf16Tensor(k), bf16Tensor(k)};
  attnc_tensor outs[1] = {bf16Tensor(q)};
  double params[2] = {128, 0.125};
  ASSERT_FALSE(checkLaunch(att, ins, 3, params, 2, outs, 1, plain));
  EXPECT_EQ(plain.enabled, (std::vector<bool>{true}));
}

TEST(LaunchCheckWhenTest, DisabledEntriesAreNotEvaluated) {
  // Grid formulas that divide by zero exactly when the entry is disabled.
  PackageManifest m = splitKManifest();
  m.entries[1].grid = {"B", "N / (N - 256)"};
  m.entries[1].when = "N != 256";
  Package pkg = readSplitK(m);
  BoundLaunch bound;
  Status s = checkSplitK(pkg, 2, 256, bound);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(bound.enabled, (std::vector<bool>{true, false, false}));
  // Enabled, the same grid is an error.
  m.entries[1].when.clear();
  pkg = readSplitK(m);
  s = checkSplitK(pkg, 2, 256, bound);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(),
            "entry 'decode': formula \"N / (N - 256)\": division by zero");
  // A `when` that cannot be evaluated is an error too.
  m = splitKManifest();
  m.entries[2].when = "B / (N - 256) > 0";
  pkg = readSplitK(m);
  s = checkSplitK(pkg, 2, 256, bound);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(s.getMessage(), "entry 'merge': when: formula \"B / (N - 256) > "
                            "0\": division by zero");
}

TEST(LaunchCheckWhenTest, WorkspaceBytes) {
  Package pkg = readSplitK();
  BoundLaunch bound;
  ASSERT_FALSE(checkSplitK(pkg, 2, 1000, bound));
  std::vector<int64_t> bytes;
  ASSERT_FALSE(workspaceBytes(pkg, bound, {0, 1, 2}, bytes));
  EXPECT_EQ(bytes, (std::vector<int64_t>{2 * 4 * 64 * 4, 2 * 4 * 4}));
  // Only what the given, enabled entries use.
  ASSERT_FALSE(workspaceBytes(pkg, bound, {0}, bytes));
  EXPECT_EQ(bytes, (std::vector<int64_t>{0, 0}));
  ASSERT_FALSE(checkSplitK(pkg, 2, 100, bound));
  ASSERT_FALSE(workspaceBytes(pkg, bound, {0, 1, 2}, bytes));
  EXPECT_EQ(bytes, (std::vector<int64_t>{0, 0}));

  PackageManifest m = splitKManifest();
  m.workspaces[1].bytes = "256 - N";
  pkg = readSplitK(m);
  ASSERT_FALSE(checkSplitK(pkg, 2, 1000, bound));
  Status s = workspaceBytes(pkg, bound, {1}, bytes);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(s.getMessage(), "workspace 'lse': bytes = 256 - N = -744 is "
                            "negative for B=2, N=1000, D=64");
  m.workspaces[1].bytes = "B / (N - 1000)";
  pkg = readSplitK(m);
  ASSERT_FALSE(checkSplitK(pkg, 2, 1000, bound));
  s = workspaceBytes(pkg, bound, {1}, bytes);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "workspace 'lse': formula \"B / (N - 1000)\": "
                            "division by zero");
  // Workspaces that no given, enabled entry uses are not evaluated.
  EXPECT_FALSE(workspaceBytes(pkg, bound, {0}, bytes));
  m.workspaces[1].bytes = "B / (N - 100)";
  pkg = readSplitK(m);
  ASSERT_FALSE(checkSplitK(pkg, 2, 100, bound));
  EXPECT_FALSE(workspaceBytes(pkg, bound, {0, 1, 2}, bytes));
}

TEST(LaunchCheckFallbackTest, FallbacksRunWhenTheirEntryDoes) {
  PackageManifest m = tmaManifest();
  m.entries[0].when = "N >= 128";
  Package pkg;
  Status s = readPackage(serialized(m, kTmaPtx), pkg);
  ASSERT_FALSE(s) << s.getMessage();
  std::vector<int64_t> q = {2, 16, 1000, 64};
  for (int64_t n : {64, 128}) {
    std::vector<int64_t> k = {2, 16, n, 64};
    attnc_tensor ins[2] = {bf16Tensor(q), bf16Tensor(k)};
    attnc_tensor outs[1] = {bf16Tensor(q)};
    BoundLaunch bound;
    s = checkLaunch(pkg, ins, 2, nullptr, 0, outs, 1, bound);
    ASSERT_FALSE(s) << s.getMessage();
    // fwd, finish, fwd_plain: the fallback takes fwd's `when`.
    EXPECT_EQ(bound.enabled, (std::vector<bool>{n >= 128, true, n >= 128}));
    EXPECT_EQ(bound.grids[2][0], n >= 128 ? 16 : 0); // cdiv(M, 64)
  }
}

TEST_F(LaunchCheckTest, DTypeConversions) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I1,
                  DType::I8, DType::I32, DType::I64}) {
    DType back;
    ASSERT_TRUE(fromCDType(toCDType(t), back));
    EXPECT_EQ(back, t);
  }
  DType t;
  EXPECT_FALSE(fromCDType({ATTNC_DTYPE_UINT, 32, 1}, t));
}

} // namespace
