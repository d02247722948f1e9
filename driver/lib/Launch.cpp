//===- Launch.cpp - Binding sizes, params and data to a kernel ------------===//

#include "attn/Driver/Launch.h"

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Driver/IntegerInputs.h"
#include "attn/Driver/LaunchMemory.h"
#include "attn/Driver/ZeroDivisors.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <random>

using namespace mlir;
using namespace mlir::attn;

namespace attn {

static llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Splits "a=1,b=2" into (name, value text) pairs; `what` names the flag.
static llvm::Expected<SmallVector<std::pair<StringRef, StringRef>>>
splitAssignments(StringRef text, StringRef what) {
  SmallVector<std::pair<StringRef, StringRef>> items;
  SmallVector<StringRef> parts;
  text.split(parts, ',', /*MaxSplit=*/-1, /*KeepEmpty=*/true);
  if (text.trim().empty())
    return makeError(llvm::formatv("{0}: expected NAME=VALUE[,NAME=VALUE...]",
                                   what));
  for (StringRef part : parts) {
    if (part.trim().empty())
      return makeError(llvm::formatv(
          "{0}: empty item in '{1}' (expected NAME=VALUE[,NAME=VALUE...])",
          what, text));
    auto [name, value] = part.split('=');
    name = name.trim();
    value = value.trim();
    if (!part.contains('=') || name.empty() || value.empty())
      return makeError(llvm::formatv(
          "{0}: '{1}' is not of the form NAME=VALUE", what, part.trim()));
    items.push_back({name, value});
  }
  return items;
}

llvm::Expected<llvm::StringMap<int64_t>> parseShapeList(StringRef text) {
  auto items = splitAssignments(text, "--shape");
  if (!items)
    return items.takeError();
  llvm::StringMap<int64_t> sizes;
  for (auto [name, value] : *items) {
    // Digits are read at any width, so that a size too large for an int64
    // is refused for its range, not as if it were no integer.
    llvm::APInt wide;
    StringRef digits = value;
    bool negative = digits.consume_front("-");
    if (digits.empty() || digits.getAsInteger(10, wide) || negative)
      return makeError(llvm::formatv(
          "--shape: size of '{0}' must be a non-negative integer, got '{1}'",
          name, value));
    if (wide.getActiveBits() > 62 || wide.getZExtValue() > kMaxDimSize)
      return makeError("--shape: " + describeDimOutOfRange(name, value));
    int64_t size = static_cast<int64_t>(wide.getZExtValue());
    if (!sizes.try_emplace(name, size).second)
      return makeError(
          llvm::formatv("--shape: '{0}' is given more than once", name));
  }
  return sizes;
}

llvm::Expected<llvm::StringMap<double>> parseParamList(StringRef text) {
  auto items = splitAssignments(text, "--param");
  if (!items)
    return items.takeError();
  llvm::StringMap<double> params;
  for (auto [name, value] : *items) {
    double number;
    if (value.getAsDouble(number) || !std::isfinite(number))
      return makeError(llvm::formatv(
          "--param: value of '{0}' must be a number, got '{1}'", name, value));
    if (!params.try_emplace(name, number).second)
      return makeError(
          llvm::formatv("--param: '{0}' is given more than once", name));
  }
  return params;
}

static StringRef nameAt(ArrayAttr names, unsigned i) {
  return cast<StringAttr>(names[i]).getValue();
}

/// A first guess for a symbolic dim, by the name conventions of the
/// examples: small batch and heads, sequence lengths that are not tile
/// multiples and differ, a small head dim.
static int64_t guessDimSize(StringRef name) {
  if (name == "B")
    return 1;
  if (name == "H")
    return 4;
  if (name == "G" || name == "HK" || name == "KVH")
    return 2;
  if (name == "M")
    return 77;
  if (name == "N" || name == "L")
    return 93;
  if (name.starts_with("D") || name == "E")
    return 32;
  return 4;
}

/// The range random data of integer input `i` will have.
static std::optional<Interval> getPlannedRange(KernelOp kernel, unsigned i,
                                               ArrayRef<int64_t> dims) {
  if (std::optional<IntegerInputPlan> plan = planIntegerInput(kernel, i, dims))
    return plan->range;
  return std::nullopt;
}

/// Whether `op` sits in a cascade body that runs at no point of a launch:
/// an index of the body ranges over an empty extent (with N = 0 no body
/// over n runs). Its reads read nothing and its divisions divide nothing.
static bool runsNowhere(Operation *op, const IntervalAnalysis &analysis) {
  for (Operation *parent = op->getParentOp(); parent && !isa<KernelOp>(parent);
       parent = parent->getParentOp())
    for (Region &region : parent->getRegions())
      for (Block &block : region)
        for (BlockArgument index : block.getArguments())
          if (analysis.lookup(index).isEmpty())
            return true;
  return false;
}

/// A table the caller cannot read.
static std::optional<int64_t> noTableEntry(unsigned, int64_t) {
  return std::nullopt;
}

/// The subscripts that may leave their tensors at a launch, among those
/// that are read at all.
static SmallVector<SubscriptViolation>
findLiveViolations(const IntervalAnalysis &analysis) {
  SmallVector<SubscriptViolation> violations = analysis.findViolations();
  llvm::erase_if(violations, [&](const SubscriptViolation &violation) {
    return runsNowhere(violation.read, analysis);
  });
  return violations;
}

llvm::Expected<std::vector<int64_t>>
bindDims(KernelOp kernel, const llvm::StringMap<int64_t> &given) {
  unsigned numDims = kernel.getNumDims();
  std::vector<int64_t> dims(numDims);
  std::vector<bool> pinned(numDims);
  for (const auto &entry : given) {
    if (llvm::Error error = checkDimSize(entry.getKey(), entry.getValue()))
      return std::move(error);
    if (!kernel.lookupDim(entry.getKey())) {
      std::string known;
      for (unsigned i = 0; i < numDims; ++i)
        known += (i ? ", " : "") + nameAt(kernel.getDimNames(), i).str();
      return makeError(
          llvm::formatv("--shape: '{0}' is not a dim of '{1}' (dims: {2})",
                        entry.getKey(), kernel.getSymName(), known));
    }
  }
  for (unsigned i = 0; i < numDims; ++i) {
    StringRef name = nameAt(kernel.getDimNames(), i);
    int64_t fixed = kernel.getDimSizes()[i];
    auto it = given.find(name);
    if (!ShapedType::isDynamic(fixed)) {
      if (it != given.end() && it->second != fixed)
        return makeError(llvm::formatv(
            "--shape: dim '{0}' is fixed to {1} by the spec, got {2}", name,
            fixed, it->second));
      dims[i] = fixed;
      pinned[i] = true;
    } else if (it != given.end()) {
      dims[i] = it->second;
      pinned[i] = true;
    } else {
      dims[i] = guessDimSize(name);
    }
  }
  // Grow the guessed dims until every subscript provably stays in range.
  for (int iteration = 0; iteration < 32; ++iteration) {
    LaunchFacts facts;
    facts.dims = dims;
    facts.inputRange = [&](unsigned i) {
      return getPlannedRange(kernel, i, dims);
    };
    std::vector<double> params;
    if (auto bound = bindParams(kernel, {}))
      params = *bound;
    else
      llvm::consumeError(bound.takeError());
    facts.params = params;
    IntervalAnalysis analysis(kernel, facts);
    bool grown = false;
    for (const SubscriptViolation &v : findLiveViolations(analysis)) {
      if (!v.sizingDim || pinned[*v.sizingDim] || v.subscript.isUnbounded())
        continue;
      int64_t needed = v.subscript.hi + 1;
      if (needed > dims[*v.sizingDim]) {
        dims[*v.sizingDim] = needed;
        grown = true;
      }
    }
    if (!grown)
      break;
  }
  return dims;
}

llvm::Expected<std::vector<double>>
bindParams(KernelOp kernel, const llvm::StringMap<double> &given) {
  for (const auto &entry : given)
    if (!llvm::is_contained(kernel.getParamNames().getAsValueRange<StringAttr>(),
                            entry.getKey()))
      return makeError(llvm::formatv("--param: '{0}' is not a param of '{1}'",
                                     entry.getKey(), kernel.getSymName()));
  std::vector<double> params;
  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    StringRef name = nameAt(kernel.getParamNames(), i);
    auto it = given.find(name);
    double value;
    if (it != given.end()) {
      value = it->second;
    } else if (auto attr = dyn_cast<IntegerAttr>(kernel.getParamDefaults()[i])) {
      value = static_cast<double>(attr.getValue().getSExtValue());
    } else if (auto attr = dyn_cast<FloatAttr>(kernel.getParamDefaults()[i])) {
      value = attr.getValueAsDouble();
    } else {
      return makeError(llvm::formatv(
          "param '{0}' has no default; pass --param {0}=VALUE", name));
    }
    params.push_back(value);
  }
  if (llvm::Error error = checkParamValues(kernel, params))
    return std::move(error);
  return params;
}

