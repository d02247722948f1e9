//===- IntegerInputs.cpp - Random data for integer inputs -----------------===//

#include "attn/Driver/IntegerInputs.h"

#include "attn/Driver/KernelSignature.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallPtrSet.h"

#include <algorithm>

using namespace mlir;
using namespace mlir::attn;

namespace attn {
namespace {

/// The most distinct ids of one row: enough for several documents of
/// several lengths, few enough that each is long.
constexpr int64_t kMaxIds = 5;
/// Values of a divisor: small and never 0.
constexpr int64_t kMaxDivisor = 4;
/// Values of an integer the cascade uses for nothing it can read off.
constexpr int64_t kMaxOther = 3;

/// Whether `op` passes an integer value through unchanged in value (width
/// and index casts), so that a use of its result is a use of its operand.
bool isValueCast(Operation *op) {
  return isa<arith::IndexCastOp, arith::IndexCastUIOp, arith::ExtSIOp,
             arith::ExtUIOp, arith::TruncIOp>(op);
}

/// What `value` is computed from, looking through every op of its body.
struct Sources {
  /// Integer inputs read (gathers of ids, lengths).
  bool readsInput = false;
  /// Indices of the body or dims of the kernel.
  bool readsIndexOrDim = false;
  /// Params of the kernel.
  bool readsParam = false;
};

Sources getSources(KernelOp kernel, Value value) {
  Sources sources;
  SmallVector<Value> worklist{value};
  llvm::SmallPtrSet<Operation *, 16> visited;
  unsigned numDims = kernel.getNumDims();
  unsigned firstParam = numDims + kernel.getNumInputs();
  while (!worklist.empty()) {
    Value next = worklist.pop_back_val();
    if (auto arg = dyn_cast<BlockArgument>(next)) {
      if (arg.getOwner() != &kernel.getEntryBlock())
        sources.readsIndexOrDim = true; // an index of a body
      else if (arg.getArgNumber() < numDims)
        sources.readsIndexOrDim = true;
      else if (arg.getArgNumber() >= firstParam)
        sources.readsParam = true;
      continue;
    }
    Operation *op = next.getDefiningOp();
    if (!op || !visited.insert(op).second)
      continue;
    if (auto read = dyn_cast<ReadOp>(op)) {
      auto arg = dyn_cast<BlockArgument>(read.getTensor());
      if (arg && arg.getOwner() == &kernel.getEntryBlock() &&
          isa<IntegerType>(read.getType()))
        sources.readsInput = true;
      // The subscripts pick the entry, they are not its value.
      continue;
    }
    for (Value operand : op->getOperands())
      worklist.push_back(operand);
  }
  return sources;
}

/// The values that equal entries of input `i`: its reads, through casts.
SmallVector<Value> getInputValues(KernelOp kernel, unsigned i) {
  SmallVector<Value> values;
  for (Operation *user : kernel.getInputArg(i).getUsers())
    if (auto read = dyn_cast<ReadOp>(user);
        read && read.getTensor() == kernel.getInputArg(i))
      values.push_back(read.getResult());
  for (size_t k = 0; k < values.size(); ++k)
    for (Operation *user : values[k].getUsers())
      if (isValueCast(user))
        values.push_back(user->getResult(0));
  return values;
}

bool isDivision(Operation *op) {
  return isa<arith::DivSIOp, arith::DivUIOp, arith::RemSIOp, arith::RemUIOp,
             arith::FloorDivSIOp, arith::CeilDivSIOp, arith::CeilDivUIOp>(op);
}

/// Adds `range` to `into` (the smallest interval holding both).
void widen(std::optional<Interval> &into, Interval range) {
  if (!into)
    into = range;
  else
    into = Interval::range(std::min(into->lo, range.lo),
                           std::max(into->hi, range.hi));
}

} // namespace

std::optional<IntegerInputPlan> planIntegerInput(KernelOp kernel, unsigned i,
                                                 ArrayRef<int64_t> dims) {
  DType type = getInputDType(kernel, i);
  if (isFloatDType(type))
    return std::nullopt;
  if (type == DType::I1)
    return IntegerInputPlan{IntegerRole::Other, Interval::range(0, 1)};

  // Sizes and indices only: what an entry is compared with must not depend
  // on integer inputs, whose ranges are what is being planned.
  IntervalAnalysis analysis(kernel, LaunchFacts{dims, {}, {}});
  std::optional<int64_t> subscriptBound;
  bool divisor = false, id = false;
  std::optional<Interval> bound;
  for (Value value : getInputValues(kernel, i)) {
    for (OpOperand &use : value.getUses()) {
      Operation *user = use.getOwner();
      if (auto read = dyn_cast<ReadOp>(user)) {
        auto arg = dyn_cast<BlockArgument>(read.getTensor());
        if (use.getOperandNumber() == 0 || !arg ||
            arg.getOwner() != &kernel.getEntryBlock())
          continue;
        unsigned axis = use.getOperandNumber() - 1;
        int64_t size = getTensorShape(
            kernel, arg.getArgNumber() - kernel.getNumDims(), dims)[axis];
        subscriptBound = std::min(subscriptBound.value_or(size - 1), size - 1);
      } else if (isDivision(user)) {
        divisor |= use.getOperandNumber() == 1;
      } else if (isa<arith::CmpIOp>(user)) {
        Value other = user->getOperand(1 - use.getOperandNumber());
        Sources sources = getSources(kernel, other);
        if (sources.readsInput) {
          id = true;
        } else if (sources.readsIndexOrDim && !sources.readsParam) {
          // Every value the other side takes, and one past it, so that a
          // comparison can hold nowhere and everywhere.
          Interval compared = analysis.lookup(other);
          if (compared.bounded && !compared.isEmpty())
            widen(bound, Interval::range(std::max<int64_t>(compared.lo, 0),
                                         compared.hi + 1));
        }
      }
    }
  }

  if (subscriptBound) {
    int64_t hi = std::max<int64_t>(*subscriptBound, 0);
    int64_t lo = divisor ? std::min<int64_t>(1, hi) : 0;
    return IntegerInputPlan{IntegerRole::Subscript, Interval::range(lo, hi)};
  }
  if (divisor)
    return IntegerInputPlan{IntegerRole::Divisor,
                            Interval::range(1, kMaxDivisor)};
  if (bound)
    return IntegerInputPlan{IntegerRole::Bound, *bound};
  if (id)
    return IntegerInputPlan{IntegerRole::Id, Interval::range(0, kMaxIds - 1)};
  return IntegerInputPlan{IntegerRole::Other, Interval::range(0, kMaxOther)};
}

void fillIntegerInput(HostTensor &tensor, const IntegerInputPlan &plan,
                      std::mt19937_64 &generator) {
  int64_t count = tensor.getNumElements();
  if (count == 0)
    return;
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(generator);
  };
  if (plan.role == IntegerRole::Id && tensor.getRank() > 0) {
    // Along the last axis, ids 0, 1, 2, ... in runs that start at random
    // cuts, so that each row holds a few documents of different lengths.
    int64_t length = tensor.getShape().back();
    for (int64_t row = 0; row < count / length; ++row) {
      int64_t numIds =
          uniform(std::min<int64_t>(2, length), std::min(kMaxIds, length));
      std::vector<int64_t> cuts;
      for (int64_t k = 1; k < length; ++k)
        cuts.push_back(k);
      std::shuffle(cuts.begin(), cuts.end(), generator);
      cuts.resize(numIds - 1);
      std::sort(cuts.begin(), cuts.end());
      int64_t id = 0;
      for (int64_t k = 0; k < length; ++k) {
        if (id < numIds - 1 && k == cuts[id])
          ++id;
        tensor.setFromDouble(row * length + k, static_cast<double>(id));
      }
    }
    return;
  }
  for (int64_t e = 0; e < count; ++e)
    tensor.setFromDouble(
        e, static_cast<double>(uniform(plan.range.lo, plan.range.hi)));
  if (plan.role == IntegerRole::Bound && count >= 2) {
    // A bound at each end: rows a length of 0 masks entirely, rows a full
    // length keeps entirely.
    tensor.setFromDouble(0, static_cast<double>(plan.range.lo));
    tensor.setFromDouble(count - 1, static_cast<double>(plan.range.hi));
  }
}

} // namespace attn
