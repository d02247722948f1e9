//===- CompileRemarks.h - A compile's remarks, cached -----------*- C++ -*-===//
//
// A compile's remarks (why a cascade is not fused, why every tile is
// partial) are what a user reads to make a spec fast; a cache hit runs no
// pass, so the remarks travel in the cache entry and are reported again.
// Each is anchored to an op of the module as written (its ordinal in a walk),
// not to a file position: the cache key ignores locations, so a hit may come
// from another file or another spelling of the same cascade, and the
// replayed remark must point into that one.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_LIB_COMPILEREMARKS_H
#define ATTN_DRIVER_LIB_COMPILEREMARKS_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/DenseMap.h"

#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace attn {

/// Records the remarks reported while it lives (passing each on to the
/// handlers installed before it).
class RemarkRecorder {
public:
  /// Anchors remarks to the ops of `module` as it is now, before lowering.
  explicit RemarkRecorder(mlir::ModuleOp module);

  /// The remarks, in the form `replayRemarks` reads.
  std::string serialize() const;

private:
  std::optional<unsigned> findAnchor(mlir::Location loc) const;

  /// The first op (in walk order) at each location.
  llvm::DenseMap<mlir::Location, unsigned> anchors;
  /// (anchor or -1, message), in the order reported.
  std::vector<std::pair<int64_t, std::string>> remarks;
  mutable std::mutex mutex;
  mlir::ScopedDiagnosticHandler handler;
};

/// Reports the remarks `notes` holds again, each on the op of `module` it
/// was anchored to (on the module itself when it had none).
void replayRemarks(mlir::ModuleOp module, llvm::StringRef notes);

} // namespace attn

#endif // ATTN_DRIVER_LIB_COMPILEREMARKS_H
