//===- BodyProgram.h - Cascade bodies compiled for interpretation -*- C++ -*-=//
//
// Internal to the reference evaluator. An einsum body runs millions of times
// per op, so it is translated once into a flat instruction list over a
// register file instead of walking MLIR operations at every point.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_BODYPROGRAM_H
#define ATTN_REFERENCE_LIB_BODYPROGRAM_H

#include "TensorValue.h"

#include "mlir/IR/Operation.h"
#include "mlir/IR/Value.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <string>
#include <vector>

namespace attn::ref {

/// One register: a float (f16/bf16/f32/f64, all held as double) or an integer
/// (i1 as 0/1, i32/i64/index as int64). The compiler knows which from the
/// SSA type, so no tag is stored.
union Reg {
  double f;
  int64_t i;
};

/// What bodies may use from above: scalars (dims, params, top-level index
/// arithmetic) and tensors (through attn.read only).
struct Environment {
  llvm::DenseMap<mlir::Value, Reg> scalars;
  llvm::DenseMap<mlir::Value, const TensorValue *> tensors;
  /// How messages name each tensor.
  llvm::DenseMap<mlir::Value, std::string> names;
};

enum class Opcode : uint8_t {
  // Floats.
  AddF,
  SubF,
  MulF,
  DivF,
  RemF,
  MaxF,
  MinF,
  PowF,
  NegF,
  Exp,
  Exp2,
  Log,
  Log1p,
  Sqrt,
  Rsqrt,
  Tanh,
  AbsF,
  Floor,
  Ceil,
  CmpF,
  // Integers.
  AddI,
  SubI,
  MulI,
  DivSI,
  FloorDivSI,
  RemSI,
  MaxSI,
  MinSI,
  AndI,
  OrI,
  XorI,
  CmpI,
  // Both.
  Select,
  Copy,
  IToF,
  UIToF,
  FToI,
  ExtUI,
  Read,
};

/// One instruction: `dst = op(a, b, c)` over register indices. `c` also holds
/// a comparison predicate or a bit width; for Read, `a` indexes the read
/// sites.
struct Instr {
  Opcode op;
  uint32_t dst, a, b, c;
  /// The operation it came from, for error messages only.
  mlir::Operation *origin;
};

/// One attn.read: the tensor and the registers holding its subscripts.
struct ReadSite {
  const TensorValue *tensor;
  /// How messages name the tensor: "input 'Q'", "%3 (attn.einsum at ...)".
  std::string name;
  llvm::SmallVector<uint32_t, 4> subscripts;
  /// Whether the read yields an integer register.
  bool integer;

  /// The offset of the entry read with the subscripts in `regs`, which a
  /// run that got past this read has checked to be in range.
  int64_t getOffset(const Reg *regs) const {
    int64_t offset = 0;
    for (size_t k = 0, e = subscripts.size(); k < e; ++k)
      offset += regs[subscripts[k]].i * tensor->strides[k];
    return offset;
  }
};

/// Why a run stopped early with an error.
struct Fault {
  mlir::Operation *op = nullptr;
  std::string message;
};

/// A straight-line scalar program. Registers 0..numArgs-1 hold the body's
/// index arguments; constants and values from above are preloaded.
class BodyProgram {
public:
  using ReadSites = std::vector<ReadSite>;
  enum class Status { Present, Absent, Error };

  /// Compiles `ops` (scalar ops and attn.read, in order; an attn.yield is
  /// skipped) whose block arguments are `args`, producing `result`. Reports
  /// ops outside the cascade contract on the op and fails.
  static mlir::FailureOr<BodyProgram>
  compile(mlir::ValueRange args, llvm::ArrayRef<mlir::Operation *> ops,
          mlir::Value result, const Environment &env);

  /// A register file ready for `run`: constants loaded, arguments zero.
  std::vector<Reg> makeRegisters() const { return initial; }
  unsigned getNumArgs() const { return numArgs; }
  uint32_t getResultRegister() const { return resultReg; }
  /// Whether the result is an integer (else a float).
  bool isIntegerResult() const { return integerResult; }
  /// The result as a double.
  double getResult(const Reg *regs) const {
    return integerResult ? static_cast<double>(regs[resultReg].i)
                         : regs[resultReg].f;
  }

  /// The instructions in execution order and the reads they index, for
  /// the reverse sweep of BodyAdjoint.
  llvm::ArrayRef<Instr> getCode() const { return code; }
  const ReadSites &getReadSites() const { return reads; }
  size_t getNumRegisters() const { return initial.size(); }

  /// Runs the program once on `regs`. Absent: a read hit an absent entry
  /// (the rest of the body is skipped; the point contributes nothing).
  /// Error: `fault` says what went wrong.
  Status run(Reg *regs, Fault &fault) const;

private:
  std::vector<Instr> code;
  ReadSites reads;
  std::vector<Reg> initial;
  unsigned numArgs = 0;
  uint32_t resultReg = 0;
  bool integerResult = false;
};

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_BODYPROGRAM_H
