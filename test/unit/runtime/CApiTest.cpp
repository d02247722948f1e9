//===- CApiTest.cpp - The C API on a machine without a GPU ----------------===//
//
// CI machines have no GPU: every device call must fail cleanly with
// ATTNC_ERROR_NO_DEVICE and "no CUDA device", and everything else (packages,
// signatures, argument checks) must work.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestUtil.h"
#include "attn/Runtime/Runtime.h"
#include "attnc/attnc.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <thread>

using namespace attn;
using namespace attn::test;

namespace {

bool machineHasDriver() {
  if (const char *p = std::getenv("ATTNC_LIBCUDA"); p && *p)
    return true;
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  return h != nullptr; // Never closed: harmless in a test.
}

bool startsWith(const char *s, const char *prefix) {
  return std::strncmp(s, prefix, std::strlen(prefix)) == 0;
}

class CApiTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string bytes = serializedAttention();
    ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &pkg),
              ATTNC_OK)
        << attnc_last_error();
  }
  void TearDown() override { attnc_package_free(pkg); }
  attnc_package pkg = nullptr;
};

TEST_F(CApiTest, Signature) {
  EXPECT_STREQ(attnc_package_name(pkg), "gqa");
  EXPECT_STREQ(attnc_package_target(pkg), "sm_90a");
  ASSERT_EQ(attnc_package_num_args(pkg), 12u);
  attnc_arg_info info;
  ASSERT_EQ(attnc_package_arg(pkg, 0, &info), ATTNC_OK);
  EXPECT_STREQ(info.name, "B");
  EXPECT_EQ(info.kind, ATTNC_ARG_DIM);
  EXPECT_EQ(info.size, -1);
  ASSERT_EQ(attnc_package_arg(pkg, 5, &info), ATTNC_OK);
  EXPECT_STREQ(info.name, "D");
  EXPECT_EQ(info.size, 64);
  ASSERT_EQ(attnc_package_arg(pkg, 7, &info), ATTNC_OK);
  EXPECT_STREQ(info.name, "K");
  EXPECT_EQ(info.kind, ATTNC_ARG_INPUT);
  EXPECT_EQ(info.dtype.code, ATTNC_DTYPE_BFLOAT);
  EXPECT_EQ(info.size, 4);
  EXPECT_STREQ(info.axis_dims[1], "G");
  EXPECT_EQ(info.layout, ATTNC_LAYOUT_INNER_CONTIGUOUS);
  ASSERT_EQ(attnc_package_arg(pkg, 9, &info), ATTNC_OK);
  EXPECT_STREQ(info.name, "window");
  EXPECT_EQ(info.kind, ATTNC_ARG_PARAM);
  EXPECT_TRUE(info.has_default);
  EXPECT_EQ(info.default_value, 1024);
  ASSERT_EQ(attnc_package_arg(pkg, 11, &info), ATTNC_OK);
  EXPECT_EQ(info.kind, ATTNC_ARG_OUTPUT);
  EXPECT_EQ(info.layout, ATTNC_LAYOUT_CONTIGUOUS);
  EXPECT_EQ(attnc_package_arg(pkg, 12, &info), ATTNC_ERROR_NOT_FOUND);
  EXPECT_EQ(attnc_package_num_entries(pkg), 1u);
  EXPECT_STREQ(attnc_package_entry_name(pkg, 0), "fwd");
  EXPECT_EQ(attnc_package_entry_name(pkg, 1), nullptr);
}

TEST_F(CApiTest, LoadErrors) {
  attnc_package bad = reinterpret_cast<attnc_package>(1);
  EXPECT_EQ(attnc_package_load("/nonexistent.attnpkg", &bad), ATTNC_ERROR_IO);
  EXPECT_EQ(bad, nullptr);
  EXPECT_NE(std::string(attnc_last_error()).find("cannot open package"),
            std::string::npos);
  EXPECT_EQ(attnc_package_load_memory("attnpkg 9\n", 10, &bad),
            ATTNC_ERROR_INVALID_PACKAGE);
  EXPECT_NE(std::string(attnc_last_error()).find("unsupported package version"),
            std::string::npos);
  EXPECT_EQ(attnc_package_load(nullptr, &bad), ATTNC_ERROR_INVALID_ARGUMENT);
  attnc_package_free(nullptr);
  EXPECT_STREQ(attnc_status_name(ATTNC_ERROR_NO_DEVICE),
               "ATTNC_ERROR_NO_DEVICE");
}