llvm::Error checkParamValues(KernelOp kernel, ArrayRef<double> params) {
  for (unsigned i = 0; i < kernel.getNumParams() && i < params.size(); ++i) {
    auto type = dyn_cast<IntegerType>(kernel.getParamArg(i).getType());
    if (!type)
      continue;
    double value = params[i];
    StringRef name = nameAt(kernel.getParamNames(), i);
    auto show = [](double v) {
      std::string text;
      llvm::raw_string_ostream(text) << llvm::format("%.17g", v);
      return text;
    };
    if (!std::isfinite(value) || value != std::floor(value))
      return makeError(llvm::formatv(
          "param '{0}' is {1}: expected an integer, got {2}", name, type,
          show(value)));
    // The range of the param's width; params travel as doubles, so an i64
    // is limited to the integers a double holds exactly (|v| <= 2^53).
    // The ends are powers of two, exact as doubles.
    unsigned width = type.getWidth();
    double limit = std::ldexp(1.0, std::min(static_cast<int>(width) - 1, 53));
    if (value < -limit || value >= limit)
      return makeError(llvm::formatv(
          "param '{0}' is {1}: {2} is out of its range [{3}, {4}]", name,
          type, show(value), show(-limit), show(limit - 1)));
  }
  return llvm::Error::success();
}

