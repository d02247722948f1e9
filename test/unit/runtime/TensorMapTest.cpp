//===- TensorMapTest.cpp - Tensor map layouts, checked without a driver ---===//
//
// What a launch works out before it asks the driver for tensor maps: the
// arguments of cuTensorMapEncodeTiled (axes reversed, strides in bytes) and
// the reasons TMA cannot describe a tensor, which pick an entry's fallback
// or fail a launch without one.
//
//===----------------------------------------------------------------------===//

#include "../../../runtime/lib/cuda/TensorMap.h"
#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

using namespace attn;
using namespace attn::cuda;
using namespace attn::test;

namespace {

class TensorMapTest : public ::testing::Test {
protected:
  void SetUp() override {
    Status s = readPackage(serialized(tmaManifest(), kTmaPtx), pkg);
    ASSERT_FALSE(s) << s.getMessage();
  }

  /// The layout of fwd's map of Q for a Q of `shape` and `strides`.
  Status layoutOfQ(const std::vector<int64_t> &shape,
                   const std::vector<int64_t> *strides = nullptr) {
    attnc_tensor t = bf16Tensor(shape, strides);
    return tensorMapLayout(pkg.manifest.args[0],
                           pkg.manifest.entries[0].params[0], t, layout);
  }

  void expectError(const std::vector<int64_t> &shape,
                   const std::vector<int64_t> &strides,
                   const std::string &message) {
    Status s = layoutOfQ(shape, &strides);
    ASSERT_TRUE(s) << "accepted; expected: " << message;
    EXPECT_EQ(s.getCode(), ATTNC_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(s.getMessage(), message);
  }

  Package pkg;
  TensorMapLayout layout;
  std::vector<int64_t> shape = {2, 16, 1000, 64};
  /// B, H, M, N, D of a launch with Q of `shape` and N = 500.
  std::vector<int64_t> dims = {2, 16, 1000, 500, 64};
};

TEST_F(TensorMapTest, AxesReversedAndStridesInBytes) {
  Status s = layoutOfQ(shape);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.dataType, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
  EXPECT_EQ(layout.rank, 4u);
  EXPECT_EQ(std::vector<uint64_t>(layout.dims, layout.dims + 5),
            (std::vector<uint64_t>{64, 1000, 16, 2, 0}));
  EXPECT_EQ(std::vector<uint64_t>(layout.strides, layout.strides + 4),
            (std::vector<uint64_t>{128, 128000, 2048000, 0}));
  EXPECT_EQ(std::vector<uint32_t>(layout.box, layout.box + 5),
            (std::vector<uint32_t>{64, 128, 1, 1, 0}));
  EXPECT_EQ(
      std::vector<uint32_t>(layout.elementStrides, layout.elementStrides + 5),
      (std::vector<uint32_t>{1, 1, 1, 1, 0}));
  EXPECT_EQ(layout.swizzle, CU_TENSOR_MAP_SWIZZLE_128B);
  EXPECT_EQ(layout.l2Promotion, CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
  EXPECT_EQ(layout.oobFill, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  EXPECT_FALSE(layout.empty);

  // Q as a view of a [B, M, H, 72] buffer (heads interleaved, rows padded):
  // any strides that are multiples of 16 bytes serve.
  std::vector<int64_t> view = {1000 * 16 * 72, 72, 16 * 72, 1};
  s = layoutOfQ(shape, &view);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(std::vector<uint64_t>(layout.strides, layout.strides + 3),
            (std::vector<uint64_t>{16 * 72 * 2, 72 * 2, 1000 * 16 * 72 * 2}));
}

TEST_F(TensorMapTest, WhatTmaCannotDescribe) {
  expectError(shape, {16 * 1000 * 67, 1000 * 67, 67, 1},
              "argument 'Q': TMA needs 16-byte aligned strides; stride of "
              "axis 2 is 134 bytes");
  expectError({2, 16, 1, 64}, {16 * 64, 3, 64, 1},
              "argument 'Q': TMA needs 16-byte aligned strides; stride of "
              "axis 1 is 6 bytes");
  expectError(shape, {16 * 1000 * 128, 1000 * 128, 128, 2},
              "argument 'Q': TMA needs the innermost axis contiguous; stride "
              "of axis 3 is 2 elements");
  expectError(shape, {int64_t(1) << 39, 1000 * 64, 64, 1},
              "argument 'Q': TMA needs strides below 2^40 bytes; stride of "
              "axis 0 is 549755813888 elements");
  expectError(
      {1, 1, (int64_t(1) << 32) + 1, 64},
      {(int64_t(1) << 32) * 64 + 64, (int64_t(1) << 32) * 64 + 64, 64, 1},
      "argument 'Q': TMA needs extents up to 2^32; axis 2 has "
      "4294967297");
}

TEST_F(TensorMapTest, AxesOfExtentOneTakeAnyStride) {
  // PyTorch leaves any stride on an axis of extent 1; it is never stepped
  // along, and the map gets the span of the axes inside it.
  std::vector<int64_t> oneBatch = {1, 16, 1000, 64}, junk = {7, 64000, 64, 1};
  Status s = layoutOfQ(oneBatch, &junk);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.strides[2], 16u * 1000 * 64 * 2);
  std::vector<int64_t> oneHead = {2, 1, 1000, 64}, odd = {64000, 3, 64, 1};
  s = layoutOfQ(oneHead, &odd);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.strides[1], 1000u * 64 * 2);
  EXPECT_EQ(layout.strides[2], 64000u * 2);
  // A valid stride stays as given; so does a strided innermost axis of
  // extent 1.
  std::vector<int64_t> oneRow = {2, 16, 1, 64}, given = {4096, 256, 32, 1};
  s = layoutOfQ(oneRow, &given);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.strides[0], 64u);
  std::vector<int64_t> oneColumn = {2, 16, 1000, 1},
                       column = {32000, 2000, 2, 5};
  s = layoutOfQ(oneColumn, &column);
  EXPECT_TRUE(s) << "a 4-byte row stride is still refused";
}

TEST_F(TensorMapTest, EmptyTensorsNeedNoMap) {
  // The kernel loads nothing from a tensor with a zero extent, whatever its
  // strides; the driver, which refuses zero extents, is not asked.
  std::vector<int64_t> empty = {2, 16, 0, 64}, strides = {3, 5, 7, 9};
  Status s = layoutOfQ(empty, &strides);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_TRUE(layout.empty);
}

TEST_F(TensorMapTest, TileSettingsMapToTheDriversValues) {
  ArgSpec x = bf16TensorArg("X", ArgKind::Input, {"M", "N"});
  x.dtype = DType::F32;
  ParamSlot slot = paramSlot(ParamSlot::Kind::Tma, "X", SlotType::TensorMap);
  slot.tile = {{4, 8}, TmaSwizzle::B32, TmaOobFill::Nan, TmaL2Promotion::B256};
  std::vector<int64_t> shape2 = {100, 8};
  attnc_tensor t = bf16Tensor(shape2);
  t.dtype = {ATTNC_DTYPE_FLOAT, 32, 1};
  Status s = tensorMapLayout(x, slot, t, layout);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.dataType, CU_TENSOR_MAP_DATA_TYPE_FLOAT32);
  EXPECT_EQ(layout.swizzle, CU_TENSOR_MAP_SWIZZLE_32B);
  EXPECT_EQ(layout.oobFill, CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA);
  EXPECT_EQ(layout.l2Promotion, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
  EXPECT_EQ(layout.box[0], 8u);
  EXPECT_EQ(layout.box[1], 4u);
  EXPECT_EQ(layout.strides[0], 32u);
}

TEST_F(TensorMapTest, AddressesAndEntries) {
  EXPECT_FALSE(checkTensorMapAddress(pkg.manifest.args[0],
                                     reinterpret_cast<void *>(0x10010)));
  Status s = checkTensorMapAddress(pkg.manifest.args[0],
                                   reinterpret_cast<void *>(0x10008));
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "argument 'Q': TMA needs a 16-byte aligned "
                            "address; data + byte_offset is 0x10008");

