//===- ZeroDivisors.h - Divisors a launch makes zero ------------*- C++ -*-===//
//
// A kernel never traps on an integer division (attn-guard-integer-division
// makes each one total), but a zero divisor is still an error of the
// launch: the reference reports it and the kernel's quotient would be
// meaningless. Divisors that depend on sizes and params alone are decided by
// interval analysis; this finds the zeros of divisors computed from the
// body's indices and from integer tables (`n / W[b]`, `m / (W[b] - 1)`), by
// evaluating the divisor alone at every point of the indices it uses, before
// anything runs.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_ZERODIVISORS_H
#define ATTN_DRIVER_ZERODIVISORS_H

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace attn {

/// Entry `flat` (row-major) of integer input `input`; nullopt when the
/// caller cannot read it (a table in device memory).
using TableEntry =
    std::function<std::optional<int64_t>(unsigned input, int64_t flat)>;

/// Why a launch divides by zero.
struct ZeroDivisor {
  mlir::Operation *division;
  /// "the divisor is read from 'W', which holds 0 at [1]", or "the divisor
  /// is 0 at b=1, n=3".
  std::string reason;
};

/// Whether `op` divides integers (a quotient or a remainder): what would
/// trap on a zero divisor without the guard.
bool isIntegerDivision(mlir::Operation *op);

/// The most points a divisor is evaluated at; one that depends on more
/// (a pathological spec) is left to the kernel's total division.
inline constexpr int64_t kMaxDivisorPoints = int64_t(1) << 24;

/// The first integer division of `kernel` whose divisor is 0 at some point
/// the launch described by `analysis` runs it at, among divisions that
/// `analysis` cannot prove nonzero. Points whose table reads leave their
/// table are skipped (the subscript check refuses those launches). A
/// divisor computed from something other than indices, sizes, params,
/// integer constants and integer tables (a float, another cascade tensor)
/// is not evaluated.
std::optional<ZeroDivisor>
findZeroDivisor(mlir::attn::KernelOp kernel,
                const mlir::attn::IntervalAnalysis &analysis,
                llvm::ArrayRef<int64_t> dims, llvm::ArrayRef<double> params,
                const TableEntry &tableEntry,
                llvm::function_ref<bool(mlir::Operation *)> runsNowhere);

} // namespace attn

#endif // ATTN_DRIVER_ZERODIVISORS_H
