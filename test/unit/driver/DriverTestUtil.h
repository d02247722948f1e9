//===- DriverTestUtil.h - Specs for the driver's unit tests -----*- C++ -*-===//

#ifndef ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H
#define ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H

#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/CpuTarget.h"
#include "attn/Driver/Compile.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <gtest/gtest.h>

namespace attn::test {

/// Causal attention, M and N independent (bf16 in, f32 out).
inline constexpr const char *kCausalSpec = R"(
attention causal {
  dims  B, H, M, N, D
  in    Q: bf16[B, H, M, D]
  in    K: bf16[B, H, N, D]
  in    V: bf16[B, H, N, D]
  out   O: f32[B, H, M, D]

  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where n <= m + (N - M)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
)";

/// The same for the GPU backend (bf16 out, head dim fixed).
inline constexpr const char *kCausalGpuSpec = R"(
attention causal_gpu {
  dims  B, H, M, N, D = 64
  in    Q: bf16[B, H, M, D]
  in    K: bf16[B, H, N, D]
  in    V: bf16[B, H, N, D]
  out   O: bf16[B, H, M, D]

  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where n <= m + (N - M)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
}
)";

/// Loads every dialect a kernel is compiled through into `context`.
inline void loadCodegenDialects(mlir::MLIRContext &context) {
  mlir::DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
}

/// `spec` through the front end; null, with a test failure, when it does not
/// compile.
inline mlir::OwningOpRef<mlir::ModuleOp> parseSpec(mlir::MLIRContext &context,
                                                   llvm::StringRef spec) {
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(spec),
                               llvm::SMLoc());
  mlir::FailureOr<mlir::OwningOpRef<mlir::ModuleOp>> module =
      dsl::compileSpec(sourceMgr, context);
  if (mlir::failed(module)) {
    ADD_FAILURE() << "the spec does not compile";
    return nullptr;
  }
  return std::move(*module);
}

/// kCausalSpec compiled for the host by `backend` (Halide: with
/// `scheduler`), without a cache.
inline llvm::Expected<CpuKernelObject>
compileCausalForHost(mlir::MLIRContext &context, CpuBackend backend,
                     const std::string &scheduler = "Mullapudi2016") {
  mlir::OwningOpRef<mlir::ModuleOp> module = parseSpec(context, kCausalSpec);
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

} // namespace attn::test

#endif // ATTN_TEST_UNIT_DRIVER_DRIVERTESTUTIL_H
