//===- FakeCudaTest.cpp - The device path against a fake driver -----------===//
//
// Runs in its own process with ATTNC_LIBCUDA pointing at FakeCuda.cpp's
// library (set before the driver is first used), and checks what the runtime
// hands the driver: module loads, JIT logs, kernel parameters, grids, and
// that argument errors make no driver call at all.
//
//===----------------------------------------------------------------------===//

#include "RuntimeTestUtil.h"
#include "attn/Runtime/Runtime.h"
#include "attnc/attnc.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

using namespace attn;
using namespace attn::test;

namespace {

struct Fake {
  void (*reset)(int);
  int (*calls)();
  int (*unloads)();
  void (*setUnloadResult)(int);
  int (*numLaunches)();
  void (*launch)(int, unsigned *, uint64_t *);
};

Fake &fake() {
  static Fake f = [] {
    Fake f{};
    void *h = dlopen(ATTN_FAKE_CUDA_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!h)
      return f;
    f.reset = reinterpret_cast<void (*)(int)>(dlsym(h, "fake_reset"));
    f.calls = reinterpret_cast<int (*)()>(dlsym(h, "fake_calls"));
    f.unloads = reinterpret_cast<int (*)()>(dlsym(h, "fake_unloads"));
    f.setUnloadResult =
        reinterpret_cast<void (*)(int)>(dlsym(h, "fake_set_unload_result"));
    f.numLaunches = reinterpret_cast<int (*)()>(dlsym(h, "fake_num_launches"));
    f.launch = reinterpret_cast<void (*)(int, unsigned *, uint64_t *)>(
        dlsym(h, "fake_launch"));
    return f;
  }();
  return f;
}

class FakeCudaTest : public ::testing::Test {
protected:
  void SetUp() override {
    setenv("ATTNC_LIBCUDA", ATTN_FAKE_CUDA_PATH, 1);
    ASSERT_NE(fake().reset, nullptr) << dlerror();
    ASSERT_EQ(attnc_device_count(), 1) << attnc_last_error();
    Status s = rt::KernelPackage::load(
        std::string(ATTN_GPU_INPUTS_DIR) + "/vadd2d.attnpkg", pkg);
    ASSERT_FALSE(s) << s.getMessage();
    for (auto *b : {&a, &b, &c})
      ASSERT_FALSE(rt::DeviceBuffer::allocate(0, 3 * 1000 * 4, *b));
  }

  std::vector<attnc_tensor> tensors(std::vector<rt::DeviceBuffer *> bufs) {
    std::vector<attnc_tensor> out;
    for (rt::DeviceBuffer *buf : bufs)
      out.push_back(rt::cudaTensor(buf->data(), 0, f32, shape));
    return out;
  }

