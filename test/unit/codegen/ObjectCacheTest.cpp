//===- ObjectCacheTest.cpp - The on-disk cache of kernel objects ----------===//
//
// A kernel compiled twice with one cache directory is a miss then a hit and
// computes the same outputs; a damaged entry is reported, rebuilt and never
// run; the key follows the IR, the target and the options; without a cache
// directory nothing is written.
//
//===----------------------------------------------------------------------===//

#include "attn/Frontend/Frontend.h"
#include "attn/JIT/CacheKey.h"
#include "attn/JIT/CpuKernel.h"
#include "attn/JIT/CpuTarget.h"
#include "attn/JIT/ObjectCache.h"
#include "attn/Pipelines/Pipelines.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <random>

using namespace attn;

namespace {

constexpr const char *kSpec = R"(
attention cached {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  param cap: f32 = 30.0
  out   O: f32[B, H, M, D]

  S[b,h,m,n] = cap * tanh(sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D) / cap)
  keep S where n <= m
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
)";

class ObjectCacheTest : public ::testing::Test {
protected:
  ObjectCacheTest() {
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  void SetUp() override {
    llvm::SmallString<128> dir;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("attn-cache-test", dir));
    cacheDir = std::string(dir);
  }

  void TearDown() override { llvm::sys::fs::remove_directories(cacheDir); }

  mlir::OwningOpRef<mlir::ModuleOp> parse(llvm::StringRef spec) {
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(spec),
                                 llvm::SMLoc());
    mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
        dsl::compileSpec(sourceMgr, context);
    if (mlir::failed(module)) {
      ADD_FAILURE() << "cannot compile the spec";
      return nullptr;
    }
    return std::move(*module);
  }

  CpuKernelOptions cached() const {
    CpuKernelOptions options;
    options.cacheDir = cacheDir;
    return options;
  }

  std::unique_ptr<CpuKernel> compile(const CpuKernelOptions &options) {
    mlir::OwningOpRef<mlir::ModuleOp> module = parse(kSpec);
    if (!module)
      return nullptr;
    llvm::Expected<std::unique_ptr<CpuKernel>> kernel =
        CpuKernel::compile(*module, options);
    if (!kernel) {
      ADD_FAILURE() << llvm::toString(kernel.takeError());
      return nullptr;
    }
    return std::move(*kernel);
  }

  /// O of `kernel` on fixed random inputs.
  HostTensor run(CpuKernel &kernel) {
    int64_t B = 1, H = 2, M = 11, N = 11, D = 8;
    std::mt19937 rng(7);
    std::normal_distribution<double> normal(0.0, 1.0);
    auto random = [&](std::vector<int64_t> shape) {
      HostTensor tensor(DType::F32, std::move(shape));
      for (int64_t i = 0; i < tensor.getNumElements(); ++i)
        tensor.setFromDouble(i, normal(rng));
      return tensor;
    };
    HostTensor Q = random({B, H, M, D}), K = random({B, H, N, D}),
               V = random({B, H, N, D});
    HostTensor O(DType::F32, {B, H, M, D});
    EXPECT_FALSE(llvm::errorToBool(
        kernel.run({B, H, M, N, D}, {&Q, &K, &V}, {30.0}, {&O})));
    return O;
  }

  /// The cache's files (entries and anything else).
  std::vector<std::string> listCache() const {
    std::vector<std::string> files;
    std::error_code error;
    for (llvm::sys::fs::recursive_directory_iterator it(cacheDir, error), end;
         it != end && !error; it.increment(error))
      if (llvm::sys::fs::is_regular_file(it->path()))
        files.push_back(it->path());
    return files;
  }

  std::string onlyEntry() const {
    std::vector<std::string> files = listCache();
    EXPECT_EQ(files.size(), 1u);
    return files.empty() ? "" : files.front();
  }

  static void rewrite(const std::string &path,
                      llvm::function_ref<void(std::string &)> edit) {
    auto buffer = llvm::MemoryBuffer::getFile(path, false, false);
    ASSERT_TRUE(bool(buffer));
    std::string bytes = (*buffer)->getBuffer().str();
    edit(bytes);
    std::error_code error;
    llvm::raw_fd_ostream os(path, error);
    ASSERT_FALSE(error);
    os << bytes;
  }

  /// A damaged entry is reported once, rebuilt, and the rebuilt entry hits.
  void expectRebuilt(llvm::function_ref<void(std::string &)> damage,
                     llvm::StringRef reason) {
    std::unique_ptr<CpuKernel> first = compile(cached());
    ASSERT_TRUE(first);
    HostTensor expected = run(*first);
    std::string entry = onlyEntry();
    rewrite(entry, damage);

    std::unique_ptr<CpuKernel> rebuilt = compile(cached());
    ASSERT_TRUE(rebuilt);
    EXPECT_FALSE(rebuilt->getStats().cacheHit);
    ASSERT_EQ(rebuilt->getStats().warnings.size(), 1u);
    EXPECT_NE(rebuilt->getStats().warnings[0].find(reason.str()),
              std::string::npos)
        << rebuilt->getStats().warnings[0];
    EXPECT_EQ(relativeError(run(*rebuilt), expected), 0.0);

    std::unique_ptr<CpuKernel> again = compile(cached());
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->getStats().cacheHit);
    EXPECT_TRUE(again->getStats().warnings.empty());
  }

  mlir::MLIRContext context{mlir::MLIRContext::Threading::DISABLED};
  std::string cacheDir;
};

