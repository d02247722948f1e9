//===- IntervalAnalysis.h - Integer ranges of cascade values ----*- C++ -*-===//
//
// Integer interval arithmetic over an attn.kernel for concrete sizes. It
// proves that every attn.read subscript stays inside its tensor before a
// kernel runs, and picks default sizes that satisfy every subscript.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_ANALYSIS_INTERVALANALYSIS_H
#define ATTN_ANALYSIS_INTERVALANALYSIS_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "llvm/ADT/DenseMap.h"

#include <functional>
#include <optional>
#include <string>

namespace mlir::attn {

/// A closed integer interval [lo, hi]; `isUnbounded()` when nothing is known.
struct Interval {
  int64_t lo = 0;
  int64_t hi = -1;
  bool bounded = false;

  static Interval point(int64_t value) { return {value, value, true}; }
  static Interval range(int64_t lo, int64_t hi) { return {lo, hi, true}; }
  static Interval unbounded() { return {}; }
  bool isUnbounded() const { return !bounded; }
  bool isEmpty() const { return bounded && lo > hi; }
};

/// What is known about a launch: concrete dims and params, and the value
/// range of each integer input tensor (nullopt: nothing known).
struct LaunchFacts {
  llvm::ArrayRef<int64_t> dims;
  llvm::ArrayRef<double> params;
  std::function<std::optional<Interval>(unsigned inputIndex)> inputRange;
};

/// A subscript that may leave its tensor.
struct SubscriptViolation {
  ReadOp read;
  unsigned axis;
  Interval subscript;
  int64_t size;
  /// The kernel dim the axis is sized by, if any (used to grow defaults).
  std::optional<unsigned> sizingDim;
};

/// Computes intervals for every integer and index value of `kernel`.
class IntervalAnalysis {
public:
  IntervalAnalysis(KernelOp kernel, const LaunchFacts &facts);

  /// The interval of `value` (unbounded for floats and unknown values).
  Interval lookup(Value value) const;
  /// The concrete value of a kernel-level index value (an extent).
  std::optional<int64_t> lookupConstant(Value value) const;
  /// Every read whose subscripts are not proven to stay in range.
  llvm::SmallVector<SubscriptViolation> findViolations() const;

private:
  void visit(Operation *op);
  Interval &get(Value value) { return intervals[value]; }

  KernelOp kernel;
  const LaunchFacts &facts;
  llvm::DenseMap<Value, Interval> intervals;
  /// For tensors computed by the cascade, the range of their entries.
  llvm::DenseMap<Value, Interval> tensorEntries;
};

/// Describes a violation for a user: the tensor, the axis, the proven range
/// of the subscript and the size, e.g. "subscript 2 of Kc ranges over
/// [0, 7] but the axis has size 4".
std::string describeViolation(KernelOp kernel, const SubscriptViolation &v);

} // namespace mlir::attn

#endif // ATTN_ANALYSIS_INTERVALANALYSIS_H
