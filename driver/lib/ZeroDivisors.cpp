//===- ZeroDivisors.cpp - Divisors a launch makes zero --------------------===//
//
// Each candidate divisor is compiled into a small straight-line program over
// its backward slice: leaves are values the analysis knows exactly (sizes,
// params, constants), the body's index arguments (enumerated over their
// ranges) and reads of integer tables (looked up in the caller's data).
// Integer ops keep the width of their type, and nested divisions divide as
// the guarded kernel does (0 for a zero divisor), so the divisor takes the
// values the kernel would see.
//
//===----------------------------------------------------------------------===//

#include "attn/Driver/ZeroDivisors.h"

#include "attn/Driver/KernelSignature.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <vector>

using namespace mlir;
using namespace mlir::attn;

namespace attn {
namespace {

/// The bit width integer values of `type` wrap at.
unsigned widthOf(Type type) {
  if (auto integer = dyn_cast<IntegerType>(type))
    return integer.getWidth();
  return 64; // index
}

/// `value` wrapped to `width` bits, sign-extended (i1 true is -1).
int64_t wrap(int64_t value, unsigned width) {
  if (width >= 64)
    return value;
  return llvm::SignExtend64(static_cast<uint64_t>(value), width);
}

/// The `width`-bit pattern of `value` read as unsigned.
uint64_t asUnsigned(int64_t value, unsigned width) {
  if (width >= 64)
    return static_cast<uint64_t>(value);
  return static_cast<uint64_t>(value) & ((uint64_t(1) << width) - 1);
}

/// A divisor's slice, ready to run at each point of its indices.
class DivisorProgram {
public:
  DivisorProgram(KernelOp kernel, const IntervalAnalysis &analysis,
                 ArrayRef<int64_t> dims, ArrayRef<double> params)
      : kernel(kernel), analysis(analysis), dims(dims), params(params) {}

  /// Adds `value` and what it is computed from; fails on a value the
  /// program cannot compute.
  FailureOr<unsigned> add(Value value);

  /// The value `value` (a value of the slice) took in the last run.
  int64_t valueOf(Value value) const { return get(value); }

  /// The index arguments the divisor depends on, in the body's order.
  ArrayRef<BlockArgument> getIndices() const { return indices; }
  /// The integer inputs it reads.
  ArrayRef<unsigned> getTables() const { return tables; }

  /// Runs the program with `indexValues` (one per getIndices()); nullopt when
  /// a table read leaves its table or cannot be read.
  std::optional<int64_t> run(ArrayRef<int64_t> indexValues,
                             const TableEntry &tableEntry,
                             unsigned resultSlot);

private:
  unsigned newSlot(Value value, int64_t initial) {
    unsigned slot = registers.size();
    registers.push_back(initial);
    slots[value] = slot;
    return slot;
  }
  int64_t evaluate(Operation *op, const TableEntry &tableEntry, bool &failed);
  int64_t get(Value value) const { return registers[slots.lookup(value)]; }