  // Every map of an entry, in parameter order; the first error names it.
  std::vector<int64_t> k = {2, 16, 500, 64}, o = shape;
  attnc_tensor tq = bf16Tensor(shape), tk = bf16Tensor(k), to = bf16Tensor(o);
  std::vector<const attnc_tensor *> tensorOf = {&tq, &tk, &to};
  std::vector<TensorMapLayout> layouts;
  s = tensorMapLayouts(pkg, 0, dims, tensorOf, /*checkAddresses=*/true,
                       layouts);
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(layouts.size(), 2u);
  EXPECT_EQ(layouts[0].dims[1], 1000u);
  EXPECT_EQ(layouts[1].dims[1], 500u);
  EXPECT_FALSE(tensorMapLayouts(pkg, 1, dims, tensorOf, true, layouts));
  EXPECT_TRUE(layouts.empty());

  std::vector<int64_t> padded = {16 * 500 * 67, 500 * 67, 67, 1};
  tk.strides = padded.data();
  s = tensorMapLayouts(pkg, 0, dims, tensorOf, false, layouts);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "entry 'fwd': argument 'K': TMA needs 16-byte "
                            "aligned strides; stride of axis 2 is 134 bytes");
  tk.strides = nullptr;
  tq.byte_offset = 8;
  EXPECT_FALSE(tensorMapLayouts(pkg, 0, dims, tensorOf, false, layouts));
  s = tensorMapLayouts(pkg, 0, dims, tensorOf, true, layouts);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "entry 'fwd': argument 'Q': TMA needs a 16-byte "
                            "aligned address; data + byte_offset is 0x10008");
}

