//===- FatalErrors.h - LLVM's fatal errors as errors of the caller -*- C++
//-*-===//
//
// LLVM ends the process on errors it cannot return (report_fatal_error, an
// allocation it cannot make): a stack dump in attnc, a dead interpreter in
// Python. The front doors install handlers that turn them into their own
// errors instead: inside a protected region (every compile runs in one) a
// fatal error unwinds to the region's start and comes back as an
// llvm::Error; outside one, the front door reports it its way and ends.
//
// Recovery jumps over the frames of the failed work without running their
// destructors, as clang's in-process recovery does: what they owned leaks,
// which is the price of keeping the process alive.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_FATALERRORS_H
#define ATTN_DRIVER_FATALERRORS_H

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"

#include <optional>

namespace attn {

/// What a front door does with a fatal error outside any protected region:
/// report `message` and end the process (the process exits with status 1
/// if it returns). It must not allocate: it also reports failed
/// allocations.
using FatalErrorReporter = void (*)(const char *message);

/// Installs LLVM's fatal-error and bad-alloc handlers (once per process; a
/// later call only replaces `reporter`).
void installFatalErrorHandlers(FatalErrorReporter reporter);

/// Runs `body`; an LLVM fatal error inside it (on this thread) is returned as
/// an error carrying LLVM's reason instead of ending the process. Without
/// installed handlers it just runs `body`.
llvm::Error runProtected(llvm::function_ref<llvm::Error()> body);

/// runProtected for a body with a result.
template <typename T>
llvm::Expected<T> runProtected(llvm::function_ref<llvm::Expected<T>()> body) {
  // Set only when `body` returns: a fatal error leaves it empty.
  std::optional<llvm::Expected<T>> result;
  if (llvm::Error error = runProtected([&]() -> llvm::Error {
        result.emplace(body());
        return llvm::Error::success();
      }))
    return std::move(error);
  return std::move(*result);
}

} // namespace attn

#endif // ATTN_DRIVER_FATALERRORS_H
