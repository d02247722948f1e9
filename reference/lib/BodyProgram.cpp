//===- BodyProgram.cpp - Cascade bodies compiled for interpretation -------===//
//
// The scalar semantics of cascade bodies: integers (i1, i32, i64, index) are
// computed in int64 and floats (any width) in double, because the reference
// is a float64 oracle and must not round where the spec does not.
//
//===----------------------------------------------------------------------===//

#include "BodyProgram.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace ::attn::ref;

namespace {

/// Translates one body into a BodyProgram.
class Compiler {
public:
  Compiler(const Environment &env, BodyProgram::ReadSites &reads,
           std::vector<Instr> &code, std::vector<Reg> &initial)
      : env(env), reads(reads), code(code), initial(initial) {}

  void bindArgument(Value arg) { registers[arg] = newRegister(); }

  /// The register of `value`, loading it from above if the body did not
  /// define it.
  FailureOr<uint32_t> getRegister(Value value, Operation *user);
  LogicalResult compile(Operation *op);

private:
  uint32_t newRegister() {
    initial.push_back(Reg{0.0});
    return static_cast<uint32_t>(initial.size() - 1);
  }
  LogicalResult emit(Operation *op, Opcode opcode, uint32_t c = 0);
  LogicalResult compileConstant(arith::ConstantOp op);
  LogicalResult compileRead(mlir::attn::ReadOp op);

  const Environment &env;
  BodyProgram::ReadSites &reads;
  std::vector<Instr> &code;
  std::vector<Reg> &initial;
  llvm::DenseMap<Value, uint32_t> registers;
};

} // namespace

/// Whether a register of this type holds an integer; nullopt when the
/// evaluator has no scalar representation for it.
static std::optional<bool> isIntegerScalar(Type type) {
  if (isa<IntegerType, IndexType>(type))
    return true;
  if (isa<FloatType>(type))
    return false;
  return std::nullopt;
}

static LogicalResult unsupported(Operation *op) {
  return op->emitError() << "reference evaluator does not support op '"
                         << op->getName() << "'";
}

FailureOr<uint32_t> Compiler::getRegister(Value value, Operation *user) {
  auto it = registers.find(value);
  if (it != registers.end())
    return it->second;
  auto scalar = env.scalars.find(value);
  if (scalar == env.scalars.end())
    return user->emitError()
           << "reference evaluator: operand of type " << value.getType()
           << " is neither computed in the body nor a scalar from above "
              "(tensors are read with attn.read)";
  uint32_t reg = newRegister();
  initial[reg] = scalar->second;
  registers[value] = reg;
  return reg;
}

LogicalResult Compiler::emit(Operation *op, Opcode opcode, uint32_t c) {
  Instr instr{opcode, 0, 0, 0, c, op};
  uint32_t *slots[] = {&instr.a, &instr.b, &instr.c};
  if (op->getNumOperands() > 3 || op->getNumResults() != 1)
    return unsupported(op);
  for (auto [i, operand] : llvm::enumerate(op->getOperands())) {
    FailureOr<uint32_t> reg = getRegister(operand, op);
    if (failed(reg))
      return failure();
    *slots[i] = *reg;
  }
  instr.dst = newRegister();
  registers[op->getResult(0)] = instr.dst;
  code.push_back(instr);
  return success();
}

LogicalResult Compiler::compileConstant(arith::ConstantOp op) {
  Reg value{0.0};
  if (auto attr = dyn_cast<FloatAttr>(op.getValue())) {
    value.f = attr.getValueAsDouble();
  } else if (auto attr = dyn_cast<IntegerAttr>(op.getValue())) {
    // i1 `true` is -1 as a signed 1-bit value; booleans are held as 0/1.
    value.i = attr.getType().isInteger(1) ? attr.getValue().getZExtValue()
                                          : attr.getValue().getSExtValue();
  } else {
    return op->emitError() << "reference evaluator does not support constant "
                           << op.getValue();
  }
  uint32_t reg = newRegister();
  initial[reg] = value;
  registers[op.getResult()] = reg;
  return success();
}

LogicalResult Compiler::compileRead(mlir::attn::ReadOp op) {
  auto tensor = env.tensors.find(op.getTensor());
  if (tensor == env.tensors.end())
    return op->emitError() << "reference evaluator: attn.read of a tensor "
                              "that is not an input or an earlier result";
  ReadSite site;
  site.tensor = tensor->second;
  site.name = env.names.lookup(op.getTensor());
  site.integer = isa<IntegerType, IndexType>(op.getType());
  for (Value subscript : op.getSubscripts()) {
    FailureOr<uint32_t> reg = getRegister(subscript, op);
    if (failed(reg))
      return failure();
    site.subscripts.push_back(*reg);
  }
  if (static_cast<int64_t>(site.subscripts.size()) != site.tensor->getRank())
    return op->emitError() << "reference evaluator: attn.read with "
                           << site.subscripts.size() << " subscripts of a rank-"
                           << site.tensor->getRank() << " tensor";
  reads.push_back(std::move(site));
  uint32_t dst = newRegister();
  registers[op.getResult()] = dst;
  code.push_back(Instr{Opcode::Read, dst,
                       static_cast<uint32_t>(reads.size() - 1), 0, 0, op});
  return success();
}