std::vector<HostTensor> makeRandomInputs(KernelOp kernel,
                                         ArrayRef<int64_t> dims,
                                         uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<HostTensor> inputs;
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    HostTensor tensor(getInputDType(kernel, i),
                      getTensorShape(kernel, i, dims));
    if (std::optional<IntegerInputPlan> plan =
            planIntegerInput(kernel, i, dims)) {
      fillIntegerInput(tensor, *plan, generator);
    } else {
      for (int64_t e = 0; e < tensor.getNumElements(); ++e)
        tensor.setFromDouble(e, normal(generator));
    }
    inputs.push_back(std::move(tensor));
  }
  return inputs;
}

bool hasOutputEntries(KernelOp kernel, ArrayRef<int64_t> dims) {
  for (unsigned i = 0; i < kernel.getNumOutputs(); ++i)
    if (!llvm::is_contained(
            getTensorShape(kernel, kernel.getNumInputs() + i, dims), 0))
      return true;
  return false;
}

llvm::Error checkLaunch(KernelOp kernel, const Launch &launch) {
  if (launch.dims.size() != kernel.getNumDims())
    return makeError(llvm::formatv("expected {0} dims, got {1}",
                                   kernel.getNumDims(), launch.dims.size()));
  if (launch.params.size() != kernel.getNumParams())
    return makeError(llvm::formatv("expected {0} params, got {1}",
                                   kernel.getNumParams(),
                                   launch.params.size()));
  if (launch.inputs.size() != kernel.getNumInputs())
    return makeError(llvm::formatv("expected {0} inputs, got {1}",
                                   kernel.getNumInputs(),
                                   launch.inputs.size()));
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    const HostTensor &tensor = launch.inputs[i];
    HostTensor expected(getInputDType(kernel, i), {});
    std::vector<int64_t> shape = getTensorShape(kernel, i, launch.dims);
    if (tensor.getDType() != getInputDType(kernel, i) ||
        tensor.getShape() != shape) {
      HostTensor wanted(getInputDType(kernel, i), {});
      std::string dims;
      for (int64_t size : shape)
        dims += (dims.empty() ? "" : ", ") + std::to_string(size);
      return makeError(llvm::formatv(
          "input '{0}': expected {1}[{2}], got {3}",
          nameAt(kernel.getInputNames(), i),
          dtypeName(getInputDType(kernel, i)), dims, tensor.describe()));
    }
  }
  auto inputRange = [&](unsigned i) -> std::optional<Interval> {
    const HostTensor &tensor = launch.inputs[i];
    if (isFloatDType(tensor.getDType()))
      return std::nullopt;
    if (tensor.getNumElements() == 0)
      return Interval::range(0, 0);
    double lo = tensor.getAsDouble(0), hi = lo;
    for (int64_t e = 1; e < tensor.getNumElements(); ++e) {
      lo = std::min(lo, tensor.getAsDouble(e));
      hi = std::max(hi, tensor.getAsDouble(e));
    }
    return Interval::range(static_cast<int64_t>(lo), static_cast<int64_t>(hi));
  };
  auto tableEntry = [&](unsigned i, int64_t flat) -> std::optional<int64_t> {
    return static_cast<int64_t>(launch.inputs[i].getAsDouble(flat));
  };
  return checkSubscripts(kernel, launch.dims, launch.params, inputRange,
                         tableEntry);
}

