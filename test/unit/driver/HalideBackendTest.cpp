//===- HalideBackendTest.cpp - The Halide backend, loaded on first use ----===//
//
// libHalide14 is loaded by the first compile that takes the Halide backend,
// not before: a fused CPU kernel, a GPU package and the Halide cache keys
// leave the process without it. Through the plugin a Halide kernel compiles,
// with the runtime it links against, and its errors come back as errors
// (test/tools/attnc-halide.test runs such kernels against the reference).
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/HalideBackend.h"
#include "DriverTestUtil.h"
#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/CpuTarget.h"
#include "attn/Driver/Compile.h"
#include "attn/NVGPU/GpuPackage.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

using namespace attn;

namespace {

/// Whether a libHalide is mapped into this process.
bool isLibHalideMapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libHalide") != std::string::npos)
      return true;
  return false;
}

class HalideBackendTest : public ::testing::Test {
protected:
  void SetUp() override { test::loadCodegenDialects(context); }

  llvm::Expected<CpuKernelObject>
  compile(CpuBackend backend, const std::string &scheduler = "Mullapudi2016") {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        test::parseSpec(context, test::kCausalSpec);
    if (!module)
      return llvm::createStringError("the spec does not compile");
    llvm::Expected<CpuTarget> host = getHostCpuTarget();
    if (!host)
      return host.takeError();
    CpuKernelOptions options;
    options.backend = backend;
    options.halide.scheduler = scheduler;
    options.halide.dimEstimates = {1, 2, 37, 21, 16};
    return compileCpuObject(*module, *host, options, CacheOptions{});
  }

  mlir::MLIRContext context;
};

TEST_F(HalideBackendTest, OnlyAHalideCompileLoadsLibHalide) {
  // Run alone (as ctest runs each test), the process starts without it.
  if (isHalideBackendLoaded())
    GTEST_SKIP() << "an earlier test of this process compiled through Halide";
  ASSERT_FALSE(isLibHalideMapped()) << "the test binary links libHalide";

  llvm::Expected<CpuKernelObject> fused = compile(CpuBackend::Mlir);
  ASSERT_TRUE(bool(fused)) << llvm::toString(fused.takeError());
  mlir::OwningOpRef<mlir::ModuleOp> gpu =
      test::parseSpec(context, test::kCausalGpuSpec);
  ASSERT_TRUE(gpu);
  GpuPackageOptions gpuOptions;
  gpuOptions.target = "sm_90a";
  llvm::Expected<GpuPackageArtifact> package =
      compileGpuPackage(*gpu, gpuOptions, CacheOptions{});
  ASSERT_TRUE(bool(package)) << llvm::toString(package.takeError());
  // A cache lookup needs the keys, not the backend.
  EXPECT_FALSE(describeHalideCompile(HalideScheduleOptions()).empty());
  EXPECT_FALSE(isHalideBackendLoaded());
  EXPECT_FALSE(isLibHalideMapped());

  llvm::Expected<CpuKernelObject> halide = compile(CpuBackend::Halide);
  ASSERT_TRUE(bool(halide)) << llvm::toString(halide.takeError());
  EXPECT_TRUE(isHalideBackendLoaded());
  EXPECT_TRUE(isLibHalideMapped());
  EXPECT_EQ(halide->flags & kHalidePath, kHalidePath);
  EXPECT_EQ(halide->signature.name, "causal");
  ASSERT_TRUE(halide->object && halide->supportObject);
  EXPECT_GT(halide->object->getBufferSize(), 0u);
  EXPECT_GT(halide->supportObject->getBufferSize(), 0u);
}

TEST_F(HalideBackendTest, ErrorsComeBackThroughThePlugin) {
  llvm::Expected<CpuKernelObject> object =
      compile(CpuBackend::Halide, "NoSuchScheduler");
  ASSERT_FALSE(bool(object));
  EXPECT_NE(llvm::toString(object.takeError())
                .find("unknown Halide scheduler 'NoSuchScheduler'"),
            std::string::npos);
}

TEST_F(HalideBackendTest, KeysNameTheLibraryTheHostAndTheSchedule) {
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
