//===- WgmmaTiles.cpp - Warp-group tensor-core pieces ---------------------===//
//
// wgmma with operands in 128-byte-swizzled shared memory, its fences and
// groups, mbarriers, TMA box loads and register reallocation, as inline
// PTX: what the sm_90a kernels are built from.
//
//===----------------------------------------------------------------------===//

#include "WgmmaTiles.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::attn;

LLVM::InlineAsmOp mlir::attn::emitAsm(OpBuilder &b, Location loc,
                                      TypeRange resultTypes,
                                      ValueRange operands, StringRef text,
                                      StringRef constraints) {
  Type result;
  if (resultTypes.size() == 1)
    result = resultTypes.front();
  else if (!resultTypes.empty())
    result = LLVM::LLVMStructType::getLiteral(b.getContext(),
                                              llvm::to_vector(resultTypes));
  return LLVM::InlineAsmOp::create(
      b, loc, result, operands, text, constraints, /*has_side_effects=*/true,
      /*is_align_stack=*/false, LLVM::tailcallkind::TailCallKind::None,
      LLVM::AsmDialectAttr::get(b.getContext(), LLVM::AsmDialect::AD_ATT),
      /*operand_attrs=*/ArrayAttr());
}

SmallVector<Value> mlir::attn::fenceOperands(OpBuilder &b, Location loc,
                                             ArrayRef<Value> values) {
  std::string constraints;
  SmallVector<Type> types;
  for (Value v : values) {
    constraints += v.getType().isF32() ? "=f," : "=r,";
    types.push_back(v.getType());
  }
  for (size_t i = 0; i < values.size(); ++i)
    constraints += std::to_string(i) + (i + 1 < values.size() ? "," : "");
  LLVM::InlineAsmOp fence = emitAsm(b, loc, types, values, "", constraints);
  if (values.size() == 1)
    return {fence.getResult(0)};
  SmallVector<Value> results;
  for (size_t i = 0; i < values.size(); ++i)
    results.push_back(LLVM::ExtractValueOp::create(b, loc, fence.getResult(0),
                                                   static_cast<int64_t>(i)));
  return results;
}

Value WgmmaTileBuilder::operandDescriptor(Value address, int64_t leadingBytes,
                                          int64_t strideBytes) {
  // Bits 0-13: address / 16; 16-29: leading byte offset / 16; 32-45: stride
  // byte offset / 16; 62-63: 1, the 128-byte swizzle.
  uint64_t fixed = (uint64_t(leadingBytes >> 4) << 16) |
                   (uint64_t(strideBytes >> 4) << 32) | (uint64_t(1) << 62);
  Value start = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, address, c32(4)), c32(0x3FFF));
  return arith::OrIOp::create(b, loc,
                              arith::ExtUIOp::create(b, loc, i64, start),
                              c64(static_cast<int64_t>(fixed)));
}

Value WgmmaTileBuilder::kMajorOperand(Value tile, int64_t rows, int64_t kk) {
  // 16 columns (32 bytes) per k-step within a 64-column chunk.
  return operandDescriptor(
      add(tile, c32((kk / 4) * rows * kSwizzledRowBytes + (kk % 4) * 32)), 16,
      kSwizzleAtomBytes);
}

Value WgmmaTileBuilder::mnMajorOperand(Value tile, int64_t rows, int64_t kk) {
  // 16 rows per k-step; the next 64 columns a chunk further.
  return operandDescriptor(add(tile, c32(16 * kk * kSwizzledRowBytes)),
                           rows * kSwizzledRowBytes, kSwizzleAtomBytes);
}

Value WgmmaTileBuilder::sharedAddressOf(Value pointer) {
  return LLVM::PtrToIntOp::create(b, loc, i32, pointer);
}

void WgmmaTileBuilder::asyncProxyFence() {
  emitAsm(b, loc, {}, {}, "fence.proxy.async.shared::cta;", "");
}

void WgmmaTileBuilder::wgmma(MutableArrayRef<Value> acc, Value aDescriptor,
                             ArrayRef<Value> aFragment, Value bDescriptor,
                             bool transposeB, bool accumulate,
                             bool transposeA) {
  const int64_t n = 2 * static_cast<int64_t>(acc.size());
  std::string type = elementType.isBF16() ? "bf16" : "f16";
  std::string text = "{\n.reg .pred p;\nsetp.ne.b32 p, $";
  std::string constraints;
  SmallVector<Value> operands;
  const size_t numAcc = acc.size();
  for (size_t i = 0; i < numAcc; ++i)
    constraints += "=f,";
  size_t next = numAcc;
  std::string a;
  if (aDescriptor) {
    a = "$" + std::to_string(next++);
    operands.push_back(aDescriptor);
    constraints += "l,";
  } else {
    a = "{";
    for (auto [i, fragment] : llvm::enumerate(aFragment)) {
      a +=
          "$" + std::to_string(next++) + (i + 1 < aFragment.size() ? "," : "}");
      operands.push_back(fragment);
      constraints += "r,";
    }
  }
  std::string bOperand = "$" + std::to_string(next++);
  operands.push_back(bDescriptor);
  constraints += "l,";
  text += std::to_string(next++) + ", 0;\nwgmma.mma_async.sync.aligned.m64n" +
          std::to_string(n) + "k16.f32." + type + "." + type + " {";
  operands.push_back(c32(accumulate ? 1 : 0));
  constraints += "r";
  for (size_t i = 0; i < numAcc; ++i) {
    text += "$" + std::to_string(i) + (i + 1 < numAcc ? "," : "}");
    constraints += "," + std::to_string(i);
  }
  text += ", " + a + ", " + bOperand + ", p, 1, 1";
  if (aDescriptor)
    text += transposeA ? ", 1" : ", 0";
  text += std::string(", ") + (transposeB ? "1" : "0") + ";\n}";
  operands.append(acc.begin(), acc.end());
  LLVM::InlineAsmOp op = emitAsm(b, loc, SmallVector<Type>(numAcc, f32),
                                 operands, text, constraints);
  for (size_t i = 0; i < numAcc; ++i)
    acc[i] = LLVM::ExtractValueOp::create(b, loc, op.getResult(0),
                                          static_cast<int64_t>(i));
}

