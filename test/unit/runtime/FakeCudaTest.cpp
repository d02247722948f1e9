//===- FakeCudaTest.cpp - The device path against a fake driver -----------===//
//
// Runs in its own process with ATTNC_LIBCUDA pointing at FakeCuda.cpp's
// library (set before the driver is first used), and checks what the runtime
// hands the driver: module loads, JIT logs, kernel parameters, grids,
// workspace buffers, tensor maps and fallbacks, and that argument errors
// make no driver call at all.
//
//===----------------------------------------------------------------------===//

#include "FakeCuda.h"
#include "../../../runtime/lib/cuda/CudaDriver.h"
#include "RuntimeTestUtil.h"
#include "attn/Runtime/Runtime.h"
#include "attnc/attnc.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>

using namespace attn;
using namespace attn::test;

namespace {

const FakeCuda &fake() {
  static FakeCuda f = loadFakeCuda(ATTN_FAKE_CUDA_PATH);
  return f;
}

class FakeCudaTest : public ::testing::Test {
protected:
  void SetUp() override {
    setenv("ATTNC_LIBCUDA", ATTN_FAKE_CUDA_PATH, 1);
    ASSERT_NE(fake().reset, nullptr) << dlerror();
    ASSERT_EQ(attnc_device_count(), 2) << attnc_last_error();
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

TEST_F(FakeCudaTest, PlansLaunchNewDataPointers) {
  fake().reset(8);
  std::vector<attnc_tensor> ins = tensors({&a, &b}), outs = tensors({&c});
  ins[1].byte_offset = 16;
  double alpha = 0.5;
  attnc_plan plan = nullptr;
  ASSERT_EQ(attnc_plan_create(pkg.get(), nullptr, ins.data(), 2, &alpha, 1,
                              outs.data(), 1, &plan),
            ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0); // Making a plan needs no driver.
  void *inputs[] = {a.data(), b.data()}, *outputs[] = {c.data()};
  ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr), ATTNC_OK)
      << attnc_last_error();
  int before = fake().calls();
  ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr), ATTNC_OK);
  int sameData = fake().calls() - before;
  // The same plan on other buffers (A and B swapped): only the two new
  // pointers are asked about.
  std::swap(inputs[0], inputs[1]);
  before = fake().calls();
  ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr), ATTNC_OK);
  EXPECT_EQ(fake().calls() - before, sameData + 2);
  ASSERT_EQ(fake().numLaunches(), 3);
  unsigned dims[7];
  uint64_t params[8];
  fake().launch(2, dims, params);
  EXPECT_EQ(params[0], reinterpret_cast<uintptr_t>(b.data()));
  EXPECT_EQ(params[1], reinterpret_cast<uintptr_t>(a.data()) + 16);
  EXPECT_EQ(params[2], reinterpret_cast<uintptr_t>(c.data()));
  float scale;
  std::memcpy(&scale, &params[3], 4);
  EXPECT_EQ(scale, 0.5f);
  // A host pointer is refused as by attnc_launch, and nothing runs.
  std::vector<float> host(3000);
  void *hostInputs[] = {a.data(), host.data()};
  EXPECT_EQ(attnc_plan_launch(plan, hostInputs, outputs, nullptr, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error()).find("input 'B': data pointer"),
            std::string::npos);
  EXPECT_EQ(fake().numLaunches(), 3);
  attnc_plan_free(plan);
}

