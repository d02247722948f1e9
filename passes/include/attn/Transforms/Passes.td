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
    Fills the `tile_class` region of every `attn.attention` and
    `attn.attention_backward` with code that
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
    undefined behaviour in LLVM IR. The launch refuses every zero divisor
    it can evaluate (params, dims, and divisors computed from indices and
    integer tables, at every point they divide at); a kernel never signals.

    Runs after `attn-raise`, which recognises the division of grouped-query
    head maps as written.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def AttnGrad : Pass<"attn-grad", "::mlir::ModuleOp"> {
  let summary = "Replaces each attn.kernel by its adjoint kernel <name>_grad";
  let description = [{
    The adjoint of a kernel is another kernel, `<name>_grad`, at cascade
    level (run it before `attn-raise`; the adjoint is then raised, fused and
    lowered like any spec). Its dims and params are the forward's; its
    inputs are the forward's inputs followed by one adjoint per float output
    (`dO`, `dLSE`: "d" and the output's name); its outputs are the gradients
    of L = sum over outputs of <adjoint, output> with respect to every float
    input, in input order (`dQ`, `dK`, `dV`, `dSlopes`, ...). Integer inputs
    and params get none.

    The adjoint recomputes the forward cascade, then walks it backwards:
    each float read in an einsum body becomes an einsum over the read
    tensor's axes (one derivative rule per scalar op, in one place;
    subscripts that are not plain indices become guards); max and min send
    their adjoint to the first extreme term, logsumexp by the softmax
    weights, mean by the count of present terms; softmax (with its sink
    logit) and normalize take their adjoint from the one normalizer
    definition. Every adjoint is a sum, so absent entries contribute 0 and
    a fully masked row gets a zero gradient.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect",
                           "::mlir::tensor::TensorDialect"];
}

#endif // ATTN_TRANSFORMS_PASSES_TD