  KernelOp kernel;
  const IntervalAnalysis &analysis;
  ArrayRef<int64_t> dims;
  ArrayRef<double> params;
  llvm::DenseMap<Value, unsigned> slots;
  std::vector<int64_t> registers;
  /// The ops to run, operands before users.
  SmallVector<Operation *> ops;
  SmallVector<BlockArgument> indices;
  SmallVector<unsigned> tables;
  /// The shape of each table read.
  llvm::DenseMap<unsigned, std::vector<int64_t>> shapes;
};

/// The integer ops a divisor may be computed with.
bool isIntegerArithmetic(Operation *op) {
  return isa<arith::AddIOp, arith::SubIOp, arith::MulIOp, arith::DivSIOp,
             arith::DivUIOp, arith::RemSIOp, arith::RemUIOp,
             arith::FloorDivSIOp, arith::CeilDivSIOp, arith::CeilDivUIOp,
             arith::MaxSIOp, arith::MinSIOp, arith::MaxUIOp, arith::MinUIOp,
             arith::AndIOp, arith::OrIOp, arith::XOrIOp, arith::IndexCastOp,
             arith::IndexCastUIOp, arith::ExtSIOp, arith::ExtUIOp,
             arith::TruncIOp, arith::SelectOp, arith::CmpIOp>(op);
}

FailureOr<unsigned> DivisorProgram::add(Value value) {
  if (auto it = slots.find(value); it != slots.end())
    return it->second;
  if (!value.getType().isIntOrIndex())
    return failure();
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    if (arg.getOwner() == &kernel.getEntryBlock()) {
      unsigned number = arg.getArgNumber();
      if (number < kernel.getNumDims())
        return newSlot(value, dims[number]);
      unsigned firstParam = kernel.getNumDims() + kernel.getNumInputs();
      if (number < firstParam)
        return failure();
      double param = params[number - firstParam];
      if (param != static_cast<double>(static_cast<int64_t>(param)))
        return failure();
      return newSlot(value, wrap(static_cast<int64_t>(param),
                                 widthOf(value.getType())));
    }
    // An index of a cascade body: enumerated when it has a range.
    if (!value.getType().isIndex() || analysis.lookup(value).isUnbounded())
      return failure();
    // In the body's order, so that points read as the spec writes them.
    indices.insert(llvm::upper_bound(indices, arg,
                                     [](BlockArgument x, BlockArgument y) {
                                       return x.getArgNumber() <
                                              y.getArgNumber();
                                     }),
                   arg);
    return newSlot(value, 0);
  }
  // Whatever the analysis knows exactly is a constant here.
  if (std::optional<int64_t> known = analysis.lookupConstant(value))
    return newSlot(value, wrap(*known, widthOf(value.getType())));
  Operation *def = value.getDefiningOp();
  if (auto constant = dyn_cast<arith::ConstantOp>(def)) {
    auto attr = dyn_cast<IntegerAttr>(constant.getValue());
    if (!attr)
      return failure();
    return newSlot(value, wrap(attr.getValue().getSExtValue(),
                               widthOf(value.getType())));
  }
  if (auto read = dyn_cast<ReadOp>(def)) {
    auto table = dyn_cast<BlockArgument>(read.getTensor());
    if (!table || table.getOwner() != &kernel.getEntryBlock() ||
        table.getArgNumber() < kernel.getNumDims() ||
        table.getArgNumber() >= kernel.getNumDims() + kernel.getNumInputs())
      return failure();
    unsigned input = table.getArgNumber() - kernel.getNumDims();
    if (!llvm::is_contained(tables, input)) {
      tables.push_back(input);
      shapes[input] = getTensorShape(kernel, input, dims);
    }
  } else if (!isIntegerArithmetic(def)) {
    return failure();
  }
  // A read's tensor is a table, not a value of the program.
  ValueRange operands = def->getOperands();
  if (auto read = dyn_cast<ReadOp>(def))
    operands = read.getSubscripts();
  for (Value operand : operands)
    if (failed(add(operand)))
      return failure();
  ops.push_back(def);
  return newSlot(value, 0);
}

int64_t DivisorProgram::evaluate(Operation *op, const TableEntry &tableEntry,
                                 bool &failed) {
  unsigned width = widthOf(op->getResult(0).getType());
  auto operand = [&](unsigned i) { return get(op->getOperand(i)); };
  auto unsignedOperand = [&](unsigned i) {
    return asUnsigned(get(op->getOperand(i)),
                      widthOf(op->getOperand(i).getType()));
  };
  // Divisions divide as the guarded kernel does: 0 for a zero divisor, the
  // negated dividend for -1.
  auto signedDivision = [&](auto divide) -> int64_t {
    int64_t a = operand(0), d = operand(1);
    if (d == 0)
      return 0;
    if (d == -1)
      return wrap(static_cast<int64_t>(0 - static_cast<uint64_t>(a)), width);
    return wrap(divide(a, d), width);
  };
  auto unsignedDivision = [&](auto divide) -> int64_t {
    uint64_t a = unsignedOperand(0), d = unsignedOperand(1);
    return d == 0 ? 0 : wrap(static_cast<int64_t>(divide(a, d)), width);
  };
  auto wrapped = [&](uint64_t bits) {
    return wrap(static_cast<int64_t>(bits), width);
  };
  uint64_t a = op->getNumOperands() > 0 ? operand(0) : 0;
  uint64_t b = op->getNumOperands() > 1 ? operand(1) : 0;
  return llvm::TypeSwitch<Operation *, int64_t>(op)
      .Case([&](arith::AddIOp) { return wrapped(a + b); })
      .Case([&](arith::SubIOp) { return wrapped(a - b); })
      .Case([&](arith::MulIOp) { return wrapped(a * b); })
      .Case([&](arith::AndIOp) { return wrapped(a & b); })
      .Case([&](arith::OrIOp) { return wrapped(a | b); })
      .Case([&](arith::XOrIOp) { return wrapped(a ^ b); })
      .Case([&](arith::MaxSIOp) { return std::max(operand(0), operand(1)); })
      .Case([&](arith::MinSIOp) { return std::min(operand(0), operand(1)); })
      .Case([&](arith::MaxUIOp) {
        return wrapped(std::max(unsignedOperand(0), unsignedOperand(1)));
      })
      .Case([&](arith::MinUIOp) {
        return wrapped(std::min(unsignedOperand(0), unsignedOperand(1)));
      })
      .Case([&](arith::DivSIOp) {
        return signedDivision([](int64_t x, int64_t y) { return x / y; });
      })
      .Case([&](arith::RemSIOp) {
        int64_t d = operand(1);
        return d == 0 || d == -1 ? 0 : wrap(operand(0) % d, width);
      })
      .Case([&](arith::FloorDivSIOp) {
        return signedDivision(
            [](int64_t x, int64_t y) { return llvm::divideFloorSigned(x, y); });
      })
      .Case([&](arith::CeilDivSIOp) {
        return signedDivision(
            [](int64_t x, int64_t y) { return llvm::divideCeilSigned(x, y); });
      })
      .Case([&](arith::DivUIOp) {
        return unsignedDivision([](uint64_t x, uint64_t y) { return x / y; });
      })
      .Case([&](arith::RemUIOp) {
        return unsignedDivision([](uint64_t x, uint64_t y) { return x % y; });
      })
      .Case([&](arith::CeilDivUIOp) {
        return unsignedDivision(
            [](uint64_t x, uint64_t y) { return llvm::divideCeil(x, y); });
      })
      .Case<arith::IndexCastOp, arith::ExtSIOp, arith::TruncIOp>(
          [&](Operation *) { return wrap(operand(0), width); })
      .Case<arith::IndexCastUIOp, arith::ExtUIOp>([&](Operation *) {
        return wrapped(unsignedOperand(0));
      })
      .Case([&](arith::SelectOp) {
        return operand(0) != 0 ? operand(1) : operand(2);
      })
      .Case([&](arith::CmpIOp cmp) {
        int64_t x = operand(0), y = operand(1);
        uint64_t ux = unsignedOperand(0), uy = unsignedOperand(1);
        bool holds = false;
        switch (cmp.getPredicate()) {
        case arith::CmpIPredicate::eq: holds = x == y; break;
        case arith::CmpIPredicate::ne: holds = x != y; break;
        case arith::CmpIPredicate::slt: holds = x < y; break;
        case arith::CmpIPredicate::sle: holds = x <= y; break;
        case arith::CmpIPredicate::sgt: holds = x > y; break;
        case arith::CmpIPredicate::sge: holds = x >= y; break;
        case arith::CmpIPredicate::ult: holds = ux < uy; break;
        case arith::CmpIPredicate::ule: holds = ux <= uy; break;
        case arith::CmpIPredicate::ugt: holds = ux > uy; break;
        case arith::CmpIPredicate::uge: holds = ux >= uy; break;
        }
        return holds ? int64_t(-1) : int64_t(0);
      })
      .Case([&](ReadOp read) -> int64_t {
        unsigned input = cast<BlockArgument>(read.getTensor()).getArgNumber() -
                         kernel.getNumDims();
        ArrayRef<int64_t> shape = shapes.find(input)->second;
        int64_t flat = 0;
        for (auto [axis, subscript] : llvm::enumerate(read.getSubscripts())) {
          int64_t at = get(subscript);
          if (at < 0 || at >= shape[axis]) {
            failed = true;
            return 0;
          }
          flat = flat * shape[axis] + at;
        }
        std::optional<int64_t> entry = tableEntry(input, flat);
        if (!entry) {
          failed = true;
          return 0;
        }
        return wrap(*entry, width);
      })
      .Default([&](Operation *) {
        failed = true;
        return 0;
      });
}

std::optional<int64_t> DivisorProgram::run(ArrayRef<int64_t> indexValues,
                                           const TableEntry &tableEntry,
                                           unsigned resultSlot) {
  for (auto [index, value] : llvm::zip(indices, indexValues))
    registers[slots.lookup(index)] = value;
  for (Operation *op : ops) {
    bool failed = false;
    int64_t result = evaluate(op, tableEntry, failed);
    if (failed)
      return std::nullopt;
    registers[slots.lookup(op->getResult(0))] = result;
  }
  return registers[resultSlot];
}

/// The name of body index `arg` as the spec writes it, or "index #i".
std::string describeIndex(BlockArgument arg) {
  Operation *owner = arg.getOwner()->getParentOp();
  unsigned number = arg.getArgNumber();
  if (auto einsum = dyn_cast<EinsumOp>(owner)) {
    unsigned outputs = einsum.getNumOutputIndices();
    ArrayAttr names = number < outputs ? einsum.getIndices()
                                       : einsum.getReduced();
    unsigned at = number < outputs ? number : number - outputs;
    if (at < names.size())
      return cast<StringAttr>(names[at]).getValue().str();
  }
  if (auto keep = dyn_cast<KeepOp>(owner))
    if (number < keep.getIndices().size())
      return cast<StringAttr>(keep.getIndices()[number]).getValue().str();
  if (isa<AttentionOp>(owner)) {
    // mask(b, h, m, n) and score_mod(score, b, h, m, n).
    static constexpr const char *kNames[] = {"b", "h", "m", "n"};
    unsigned first = arg.getOwner()->getNumArguments() == 5 ? 1 : 0;
    if (number >= first && number - first < 4)
      return kNames[number - first];
  }
  return "index #" + std::to_string(number);
}

/// Whether `divisor` is a read of a table through integer casts only.
ReadOp getTableRead(Value divisor) {
  while (Operation *def = divisor.getDefiningOp()) {
    if (auto read = dyn_cast<ReadOp>(def))
      return read;
    if (!isa<arith::IndexCastOp, arith::IndexCastUIOp, arith::ExtSIOp,
             arith::ExtUIOp, arith::TruncIOp>(def))
      return ReadOp();
    divisor = def->getOperand(0);
  }
  return ReadOp();
}

/// The reason a zero at `indexValues` gives.
std::string describeZero(KernelOp kernel, const DivisorProgram &program,
                         Value divisor, ArrayRef<int64_t> indexValues) {
  auto inputName = [&](unsigned input) {
    return cast<StringAttr>(kernel.getInputNames()[input]).getValue().str();
  };
  if (ReadOp read = getTableRead(divisor)) {
    unsigned input = cast<BlockArgument>(read.getTensor()).getArgNumber() -
                     kernel.getNumDims();
    // The run that found the zero left every value of the slice, the
    // read's subscripts included, in the registers.
    std::string at;
    for (Value subscript : read.getSubscripts())
      at += (at.empty() ? "" : ", ") +
            std::to_string(program.valueOf(subscript));
    return "the divisor is read from '" + inputName(input) +
           "', which holds 0 at [" + at + "]";
  }
  std::string at;
  for (auto [index, value] : llvm::zip(program.getIndices(), indexValues))
    at += (at.empty() ? "" : ", ") + describeIndex(index) + "=" +
          std::to_string(value);
  std::string reason = "the divisor is 0";
  if (!at.empty())
    reason += " at " + at;
  if (!program.getTables().empty()) {
    std::string names;
    for (unsigned input : program.getTables())
      names += (names.empty() ? "'" : ", '") + inputName(input) + "'";
    reason += " (computed from " + names + ")";
  }
  return reason;
}

/// Searches the points of one division's indices for a zero divisor.
std::optional<std::string>
searchDivision(KernelOp kernel, const IntervalAnalysis &analysis,
               ArrayRef<int64_t> dims, ArrayRef<double> params,
               const TableEntry &tableEntry, Value divisor) {
  DivisorProgram program(kernel, analysis, dims, params);
  FailureOr<unsigned> result = program.add(divisor);
  if (failed(result))
    return std::nullopt;
  SmallVector<int64_t> lo, hi;
  int64_t points = 1;
  for (BlockArgument index : program.getIndices()) {
    Interval range = analysis.lookup(index);
    if (range.isEmpty())
      return std::nullopt;
    lo.push_back(range.lo);
    hi.push_back(range.hi);
    int64_t count = range.hi - range.lo + 1;
    if (count <= 0 || points > kMaxDivisorPoints / count)
      return std::nullopt;
    points *= count;
  }
  SmallVector<int64_t> at(lo);
  for (int64_t point = 0; point < points; ++point) {
    std::optional<int64_t> value = program.run(at, tableEntry, *result);
    if (value && *value == 0)
      return describeZero(kernel, program, divisor, at);
    // The next point, last index fastest.
    for (int64_t k = static_cast<int64_t>(at.size()) - 1; k >= 0; --k) {
      if (++at[k] <= hi[k])
        break;
      at[k] = lo[k];
    }
  }
  return std::nullopt;
}

} // namespace

bool isIntegerDivision(Operation *op) {
  return isa<arith::DivSIOp, arith::DivUIOp, arith::RemSIOp, arith::RemUIOp,
             arith::FloorDivSIOp, arith::CeilDivSIOp, arith::CeilDivUIOp>(op);
}

std::optional<ZeroDivisor>
findZeroDivisor(KernelOp kernel, const IntervalAnalysis &analysis,
                ArrayRef<int64_t> dims, ArrayRef<double> params,
                const TableEntry &tableEntry,
                llvm::function_ref<bool(Operation *)> runsNowhere) {
  std::optional<ZeroDivisor> found;
  kernel.walk([&](Operation *op) {
    if (!isIntegerDivision(op) || runsNowhere(op))
      return WalkResult::advance();
    Interval divisor = analysis.lookup(op->getOperand(1));
    if (divisor.bounded && (divisor.lo > 0 || divisor.hi < 0))
      return WalkResult::advance();
    if (std::optional<std::string> reason = searchDivision(
            kernel, analysis, dims, params, tableEntry, op->getOperand(1))) {
      found = ZeroDivisor{op, std::move(*reason)};
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return found;
}

} // namespace attn