LogicalResult Compiler::compile(Operation *op) {
  if (isa<mlir::attn::YieldOp>(op))
    return success();
  if (op->getNumRegions() != 0 || op->getNumResults() != 1 ||
      !isIntegerScalar(op->getResult(0).getType()))
    return unsupported(op);
  for (Type type : op->getOperandTypes())
    if (!isIntegerScalar(type) && !isa<mlir::attn::ReadOp>(op))
      return unsupported(op);

  using O = Opcode;
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](arith::ConstantOp c) { return compileConstant(c); })
      .Case([&](mlir::attn::ReadOp r) { return compileRead(r); })
      .Case([&](arith::AddFOp) { return emit(op, O::AddF); })
      .Case([&](arith::SubFOp) { return emit(op, O::SubF); })
      .Case([&](arith::MulFOp) { return emit(op, O::MulF); })
      .Case([&](arith::DivFOp) { return emit(op, O::DivF); })
      .Case([&](arith::RemFOp) { return emit(op, O::RemF); })
      .Case([&](arith::NegFOp) { return emit(op, O::NegF); })
      .Case([&](arith::MaximumFOp) { return emit(op, O::MaxF); })
      .Case([&](arith::MinimumFOp) { return emit(op, O::MinF); })
      .Case([&](arith::AddIOp) { return emit(op, O::AddI); })
      .Case([&](arith::SubIOp) { return emit(op, O::SubI); })
      .Case([&](arith::MulIOp) { return emit(op, O::MulI); })
      .Case([&](arith::DivSIOp) { return emit(op, O::DivSI); })
      .Case([&](arith::FloorDivSIOp) { return emit(op, O::FloorDivSI); })
      .Case([&](arith::RemSIOp) { return emit(op, O::RemSI); })
      .Case([&](arith::MaxSIOp) { return emit(op, O::MaxSI); })
      .Case([&](arith::MinSIOp) { return emit(op, O::MinSI); })
      .Case([&](arith::AndIOp) { return emit(op, O::AndI); })
      .Case([&](arith::OrIOp) { return emit(op, O::OrI); })
      .Case([&](arith::XOrIOp) { return emit(op, O::XorI); })
      .Case([&](arith::CmpFOp c) {
        return emit(op, O::CmpF, static_cast<uint32_t>(c.getPredicate()));
      })
      .Case([&](arith::CmpIOp c) {
        return emit(op, O::CmpI, static_cast<uint32_t>(c.getPredicate()));
      })
      .Case([&](arith::SelectOp) { return emit(op, O::Select); })
      .Case<arith::IndexCastOp, arith::ExtFOp, arith::TruncFOp>(
          [&](Operation *) { return emit(op, O::Copy); })
      .Case([&](arith::SIToFPOp) { return emit(op, O::IToF); })
      .Case([&](arith::UIToFPOp u) {
        return emit(op, O::UIToF, u.getIn().getType().getIntOrFloatBitWidth());
      })
      .Case([&](arith::FPToSIOp) { return emit(op, O::FToI); })
      .Case([&](arith::ExtUIOp u) {
        return emit(op, O::ExtUI, u.getIn().getType().getIntOrFloatBitWidth());
      })
      .Case([&](math::ExpOp) { return emit(op, O::Exp); })
      .Case([&](math::Exp2Op) { return emit(op, O::Exp2); })
      .Case([&](math::LogOp) { return emit(op, O::Log); })
      .Case([&](math::Log1pOp) { return emit(op, O::Log1p); })
      .Case([&](math::SqrtOp) { return emit(op, O::Sqrt); })
      .Case([&](math::RsqrtOp) { return emit(op, O::Rsqrt); })
      .Case([&](math::TanhOp) { return emit(op, O::Tanh); })
      .Case([&](math::AbsFOp) { return emit(op, O::AbsF); })
      .Case([&](math::PowFOp) { return emit(op, O::PowF); })
      .Case([&](math::FloorOp) { return emit(op, O::Floor); })
      .Case([&](math::CeilOp) { return emit(op, O::Ceil); })
      .Default([&](Operation *) { return unsupported(op); });
}