TEST_F(FakeCudaTest, PlanArgumentErrorsAreLaunchErrors) {
  fake().reset(8);
  std::vector<attnc_tensor> ins = tensors({&a, &b});
  std::vector<int64_t> wrong = {3, 999};
  ins[1].shape = wrong.data();
  std::vector<attnc_tensor> outs = tensors({&c});
  attnc_plan plan = reinterpret_cast<attnc_plan>(&plan);
  EXPECT_EQ(attnc_plan_create(pkg.get(), nullptr, ins.data(), 2, nullptr, 0,
                              outs.data(), 1, &plan),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(plan, nullptr);
  EXPECT_STREQ(attnc_last_error(),
               "input 'B': expected shape [R=3, N=1000] (from A), got [3, "
               "999]");
  EXPECT_EQ(attnc_plan_launch(nullptr, nullptr, nullptr, nullptr, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(fake().calls(), 0);
}

TEST_F(FakeCudaTest, LaunchesOnTheTensorsDevice) {
  fake().reset(8);
  rt::DeviceBuffer x, y, z;
  for (auto *buf : {&x, &y, &z})
    ASSERT_FALSE(rt::DeviceBuffer::allocate(1, 3 * 1000 * 4, *buf));
  auto onDevice1 = [&](std::vector<rt::DeviceBuffer *> bufs) {
    std::vector<attnc_tensor> out;
    for (rt::DeviceBuffer *buf : bufs)
      out.push_back(rt::cudaTensor(buf->data(), 1, f32, shape));
    return out;
  };
  rt::Stream stream1, stream0;
  ASSERT_FALSE(rt::Stream::create(1, stream1));
  ASSERT_FALSE(rt::Stream::create(0, stream0));
  // Device 1's tensors run on device 1, after a launch on device 0.
  ASSERT_FALSE(pkg.launch(tensors({&a, &b}), {}, tensors({&c})));
  Status s = pkg.launch(onDevice1({&x, &y}), {}, onDevice1({&z}), stream1.get());
  ASSERT_FALSE(s) << s.getMessage();
  ASSERT_EQ(fake().numLaunches(), 2);
  EXPECT_EQ(fake().launchDevice(0), 0);
  EXPECT_EQ(fake().launchDevice(1), 1);
  // A plan made for device 1 launches there too, from any current device.
  std::vector<attnc_tensor> ins = onDevice1({&x, &y}), outs = onDevice1({&z});
  attnc_plan plan = nullptr;
  ASSERT_EQ(attnc_plan_create(pkg.get(), nullptr, ins.data(), 2, nullptr, 0,
                              outs.data(), 1, &plan),
            ATTNC_OK);
  ASSERT_FALSE(pkg.launch(tensors({&a, &b}), {}, tensors({&c})));
  void *inputs[] = {x.data(), y.data()}, *outputs[] = {z.data()};
  ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
            ATTNC_OK);
  EXPECT_EQ(fake().launchDevice(3), 1);
  // Device 0's memory under a tensor that says device 1, or device 0's
  // stream for device 1's tensors: refused before any launch.
  void *wrong[] = {a.data(), y.data()};
  EXPECT_EQ(attnc_plan_launch(plan, wrong, outputs, nullptr, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error())
                .find("is memory of CUDA device 0 (the tensor says device 1)"),
            std::string::npos);
  EXPECT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, stream0.get()),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error())
                .find("the stream is on CUDA device 0 but the tensors are on "
                      "device 1"),
            std::string::npos);
  EXPECT_EQ(fake().numLaunches(), 4);
  attnc_plan_free(plan);
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
               "CUDA device 3 does not exist (this machine has 2)");
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

/// The parameters of launch `i` (5 of them) and its grid.
struct Recorded {
  unsigned dims[7];
  uint64_t params[5];
};
Recorded recorded(int i) {
  Recorded r;
  fake().launch(i, r.dims, r.params);
  return r;
}

class FakeCudaSplitKTest : public FakeCudaTest {
protected:
  void load(const PackageManifest &m) {
    std::string bytes = serialized(m, kSplitKPtx);
    ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &splitK),
              ATTNC_OK)
        << attnc_last_error();
  }
  void TearDown() override { attnc_package_free(splitK); }

  /// Launches with Q[2, 64], K[2, n, 64] (the fake reads no data).
  attnc_status launch(int64_t n, attnc_stream stream,
                      const char *entry = nullptr) {
    std::vector<int64_t> q = {2, 64}, k = {2, n, 64};
    attnc_tensor ins[2] = {bf16Tensor(q, nullptr, a.data()),
                           bf16Tensor(k, nullptr, b.data())};
    attnc_tensor outs[1] = {bf16Tensor(q, nullptr, c.data())};
    return attnc_launch(splitK, entry, ins, 2, nullptr, 0, outs, 1, stream);
  }

  attnc_package splitK = nullptr;
};

TEST_F(FakeCudaSplitKTest, WhenPicksTheEntries) {
  load(splitKManifest());
  fake().reset(5);
  int before = fake().liveAllocations();
  ASSERT_EQ(launch(100, nullptr), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 1);
  Recorded prefill = recorded(0);
  EXPECT_EQ(prefill.dims[0], 2u);
  EXPECT_EQ(prefill.params[2], reinterpret_cast<uintptr_t>(c.data()));
  EXPECT_EQ(static_cast<int32_t>(prefill.params[3]), 100);
  EXPECT_EQ(prefill.params[4], 200u); // B*N as i64
  EXPECT_EQ(fake().liveAllocations(), before) << "no workspace was needed";

  // A disabled entry, named: nothing launched, no driver call at all.
  fake().reset(5);
  ASSERT_EQ(launch(100, nullptr, "merge"), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0);
  EXPECT_EQ(fake().numLaunches(), 0);

  ASSERT_EQ(launch(1000, nullptr, "merge"), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 1);
  Recorded merge = recorded(0);
  EXPECT_EQ(static_cast<int32_t>(merge.params[3]), 4); // cdiv(N, 256)
  float bn;
  std::memcpy(&bn, &merge.params[4], 4);
  EXPECT_EQ(bn, 2000.0f);
}