TEST_F(TensorMapTest, OptionalMapsThatCannotBeMadeAreZeros) {
  // The kernel of an optional slot does without a map TMA cannot make: its
  // layout is empty (all zeros, no driver call) instead of an error.
  for (ParamSlot &slot : pkg.manifest.entries[0].params)
    if (slot.kind == ParamSlot::Kind::Tma && slot.arg == "K")
      slot.tile.optional = true;
  std::vector<int64_t> k = {2, 16, 500, 64};
  attnc_tensor tq = bf16Tensor(shape), tk = bf16Tensor(k),
               to = bf16Tensor(shape);
  std::vector<const attnc_tensor *> tensorOf = {&tq, &tk, &to};
  std::vector<TensorMapLayout> layouts;
  ASSERT_FALSE(tensorMapLayouts(pkg, 0, dims, tensorOf, true, layouts));
  ASSERT_EQ(layouts.size(), 2u);
  EXPECT_FALSE(layouts[1].empty);

  std::vector<int64_t> padded = {16 * 500 * 67, 500 * 67, 67, 1};
  tk.strides = padded.data();
  Status s = tensorMapLayouts(pkg, 0, dims, tensorOf, true, layouts);
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(layouts.size(), 2u);
  EXPECT_FALSE(layouts[0].empty);
  EXPECT_TRUE(layouts[1].empty);
  tk.strides = nullptr;
  tk.byte_offset = 4;
  ASSERT_FALSE(tensorMapLayouts(pkg, 0, dims, tensorOf, true, layouts));
  EXPECT_TRUE(layouts[1].empty);

  // A required map still fails the entry.
  tq.byte_offset = 4;
  s = tensorMapLayouts(pkg, 0, dims, tensorOf, true, layouts);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(), "entry 'fwd': argument 'Q': TMA needs a 16-byte "
                            "aligned address; data + byte_offset is 0x10004");
}

