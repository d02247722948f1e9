//===- Status.h - Error values of the runtime -------------------*- C++ -*-===//
//
// The runtime is built without exceptions, and it must not depend on LLVM, so
// it has its own small error value: a code from the C API plus a message.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_STATUS_H
#define ATTN_RUNTIME_STATUS_H

#include "attnc/attnc.h"

#include <string>
#include <utility>

namespace attn {

/// The result of an operation that can fail: ATTNC_OK or an error code with a
/// message that names what was wrong. Cheap to return on the success path.
class Status {
public:
  Status() = default;
  Status(attnc_status code, std::string message)
      : code(code), message(std::move(message)) {}

  static Status ok() { return Status(); }

  bool isOk() const { return code == ATTNC_OK; }
  /// True on failure, so `if (Status s = f()) return s;` reads naturally.
  explicit operator bool() const { return !isOk(); }

  attnc_status getCode() const { return code; }
  const std::string &getMessage() const { return message; }

  /// The same error with `context` prepended, e.g. "entry 'fwd': ...".
  Status withContext(const std::string &context) const {
    if (isOk())
      return *this;
    return Status(code, context + ": " + message);
  }

private:
  attnc_status code = ATTNC_OK;
  std::string message;
};

/// Shorthands for the common error kinds.
inline Status invalidArgument(std::string message) {
  return Status(ATTNC_ERROR_INVALID_ARGUMENT, std::move(message));
}
inline Status invalidPackage(std::string message) {
  return Status(ATTNC_ERROR_INVALID_PACKAGE, std::move(message));
}

} // namespace attn

#endif // ATTN_RUNTIME_STATUS_H