TEST_F(CApiTest, NoDeviceHere) {
  if (machineHasDriver())
    GTEST_SKIP() << "this machine has a CUDA driver";
  EXPECT_EQ(attnc_device_count(), 0);
  EXPECT_TRUE(startsWith(attnc_last_error(), "no CUDA device"))
      << attnc_last_error();
  attnc_stream stream = reinterpret_cast<attnc_stream>(1);
  EXPECT_EQ(attnc_stream_create(0, &stream), ATTNC_ERROR_NO_DEVICE);
  EXPECT_EQ(stream, nullptr);
  stream = reinterpret_cast<attnc_stream>(1);
  EXPECT_EQ(attnc_stream_wrap(0, nullptr, &stream), ATTNC_ERROR_NO_DEVICE);
  EXPECT_EQ(stream, nullptr);
  EXPECT_EQ(attnc_stream_wrap(0, nullptr, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  attnc_event event;
  EXPECT_EQ(attnc_event_create(0, &event), ATTNC_ERROR_NO_DEVICE);
  void *p = nullptr;
  EXPECT_EQ(attnc_device_alloc(0, 16, &p), ATTNC_ERROR_NO_DEVICE);
  EXPECT_EQ(attnc_device_free(0, &p), ATTNC_ERROR_NO_DEVICE);
  char buf[4];
  EXPECT_EQ(attnc_copy_to_host(0, buf, &p, 4), ATTNC_ERROR_NO_DEVICE);
  EXPECT_EQ(attnc_package_prepare(pkg, 0), ATTNC_ERROR_NO_DEVICE);
  EXPECT_EQ(attnc_stream_destroy(nullptr), ATTNC_OK);
}

TEST_F(CApiTest, LaunchChecksComeBeforeTheDriver) {
  std::vector<int64_t> q = {1, 4, 100, 64}, k = {1, 2, 300, 64},
                       o = {1, 4, 100, 64};
  attnc_tensor ins[3] = {bf16Tensor(q), bf16Tensor(k), bf16Tensor(k)};
  attnc_tensor outs[1] = {bf16Tensor(o)};
  double params[2] = {128, 0.125};
  int64_t dims[6];
  ASSERT_EQ(attnc_check_args(pkg, ins, 3, params, 2, outs, 1, dims), ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(dims[2], 2);
  EXPECT_EQ(dims[4], 300);

  // Argument errors are reported as such even with no GPU ...
  std::vector<int64_t> badK = {1, 3, 300, 64};
  attnc_tensor badIns[3] = {bf16Tensor(q), bf16Tensor(k), bf16Tensor(badK)};
  EXPECT_EQ(attnc_launch(pkg, nullptr, badIns, 3, params, 2, outs, 1, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(attnc_last_error(),
               "input 'V': expected shape [B=1, G=2, N=300, D=64] (from Q, K "
               "and the spec), got [1, 3, 300, 64]");
  EXPECT_EQ(attnc_launch(pkg, nullptr, ins, 3, params, 1, outs, 1, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(attnc_last_error(),
               "param 'scale' was not given and has no default");
  EXPECT_EQ(attnc_launch(pkg, "bwd", ins, 3, params, 2, outs, 1, nullptr),
            ATTNC_ERROR_NOT_FOUND);
  EXPECT_STREQ(attnc_last_error(),
               "kernel 'gqa' has no entry 'bwd' (entries: fwd)");
  if (machineHasDriver())
    return;
  // ... and a valid launch then fails on the missing device.
  EXPECT_EQ(attnc_launch(pkg, nullptr, ins, 3, params, 2, outs, 1, nullptr),
            ATTNC_ERROR_NO_DEVICE);
  EXPECT_TRUE(startsWith(attnc_last_error(), "no CUDA device"));
}

TEST(CApiWhenTest, DisabledEntriesLaunchNothing) {
  PackageManifest m = splitKManifest();
  m.workspaces[1].bytes = "256 - N";
  std::string bytes = serialized(m, kSplitKPtx);
  attnc_package pkg;
  ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &pkg),
            ATTNC_OK)
      << attnc_last_error();
  std::vector<int64_t> q = {2, 64}, k = {2, 100, 64};
  attnc_tensor ins[2] = {bf16Tensor(q), bf16Tensor(k)};
  attnc_tensor outs[1] = {bf16Tensor(q)};
  // N = 100: decode and merge are disabled, so naming one launches nothing
  // (and needs no driver).
  EXPECT_EQ(attnc_launch(pkg, "decode", ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(attnc_launch(pkg, "nope", ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_ERROR_NOT_FOUND);
  EXPECT_EQ(attnc_check_args(pkg, ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_OK);
  // N = 1000: they run, and the workspace size is checked first.
  k = {2, 1000, 64};
  EXPECT_EQ(attnc_launch(pkg, "merge", ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(attnc_last_error(), "workspace 'lse': bytes = 256 - N = -744 "
                                   "is negative for B=2, N=1000, D=64");
  EXPECT_EQ(attnc_check_args(pkg, ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(attnc_launch(pkg, "prefill", ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_OK); // disabled at N = 1000
  attnc_package_free(pkg);
}

TEST_F(CApiTest, ErrorsAreThreadLocal) {
  attnc_package bad;
  EXPECT_EQ(attnc_package_load("/nonexistent.attnpkg", &bad), ATTNC_ERROR_IO);
  std::string other;
  std::thread([&] { other = attnc_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_NE(std::string(attnc_last_error()), "");
}

TEST_F(CApiTest, CppWrapper) {
  rt::KernelPackage p;
  Status s = rt::KernelPackage::load(
      std::string(ATTN_GPU_INPUTS_DIR) + "/vadd2d.attnpkg", p);
  ASSERT_FALSE(s) << s.getMessage();
  EXPECT_EQ(p.name(), "vadd2d");
  EXPECT_EQ(p.signature().size(), 6u);
  std::vector<int64_t> shape = {3, 1000}, wrong = {3, 999};
  attnc_dtype f32 = {ATTNC_DTYPE_FLOAT, 32, 1};
  void *addr = reinterpret_cast<void *>(0x1000);
  std::vector<attnc_tensor> ins = {rt::cudaTensor(addr, 0, f32, shape),
                                   rt::cudaTensor(addr, 0, f32, shape)};
  std::vector<attnc_tensor> outs = {rt::cudaTensor(addr, 0, f32, wrong)};
  s = p.check(ins, {}, outs);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(),
            "output 'C': expected shape [R=3, N=1000] (from A), "
            "got [3, 999]");
  outs[0] = rt::cudaTensor(addr, 0, f32, shape);
  std::vector<int64_t> dims;
  ASSERT_FALSE(p.check(ins, {0.5}, outs, &dims));
  EXPECT_EQ(dims[1], 1000);
  if (!machineHasDriver()) {
    s = p.launch(ins, {0.5}, outs);
    EXPECT_EQ(s.getCode(), ATTNC_ERROR_NO_DEVICE);
    rt::Stream stream;
    EXPECT_EQ(rt::Stream::create(0, stream).getCode(), ATTNC_ERROR_NO_DEVICE);
    rt::DeviceBuffer buf;
    EXPECT_EQ(rt::DeviceBuffer::allocate(0, 64, buf).getCode(),
              ATTNC_ERROR_NO_DEVICE);
  }
  rt::KernelPackage moved = std::move(p);
  EXPECT_EQ(moved.name(), "vadd2d");
}

} // namespace
