//===- FatalErrors.cpp - LLVM's fatal errors as errors of the caller ------===//

#include "attn/Driver/FatalErrors.h"

#include "llvm/Support/CrashRecoveryContext.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/Signals.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>

using namespace attn;

namespace {

std::atomic<FatalErrorReporter> installedReporter{nullptr};

/// The reason of the last fatal error on this thread, kept in a fixed buffer
/// because a failed allocation must be reported without allocating.
thread_local char pendingReason[1024];

/// Keeps `text` (truncated) as this thread's pending reason.
void keepReason(const char *prefix, const char *text) {
  std::snprintf(pendingReason, sizeof(pendingReason), "%s%s", prefix,
                text ? text : "");
}

/// Back to the protected region of this thread, with the pending reason;
/// else the front door's reporter, after what LLVM itself does before it
/// ends a process (removing files registered for removal).
[[noreturn]] void recoverOrReport() {
  if (llvm::CrashRecoveryContext *region =
          llvm::CrashRecoveryContext::GetCurrent())
    region->HandleExit(1);
  llvm::sys::RunInterruptHandlers();
  if (FatalErrorReporter reporter = installedReporter.load())
    reporter(pendingReason);
  std::_Exit(1);
}

/// LLVM's fatal-error handler.
void handleFatalError(void *, const char *reason, bool) {
  keepReason("", reason);
  recoverOrReport();
}

/// LLVM's bad-alloc handler: failing mallocs in LLVM, and operator new
/// where LLVM's out-of-memory new handler is installed.
void handleBadAlloc(void *, const char *reason, bool) {
  keepReason("out of memory: ", reason);
  recoverOrReport();
}

} // namespace

void attn::installFatalErrorHandlers(FatalErrorReporter reporter) {
  installedReporter.store(reporter);
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::install_fatal_error_handler(handleFatalError);
    llvm::install_bad_alloc_error_handler(handleBadAlloc);
    // Lets a protected region catch crashes (signals) too, and is what makes
    // RunSafely set up the jump back that HandleExit takes.
    llvm::CrashRecoveryContext::Enable();
  });
}

llvm::Error attn::runProtected(llvm::function_ref<llvm::Error()> body) {
  // Each region starts with no reason, so that a crash by signal (which
  // reports none) is not blamed on an old fatal error.
  pendingReason[0] = '\0';
  // Set only when `body` returns: a fatal error leaves it empty.
  std::optional<llvm::Error> result;
  llvm::CrashRecoveryContext region;
  if (region.RunSafely([&] { result.emplace(body()); }))
    return std::move(*result);
  if (pendingReason[0])
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "LLVM reported a fatal error: %s",
                                   pendingReason);
  return llvm::createStringError(
      llvm::inconvertibleErrorCode(),
      "the compiler crashed (signal or abort); nothing was produced");
}
