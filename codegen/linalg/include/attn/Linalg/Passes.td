//===- Passes.td - The unfused lowering: attn to linalg ----*- tablegen -*-===//

#ifndef ATTN_LINALG_PASSES_TD
#define ATTN_LINALG_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertAttnToLinalg : Pass<"convert-attn-to-linalg", "::mlir::ModuleOp"> {
  let summary = "Lowers every attn.kernel to a func.func of linalg on tensors";
  let description = [{
    The unfused, always-correct lowering: every cascade op becomes one or a
    few `linalg.generic`s on dynamically sized tensors, in program order.

    Each `attn.kernel @k` becomes `func.func @k(dims: index..., inputs:
    tensor..., params: scalar..., outputs: memref...)` with no results; the
    returned tensors are rounded to the declared output types and written
    into the output memrefs with `bufferization.materialize_in_destination`.

    Tensors that may have absent entries (results of `attn.keep` and of what
    reads them) carry a companion `i1` presence tensor. Elementwise points
    are present when every read is; reductions select the identity for
    absent terms; normalizers keep their input's presence and never divide
    by an empty sum or evaluate `exp(-inf - -inf)`. Absent entries of
    outputs are stored as 0.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::func::FuncDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::tensor::TensorDialect"
  ];
  let options = [
    Option<"emitCInterface", "emit-c-interface", "bool", "false",
           "Put llvm.emit_c_interface on the generated functions">,
    Option<"keepAttention", "keep-attention", "bool", "false",
           "Copy attn.attention and attn.attention_backward ops into the "
           "generated functions (with their operands and captured values "
           "remapped) for a later fusion pass such as attn-fuse-online or "
           "attn-fuse-backward, instead of rejecting them">
  ];
}

#endif // ATTN_LINALG_PASSES_TD