TEST_F(FakeCudaSplitKTest, WorkspacesPerStreamGrowAndFree) {
  load(splitKManifest());
  fake().reset(5);
  int before = fake().liveAllocations();
  rt::Stream s1, s2;
  ASSERT_FALSE(rt::Stream::create(0, s1));
  ASSERT_FALSE(rt::Stream::create(0, s2));

  // decode writes both workspaces, merge reads them: the same buffers.
  ASSERT_EQ(launch(1000, s1.get()), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 2);
  Recorded decode = recorded(0), merge = recorded(1);
  EXPECT_EQ(decode.dims[0], 2u);
  EXPECT_EQ(decode.dims[1], 4u);
  uint64_t partials = decode.params[2], lse = decode.params[3];
  EXPECT_NE(partials, 0u);
  EXPECT_NE(lse, 0u);
  EXPECT_NE(partials, lse);
  EXPECT_EQ(merge.params[0], partials);
  EXPECT_EQ(merge.params[1], lse);
  EXPECT_EQ(fake().allocationSize(partials), 2u * 4 * 64 * 4);
  EXPECT_EQ(fake().allocationSize(lse), 256u); // 32, rounded up
  EXPECT_EQ(fake().liveAllocations(), before + 2);

  // The same stream again, or a smaller problem: the same buffers.
  ASSERT_EQ(launch(1000, s1.get()), ATTNC_OK);
  ASSERT_EQ(launch(600, s1.get()), ATTNC_OK);
  EXPECT_EQ(recorded(2).params[2], partials);
  EXPECT_EQ(recorded(5).params[1], lse);
  EXPECT_EQ(fake().liveAllocations(), before + 2);

  // Another stream, and the default stream, get buffers of their own.
  ASSERT_EQ(launch(1000, s2.get()), ATTNC_OK);
  EXPECT_NE(recorded(6).params[2], partials);
  EXPECT_NE(recorded(6).params[3], lse);
  EXPECT_EQ(fake().liveAllocations(), before + 4);
  ASSERT_EQ(launch(1000, nullptr), ATTNC_OK);
  EXPECT_NE(recorded(8).params[2], partials);
  EXPECT_NE(recorded(8).params[2], recorded(6).params[2]);
  EXPECT_EQ(fake().liveAllocations(), before + 6);
  EXPECT_EQ(fake().streamSyncs(), 0);

  // A larger problem grows s1's buffers, after waiting for s1's kernels.
  ASSERT_EQ(launch(5000, s1.get()), ATTNC_OK);
  EXPECT_EQ(fake().streamSyncs(), 1);
  Recorded grown = recorded(10);
  EXPECT_EQ(fake().allocationSize(grown.params[2]), 2u * 20 * 64 * 4);
  EXPECT_EQ(fake().allocationSize(grown.params[3]), 256u);
  EXPECT_EQ(fake().liveAllocations(), before + 6);

  attnc_package_free(splitK);
  splitK = nullptr;
  EXPECT_EQ(fake().liveAllocations(), before);
}

TEST_F(FakeCudaSplitKTest, PlansTakeTheCallersWorkspaces) {
  load(splitKManifest());
  fake().reset(5);
  std::vector<int64_t> q = {2, 64}, k = {2, 1000, 64};
  attnc_tensor ins[2] = {bf16Tensor(q, nullptr, a.data()),
                         bf16Tensor(k, nullptr, b.data())};
  attnc_tensor outs[1] = {bf16Tensor(q, nullptr, c.data())};
  attnc_plan plan = nullptr;
  ASSERT_EQ(attnc_plan_create(splitK, nullptr, ins, 2, nullptr, 0, outs, 1,
                              &plan),
            ATTNC_OK)
      << attnc_last_error();
  ASSERT_EQ(attnc_plan_num_workspaces(plan), 2u);
  EXPECT_EQ(attnc_plan_workspace_bytes(plan, 0), 2u * 4 * 64 * 4);
  EXPECT_EQ(attnc_plan_workspace_bytes(plan, 1), 32u);
  EXPECT_EQ(attnc_plan_workspace_bytes(plan, 2), 0u);
  int before = fake().liveAllocations();
  void *inputs[] = {a.data(), b.data()}, *outputs[] = {c.data()};
  // Device memory the caller owns (the fake's allocations are aligned).
  void *workspaces[2] = {static_cast<char *>(b.data()) + 4096,
                         static_cast<char *>(b.data()) + 8192};
  ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, workspaces, nullptr),
            ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(fake().liveAllocations(), before); // none of the runtime's
  EXPECT_EQ(recorded(0).params[2], reinterpret_cast<uintptr_t>(workspaces[0]));
  EXPECT_EQ(recorded(0).params[3], reinterpret_cast<uintptr_t>(workspaces[1]));
  EXPECT_EQ(recorded(1).params[0], reinterpret_cast<uintptr_t>(workspaces[0]));
  // A misaligned workspace is refused before any launch.
  void *misaligned[2] = {static_cast<char *>(b.data()) + 4100, workspaces[1]};
  EXPECT_EQ(attnc_plan_launch(plan, inputs, outputs, misaligned, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error()).find("aligned to 256 bytes"),
            std::string::npos);
  EXPECT_EQ(fake().numLaunches(), 2);
  attnc_plan_free(plan);
}

