//===- Passes.h - The unfused lowering: attn to linalg ----------*- C++ -*-===//

#ifndef ATTN_LINALG_PASSES_H
#define ATTN_LINALG_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::attn {

#define GEN_PASS_DECL
#include "attn/Linalg/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "attn/Linalg/Passes.h.inc"

} // namespace mlir::attn

#endif // ATTN_LINALG_PASSES_H
