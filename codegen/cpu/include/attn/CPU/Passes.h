//===- Passes.h - Passes of the CPU code generator --------------*- C++ -*-===//

#ifndef ATTN_CPU_PASSES_H
#define ATTN_CPU_PASSES_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::attn {

#define GEN_PASS_DECL
#include "attn/CPU/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "attn/CPU/Passes.h.inc"

} // namespace mlir::attn

#endif // ATTN_CPU_PASSES_H
