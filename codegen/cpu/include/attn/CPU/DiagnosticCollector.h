//===- DiagnosticCollector.h - A pass's first error as an llvm::Error -*- C++ -*-===//
//
// Code generators run MLIR passes and builders that report errors as
// diagnostics; their callers take llvm::Errors. The collector keeps the
// first error diagnostic of its scope for that error.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_DIAGNOSTICCOLLECTOR_H
#define ATTN_CPU_DIAGNOSTICCOLLECTOR_H

#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace attn {

/// Keeps the first error diagnostic so it can travel in an llvm::Error, and
/// lets every diagnostic through to the handlers installed before it.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext *context)
      : handler(context, [this](mlir::Diagnostic &diag) {
          if (diag.getSeverity() == mlir::DiagnosticSeverity::Error &&
              message.empty()) {
            llvm::raw_string_ostream os(message);
            os << diag.getLocation() << ": " << diag;
          }
          return mlir::failure();
        }) {}

  /// `what`, followed by the first error's location and message.
  llvm::Error takeError(const llvm::Twine &what) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   what + (message.empty() ? "" : ": " + message));
  }

private:
  std::string message;
  mlir::ScopedDiagnosticHandler handler;
};

} // namespace attn

#endif // ATTN_CPU_DIAGNOSTICCOLLECTOR_H