/// "file:line:col: " of `loc`, or nothing when it has no file position.
static std::string describeLocation(Location loc) {
  if (auto fileLoc = dyn_cast<FileLineColLoc>(loc))
    return llvm::formatv("{0}:{1}:{2}: ", fileLoc.getFilename(),
                         fileLoc.getLine(), fileLoc.getColumn());
  return "";
}

/// Whether `value` is the dim argument of `kernel`; its index if so.
static std::optional<unsigned> getDimIndex(KernelOp kernel, Value value) {
  auto arg = dyn_cast<BlockArgument>(value);
  if (!arg || arg.getOwner() != &kernel.getEntryBlock() ||
      arg.getArgNumber() >= kernel.getNumDims())
    return std::nullopt;
  return arg.getArgNumber();
}

/// A division of one dim by another (`H / G` in `h / (H / G)`), as a pair
/// of dim indices.
using DimDivision = std::pair<unsigned, unsigned>;

/// The divisions of a dim by a dim that `value` is computed through, and
/// where the first of each is written.
static SmallVector<std::pair<DimDivision, Location>>
findDimDivisions(KernelOp kernel, Value value) {
  SmallVector<std::pair<DimDivision, Location>> divisions;
  SmallVector<Value> worklist{value};
  llvm::SmallPtrSet<Operation *, 16> visited;
  while (!worklist.empty()) {
    Operation *op = worklist.pop_back_val().getDefiningOp();
    if (!op || isa<ReadOp>(op) || !visited.insert(op).second)
      continue;
    if (isa<arith::DivSIOp, arith::DivUIOp, arith::FloorDivSIOp>(op)) {
      std::optional<unsigned> dividend = getDimIndex(kernel, op->getOperand(0));
      std::optional<unsigned> divisor = getDimIndex(kernel, op->getOperand(1));
      if (dividend && divisor) {
        DimDivision division{*dividend, *divisor};
        if (llvm::none_of(divisions,
                          [&](auto &known) { return known.first == division; }))
          divisions.push_back({division, op->getLoc()});
      }
    }
    for (Value operand : op->getOperands())
      worklist.push_back(operand);
  }
  return divisions;
}