TEST_F(FakeCudaSplitKTest, ZeroedWorkspacesAreZeroedWhereAllocated) {
  // A counter the kernels leave at 0 (`zeroed`): the runtime's buffer is
  // zeroed once, where it is allocated (and again where it grows); a
  // caller's at every launch. Others never.
  PackageManifest m = splitKManifest();
  m.workspaces[0].zeroed = true;
  load(m);
  fake().reset(5);
  ASSERT_EQ(launch(1000, nullptr), ATTNC_OK) << attnc_last_error();
  uint64_t partials = recorded(0).params[2], lse = recorded(0).params[3];
  EXPECT_EQ(fake().asyncMemsets(partials), 1);
  EXPECT_EQ(fake().asyncMemsets(lse), 0);
  ASSERT_EQ(launch(1000, nullptr), ATTNC_OK);
  EXPECT_EQ(fake().asyncMemsets(partials), 1);
  ASSERT_EQ(launch(5000, nullptr), ATTNC_OK);
  uint64_t grown = recorded(4).params[2];
  EXPECT_EQ(fake().allocationSize(grown), 2u * 20 * 64 * 4);
  EXPECT_EQ(fake().asyncMemsets(grown), grown == partials ? 2 : 1);
  EXPECT_EQ(fake().asyncMemsets(lse), 0);

  std::vector<int64_t> q = {2, 64}, k = {2, 1000, 64};
  attnc_tensor ins[2] = {bf16Tensor(q, nullptr, a.data()),
                         bf16Tensor(k, nullptr, b.data())};
  attnc_tensor outs[1] = {bf16Tensor(q, nullptr, c.data())};
  attnc_plan plan = nullptr;
  ASSERT_EQ(
      attnc_plan_create(splitK, nullptr, ins, 2, nullptr, 0, outs, 1, &plan),
      ATTNC_OK)
      << attnc_last_error();
  void *inputs[] = {a.data(), b.data()}, *outputs[] = {c.data()};
  void *workspaces[2] = {static_cast<char *>(b.data()) + 4096,
                         static_cast<char *>(b.data()) + 8192};
  std::memset(workspaces[0], 0x5a, 4);
  fake().reset(5);
  for (int launches = 1; launches <= 2; ++launches) {
    ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, workspaces, nullptr),
              ATTNC_OK)
        << attnc_last_error();
    EXPECT_EQ(fake().asyncMemsets(reinterpret_cast<uintptr_t>(workspaces[0])),
              launches);
    EXPECT_EQ(fake().asyncMemsets(reinterpret_cast<uintptr_t>(workspaces[1])),
              0);
  }
  EXPECT_EQ(static_cast<unsigned char *>(workspaces[0])[3], 0);
  attnc_plan_free(plan);
}

TEST_F(FakeCudaSplitKTest, EmptyWorkspacesAreNull) {
  PackageManifest m = splitKManifest();
  m.workspaces[1].bytes = "0 * B";
  load(m);
  fake().reset(5);
  int before = fake().liveAllocations();
  ASSERT_EQ(launch(1000, nullptr), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 2);
  EXPECT_NE(recorded(0).params[2], 0u);
  EXPECT_EQ(recorded(0).params[3], 0u);
  EXPECT_EQ(recorded(1).params[1], 0u);
  EXPECT_EQ(fake().liveAllocations(), before + 1);
}

