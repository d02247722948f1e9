//===- AttnOps.td - Operations of the attn dialect ---------*- tablegen -*-===//

#ifndef ATTN_DIALECT_ATTN_IR_ATTNOPS_TD
#define ATTN_DIALECT_ATTN_IR_ATTNOPS_TD

include "attn/Dialect/Attn/IR/AttnDialect.td"
include "attn/Dialect/Attn/IR/AttnEnums.td"
include "mlir/IR/OpAsmInterface.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Interfaces/ControlFlowInterfaces.td"

//===----------------------------------------------------------------------===//
// Kernel
//===----------------------------------------------------------------------===//

def Attn_KernelOp : Attn_Op<"kernel", [
    Symbol, IsolatedFromAbove, SingleBlock,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "An attention variant: its signature and its cascade";
  let description = [{
    The entry block takes one `index` argument per dim (in `dim_names`
    order), then one tensor per input, then one scalar per param. The body
    ends with `attn.return` of one tensor per output.

    `dim_sizes` holds the compile-time size of each dim, or `?` (dynamic)
    for symbolic dims. `shapes` names the dim (a string) or fixed size (an
    integer) of every axis of every input and then every output, so a launch
    can bind dims from tensor shapes. `output_types` are the element types of
    the outputs as the user sees them; the body computes in f32.

    ```mlir
    attn.kernel @causal attributes {dim_names = ["B", "M", "D"], ...} {
    ^bb0(%B: index, %M: index, %D: index, %Q: tensor<?x?x64xf32>, ...):
      ...
      attn.return %O : tensor<?x?x64xf32>
    }
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    StrArrayAttr:$dim_names,
    DenseI64ArrayAttr:$dim_sizes,
    StrArrayAttr:$input_names,
    StrArrayAttr:$param_names,
    ArrayAttr:$param_defaults,
    StrArrayAttr:$output_names,
    TypeArrayAttr:$output_types,
    ArrayAttr:$shapes);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasVerifier = 1;
  let hasRegionVerifier = 1;

  let extraClassDeclaration = [{
    unsigned getNumDims() { return getDimNames().size(); }
    unsigned getNumInputs() { return getInputNames().size(); }
    unsigned getNumParams() { return getParamNames().size(); }
    unsigned getNumOutputs() { return getOutputNames().size(); }
    ::mlir::Block &getEntryBlock() { return getBody().front(); }
    ::mlir::BlockArgument getDimArg(unsigned i) {
      return getEntryBlock().getArgument(i);
    }
    ::mlir::BlockArgument getInputArg(unsigned i) {
      return getEntryBlock().getArgument(getNumDims() + i);
    }
    ::mlir::BlockArgument getParamArg(unsigned i) {
      return getEntryBlock().getArgument(getNumDims() + getNumInputs() + i);
    }
    /// The axes of input `i` (or of output `i - getNumInputs()`): a dim name
    /// or a fixed size each.
    ::mlir::ArrayAttr getShapeOf(unsigned i) {
      return ::llvm::cast<::mlir::ArrayAttr>(getShapes()[i]);
    }
    /// The index of the dim called `name`, if any.
    std::optional<unsigned> lookupDim(::llvm::StringRef name);
    class ReturnOp getReturnOp();
  }];
}

def Attn_ReturnOp : Attn_Op<"return", [
    Pure, Terminator, HasParent<"KernelOp">, ReturnLike]> {
  let summary = "Returns the outputs of a kernel";
  let arguments = (ins Variadic<AnyRankedTensor>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

//===----------------------------------------------------------------------===//
// Cascade level
//===----------------------------------------------------------------------===//

def Attn_EinsumOp : Attn_Op<"einsum", [
    RecursiveMemoryEffects, SingleBlock,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "A tensor defined pointwise over named indices, maybe reduced";
  let description = [{
    Defines `result[indices...] = kind over reduced (body(indices, reduced))`.
    `extents` gives the size of each output index and then of each reduced
    index. The body takes one `index` argument per output index and then per
    reduced index, reads tensors with `attn.read` and yields one scalar.

    A point of an elementwise einsum (`kind = none`) is absent when any
    `attn.read` in its body reads an absent entry. A reduction skips absent
    terms; reducing over nothing gives the identity (`sum`, `mean`: 0,
    `max`, `logsumexp`: -inf, `min`: +inf), so its result has no absent
    entries.

    ```mlir
    %S = attn.einsum <sum> ["m", "n"] reduce ["d"] extents(%M, %N, %D)
        : tensor<?x?xf32> {
    ^bb0(%m: index, %n: index, %d: index):
      %q = attn.read %Q[%m, %d] : tensor<?x?xf32>
      %k = attn.read %K[%n, %d] : tensor<?x?xf32>
      %p = arith.mulf %q, %k : f32
      attn.yield %p : f32
    }
    ```
  }];
  let arguments = (ins
    Attn_ReductionKindAttr:$kind,
    StrArrayAttr:$indices,
    DefaultValuedAttr<StrArrayAttr, "{}">:$reduced,
    Variadic<Index>:$extents);
  let results = (outs AnyRankedTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $kind $indices (`reduce` $reduced^)? `extents` `(` $extents `)`
    attr-dict `:` type($result) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    /// Creates the op and its body block with one index argument per index;
    /// the caller fills the body and ends it with `attn.yield`.
    OpBuilder<(ins "::mlir::Type":$resultType, "ReductionKind":$kind,
      "::llvm::ArrayRef<::llvm::StringRef>":$indices,
      "::llvm::ArrayRef<::llvm::StringRef>":$reduced,
      "::mlir::ValueRange":$extents)>
  ];
  let extraClassDeclaration = [{
    unsigned getNumOutputIndices() { return getIndices().size(); }
    unsigned getNumReducedIndices() { return getReduced().size(); }
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
    ::mlir::ValueRange getOutputExtents() {
      return getExtents().take_front(getNumOutputIndices());
    }
    ::mlir::ValueRange getReducedExtents() {
      return getExtents().drop_front(getNumOutputIndices());
    }
    /// The value the body yields.
    ::mlir::Value getYieldedValue();
  }];
}

def Attn_ReadOp : Attn_Op<"read", [Pure,
    TypesMatchWith<"result is the element type of the tensor", "tensor",
                   "result",
                   "::llvm::cast<::mlir::TensorType>($_self).getElementType()">]> {
  let summary = "Reads one entry of a tensor inside a cascade body";
  let description = [{
    Subscripts are arbitrary `index` values: affine in indices and dims, or
    computed from entries of integer tensors (gathers). Reading an absent
    entry makes the enclosing elementwise point absent.
  }];
  let arguments = (ins AnyRankedTensor:$tensor, Variadic<Index>:$subscripts);
  let results = (outs AnyType:$result);
  let assemblyFormat = [{
    $tensor `[` $subscripts `]` attr-dict `:` type($tensor)
  }];
  let hasVerifier = 1;
}

def Attn_KeepOp : Attn_Op<"keep", [
    RecursiveMemoryEffects, SingleBlock,
    AllTypesMatch<["input", "result"]>,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "Keeps the entries of a tensor where a predicate holds";
  let description = [{
    Entries where the predicate (the body, one `index` argument per axis,
    yielding `i1`) is false become absent. Absent is not -inf: it is skipped
    by every reduction, whatever the normalizer.

    `sinks` names an always-kept prefix of keys, `block` the block size of a
    block-sparse map the predicate reads, `per_head` a mask that differs by
    head. They are analysis hints; the body alone defines the semantics.
  }];
  let arguments = (ins
    AnyRankedTensor:$input,
    StrArrayAttr:$indices,
    OptionalAttr<I64Attr>:$sinks,
    OptionalAttr<DenseI64ArrayAttr>:$block,
    UnitAttr:$per_head);
  let results = (outs AnyRankedTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $input $indices attr-dict `:` type($input) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    /// Creates the op and its predicate block with one index argument per
    /// axis; the caller fills it and ends it with `attn.yield`.
    OpBuilder<(ins "::mlir::Value":$input,
      "::llvm::ArrayRef<::llvm::StringRef>":$indices)>
  ];
  let extraClassDeclaration = [{
    ::mlir::Block &getBodyBlock() { return getBody().front(); }
    /// The predicate the body yields.
    ::mlir::Value getPredicate();
  }];
}

class Attn_NormalizerOp<string mnemonic, list<Trait> traits = []>
    : Attn_Op<mnemonic, !listconcat(traits, [Pure])> {
  let hasVerifier = 1;
}

def Attn_SoftmaxOp : Attn_NormalizerOp<"softmax",
    [AllTypesMatch<["input", "result"]>]> {
  let summary = "Softmax along one axis, with an optional sink logit";
  let description = [{
    `result = exp(x - max) / (sum(exp(x - max)) + exp(sink - max))` along
    `dimension`, where `max` includes the sink. Absent entries stay absent
    and are skipped. `sink` has the input's shape without `dimension`. A row
    with no present entry and no sink stays all absent.
  }];
  let arguments = (ins
    AnyRankedTensor:$input,
    I64Attr:$dimension,
    Optional<AnyRankedTensor>:$sink);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `dimension` `(` $dimension `)`
    (`sink` `(` $sink^ `:` type($sink) `)`)? attr-dict `:` type($input)
  }];
}

def Attn_NormalizeOp : Attn_NormalizerOp<"normalize",
    [AllTypesMatch<["input", "result"]>]> {
  let summary = "A positive map of the input, divided by its sum along one axis";
  let description = [{
    `result = map(x) / sum(map(x))` along `dimension` over present
    entries. Softplus attention writes
    `normalize[n](softplus(S))`: map `softplus` of S. With map `exp`,
    `softplus` or `sigmoid` the row is computed relative to its largest
    entry, so it stays exact when every map(x) underflows in the element
    type; `identity` divides x as it is.
  }];
  let arguments = (ins
    AnyRankedTensor:$input,
    I64Attr:$dimension,
    DefaultValuedAttr<Attn_WeightMapAttr, "WeightMap::Identity">:$map);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $input `dimension` `(` $dimension `)` (`map` `(` $map^ `)`)? attr-dict
    `:` type($input)
  }];
}

//===----------------------------------------------------------------------===//
// Structured level
//===----------------------------------------------------------------------===//

def Attn_AttentionOp : Attn_Op<"attention", [
    RecursiveMemoryEffects,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "Fused attention with score_mod and mask regions";
  let description = [{
    Computes, for every batch `b`, query head `h`, query `m`:

      s[n]   = score_mod(scale * sum_d Q[b,h,m,d] * K[b,g,n,d], b, h, m, n)
               for the keys n where mask(b, h, m, n) holds
      p      = softmax(s) (with the sink logit sink[b,h,m] in the
               denominator) | map(s) / sum(map(s)) (normalize, with
               the weight map of attn.normalize) | s (none)
      O[b,h,m,e] = sum_n p[n] * V[b,g,n,e]
      LSE[b,h,m] = log sum_n exp(s[n])     (optional second result: softmax)
                 = log sum_n map(s[n])     (normalize with a weight map)

    Q is [B, H, M, D], K is [B, G, N, D], V is [B, G, N, E]; query head h
    reads key/value head g = h / (H / G) (H must be a multiple of G). A row
    with no kept key gives O = 0 and LSE = -inf. Results are f32. The LSE
    is the log of the row's denominator (the sink excluded): what a
    backward recomputes the weights from.

    `score_mod` takes the scaled score and the indices (b, h, m, n);
    `mask` takes the indices and yields i1. Both may read, from above, the
    kernel's dims, params and tensors (ALiBi slopes, document ids).

    `tile_class`, filled by `attn-analyze-mask`, takes a batch, a head and
    inclusive query and key ranges (b, h, m_first, m_last, n_first, n_last)
    and yields an i32 TileClass: 0 when the mask keeps no point of the tile,
    2 when it keeps every point, 1 when it cannot tell. Backends skip empty
    tiles and drop the mask on full ones.
  }];
  let arguments = (ins
    AnyRankedTensor:$query,
    AnyRankedTensor:$key,
    AnyRankedTensor:$value,
    F32:$scale,
    Optional<AnyRankedTensor>:$sink,
    Attn_NormalizerAttr:$normalizer,
    DefaultValuedAttr<Attn_WeightMapAttr, "WeightMap::Identity">:$map);
  let results = (outs
    AnyRankedTensor:$output,
    Optional<AnyRankedTensor>:$lse);
  let regions = (region
    SizedRegion<1>:$score_mod,
    SizedRegion<1>:$mask,
    AnyRegion:$tile_class);
  let assemblyFormat = [{
    $normalizer (`map` `(` $map^ `)`)? $query `,` $key `,` $value
    `scale` `(` $scale `)` (`sink` `(` $sink^ `:` type($sink) `)`)?
    attr-dict `:` type($query) `,` type($key) `,` type($value)
    `->` type($output) (`,` type($lse)^)?
    `score_mod` $score_mod `mask` $mask (`tile_class` $tile_class^)?
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::Block &getScoreModBlock() { return getScoreMod().front(); }
    ::mlir::Block &getMaskBlock() { return getMask().front(); }
    bool hasTileClass() { return !getTileClass().empty(); }
    /// Whether the mask region yields the constant true.
    bool hasTrivialMask();
    /// Whether score_mod yields its score argument unchanged.
    bool hasTrivialScoreMod();
  }];
}

def Attn_AttentionBackwardOp : Attn_Op<"attention_backward", [
    RecursiveMemoryEffects, AttrSizedOperandSegments, AttrSizedResultSegments,
    DeclareOpInterfaceMethods<OpAsmOpInterface, ["getAsmBlockArgumentNames"]>]> {
  let summary = "The adjoint of attn.attention: dQ, dK, dV (and the sink's)";
  let description = [{
    Given the operands of an `attn.attention` (Q, K, V, scale, sink, the
    normalizer, its weight map and the same score_mod, mask and tile_class
    regions), its
    output O and its row statistic, the adjoint dO of O and, when the
    forward's LSE result has one, its adjoint dLSE (`lse_grad`), computes
    the gradients of L = <dO, O> + <dLSE, LSE> (FlashAttention-2's
    backward):

      p[n]   = exp(s[n] - LSE')            softmax, LSE' = LSE (+) sink
             = map(s[n]) e^-LSE            normalize with a weight map
             = s[n]                        none
      dV[b,g,n,e] += sum over m, h in g of p[n] dO[b,h,m,e]
      dp[n]  = sum_e dO[b,h,m,e] V[b,g,n,e]
      ds[n]  = p[n] (dp[n] - Delta')       softmax, Delta = sum_e dO O,
                                           Delta' = Delta - dLSE e^(LSE' - LSE)
             = p[n] map'/map (dp[n] - Delta)   normalize with a map
             = dp[n]                       none
      dt[n]  = ds[n] * d score_mod / d score at (scale q.k, b, h, m, n)
      dQ[b,h,m,d] = scale sum_n dt[n] K[b,g,n,d]
      dK[b,g,n,d] += scale sum over m, h in g of dt[n] Q[b,h,m,d]
      dSink[b,h,m] = -exp(sink - LSE') Delta

    over the kept keys only: a fully masked row has no term and gets 0.
    `statistic` is the forward's LSE (rank 3, f32; ignored for none): the
    log of the row's denominator over the kept scores, the sink excluded
    (the log-sum-exp for softmax, log sum map(s) for normalize). Its
    adjoint dLSE adds dLSE e^(s - LSE) = p dLSE e^(LSE' - LSE) to a kept
    score's adjoint, hence Delta' (e^(LSE' - LSE) = 1 + e^(sink - LSE), 1
    without a sink; the term is 0 where LSE = -inf, a row with no kept
    score). The sink's gradient reads Delta: the LSE does not depend on the
    sink. `lse_grad` is f32 shaped as the statistic, softmax only. Results
    are f32 and shaped as Q, K, V (and the sink). The
    derivative of score_mod is taken by the backend from the region (one
    rule per scalar op); score_mod and mask may read tensors from above.

    `grad_reads` lists attn.read ops of score_mod (positions in block
    order) whose values need an adjoint: for each, `read_grads` has the
    per-row sum

      r[b,h,m] = sum over kept n of ds'[n] * d score_mod / d (value read)

    (ds' the adjoint of the modified score, before the factor
    d score_mod / d score), rank 3 f32 [B, H, M]. Such a read's subscripts
    may not depend on the score or the key n, so that every term of a row
    adds to one entry of the tensor read: ALiBi's slopes[h], a per-head or
    per-row temperature. attn-grad scatters the rows' sums onto the
    tensor's gradient with einsums; a read at key-dependent positions (a
    relative-position bias table) is differentiated as a cascade.
  }];
  let arguments = (ins
    AnyRankedTensor:$query,
    AnyRankedTensor:$key,
    AnyRankedTensor:$value,
    AnyRankedTensor:$output,
    AnyRankedTensor:$statistic,
    AnyRankedTensor:$output_grad,
    F32:$scale,
    Optional<AnyRankedTensor>:$sink,
    Optional<AnyRankedTensor>:$lse_grad,
    Attn_NormalizerAttr:$normalizer,
    DefaultValuedAttr<Attn_WeightMapAttr, "WeightMap::Identity">:$map,
    DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$grad_reads);
  let results = (outs
    AnyRankedTensor:$query_grad,
    AnyRankedTensor:$key_grad,
    AnyRankedTensor:$value_grad,
    Optional<AnyRankedTensor>:$sink_grad,
    Variadic<AnyRankedTensor>:$read_grads);
  let regions = (region
    SizedRegion<1>:$score_mod,
    SizedRegion<1>:$mask,
    AnyRegion:$tile_class);
  let assemblyFormat = [{
    $normalizer (`map` `(` $map^ `)`)? $query `,` $key `,` $value `,`
    $output `,` $statistic `,`
    $output_grad `scale` `(` $scale `)` (`sink` `(` $sink^ `:` type($sink) `)`)?
    (`lse_grad` `(` $lse_grad^ `:` type($lse_grad) `)`)?
    attr-dict `:` type($query) `,` type($key) `,` type($value) `,`
    type($output) `,` type($statistic) `,` type($output_grad)
    `->` type($query_grad) `,` type($key_grad) `,` type($value_grad)
    (`,` type($sink_grad)^)? (`reads` `(` type($read_grads)^ `)`)?
    `score_mod` $score_mod `mask` $mask (`tile_class` $tile_class^)?
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::Block &getScoreModBlock() { return getScoreMod().front(); }
    ::mlir::Block &getMaskBlock() { return getMask().front(); }
    bool hasTileClass() { return !getTileClass().empty(); }
    /// Whether the mask region yields the constant true.
    bool hasTrivialMask();
    /// Whether score_mod yields its score argument unchanged.
    bool hasTrivialScoreMod();
    /// The attn.read of score_mod that `grad_reads` entry `i` names.
    ReadOp getGradRead(unsigned i);
  }];
}

def Attn_YieldOp : Attn_Op<"yield", [
    Pure, Terminator, ReturnLike,
    ParentOneOf<["EinsumOp", "KeepOp", "AttentionOp", "AttentionBackwardOp"]>]> {
  let summary = "Yields the scalar of a cascade or attention body";
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // ATTN_DIALECT_ATTN_IR_ATTNOPS_TD
