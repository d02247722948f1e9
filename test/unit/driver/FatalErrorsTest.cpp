//===- FatalErrorsTest.cpp - LLVM's fatal errors as errors ----------------===//
//
// Inside a protected region, report_fatal_error and a failed allocation
// come back as errors with LLVM's reason, and the process goes on; every
// compile is such a region, so a fatal error in code generation fails that
// compile only, and the next one succeeds.
//
//===----------------------------------------------------------------------===//

#include "DriverTestUtil.h"
#include "attn/CPU/CpuKernel.h"
#include "attn/Driver/Compile.h"
#include "attn/Driver/FatalErrors.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/ErrorHandling.h"

#include <gtest/gtest.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define ATTN_HAS_LSAN 1
#endif
#endif

using namespace attn;

namespace {

constexpr const char *kSpec = R"(
attention protected_compile {
  dims  B, H, M, N, D
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  out   O: f32[B, H, M, D]

  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
)";

/// Recovery leaves an abandoned region's destructors unrun, so its memory
/// leaks by design (LLVM's message string, a half-done compile); this keeps
/// LeakSanitizer from reporting what the scope allocates on this thread.
class AbandonedRegionLeaks {
#ifdef ATTN_HAS_LSAN
  __lsan::ScopedDisabler disabler;
#endif
};

/// A fatal error outside every region ends a test process: fail loudly.
[[noreturn]] void reportUnexpected(const char *message) {
  std::fprintf(stderr, "fatal error outside a protected region: %s\n", message);
  std::abort();
}

class FatalErrorsTest : public ::testing::Test {
protected:
  void SetUp() override { installFatalErrorHandlers(reportUnexpected); }
  void TearDown() override { setCodegenHookForTesting(nullptr); }
};

TEST_F(FatalErrorsTest, ABodyThatReturnsKeepsItsResult) {
  EXPECT_FALSE(
      llvm::errorToBool(runProtected([] { return llvm::Error::success(); })));
  llvm::Error error = runProtected([] {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "its own");
  });
  EXPECT_EQ(llvm::toString(std::move(error)), "its own");
  llvm::Expected<int> value =
      runProtected<int>([]() -> llvm::Expected<int> { return 42; });
  ASSERT_TRUE(!!value);
  EXPECT_EQ(*value, 42);
}

TEST_F(FatalErrorsTest, AFatalErrorComesBackWithItsReason) {
  AbandonedRegionLeaks expected;
  llvm::Error error = runProtected([]() -> llvm::Error {
    llvm::report_fatal_error("Cannot select: an injected node");
  });
  EXPECT_EQ(llvm::toString(std::move(error)),
            "LLVM reported a fatal error: Cannot select: an injected node");
  // The thread goes on, and another region starts clean.
  llvm::Expected<int> value = runProtected<int>([]() -> llvm::Expected<int> {
    llvm::report_fatal_error("a second one", /*gen_crash_diag=*/false);
  });
  ASSERT_FALSE(value);
  EXPECT_EQ(llvm::toString(value.takeError()),
            "LLVM reported a fatal error: a second one");
}

TEST_F(FatalErrorsTest, AFailedAllocationComesBackAsOutOfMemory) {
  AbandonedRegionLeaks expected;
  llvm::Error error = runProtected([]() -> llvm::Error {
    llvm::report_bad_alloc_error("Allocation failed");
  });
  EXPECT_EQ(llvm::toString(std::move(error)),
            "LLVM reported a fatal error: out of memory: Allocation failed");
}

TEST_F(FatalErrorsTest, AFatalErrorInACompileFailsThatCompileOnly) {
  mlir::MLIRContext context;
  test::loadCodegenDialects(context);
  auto compile = [&]() -> llvm::Expected<std::unique_ptr<CpuKernel>> {
    mlir::OwningOpRef<mlir::ModuleOp> module = test::parseSpec(context, kSpec);
    if (!module)
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "the spec does not compile");
    return compileCpuKernel(*module, CpuKernelOptions{}, CacheOptions{});
  };
  // Where code generation would report one.
  setCodegenHookForTesting(
      [] { llvm::report_fatal_error("LLVM ERROR in code generation"); });
  llvm::Expected<std::unique_ptr<CpuKernel>> failed = [&] {
    AbandonedRegionLeaks expected;
    return compile();
  }();
  ASSERT_FALSE(failed);
  EXPECT_EQ(llvm::toString(failed.takeError()),
            "LLVM reported a fatal error: LLVM ERROR in code generation");

  setCodegenHookForTesting(nullptr);
  llvm::Expected<std::unique_ptr<CpuKernel>> kernel = compile();
  ASSERT_TRUE(!!kernel) << llvm::toString(kernel.takeError());
  EXPECT_NE(*kernel, nullptr);
}

} // namespace