TEST_F(FakeCudaSplitKTest, ZeroSizesLaunchOnlyNonEmptyGrids) {
  load(splitKManifest());
  // N = 0: every row still has an output to write (zeros, LSE = -inf), so
  // the rows' kernel runs, told N = 0. K is empty: its pointer is never
  // read and may be anything, even host memory.
  fake().reset(5);
  std::vector<float> host(4);
  std::vector<int64_t> q = {2, 64}, noKeys = {2, 0, 64};
  attnc_tensor ins[2] = {bf16Tensor(q, nullptr, a.data()),
                         bf16Tensor(noKeys, nullptr, host.data())};
  attnc_tensor outs[1] = {bf16Tensor(q, nullptr, c.data())};
  ASSERT_EQ(attnc_launch(splitK, nullptr, ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_OK)
      << attnc_last_error();
  ASSERT_EQ(fake().numLaunches(), 1);
  Recorded prefill = recorded(0);
  EXPECT_EQ(prefill.dims[0], 2u);
  EXPECT_EQ(static_cast<int32_t>(prefill.params[3]), 0);

  // B = 0: no output entry, a grid of 0 blocks: nothing reaches
  // cuLaunchKernel.
  fake().reset(5);
  std::vector<int64_t> noRows = {0, 64}, noBatch = {0, 100, 64};
  attnc_tensor empty[2] = {bf16Tensor(noRows, nullptr, a.data()),
                           bf16Tensor(noBatch, nullptr, b.data())};
  attnc_tensor emptyOut[1] = {bf16Tensor(noRows, nullptr, c.data())};
  ASSERT_EQ(
      attnc_launch(splitK, nullptr, empty, 2, nullptr, 0, emptyOut, 1, nullptr),
      ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(fake().numLaunches(), 0);
}

TEST_F(FakeCudaSplitKTest, NoOutputEntriesEvaluateNoFormula) {
  // Grids that divide by a dim (as decode grids divide by H) cannot be
  // evaluated when it is 0; with no output entry nothing needs them.
  PackageManifest m = splitKManifest();
  m.entries[0].grid = {"B", "cdiv(128, B)"};
  m.workspaces[0].bytes = "cdiv(N, 256) * 4096 / B";
  load(m);
  fake().reset(5);
  std::vector<int64_t> noRows = {0, 64}, keys = {0, 1000, 64};
  attnc_tensor ins[2] = {bf16Tensor(noRows, nullptr, a.data()),
                         bf16Tensor(keys, nullptr, b.data())};
  attnc_tensor outs[1] = {bf16Tensor(noRows, nullptr, c.data())};
  ASSERT_EQ(attnc_launch(splitK, nullptr, ins, 2, nullptr, 0, outs, 1, nullptr),
            ATTNC_OK)
      << attnc_last_error();
  EXPECT_EQ(fake().numLaunches(), 0);
}

/// The TMA package (tmaManifest) on the fake's device memory: Q[2, 4, 256,
/// 64] at a, K[2, 4, 512, 64] at b, O like Q at c.
class FakeCudaTmaTest : public FakeCudaTest {
protected:
  void SetUp() override {
    FakeCudaTest::SetUp();
    if (HasFatalFailure())
      return;
    // What the PTX of each kernel would tell the real driver.
    static const int fwd[] = {128, 128, 8, 8, 8}, plain[] = {8, 8, 8, 8, 8},
                     finish[] = {8, 8};
    fake().setParamBytes("tma_fwd", 5, fwd);
    fake().setParamBytes("tma_fwd_plain", 5, plain);
    fake().setParamBytes("tma_finish", 2, finish);
  }
  void TearDown() override { attnc_package_free(tma); }

  void load(const PackageManifest &m = tmaManifest()) {
    attnc_package_free(tma);
    tma = nullptr;
    std::string bytes = serialized(m, kTmaPtx);
    ASSERT_EQ(attnc_package_load_memory(bytes.data(), bytes.size(), &tma),
              ATTNC_OK)
        << attnc_last_error();
  }

  /// The tensors, with Q's strides and byte offset as set.
  void makeTensors() {
    ins[0] =
        bf16Tensor(qShape, qStrides.empty() ? nullptr : &qStrides, a.data());
    ins[0].byte_offset = qOffset;
    ins[1] = bf16Tensor(kShape, nullptr, b.data());
    outs[0] = bf16Tensor(qShape, nullptr, c.data());
  }
  attnc_status launch(const char *entry = nullptr) {
    makeTensors();
    return attnc_launch(tma, entry, ins, 2, nullptr, 0, outs, 1, nullptr);
  }
  attnc_status checkArgs() {
    makeTensors();
    return attnc_check_args(tma, ins, 2, nullptr, 0, outs, 1, nullptr);
  }
  attnc_status makePlan(attnc_plan &plan) {
    makeTensors();
    return attnc_plan_create(tma, nullptr, ins, 2, nullptr, 0, outs, 1, &plan);
  }
  /// Launches `plan` twice: Q 8 bytes into its buffer (aligned for bf16, not
  /// for TMA), then at its start.
  void launchPlanMisalignedThenAligned(attnc_plan plan) {
    void *inputs[] = {static_cast<char *>(a.data()) + 8, b.data()};
    void *outputs[] = {c.data()};
    ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
              ATTNC_OK)
        << attnc_last_error();
    inputs[0] = a.data();
    ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
              ATTNC_OK)
        << attnc_last_error();
  }

  /// The kernels launched since the last reset.
  std::vector<std::string> launched() {
    std::vector<std::string> names;
    for (int i = 0; i < fake().numLaunches(); ++i)
      names.push_back(fake().launchFunction(i));
    return names;
  }
  /// Parameter `p` of launch `i`, a tensor map.
  FakeTensorMap mapOf(int i, int p) {
    alignas(64) char bytes[128] = {};
    EXPECT_EQ(fake().launchParam(i, p, bytes), 128);
    FakeTensorMap map;
    std::memcpy(&map, bytes, sizeof(map));
    return map;
  }
  /// Parameter `p` of launch `i`, a scalar of 8 bytes or less.
  uint64_t scalarOf(int i, int p) {
    uint64_t v = 0;
    EXPECT_EQ(fake().launchParam(i, p, &v), 8);
    return v;
  }

  attnc_package tma = nullptr;
  std::vector<int64_t> qShape = {2, 4, 256, 64}, kShape = {2, 4, 512, 64};
  std::vector<int64_t> qStrides;
  uint64_t qOffset = 0;
  attnc_tensor ins[2], outs[1];
  /// Q with rows of 67 elements (134 bytes): not a TMA layout.
  std::vector<int64_t> paddedRows = {4 * 256 * 67, 256 * 67, 67, 1};
};