FailureOr<BodyProgram> BodyProgram::compile(ValueRange args,
                                            ArrayRef<Operation *> ops,
                                            Value result,
                                            const Environment &env) {
  BodyProgram program;
  Compiler compiler(env, program.reads, program.code, program.initial);
  for (Value arg : args)
    compiler.bindArgument(arg);
  program.numArgs = args.size();
  for (Operation *op : ops)
    if (failed(compiler.compile(op)))
      return failure();
  std::optional<bool> integer = isIntegerScalar(result.getType());
  Operation *anchor = ops.empty() ? nullptr : ops.back();
  if (!integer) {
    if (anchor)
      anchor->emitError() << "reference evaluator: a body yields "
                          << result.getType() << ", not a scalar";
    return failure();
  }
  FailureOr<uint32_t> reg =
      compiler.getRegister(result, anchor ? anchor : result.getDefiningOp());
  if (failed(reg))
    return failure();
  program.resultReg = *reg;
  program.integerResult = *integer;
  return program;
}

//===----------------------------------------------------------------------===//
// Interpretation
//===----------------------------------------------------------------------===//

/// Integer arithmetic wraps like the hardware instead of being undefined.
static int64_t wrapAdd(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) +
                              static_cast<uint64_t>(b));
}
static int64_t wrapSub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) -
                              static_cast<uint64_t>(b));
}
static int64_t wrapMul(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) *
                              static_cast<uint64_t>(b));
}

/// arith.maximumf / minimumf: NaN propagates and -0 < +0.
static double maximumF(double a, double b) {
  if (std::isnan(a) || std::isnan(b))
    return std::numeric_limits<double>::quiet_NaN();
  if (a == b)
    return std::signbit(a) ? b : a;
  return a > b ? a : b;
}
static double minimumF(double a, double b) {
  if (std::isnan(a) || std::isnan(b))
    return std::numeric_limits<double>::quiet_NaN();
  if (a == b)
    return std::signbit(a) ? a : b;
  return a < b ? a : b;
}

static bool compareF(arith::CmpFPredicate predicate, double a, double b) {
  bool unordered = std::isnan(a) || std::isnan(b);
  using P = arith::CmpFPredicate;
  switch (predicate) {
  case P::AlwaysFalse:
    return false;
  case P::OEQ:
    return !unordered && a == b;
  case P::OGT:
    return !unordered && a > b;
  case P::OGE:
    return !unordered && a >= b;
  case P::OLT:
    return !unordered && a < b;
  case P::OLE:
    return !unordered && a <= b;
  case P::ONE:
    return !unordered && a != b;
  case P::ORD:
    return !unordered;
  case P::UEQ:
    return unordered || a == b;
  case P::UGT:
    return unordered || a > b;
  case P::UGE:
    return unordered || a >= b;
  case P::ULT:
    return unordered || a < b;
  case P::ULE:
    return unordered || a <= b;
  case P::UNE:
    return unordered || a != b;
  case P::UNO:
    return unordered;
  case P::AlwaysTrue:
    return true;
  }
  return false;
}

/// Integers are held sign-extended; sign extension keeps the unsigned order
/// of same-width values, so unsigned predicates compare as uint64.
static bool compareI(arith::CmpIPredicate predicate, int64_t a, int64_t b) {
  auto ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  using P = arith::CmpIPredicate;
  switch (predicate) {
  case P::eq:
    return a == b;
  case P::ne:
    return a != b;
  case P::slt:
    return a < b;
  case P::sle:
    return a <= b;
  case P::sgt:
    return a > b;
  case P::sge:
    return a >= b;
  case P::ult:
    return ua < ub;
  case P::ule:
    return ua <= ub;
  case P::ugt:
    return ua > ub;
  case P::uge:
    return ua >= ub;
  }
  return false;
}

/// fptosi saturates and maps NaN to 0 rather than invoking undefined
/// behaviour.
static int64_t floatToInt(double value) {
  if (std::isnan(value))
    return 0;
  if (value >= 9223372036854775807.0)
    return std::numeric_limits<int64_t>::max();
  if (value <= -9223372036854775808.0)
    return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(value);
}

/// The low `width` bits of `value`, read as unsigned.
static uint64_t lowBits(int64_t value, uint32_t width) {
  auto bits = static_cast<uint64_t>(value);
  return width >= 64 ? bits : bits & ((uint64_t(1) << width) - 1);
}

static BodyProgram::Status divisionByZero(const Instr &instr, Fault &fault) {
  fault.op = instr.origin;
  fault.message = "integer division by zero in '" +
                  instr.origin->getName().getStringRef().str() + "'";
  return BodyProgram::Status::Error;
}

