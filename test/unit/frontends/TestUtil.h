//===- TestUtil.h - Helpers for the front-end unit tests --------*- C++ -*-===//

#ifndef ATTN_TEST_UNIT_FRONTENDS_TESTUTIL_H
#define ATTN_TEST_UNIT_FRONTENDS_TESTUTIL_H

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Frontend/Frontend.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <string>

namespace attn::dsl::test {

/// A SourceMgr over `source` (named test.attn) whose diagnostics go to
/// `diagnostics`, in the same format the driver prints.
class CapturedSource {
public:
  explicit CapturedSource(llvm::StringRef source) {
    sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(source, "test.attn"),
        llvm::SMLoc());
    sourceMgr.setDiagHandler(
        [](const llvm::SMDiagnostic &diag, void *context) {
          auto *out = static_cast<std::string *>(context);
          llvm::raw_string_ostream os(*out);
          diag.print(nullptr, os, /*ShowColors=*/false);
        },
        &diagnostics);
  }
  llvm::SourceMgr sourceMgr;
  std::string diagnostics;
};

/// A context with the dialects the front end emits.
inline std::unique_ptr<mlir::MLIRContext> makeContext() {
  auto context = std::make_unique<mlir::MLIRContext>();
  context->loadDialect<mlir::attn::AttnDialect, mlir::arith::ArithDialect,
                       mlir::math::MathDialect, mlir::tensor::TensorDialect>();
  return context;
}

/// The result of compiling a spec: the module (if any) and the diagnostics.
struct Compiled {
  std::unique_ptr<mlir::MLIRContext> context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::string diagnostics;
  bool ok = false;
};

inline Compiled compile(llvm::StringRef source,
                        const FrontendOptions &options = {}) {
  Compiled result;
  result.context = makeContext();
  CapturedSource captured(source);
  auto module = compileSpec(captured.sourceMgr, *result.context, options);
  result.ok = mlir::succeeded(module);
  if (result.ok)
    result.module = std::move(*module);
  result.diagnostics = captured.diagnostics;
  return result;
}

/// The spec of DESIGN.md section 2 / the front-end brief.
inline const char *const kStreamingLLM = R"(// comment
attention streaming_llm {
  dims  B, H, G, M, N, D = 128
  in    Q: bf16[B, H, M, D]
  in    K: bf16[B, G, N, D]
  in    V: bf16[B, G, N, D]
  in    Pages: i32[B, NP]
  param window: i32 = 1024
  param sinks: i32 = 4
  out   O: bf16[B, H, M, D]
  out   LSE: f32[B, H, M]
  let g = h / (H / G)
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,g,n,d]) * rsqrt(D)
  @sinks(4) keep S where n <= m + (N - M) and (m + (N - M) - n < window or n < sinks)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,g,n,e])
  LSE = logsumexp[n](S)
}
)";

} // namespace attn::dsl::test

#endif // ATTN_TEST_UNIT_FRONTENDS_TESTUTIL_H