TEST_F(FakeCudaTmaTest, TmaDescriptorsReachTheKernel) {
  load();
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd", "tma_finish"}));
  EXPECT_EQ(fake().tensorMapEncodes(), 2);
  unsigned dims[7];
  uint64_t params[5];
  fake().launch(0, dims, params);
  EXPECT_EQ(dims[0], 2u); // cdiv(M, 128)
  EXPECT_EQ(dims[1], 4u);
  EXPECT_EQ(dims[2], 2u);
  EXPECT_EQ(dims[3], 384u);
  EXPECT_EQ(dims[6], 160u * 1024);
  // Q's map: the tensor's axes reversed, strides of the outer three in
  // bytes, the box reversed, 128-byte swizzle.
  FakeTensorMap q = mapOf(0, 0);
  EXPECT_EQ(q.magic, kFakeTensorMapMagic);
  EXPECT_EQ(q.address, reinterpret_cast<uintptr_t>(a.data()));
  EXPECT_EQ(q.dataType, cuda::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16);
  EXPECT_EQ(q.rank, 4u);
  EXPECT_EQ(std::vector<uint64_t>(q.dims, q.dims + 4),
            (std::vector<uint64_t>{64, 256, 4, 2}));
  EXPECT_EQ(std::vector<uint64_t>(q.strides, q.strides + 3),
            (std::vector<uint64_t>{128, 128 * 256, 128 * 256 * 4}));
  EXPECT_EQ(std::vector<uint32_t>(q.box, q.box + 4),
            (std::vector<uint32_t>{64, 128, 1, 1}));
  EXPECT_EQ(std::vector<uint32_t>(q.elementStrides, q.elementStrides + 4),
            (std::vector<uint32_t>{1, 1, 1, 1}));
  EXPECT_EQ(q.interleave, cuda::CU_TENSOR_MAP_INTERLEAVE_NONE);
  EXPECT_EQ(q.swizzle, cuda::CU_TENSOR_MAP_SWIZZLE_128B);
  EXPECT_EQ(q.l2Promotion, cuda::CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
  EXPECT_EQ(q.oobFill, cuda::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  FakeTensorMap k = mapOf(0, 1);
  EXPECT_EQ(k.address, reinterpret_cast<uintptr_t>(b.data()));
  EXPECT_EQ(std::vector<uint64_t>(k.dims, k.dims + 4),
            (std::vector<uint64_t>{64, 512, 4, 2}));
  // The scalars after them.
  EXPECT_EQ(scalarOf(0, 2), reinterpret_cast<uintptr_t>(c.data()));
  EXPECT_EQ(static_cast<int32_t>(scalarOf(0, 3)), 256);
  EXPECT_EQ(static_cast<int32_t>(scalarOf(0, 4)), 512);
  EXPECT_EQ(scalarOf(1, 0), reinterpret_cast<uintptr_t>(c.data()));
}

TEST_F(FakeCudaTmaTest, TmaFallbackForUnalignedStrides) {
  load();
  fake().reset(0);
  qStrides = paddedRows;
  // The checks alone accept the tensors: the fallback serves.
  ASSERT_EQ(checkArgs(), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  // In fwd's place, though listed last; no tensor map asked for.
  EXPECT_EQ(launched(),
            (std::vector<std::string>{"tma_fwd_plain", "tma_finish"}));
  EXPECT_EQ(fake().tensorMapEncodes(), 0);
  unsigned dims[7];
  uint64_t params[5];
  fake().launch(0, dims, params);
  EXPECT_EQ(dims[0], 4u); // its own grid: cdiv(M, 64)
  EXPECT_EQ(dims[3], 128u);
  EXPECT_EQ(params[0], reinterpret_cast<uintptr_t>(a.data()));
  EXPECT_EQ(params[1], reinterpret_cast<uintptr_t>(b.data()));
  EXPECT_EQ(params[2], reinterpret_cast<uintptr_t>(c.data()));
  EXPECT_EQ(params[3], 67u);
  EXPECT_EQ(static_cast<int32_t>(params[4]), 256);

  // Naming fwd runs the fallback in its place; naming the fallback runs it.
  fake().reset(0);
  ASSERT_EQ(launch("fwd"), ATTNC_OK) << attnc_last_error();
  ASSERT_EQ(launch("fwd_plain"), ATTNC_OK) << attnc_last_error();
  qStrides.clear();
  ASSERT_EQ(launch("fwd_plain"), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(),
            (std::vector<std::string>{"tma_fwd_plain", "tma_fwd_plain",
                                      "tma_fwd_plain"}));
}

TEST_F(FakeCudaTmaTest, FallbackOfSeveralEntriesRunsThemInOrder) {
  // fwd falls back to a list kernel, then the plain kernel that reads it.
  PackageManifest m = tmaManifest();
  EntrySpec list = m.entries[2];
  list.name = "fwd_plain_list";
  list.function = "tma_finish";
  m.entries.insert(m.entries.begin() + 1, list);
  m.entries[0].fallback = {"fwd_plain_list", "fwd_plain"};
  load(m);
  fake().reset(0);
  // TMA describes the tensors: neither stand-in runs.
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd", "tma_finish"}));
  // Strides TMA cannot describe: both, in order, in fwd's place.
  fake().reset(0);
  qStrides = paddedRows;
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_finish", "tma_fwd_plain",
                                                  "tma_finish"}));
  // A plan: per launch, a misaligned Q runs both, an aligned one fwd alone.
  qStrides.clear();
  attnc_plan plan = nullptr;
  ASSERT_EQ(makePlan(plan), ATTNC_OK) << attnc_last_error();
  fake().reset(0);
  launchPlanMisalignedThenAligned(plan);
  EXPECT_EQ(launched(),
            (std::vector<std::string>{"tma_finish", "tma_fwd_plain",
                                      "tma_finish", "tma_fwd", "tma_finish"}));
  attnc_plan_free(plan);
}