void WgmmaTileBuilder::wgmmaFence() {
  emitAsm(b, loc, {}, {}, "wgmma.fence.sync.aligned;", "");
}

void WgmmaTileBuilder::wgmmaCommit() {
  emitAsm(b, loc, {}, {}, "wgmma.commit_group.sync.aligned;", "");
}

void WgmmaTileBuilder::wgmmaWait(int64_t pending) {
  emitAsm(b, loc, {}, {},
          "wgmma.wait_group.sync.aligned " + std::to_string(pending) + ";", "");
}

void WgmmaTileBuilder::initBarrier(Value address, int64_t count) {
  emitAsm(b, loc, {}, {address},
          "mbarrier.init.shared::cta.b64 [$0], " + std::to_string(count) + ";",
          "r");
}

void WgmmaTileBuilder::arriveExpectingBytes(Value address, int64_t bytes) {
  emitAsm(b, loc, {}, {address},
          "mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], " +
              std::to_string(bytes) + ";",
          "r");
}

void WgmmaTileBuilder::expectBytes(Value address, int64_t bytes) {
  emitAsm(b, loc, {}, {address},
          "mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [$0], " +
              std::to_string(bytes) + ";",
          "r");
}

void WgmmaTileBuilder::arrive(Value address) {
  emitAsm(b, loc, {}, {address}, "mbarrier.arrive.shared::cta.b64 _, [$0];",
          "r");
}

void WgmmaTileBuilder::arriveOnCopies(Value address) {
  emitAsm(b, loc, {}, {address},
          "cp.async.mbarrier.arrive.noinc.shared::cta.b64 [$0];", "r");
}

void WgmmaTileBuilder::waitBarrier(Value address, Value parity) {
  // Labels inside braces are local to them: every copy has its own.
  emitAsm(b, loc, {}, {address, parity},
          "{\n.reg .pred ready;\nLAB_WAIT:\n"
          "mbarrier.try_wait.parity.shared::cta.b64 ready, [$0], $1;\n"
          "@!ready bra LAB_WAIT;\n}",
          "r,r");
}

/// The TMA instruction "cp{.reduce}.async.bulk.tensor.Nd.`modifiers`" on the
/// box of `map` at `coordinates`, as inline asm: "[map, {c0, ...}]" between
/// `before` (the operand ahead of it, or none) and `after`, shared
/// addresses both.
static void emitBoxInstruction(OpBuilder &b, Location loc, bool reduce,
                               StringRef modifiers, Value before, Value map,
                               ArrayRef<Value> coordinates, Value after) {
  std::string text = std::string(reduce ? "cp.reduce" : "cp") +
                     ".async.bulk.tensor." +
                     std::to_string(coordinates.size()) + "d." +
                     modifiers.str() + (before ? " [$0]," : "");
  SmallVector<Value> operands;
  std::string constraints;
  auto operand = [&](Value value, StringRef constraint) {
    text += "$" + std::to_string(operands.size());
    operands.push_back(value);
    constraints += (constraints.empty() ? "" : ",") + constraint.str();
  };
  if (before) {
    operands.push_back(before);
    constraints = "r";
  }
  text += " [";
  operand(map, "l");
  text += ", {";
  for (auto [i, coordinate] : llvm::enumerate(coordinates)) {
    text += i ? ", " : "";
    operand(coordinate, "r");
  }
  text += "}], [";
  operand(after, "r");
  text += "];";
  emitAsm(b, loc, {}, operands, text, constraints);
}

void WgmmaTileBuilder::loadBox(Value map, Value dst,
                               ArrayRef<Value> coordinates, Value barrier) {
  emitBoxInstruction(b, loc, /*reduce=*/false,
                     "shared::cluster.global.mbarrier::complete_tx::bytes", dst,
                     map, coordinates, barrier);
}

Value WgmmaTileBuilder::isMapMade(Value map) {
  Value bits = c64(0);
  for (int64_t word = 0; word < 16; ++word)
    bits = arith::OrIOp::create(
        b, loc, bits,
        LLVM::LoadOp::create(b, loc, i64, gep(map, i64, c32(word)), 8));
  return cmpi(arith::CmpIPredicate::ne, bits, c64(0));
}

void WgmmaTileBuilder::setMaxRegisters(int64_t count, bool increase) {
  emitAsm(b, loc, {}, {},
          std::string("setmaxnreg.") + (increase ? "inc" : "dec") +
              ".sync.aligned.u32 " + std::to_string(count) + ";",
          "");
}

void WgmmaTileBuilder::reduceAddBox(Value map, Value source,
                                    ArrayRef<Value> coordinates) {
  emitBoxInstruction(b, loc, /*reduce=*/true,
                     "global.shared::cta.add.bulk_group", Value(), map,
                     coordinates, source);
}

void WgmmaTileBuilder::bulkCommit() {
  emitAsm(b, loc, {}, {}, "cp.async.bulk.commit_group;", "");
}

void WgmmaTileBuilder::bulkWait(bool readOnly) {
  emitAsm(b, loc, {}, {},
          std::string("cp.async.bulk.wait_group") + (readOnly ? ".read" : "") +
              " 0;",
          "");
}