TEST_F(ObjectCacheTest, HitAfterMissGivesTheSameResults) {
  std::unique_ptr<CpuKernel> cold = compile(cached());
  ASSERT_TRUE(cold);
  EXPECT_FALSE(cold->getStats().cacheHit);
  EXPECT_GT(cold->getStats().lowerSeconds, 0.0);
  EXPECT_EQ(listCache().size(), 1u);

  std::unique_ptr<CpuKernel> warm = compile(cached());
  ASSERT_TRUE(warm);
  EXPECT_TRUE(warm->getStats().cacheHit);
  EXPECT_EQ(warm->getStats().lowerSeconds, 0.0);
  EXPECT_EQ(warm->getStats().codegenSeconds, 0.0);
  EXPECT_TRUE(warm->getStats().warnings.empty());
  EXPECT_EQ(warm->isFused(), cold->isFused());
  EXPECT_EQ(warm->getSignature().name, "cached");
  EXPECT_EQ(relativeError(run(*warm), run(*cold)), 0.0);
}

TEST_F(ObjectCacheTest, FlippedByteIsRebuilt) {
  expectRebuilt([](std::string &bytes) { bytes[bytes.size() / 2] ^= 0x20; },
                "checksum");
}

TEST_F(ObjectCacheTest, TruncatedObjectIsRebuilt) {
  expectRebuilt([](std::string &bytes) { bytes.resize(bytes.size() - 100); },
                "truncated");
}

TEST_F(ObjectCacheTest, TruncatedHeaderIsRebuilt) {
  expectRebuilt([](std::string &bytes) { bytes.resize(10); },
                "truncated header");
}

TEST_F(ObjectCacheTest, EntryOfAnotherKeyIsRebuilt) {
  // The key inside the header (bytes 16..47) no longer matches the name.
  expectRebuilt([](std::string &bytes) { bytes[20] ^= 1; }, "stale");
}

TEST_F(ObjectCacheTest, KeyFollowsIRTargetAndOptions) {
  mlir::OwningOpRef<mlir::ModuleOp> module = parse(kSpec);
  ASSERT_TRUE(module);
  llvm::Expected<CpuTarget> host = getHostCpuTarget();
  ASSERT_TRUE(bool(host));
  mlir::attn::CpuPipelineOptions pipeline;
  CacheKey base = computeCacheKey(*module, *host, pipeline, 3);

  // The same spec parsed again (other locations, same content).
  mlir::OwningOpRef<mlir::ModuleOp> again = parse(std::string("\n\n") + kSpec);
  ASSERT_TRUE(again);
  EXPECT_EQ(computeCacheKey(*again, *host, pipeline, 3), base);

  mlir::attn::CpuPipelineOptions unfused = pipeline;
  unfused.fused = false;
  EXPECT_NE(computeCacheKey(*module, *host, unfused, 3), base);
  mlir::attn::CpuPipelineOptions tiled = pipeline;
  tiled.keyTile *= 2;
  EXPECT_NE(computeCacheKey(*module, *host, tiled, 3), base);
  EXPECT_NE(computeCacheKey(*module, *host, pipeline, 2), base);

  llvm::Expected<CpuTarget> other = getNamedCpuTarget("x86-64-v2");
  ASSERT_TRUE(bool(other));
  EXPECT_NE(computeCacheKey(*module, *other, pipeline, 3), base);

  std::string changedSpec = kSpec;
  changedSpec.replace(changedSpec.find("n <= m"), 6, "n <  m");
  mlir::OwningOpRef<mlir::ModuleOp> changed = parse(changedSpec);
  ASSERT_TRUE(changed);
  EXPECT_NE(computeCacheKey(*changed, *host, pipeline, 3), base);
}

TEST_F(ObjectCacheTest, NoCacheWritesNothing) {
  CpuKernelOptions options;
  ASSERT_FALSE(options.cacheDir.has_value());
  std::unique_ptr<CpuKernel> kernel = compile(options);
  ASSERT_TRUE(kernel);
  EXPECT_FALSE(kernel->getStats().cacheHit);
  EXPECT_TRUE(listCache().empty());
  // And a cache entry that exists is not read either.
  ASSERT_TRUE(compile(cached()));
  std::unique_ptr<CpuKernel> uncached = compile(options);
  ASSERT_TRUE(uncached);
  EXPECT_FALSE(uncached->getStats().cacheHit);
}

TEST_F(ObjectCacheTest, UnknownCpuIsAnError) {
  llvm::Expected<CpuTarget> target = getNamedCpuTarget("no-such-cpu");
  ASSERT_FALSE(bool(target));
  EXPECT_NE(llvm::toString(target.takeError()).find("unknown CPU"),
            std::string::npos);
}

TEST_F(ObjectCacheTest, ThreadsDefaultToEveryCore) {
  CpuKernelOptions options = cached();
  std::unique_ptr<CpuKernel> all = compile(options);
  ASSERT_TRUE(all);
  EXPECT_GE(all->getThreads(), 1u);
  options.threads = 3;
  std::unique_ptr<CpuKernel> three = compile(options);
  ASSERT_TRUE(three);
  EXPECT_EQ(three->getThreads(), 3u);
  EXPECT_EQ(relativeError(run(*three), run(*all)), 0.0);
}

} // namespace
