//===- AttnDialect.td - The attn dialect -------------------*- tablegen -*-===//
//
// The attn dialect describes attention variants at two levels: the einsum
// cascade a spec is written in ("what is computed") and, later, structured
// attention ops that fuse and tile ("how it is computed").
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DIALECT_ATTN_IR_ATTNDIALECT_TD
#define ATTN_DIALECT_ATTN_IR_ATTNDIALECT_TD

include "mlir/IR/OpBase.td"

def Attn_Dialect : Dialect {
  let name = "attn";
  let summary = "Attention variants as einsum cascades";
  let description = [{
    A kernel (`attn.kernel`) is the spec's signature and a body of cascade
    ops. Every tensor value is indexed by named indices; entries removed by
    `attn.keep` are *absent*: elementwise ops keep them absent and reductions
    skip them, so masks mean the same thing under every normalizer.
  }];
  let cppNamespace = "::mlir::attn";
  let useDefaultAttributePrinterParser = 1;
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::tensor::TensorDialect"];
}

class Attn_Op<string mnemonic, list<Trait> traits = []>
    : Op<Attn_Dialect, mnemonic, traits>;

#endif // ATTN_DIALECT_ATTN_IR_ATTNDIALECT_TD
