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

/// How attention weights are made from scores: `softmax` (with an optional
/// sink logit), `normalize` (divide by the row sum, e.g. softplus attention)
/// or `none` (sigmoid and linear attention use the scores as weights).
def Attn_Normalizer : I32EnumAttr<"Normalizer", "attention normalizer", [
    I32EnumAttrCase<"Softmax", 0, "softmax">,
    I32EnumAttrCase<"Normalize", 1, "normalize">,
    I32EnumAttrCase<"None", 2, "none">]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}

def Attn_NormalizerAttr : EnumAttr<Attn_Dialect, Attn_Normalizer, "normalizer"> {
  let assemblyFormat = "`<` $value `>`";
}

/// The positive map `normalize` applies to its input before dividing by the
/// row sum: `normalize[n](softplus(S))` is `normalize` with map `softplus` of
/// S. Knowing the map lets every backend keep the row relative to its
/// largest entry (as softmax keeps it relative to its max), so rows whose
/// values all underflow in f32 are exact: these maps behave as exp(x) for
/// very negative x. `identity` divides the input as it is.
def Attn_WeightMap : I32EnumAttr<"WeightMap", "normalize weight map", [
    I32EnumAttrCase<"Identity", 0, "identity">,
    I32EnumAttrCase<"Exp", 1, "exp">,
    I32EnumAttrCase<"Softplus", 2, "softplus">,
    I32EnumAttrCase<"Sigmoid", 3, "sigmoid">]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}

def Attn_WeightMapAttr : EnumAttr<Attn_Dialect, Attn_WeightMap, "weight_map"> {
  let assemblyFormat = "`<` $value `>`";
}

/// What the mask analysis says of a (query tile, key tile).
def Attn_TileClass : I32EnumAttr<"TileClass", "mask tile class", [
    I32EnumAttrCase<"Empty", 0, "empty">,
    I32EnumAttrCase<"Partial", 1, "partial">,
    I32EnumAttrCase<"Full", 2, "full">]> {
  let cppNamespace = "::mlir::attn";
  let genSpecializedAttr = 0;
}

#endif // ATTN_DIALECT_ATTN_IR_ATTNENUMS_TD