TEST_F(FakeCudaTmaTest, PersistentEntriesLaunchACtaPerSm) {
  PackageManifest m = tmaManifest();
  m.entries[0].persistentCtasPerSm = 1;
  load(m);
  auto gridOf = [&](int i) {
    unsigned dims[7];
    uint64_t params[8];
    fake().launch(i, dims, params);
    return std::vector<unsigned>(dims, dims + 3);
  };
  // 2 x 4 x 2 tiles on the fake's 4 SMs: 4 CTAs, 1-d; `finish` as it is.
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd", "tma_finish"}));
  EXPECT_EQ(gridOf(0), (std::vector<unsigned>{4, 1, 1}));
  EXPECT_EQ(gridOf(1), (std::vector<unsigned>{8, 1, 1}));
  // 4 tiles or fewer: the grid of the formulas.
  qShape = {1, 2, 256, 64};
  kShape = {1, 2, 512, 64};
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(gridOf(0), (std::vector<unsigned>{2, 2, 1}));
  // Two CTAs per SM: 8.
  m.entries[0].persistentCtasPerSm = 2;
  load(m);
  qShape = {2, 4, 256, 64};
  kShape = {2, 4, 512, 64};
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(gridOf(0), (std::vector<unsigned>{8, 1, 1}));
  // The kernel numbers its tiles in 32 bits: more is an argument error.
  qShape = {65535, 65535, 128, 64};
  kShape = {65535, 65535, 128, 64};
  fake().reset(0);
  EXPECT_EQ(launch(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error())
                .find("entry 'fwd': 4294836225 tiles, more than 2147483647"),
            std::string::npos)
      << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0);
}

