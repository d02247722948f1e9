//===- GuardIntegerDivision.cpp - Total integer division and remainder ----===//
//
// a / d and a % d by a divisor known only at run time, rewritten so that no
// divisor traps (see Passes.td):
//
//   signed:   safe = d == 0 or d == -1 ? 1 : d
//             a / d -> d == -1 ? 0 - a : d == 0 ? 0 : a / safe
//             a % d -> a % safe         (0 for both)
//   unsigned: safe = d == 0 ? 1 : d
//             a / d -> d == 0 ? 0 : a / safe
//             a % d -> a % safe         (0)
//
// floordivsi and ceildivsi are guarded like divsi (both are -a for d = -1).
//
//===----------------------------------------------------------------------===//

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Matchers.h"

namespace mlir::attn {

#define GEN_PASS_DEF_ATTNGUARDINTEGERDIVISION
#include "attn/Transforms/Passes.h.inc"

namespace {

/// Whether `divisor` is a constant that traps nothing (not 0, and not -1
/// for a signed operation).
bool isHarmlessConstant(Value divisor, bool isSigned) {
  APInt value;
  if (!matchPattern(divisor, m_ConstantInt(&value)))
    return false;
  return !value.isZero() && !(isSigned && value.isAllOnes());
}

void guard(Operation *op, bool isSigned, bool isQuotient) {
  OpBuilder b(op);
  Location loc = op->getLoc();
  Value dividend = op->getOperand(0), divisor = op->getOperand(1);
  Type type = divisor.getType();
  auto constant = [&](int64_t value) -> Value {
    return arith::ConstantOp::create(b, loc, type,
                                     b.getIntegerAttr(type, value));
  };
  Value zero = constant(0);
  Value isZero = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                       divisor, zero);
  Value isMinusOne;
  Value unsafe = isZero;
  if (isSigned) {
    isMinusOne = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                       divisor, constant(-1));
    unsafe = arith::OrIOp::create(b, loc, isZero, isMinusOne);
  }
  Value safe = arith::SelectOp::create(b, loc, unsafe, constant(1), divisor);
  op->setOperand(1, safe);
  if (!isQuotient)
    return;
  b.setInsertionPointAfter(op);
  Value quotient = op->getResult(0);
  SmallVector<OpOperand *> uses = llvm::map_to_vector(
      quotient.getUses(), [](OpOperand &use) { return &use; });
  Value result = arith::SelectOp::create(b, loc, isZero, zero, quotient);
  if (isSigned) {
    Value negated = arith::SubIOp::create(b, loc, zero, dividend);
    result = arith::SelectOp::create(b, loc, isMinusOne, negated, result);
  }
  for (OpOperand *use : uses)
    use->set(result);
}

struct AttnGuardIntegerDivision
    : impl::AttnGuardIntegerDivisionBase<AttnGuardIntegerDivision> {
  void runOnOperation() override {
    SmallVector<std::tuple<Operation *, bool, bool>> divisions;
    getOperation().walk([&](Operation *op) {
      bool isSigned, isQuotient;
      if (isa<arith::DivSIOp, arith::FloorDivSIOp, arith::CeilDivSIOp>(op))
        isSigned = true, isQuotient = true;
      else if (isa<arith::RemSIOp>(op))
        isSigned = true, isQuotient = false;
      else if (isa<arith::DivUIOp, arith::CeilDivUIOp>(op))
        isSigned = false, isQuotient = true;
      else if (isa<arith::RemUIOp>(op))
        isSigned = false, isQuotient = false;
      else
        return;
      if (!isHarmlessConstant(op->getOperand(1), isSigned))
        divisions.emplace_back(op, isSigned, isQuotient);
    });
    for (auto [op, isSigned, isQuotient] : divisions)
      guard(op, isSigned, isQuotient);
  }
};

} // namespace

} // namespace mlir::attn
