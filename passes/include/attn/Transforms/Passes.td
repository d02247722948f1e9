//===- Passes.td - Transformations of the attn dialect -----*- tablegen -*-===//

#ifndef ATTN_TRANSFORMS_PASSES_TD
#define ATTN_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def AttnRaise : Pass<"attn-raise", "::mlir::attn::KernelOp"> {
  let summary = "Recognises attention cascades and builds attn.attention";
  let description = [{
    Matches a scores einsum (a sum over the head dim of a query and a key
    read), the elementwise einsums and keeps that follow it, a normalizer
    (softmax, normalize, or none) and the weighted sum with a value read,
    and replaces them with one `attn.attention` whose `score_mod` and `mask`
    regions hold the elementwise math and the predicates. A logsumexp of the
    same scores becomes its LSE result. What it cannot raise stays as it is,
    with a remark that says why.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

def AttnAnalyzeMask : Pass<"attn-analyze-mask", "::mlir::attn::KernelOp"> {
  let summary = "Classifies (query tile, key tile) pairs as empty, partial or full";
  let description = [{
    Fills the `tile_class` region of every `attn.attention` with code that
    decides, for a batch, a head and inclusive query and key ranges, whether
    the mask keeps none, some or all of the tile. Affine predicates are
    decided by interval arithmetic on the tile bounds; predicates that read
    tensors use per-tile summaries (min/max, any/all) computed once by a
    generated O(L) prologue.
  }];
  let options = [
    Option<"summaryTileSize", "summary-tile-size", "int64_t", "64",
           "Tile length of the per-tile summaries of tensors read by masks">,
    Option<"summaryLevels", "summary-levels", "unsigned", "3",
           "Levels of the sparse table of summaries: ranges of up to "
           "2^(levels + 1) summary tiles are summarised exactly">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnGuardIntegerDivision
    : Pass<"attn-guard-integer-division", "::mlir::attn::KernelOp"> {
  let summary = "Makes integer division and remainder by run-time values total";
  let description = [{
    An integer division or remainder whose divisor is not a constant (a
    param, a dim, a tensor entry, an expression of them) becomes one that
    cannot trap: a divisor of 0 gives 0, and a divisor of -1 negates, so
    that the most negative value divided by -1 wraps. x86's idiv traps on
    both (SIGFPE, which would end the caller's process) and the result is
    undefined behaviour in LLVM IR. The launch refuses the zero divisors it
    can see (params, dims, tables read directly) and the reference evaluator
    reports the others as errors; a kernel never signals.

    Runs after `attn-raise`, which recognises the division of grouped-query
    head maps as written.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

#endif // ATTN_TRANSFORMS_PASSES_TD