TEST_F(FakeCudaTmaTest, TmaWithoutFallbackIsALaunchError) {
  PackageManifest m = tmaManifest();
  m.entries[0].fallback.clear();
  m.entries.pop_back();
  load(m);
  fake().reset(0);
  qStrides = paddedRows;
  std::string unaligned = "entry 'fwd': argument 'Q': TMA needs 16-byte "
                          "aligned strides; stride of axis 2 is 134 bytes";
  EXPECT_EQ(launch(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(attnc_last_error(), unaligned);
  EXPECT_EQ(checkArgs(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(attnc_last_error(), unaligned);
  attnc_plan plan = nullptr;
  EXPECT_EQ(makePlan(plan), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(attnc_last_error(), unaligned);
  EXPECT_EQ(plan, nullptr);
  // A data address TMA cannot start at: also found before any driver call.
  qStrides.clear();
  qOffset = 8;
  std::string misaligned = "entry 'fwd': argument 'Q': TMA needs a 16-byte "
                           "aligned address; data + byte_offset is 0x";
  EXPECT_EQ(launch(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(attnc_last_error()).rfind(misaligned, 0), 0u)
      << attnc_last_error();
  EXPECT_EQ(checkArgs(), ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(attnc_last_error()).rfind(misaligned, 0), 0u)
      << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0);
  // Only the entry that is launched counts.
  qStrides = paddedRows;
  EXPECT_EQ(launch("finish"), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_finish"}));
}

TEST_F(FakeCudaTmaTest, PlansReencodeTmaForNewPointers) {
  load();
  fake().reset(0);
  qOffset = 256;
  attnc_plan plan = nullptr;
  ASSERT_EQ(makePlan(plan), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0); // Making a plan needs no driver.
  rt::DeviceBuffer d;
  ASSERT_FALSE(rt::DeviceBuffer::allocate(0, 4096, d));
  void *inputs[] = {a.data(), b.data()}, *outputs[] = {c.data()};
  auto launchPlan = [&] {
    ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
              ATTNC_OK)
        << attnc_last_error();
  };
  launchPlan();
  EXPECT_EQ(fake().tensorMapEncodes(), 2);
  // The same pointers again: the maps of the last launch.
  launchPlan();
  EXPECT_EQ(fake().tensorMapEncodes(), 2);
  EXPECT_EQ(mapOf(2, 0).address, reinterpret_cast<uintptr_t>(a.data()) + 256);
  // Q elsewhere: its map only is encoded again, with its byte offset.
  inputs[0] = d.data();
  launchPlan();
  EXPECT_EQ(fake().tensorMapEncodes(), 3);
  EXPECT_EQ(mapOf(4, 0).address, reinterpret_cast<uintptr_t>(d.data()) + 256);
  EXPECT_EQ(mapOf(4, 1).address, reinterpret_cast<uintptr_t>(b.data()));
  inputs[0] = a.data();
  launchPlan();
  EXPECT_EQ(fake().tensorMapEncodes(), 4);
  EXPECT_EQ(mapOf(6, 0).address, reinterpret_cast<uintptr_t>(a.data()) + 256);
  EXPECT_EQ(launched(), (std::vector<std::string>{
                            "tma_fwd", "tma_finish", "tma_fwd", "tma_finish",
                            "tma_fwd", "tma_finish", "tma_fwd", "tma_finish"}));
  attnc_plan_free(plan);
}

TEST_F(FakeCudaTmaTest, PlansFallBackForMisalignedPointer) {
  load();
  fake().reset(0);
  attnc_plan plan = nullptr;
  ASSERT_EQ(makePlan(plan), ATTNC_OK) << attnc_last_error();
  // The misaligned launch runs the fallback; the aligned one, the TMA kernel.
  launchPlanMisalignedThenAligned(plan);
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd_plain", "tma_finish",
                                                  "tma_fwd", "tma_finish"}));
  EXPECT_EQ(scalarOf(0, 0), reinterpret_cast<uintptr_t>(a.data()) + 8);
  EXPECT_EQ(fake().tensorMapEncodes(), 2);
  attnc_plan_free(plan);

  // Without a fallback, the launch is refused before any driver call.
  PackageManifest m = tmaManifest();
  m.entries[0].fallback.clear();
  m.entries.pop_back();
  load(m);
  ASSERT_EQ(makePlan(plan), ATTNC_OK) << attnc_last_error();
  fake().reset(0);
  void *inputs[] = {static_cast<char *>(a.data()) + 8, b.data()};
  void *outputs[] = {c.data()};
  EXPECT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
            ATTNC_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(attnc_last_error())
                .find("entry 'fwd': argument 'Q': TMA needs a 16-byte aligned "
                      "address"),
            std::string::npos)
      << attnc_last_error();
  EXPECT_EQ(fake().calls(), 0);
  attnc_plan_free(plan);
}

TEST_F(FakeCudaTmaTest, EmptyTensorsGetZeroMaps) {
  // No keys: the kernel still writes every row of O and loads nothing of K,
  // whose map (which the driver would refuse) is all zeros.
  load();
  fake().reset(0);
  kShape = {2, 4, 0, 64};
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd", "tma_finish"}));
  EXPECT_EQ(fake().tensorMapEncodes(), 1);
  FakeTensorMap k = mapOf(0, 1);
  const char *bytes = reinterpret_cast<const char *>(&k);
  EXPECT_TRUE(std::all_of(bytes, bytes + sizeof(k),
                          [](char byte) { return byte == 0; }));
  EXPECT_EQ(mapOf(0, 0).magic, kFakeTensorMapMagic);
}

TEST_F(FakeCudaTmaTest, OptionalMapsAreZerosWhereTmaCannotDescribe) {
  // fwd's map of Q is optional: for a Q that TMA cannot describe, fwd runs
  // (not its fallback) with an all-zero map, at launch and in a plan, for a
  // layout and for a data address alike; K's map is made as ever.
  PackageManifest m = tmaManifest();
  m.entries[0].params[0].tile.optional = true;
  load(m);
  auto isZero = [](const FakeTensorMap &map) {
    const char *bytes = reinterpret_cast<const char *>(&map);
    return std::all_of(bytes, bytes + sizeof(map),
                       [](char byte) { return byte == 0; });
  };
  for (bool misaligned : {false, true}) {
    SCOPED_TRACE(misaligned ? "misaligned address" : "unaligned strides");
    qStrides = misaligned ? std::vector<int64_t>() : paddedRows;
    qOffset = misaligned ? 8 : 0;
    fake().reset(0);
    ASSERT_EQ(checkArgs(), ATTNC_OK) << attnc_last_error();
    ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
    attnc_plan plan = nullptr;
    ASSERT_EQ(makePlan(plan), ATTNC_OK) << attnc_last_error();
    void *inputs[] = {a.data(), b.data()}, *outputs[] = {c.data()};
    ASSERT_EQ(attnc_plan_launch(plan, inputs, outputs, nullptr, nullptr),
              ATTNC_OK)
        << attnc_last_error();
    attnc_plan_free(plan);
    EXPECT_EQ(launched(), (std::vector<std::string>{"tma_fwd", "tma_finish",
                                                    "tma_fwd", "tma_finish"}));
    for (int i : {0, 2}) {
      EXPECT_TRUE(isZero(mapOf(i, 0)));
      EXPECT_EQ(mapOf(i, 1).magic, kFakeTensorMapMagic);
    }
  }
  // A Q TMA can describe gets its map.
  qStrides.clear();
  qOffset = 0;
  fake().reset(0);
  ASSERT_EQ(launch(), ATTNC_OK) << attnc_last_error();
  EXPECT_EQ(mapOf(0, 0).magic, kFakeTensorMapMagic);
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