TEST_F(TensorMapTest, AWorkspacesTensorIsDenseOfItsFormulasShape) {
  // A kernel may load what an earlier one wrote into a workspace (the
  // backward's 16-bit copy of dO): the workspace declares the dense tensor
  // it begins with, and a Tma slot names the workspace.
  PackageManifest m = tmaManifest();
  WorkspaceSpec scratch{"scratch", "2*(B)*(H)*(M)*(D)", std::nullopt};
  scratch.tensor = WorkspaceSpec::Tensor{DType::BF16, {"B", "H", "M", "D"}};
  m.workspaces.push_back(scratch);
  ParamSlot slot =
      paramSlot(ParamSlot::Kind::Tma, "scratch", SlotType::TensorMap);
  slot.tile.box = {1, 1, 64, 64};
  slot.tile.swizzle = TmaSwizzle::B128;
  m.entries[1].params.push_back(slot);
  Package withScratch;
  Status s = readPackage(serialized(m, kTmaPtx), withScratch);
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(withScratch.tmaWorkspace(m.entries[1].params.back()), 0);
  EXPECT_EQ(withScratch.tmaWorkspace(m.entries[0].params[0]), -1);

  std::vector<int64_t> k = {2, 16, 500, 64};
  attnc_tensor tq = bf16Tensor(shape), tk = bf16Tensor(k),
               to = bf16Tensor(shape);
  // Misaligned argument addresses are not the workspace's concern.
  to.byte_offset = 4;
  std::vector<const attnc_tensor *> tensorOf = {&tq, &tk, &to};
  std::vector<TensorMapLayout> layouts;
  s = tensorMapLayouts(withScratch, 1, dims, tensorOf, true, layouts);
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(layouts.size(), 1u);
  EXPECT_EQ(layouts[0].dataType, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
  EXPECT_EQ(std::vector<uint64_t>(layouts[0].dims, layouts[0].dims + 4),
            (std::vector<uint64_t>{64, 1000, 16, 2}));
  EXPECT_EQ(std::vector<uint64_t>(layouts[0].strides, layouts[0].strides + 3),
            (std::vector<uint64_t>{128, 128000, 2048000}));

  // A slot may only name a workspace that declares a tensor; the tensor's
  // formulas must parse.
  PackageManifest bare = m;
  bare.workspaces[0].tensor.reset();
  Package rejected;
  auto validate = [&](const PackageManifest &manifest) {
    return validatePackage(manifest, {{"main", ModuleFormat::Ptx, kTmaPtx}},
                           rejected);
  };
  s = validate(bare);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("workspace 'scratch' declares no tensor for "
                                "a tensor map"),
            std::string::npos)
      << s.getMessage();
  PackageManifest badShape = m;
  badShape.workspaces[0].tensor->shape[2] = "Q";
  s = validate(badShape);
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("workspace 'scratch': tensor shape"),
            std::string::npos)
      << s.getMessage();
}

TEST_F(TensorMapTest, AMapMayHaveAxesOfExtentOneTheTensorLacks) {
  // K without a head axis ([B, N, D], one head for all queries) through the
  // 4-d map a kernel with a head coordinate uses: [B, 1, N, D].
  ArgSpec k = bf16TensorArg("K", ArgKind::Input, {"B", "N", "D"});
  ParamSlot slot = paramSlot(ParamSlot::Kind::Tma, "K", SlotType::TensorMap);
  slot.tile.box = {1, 1, 128, 64};
  slot.tile.swizzle = TmaSwizzle::B128;
  slot.tile.axes = {0, -1, 1, 2};
  std::vector<int64_t> kShape = {2, 500, 64};
  attnc_tensor t = bf16Tensor(kShape);
  Status s = tensorMapLayout(k, slot, t, layout);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(layout.rank, 4u);
  EXPECT_EQ(std::vector<uint64_t>(layout.dims, layout.dims + 4),
            (std::vector<uint64_t>{64, 500, 1, 2}));
  // The unit axis is never stepped along: it gets the span inside it.
  EXPECT_EQ(std::vector<uint64_t>(layout.strides, layout.strides + 3),
            (std::vector<uint64_t>{128, 64000, 64000}));

  // The manifest names each axis of the tensor once, in order, the
  // innermost last, and one box size per axis of the map.
  PackageManifest m = tmaManifest();
  m.args[1].axes = {AxisSpec::ofDim("B"), AxisSpec::ofDim("N"),
                    AxisSpec::ofDim("D")};
  m.entries[0].params[1].tile.axes = {0, -1, 1, 2};
  Package withAxes;
  auto validate = [&](const PackageManifest &manifest) {
    return validatePackage(manifest, {{"main", ModuleFormat::Ptx, kTmaPtx}},
                           withAxes);
  };
  s = validate(m);
  ASSERT_FALSE(s) << s.getMessage();
  Package roundTrip;
  s = readPackage(serialized(m, kTmaPtx), roundTrip);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(roundTrip.manifest.entries[0].params[1].tile.axes,
            (std::vector<int64_t>{0, -1, 1, 2}));
  for (std::vector<int64_t> axes :
       {std::vector<int64_t>{0, -1, 2, 1}, {0, 1, 2, -1}, {0, -1, 1}}) {
    PackageManifest bad = m;
    bad.entries[0].params[1].tile.axes = axes;
    s = validate(bad);
    ASSERT_TRUE(s);
    EXPECT_NE(s.getMessage().find("'K'"), std::string::npos) << s.getMessage();
  }
}

} // namespace