/// For a launch whose subscripts leave their tensors because a dim does not
/// divide another (`h / (H / G)` with H = 3, G = 2 maps query heads past the
/// last K/V head), the reason in terms of the dims: "H (3) must be a multiple
/// of G (2)", and the tensors read through the division. Empty when the
/// violations have another cause.
static std::string
describeUnevenDimDivision(KernelOp kernel, ArrayRef<int64_t> dims,
                          ArrayRef<SubscriptViolation> violations) {
  std::optional<DimDivision> uneven;
  std::optional<Location> loc;
  for (const SubscriptViolation &violation : violations) {
    ReadOp read = violation.read;
    for (auto [division, where] :
         findDimDivisions(kernel, read.getSubscripts()[violation.axis])) {
      int64_t dividend = dims[division.first], divisor = dims[division.second];
      if (divisor != 0 && dividend % divisor != 0) {
        uneven = division;
        loc = where;
        break;
      }
    }
    if (uneven)
      break;
  }
  if (!uneven)
    return "";
  // Every tensor whose subscripts go through the division.
  SmallVector<std::string> readers;
  kernel.walk([&](ReadOp read) {
    auto arg = dyn_cast<BlockArgument>(read.getTensor());
    if (!arg || arg.getOwner() != &kernel.getEntryBlock())
      return;
    std::string name =
        nameAt(kernel.getInputNames(), arg.getArgNumber() - kernel.getNumDims())
            .str();
    if (llvm::is_contained(readers, name))
      return;
    for (Value subscript : read.getSubscripts())
      for (auto [division, where] : findDimDivisions(kernel, subscript))
        if (division == *uneven) {
          readers.push_back(name);
          return;
        }
  });
  if (readers.empty())
    return "";
  StringRef dividend = nameAt(kernel.getDimNames(), uneven->first);
  StringRef divisor = nameAt(kernel.getDimNames(), uneven->second);
  std::string tensors;
  for (size_t k = 0; k < readers.size(); ++k) {
    if (k > 0)
      tensors += k + 1 == readers.size() ? " and " : ", ";
    tensors += "'" + readers[k] + "'";
  }
  return llvm::formatv("{0}{1} ({2}) must be a multiple of {3} ({4}): {5} "
                       "{6} indexed through {1} / {3}",
                       describeLocation(*loc), dividend, dims[uneven->first],
                       divisor, dims[uneven->second], tensors,
                       readers.size() == 1 ? "is" : "are");
}

llvm::Error
checkSubscripts(KernelOp kernel, ArrayRef<int64_t> dims,
                ArrayRef<double> params,
                std::function<std::optional<Interval>(unsigned)> inputRange,
                const TableEntry &tableEntry) {
  LaunchFacts facts;
  facts.dims = dims;
  facts.params = params;
  facts.inputRange = std::move(inputRange);
  IntervalAnalysis analysis(kernel, facts);
  std::string sizes;
  for (unsigned i = 0; i < kernel.getNumDims(); ++i)
    sizes += llvm::formatv("{0}{1}={2}", i ? "," : "",
                           nameAt(kernel.getDimNames(), i), dims[i]);
  auto runsNowhereAtThisLaunch = [&](Operation *op) {
    return runsNowhere(op, analysis);
  };
  // An integer division or remainder whose divisor is 0 at this launch (a
  // param or size that makes it so) would divide by zero in the kernel.
  Operation *zeroDivision = nullptr;
  kernel.walk([&](Operation *op) {
    if (!isIntegerDivision(op) || runsNowhere(op, analysis))
      return WalkResult::advance();
    Interval divisor = analysis.lookup(op->getOperand(1));
    if (divisor.bounded && divisor.lo == 0 && divisor.hi == 0) {
      zeroDivision = op;
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  if (zeroDivision) {
    std::string values;
    for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
      values += ", " + nameAt(kernel.getParamNames(), i).str() + "=";
      llvm::raw_string_ostream(values) << params[i];
    }
    return makeError(
        "launch refused: " + describeLocation(zeroDivision->getLoc()) +
        "integer division by zero: the divisor is 0 for sizes " + sizes +
        values);
  }
  // Divisors computed from indices and tables: zero at some point.
  if (std::optional<ZeroDivisor> zero =
          findZeroDivisor(kernel, analysis, dims, params,
                          tableEntry ? tableEntry : TableEntry(noTableEntry),
                          runsNowhereAtThisLaunch))
    return makeError("launch refused: " +
                     describeLocation(zero->division->getLoc()) +
                     "integer division by zero: " + zero->reason);
  SmallVector<SubscriptViolation> violations = findLiveViolations(analysis);
  if (violations.empty())
    return llvm::Error::success();
  std::string message = "launch refused: ";
  const SubscriptViolation &first = violations.front();
  ReadOp read = first.read;
  std::string uneven = describeUnevenDimDivision(kernel, dims, violations);
  if (!uneven.empty())
    return makeError(message + uneven + " (sizes " + sizes + ")");
  message += describeLocation(read.getLoc()) +
             describeViolation(kernel, first) + " for sizes " + sizes;
  if (violations.size() > 1)
    message += llvm::formatv(" (and {0} more)", violations.size() - 1);
  return makeError(message);
}

} // namespace attn
