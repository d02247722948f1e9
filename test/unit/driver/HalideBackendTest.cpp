//===- HalideBackendTest.cpp - The Halide backend, loaded on first use ----===//
//
// Through the plugin a Halide kernel compiles, with the runtime it links
// against, and its errors come back as errors (test/tools/attnc-halide.test
// runs such kernels against the reference); its cache keys are made without
// it. That nothing else loads it is HalideBackendLoadingTest.cpp's, a
// process of its own.
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/HalideBackend.h"
#include "DriverTestUtil.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

using namespace attn;

namespace {

TEST(HalideBackendTest, CompilesThroughThePlugin) {
  mlir::MLIRContext context;
  test::loadCodegenDialects(context);
  llvm::Expected<CpuKernelObject> halide =
      test::compileCausalForHost(context, CpuBackend::Halide);
  ASSERT_TRUE(bool(halide)) << llvm::toString(halide.takeError());
  EXPECT_TRUE(isHalideBackendLoaded());
  EXPECT_EQ(halide->flags & kHalidePath, kHalidePath);
  EXPECT_EQ(halide->signature.name, "causal");
  ASSERT_TRUE(halide->object && halide->supportObject);
  EXPECT_GT(halide->object->getBufferSize(), 0u);
  EXPECT_GT(halide->supportObject->getBufferSize(), 0u);
}

TEST(HalideBackendTest, ErrorsComeBackThroughThePlugin) {
  mlir::MLIRContext context;
  test::loadCodegenDialects(context);
  llvm::Expected<CpuKernelObject> object = test::compileCausalForHost(
      context, CpuBackend::Halide, "NoSuchScheduler");
  ASSERT_FALSE(bool(object));
  EXPECT_NE(llvm::toString(object.takeError())
                .find("unknown Halide scheduler 'NoSuchScheduler'"),
            std::string::npos);
}

TEST(HalideBackendTest, KeysNameTheLibraryTheHostAndTheSchedule) {
  HalideScheduleOptions options;
  options.scheduler = "Li2018";
  options.parallelism = 3;
  options.dimEstimates = {2, 64};
  std::vector<std::string> fields = describeHalideCompile(options);
  std::vector<std::string> runtime = describeHalideRuntime();
  ASSERT_GE(fields.size(), runtime.size());
  EXPECT_TRUE(std::equal(runtime.begin(), runtime.end(), fields.begin()));
  EXPECT_EQ(runtime[0].rfind("halide=libHalide", 0), 0u) << runtime[0];
  llvm::Expected<CpuTarget> host = getHostCpuTarget();
  ASSERT_TRUE(bool(host)) << llvm::toString(host.takeError());
  EXPECT_NE(runtime[1].find(host->cpu), std::string::npos) << runtime[1];
  EXPECT_NE(std::find(fields.begin(), fields.end(), "scheduler=Li2018"),
            fields.end());
  EXPECT_NE(std::find(fields.begin(), fields.end(), "parallelism=3"),
            fields.end());
  EXPECT_NE(std::find(fields.begin(), fields.end(), "estimates=2,64,"),
            fields.end());
}

} // namespace
