//===- AttnEnums.td - Enumerations of the attn dialect -----*- tablegen -*-===//

#ifndef ATTN_DIALECT_ATTN_IR_ATTNENUMS_TD
#define ATTN_DIALECT_ATTN_IR_ATTNENUMS_TD

include "attn/Dialect/Attn/IR/AttnDialect.td"
include "mlir/IR/EnumAttr.td"

/// How an einsum combines the values of its reduction indices. `none` marks a
/// purely elementwise statement.
def Attn_ReductionKind : I32EnumAttr<"ReductionKind", "einsum reduction", [
    I32EnumAttrCase<"None", 0, "none">,
    I32EnumAttrCase<"Sum", 1, "sum">,
    I32EnumAttrCase<"Max", 2, "max">,
    I32EnumAttrCase<"Min", 3, "min">,
    I32EnumAttrCase<"Mean", 4, "mean">,
    I32EnumAttrCase<"LogSumExp", 5, "logsumexp">]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}

def Attn_ReductionKindAttr
    : EnumAttr<Attn_Dialect, Attn_ReductionKind, "reduction"> {
  let assemblyFormat = "`<` $value `>`";
}

#endif // ATTN_DIALECT_ATTN_IR_ATTNENUMS_TD