  rt::KernelPackage pkg;
  rt::DeviceBuffer a, b, c;
  std::vector<int64_t> shape = {3, 1000};
  attnc_dtype f32 = {ATTNC_DTYPE_FLOAT, 32, 1};
};

TEST_F(FakeCudaTest, MarshalsKernelParameters) {
  fake().reset(8);
  rt::Stream stream;
  ASSERT_FALSE(rt::Stream::create(0, stream));
  Status s = pkg.launch(tensors({&a, &b}), {0.5}, tensors({&c}), stream.get());
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(fake().numLaunches(), 1);
  unsigned dims[7];
  uint64_t params[8];
  fake().launch(0, dims, params);
  EXPECT_EQ(dims[0], 4u); // ceil(1000 / 256)
  EXPECT_EQ(dims[1], 3u); // R
  EXPECT_EQ(dims[2], 1u);
  EXPECT_EQ(dims[3], 256u);
  EXPECT_EQ(dims[6], 0u);
  EXPECT_EQ(params[0], reinterpret_cast<uintptr_t>(a.data()));
  EXPECT_EQ(params[1], reinterpret_cast<uintptr_t>(b.data()));
  EXPECT_EQ(params[2], reinterpret_cast<uintptr_t>(c.data()));
  float alpha;
  std::memcpy(&alpha, &params[3], 4);
  EXPECT_EQ(alpha, 0.5f);
  int32_t n;
  std::memcpy(&n, &params[4], 4);
  EXPECT_EQ(n, 1000);
  EXPECT_EQ(params[5], 1000u); // compact row stride of A
  EXPECT_EQ(params[7], 1000u);
}

TEST_F(FakeCudaTest, StridesOffsetsAndDefaults) {
  fake().reset(8);
  std::vector<attnc_tensor> ins = tensors({&a, &b});
  std::vector<int64_t> rows = {2, 500}, strided = {600, 1};
  // A: rows 2 x 500 viewed inside the buffer with a padded row stride and an
  // offset of 8 elements.
  for (attnc_tensor &t : ins)
    t.shape = rows.data();
  ins[0].strides = strided.data();
  ins[0].byte_offset = 32;
  std::vector<attnc_tensor> outs = tensors({&c});
  outs[0].shape = rows.data();
  Status s = pkg.launch(ins, {}, outs);
  ASSERT_FALSE(s) << s.getMessage();
  unsigned dims[7];
  uint64_t params[8];
  fake().launch(0, dims, params);
  EXPECT_EQ(dims[0], 2u);
  EXPECT_EQ(dims[1], 2u);
  EXPECT_EQ(params[0], reinterpret_cast<uintptr_t>(a.data()) + 32);
  float alpha;
  std::memcpy(&alpha, &params[3], 4);
  EXPECT_EQ(alpha, 2.0f); // the package's default
  EXPECT_EQ(params[5], 600u);
  EXPECT_EQ(params[6], 500u);
}

TEST_F(FakeCudaTest, ArgumentErrorsMakeNoDriverCall) {
  fake().reset(8);
  std::vector<attnc_tensor> ins = tensors({&a, &b});
  std::vector<int64_t> wrong = {3, 999};
  ins[1].shape = wrong.data();
  Status s = pkg.launch(ins, {}, tensors({&c}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s.getMessage(),
            "input 'B': expected shape [R=3, N=1000] (from A), got [3, 999]");
  EXPECT_EQ(fake().calls(), 0);
  s = pkg.launch(tensors({&a, &b}), {1, 2}, tensors({&c}));
  ASSERT_TRUE(s);
  EXPECT_EQ(fake().calls(), 0);
}

TEST_F(FakeCudaTest, HostPointersAreRejected) {
  fake().reset(8);
  std::vector<float> host(3000);
  std::vector<attnc_tensor> ins = tensors({&a, &b});
  ins[1].data = host.data();
  Status s = pkg.launch(ins, {}, tensors({&c}));
  ASSERT_TRUE(s);
  EXPECT_NE(s.getMessage().find("input 'B': data pointer"), std::string::npos);
  EXPECT_NE(s.getMessage().find("is not CUDA device memory"),
            std::string::npos);
  EXPECT_EQ(fake().numLaunches(), 0);
}

TEST_F(FakeCudaTest, EmptyProblemLaunchesNothing) {
  fake().reset(8);
  std::vector<int64_t> empty = {3, 0};
  std::vector<attnc_tensor> ins = tensors({&a, &b}), outs = tensors({&c});
  for (attnc_tensor *t : {&ins[0], &ins[1], &outs[0]})
    t->shape = empty.data();
  ASSERT_FALSE(pkg.launch(ins, {}, outs));
  EXPECT_EQ(fake().numLaunches(), 0);
}

TEST_F(FakeCudaTest, JitErrorsCarryTheLog) {
  PackageManifest m = attentionManifest();
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx,
              std::string(kAttentionPtx) + "// BAD_PTX\n");
  std::string bytes;
  ASSERT_FALSE(w.serialize(bytes));
  attnc_package p;
  ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &p),
            ATTNC_OK);
  EXPECT_EQ(attnc_package_prepare(p, 0), ATTNC_ERROR_CUDA);
  std::string msg = attnc_last_error();
  EXPECT_NE(msg.find("loading PTX module 'main' of kernel 'gqa' on device 0 "
                     "(sm_90) failed: CUDA_ERROR_INVALID_PTX"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("JIT log:\nptxas fatal   : fake syntax error at line 3"),
            std::string::npos)
      << msg;
  attnc_package_free(p);
}

TEST_F(FakeCudaTest, TargetMustMatchTheDevice) {
  PackageManifest m = attentionManifest();
  m.target = "sm_100a";
  PackageWriter w(m);
  w.addModule("main", ModuleFormat::Ptx, kAttentionPtx);
  std::string bytes;
  ASSERT_FALSE(w.serialize(bytes));
  attnc_package p;
  ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &p),
            ATTNC_OK);
  EXPECT_EQ(attnc_package_prepare(p, 0), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(attnc_last_error(),
               "kernel 'gqa' targets sm_100a, but CUDA device 0 is sm_90");
  attnc_package_free(p);
  EXPECT_EQ(attnc_package_prepare(pkg.get(), 3), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(attnc_last_error(),
               "CUDA device 3 does not exist (this machine has 1)");
}

TEST_F(FakeCudaTest, UnloadToleratesADeinitializedDriver) {
  fake().reset(8);
  {
    rt::KernelPackage p;
    ASSERT_FALSE(rt::KernelPackage::load(
        std::string(ATTN_GPU_INPUTS_DIR) + "/vadd2d.attnpkg", p));
    ASSERT_FALSE(p.prepare(0));
    fake().setUnloadResult(4); // CUDA_ERROR_DEINITIALIZED
  }
  EXPECT_EQ(fake().unloads(), 1);
}

TEST_F(FakeCudaTest, MemoryAndEvents) {
  std::vector<float> in(3000), out(3000, 0.f);
  for (size_t i = 0; i < in.size(); ++i)
    in[i] = static_cast<float>(i);
  ASSERT_FALSE(a.upload(in.data(), in.size() * 4));
  ASSERT_FALSE(a.download(out.data(), out.size() * 4));
  EXPECT_EQ(in, out);
  attnc_event e0, e1;
  ASSERT_EQ(attnc_event_create(0, &e0), ATTNC_OK);
  ASSERT_EQ(attnc_event_create(0, &e1), ATTNC_OK);
  ASSERT_EQ(attnc_event_record(e0, nullptr), ATTNC_OK);
  ASSERT_EQ(attnc_event_record(e1, nullptr), ATTNC_OK);
  float ms = 0;
  ASSERT_EQ(attnc_event_elapsed_ms(e0, e1, &ms), ATTNC_OK);
  EXPECT_EQ(ms, 1.5f);
  EXPECT_EQ(attnc_event_destroy(e0), ATTNC_OK);
  EXPECT_EQ(attnc_event_destroy(e1), ATTNC_OK);
}

} // namespace
