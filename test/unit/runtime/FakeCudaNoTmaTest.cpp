//===- FakeCudaNoTmaTest.cpp - A driver without tensor maps ---------------===//
//
// The device path against the fake libcuda built without
// cuTensorMapEncodeTiled, as drivers before CUDA 12 are: the runtime loads
// it all the same, entries that load with TMA run their fallbacks, and one
// without a fallback fails with the reason. A process of its own, since the
// driver is loaded once per process.
//
//===----------------------------------------------------------------------===//

#include "FakeCuda.h"
#include "RuntimeTestUtil.h"
#include "attnc/attnc.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <dlfcn.h>

using namespace attn;
using namespace attn::test;

namespace {

const FakeCuda &fake() {
  static FakeCuda f = loadFakeCuda(ATTN_FAKE_CUDA_PATH);
  return f;
}

class FakeCudaNoTmaTest : public ::testing::Test {
protected:
  void SetUp() override {
    setenv("ATTNC_LIBCUDA", ATTN_FAKE_CUDA_PATH, 1);
    ASSERT_NE(fake().reset, nullptr) << dlerror();
    ASSERT_EQ(dlsym(dlopen(ATTN_FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL),
                    "cuTensorMapEncodeTiled"),
              nullptr);
    ASSERT_EQ(attnc_device_count(), 2) << attnc_last_error();
    for (void **p : {&q, &k, &o})
      ASSERT_EQ(attnc_device_alloc(0, 4096, p), ATTNC_OK);
    static const int plain[] = {8, 8, 8, 8, 8}, finish[] = {8, 8};
    fake().setParamBytes("tma_fwd_plain", 5, plain);
    fake().setParamBytes("tma_finish", 2, finish);
  }
  void TearDown() override {
    attnc_package_free(pkg);
    for (void *p : {q, k, o})
      attnc_device_free(0, p);
  }

  void load(const PackageManifest &m) {
    std::string bytes = serialized(m, kTmaPtx);
    ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &pkg),
              ATTNC_OK)
        << attnc_last_error();
  }

  /// Launches with Q[2, 4, 256, 64], K[2, 4, 512, 64], O like Q: tensors
  /// TMA describes.
  attnc_status launch() {
    std::vector<int64_t> qShape = {2, 4, 256, 64}, kShape = {2, 4, 512, 64};
    attnc_tensor ins[2] = {bf16Tensor(qShape, nullptr, q),
                           bf16Tensor(kShape, nullptr, k)};
    attnc_tensor outs[1] = {bf16Tensor(qShape, nullptr, o)};
    return attnc_launch(pkg, nullptr, ins, 2, nullptr, 0, outs, 1, nullptr);
  }

  attnc_package pkg = nullptr;
  void *q = nullptr, *k = nullptr, *o = nullptr;
};

TEST_F(FakeCudaNoTmaTest, TmaFallbackWhenDriverLacksEncode) {
  load(tmaManifest());
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 2);
  EXPECT_STREQ(fake().launchFunction(0), "tma_fwd_plain");
  EXPECT_STREQ(fake().launchFunction(1), "tma_finish");
  uint64_t qParam = 0;
  fake().launchParam(0, 0, &qParam);
  EXPECT_EQ(qParam, reinterpret_cast<uintptr_t>(q));
}

TEST_F(FakeCudaNoTmaTest, TmaWithoutFallbackNeedsEncode) {
  PackageManifest m = tmaManifest();
  m.entries[0].fallback.clear();
  m.entries.pop_back();
  load(m);
  fake().reset(0);
  EXPECT_EQ(launch(), ATTNC_ERROR_CUDA);
  EXPECT_STREQ(attnc_last_error(),
               "entry 'fwd': the CUDA driver has no cuTensorMapEncodeTiled "
               "(TMA needs a CUDA 12 driver)");
  EXPECT_EQ(fake().numLaunches(), 0);
}

} // namespace