BodyProgram::Status BodyProgram::run(Reg *r, Fault &fault) const {
  for (const Instr &in : code) {
    Reg &d = r[in.dst];
    const Reg &a = r[in.a], &b = r[in.b], &c = r[in.c];
    switch (in.op) {
    case Opcode::AddF:
      d.f = a.f + b.f;
      break;
    case Opcode::SubF:
      d.f = a.f - b.f;
      break;
    case Opcode::MulF:
      d.f = a.f * b.f;
      break;
    case Opcode::DivF:
      d.f = a.f / b.f;
      break;
    case Opcode::RemF:
      d.f = std::fmod(a.f, b.f);
      break;
    case Opcode::MaxF:
      d.f = maximumF(a.f, b.f);
      break;
    case Opcode::MinF:
      d.f = minimumF(a.f, b.f);
      break;
    case Opcode::PowF:
      d.f = std::pow(a.f, b.f);
      break;
    case Opcode::NegF:
      d.f = -a.f;
      break;
    case Opcode::Exp:
      d.f = std::exp(a.f);
      break;
    case Opcode::Exp2:
      d.f = std::exp2(a.f);
      break;
    case Opcode::Log:
      d.f = std::log(a.f);
      break;
    case Opcode::Log1p:
      d.f = std::log1p(a.f);
      break;
    case Opcode::Sqrt:
      d.f = std::sqrt(a.f);
      break;
    case Opcode::Rsqrt:
      d.f = 1.0 / std::sqrt(a.f);
      break;
    case Opcode::Tanh:
      d.f = std::tanh(a.f);
      break;
    case Opcode::AbsF:
      d.f = std::fabs(a.f);
      break;
    case Opcode::Floor:
      d.f = std::floor(a.f);
      break;
    case Opcode::Ceil:
      d.f = std::ceil(a.f);
      break;
    case Opcode::CmpF:
      d.i = compareF(static_cast<arith::CmpFPredicate>(in.c), a.f, b.f);
      break;
    case Opcode::AddI:
      d.i = wrapAdd(a.i, b.i);
      break;
    case Opcode::SubI:
      d.i = wrapSub(a.i, b.i);
      break;
    case Opcode::MulI:
      d.i = wrapMul(a.i, b.i);
      break;
    case Opcode::DivSI:
      if (b.i == 0)
        return divisionByZero(in, fault);
      d.i = b.i == -1 ? wrapSub(0, a.i) : a.i / b.i;
      break;
    case Opcode::FloorDivSI: {
      if (b.i == 0)
        return divisionByZero(in, fault);
      if (b.i == -1) {
        d.i = wrapSub(0, a.i);
        break;
      }
      int64_t q = a.i / b.i;
      if (a.i % b.i != 0 && ((a.i < 0) != (b.i < 0)))
        --q;
      d.i = q;
      break;
    }
    case Opcode::RemSI:
      if (b.i == 0)
        return divisionByZero(in, fault);
      d.i = b.i == -1 ? 0 : a.i % b.i;
      break;
    case Opcode::MaxSI:
      d.i = a.i > b.i ? a.i : b.i;
      break;
    case Opcode::MinSI:
      d.i = a.i < b.i ? a.i : b.i;
      break;
    case Opcode::AndI:
      d.i = a.i & b.i;
      break;
    case Opcode::OrI:
      d.i = a.i | b.i;
      break;
    case Opcode::XorI:
      d.i = a.i ^ b.i;
      break;
    case Opcode::CmpI:
      d.i = compareI(static_cast<arith::CmpIPredicate>(in.c), a.i, b.i);
      break;
    case Opcode::Select:
      d = a.i ? b : c;
      break;
    case Opcode::Copy:
      d = a;
      break;
    case Opcode::IToF:
      d.f = static_cast<double>(a.i);
      break;
    case Opcode::UIToF:
      d.f = static_cast<double>(lowBits(a.i, in.c));
      break;
    case Opcode::FToI:
      d.i = floatToInt(a.f);
      break;
    case Opcode::ExtUI:
      d.i = static_cast<int64_t>(lowBits(a.i, in.c));
      break;
    case Opcode::Read: {
      const ReadSite &site = reads[in.a];
      const TensorValue &t = *site.tensor;
      int64_t offset = 0;
      for (size_t k = 0, e = site.subscripts.size(); k < e; ++k) {
        int64_t s = r[site.subscripts[k]].i;
        if (static_cast<uint64_t>(s) >= static_cast<uint64_t>(t.shape[k])) {
          fault.op = in.origin;
          llvm::raw_string_ostream os(fault.message);
          os << "attn.read of " << site.name << " out of range: subscript " << s
             << " on axis " << k << " is outside the valid range [0, "
             << t.shape[k] << ")";
          return Status::Error;
        }
        offset += s * t.strides[k];
      }
      if (!t.isPresent(offset))
        return Status::Absent;
      double value = t.data[offset];
      if (site.integer)
        d.i = static_cast<int64_t>(value);
      else
        d.f = value;
      break;
    }
    }
  }
  return Status::Present;
}
