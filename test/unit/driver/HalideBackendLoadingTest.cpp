//===- HalideBackendLoadingTest.cpp - libHalide only where Halide compiles
//-===//
//
// libHalide14 is loaded by the first compile that takes the Halide backend,
// not before: a fused CPU kernel, a GPU package and the Halide cache keys
// leave the process without it. A test binary of its own, so that the
// process it checks starts as a user's does, whatever other tests run.
//
//===----------------------------------------------------------------------===//

#include "DriverTestUtil.h"
#include "attn/Driver/HalideBackend.h"
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

TEST(HalideBackendLoadingTest, OnlyAHalideCompileLoadsLibHalide) {
  ASSERT_FALSE(isHalideBackendLoaded());
  ASSERT_FALSE(isLibHalideMapped()) << "the test binary links libHalide";
  mlir::MLIRContext context;
  test::loadCodegenDialects(context);

  llvm::Expected<CpuKernelObject> fused =
      test::compileCausalForHost(context, CpuBackend::Mlir);
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

  llvm::Expected<CpuKernelObject> halide =
      test::compileCausalForHost(context, CpuBackend::Halide);
  ASSERT_TRUE(bool(halide)) << llvm::toString(halide.takeError());
  EXPECT_TRUE(isHalideBackendLoaded());
  EXPECT_TRUE(isLibHalideMapped());
}

} // namespace
