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

def AttnFuseOnline : Pass<"attn-fuse-online", "::mlir::ModuleOp"> {
  let summary = "Lowers attn.attention to the one-pass online form";
  let description = [{
    Rewrites every `attn.attention` outside an `attn.kernel` (the copies that
    `convert-attn-to-linalg{keep-attention}` puts into functions) into a
    loop nest on memrefs: `scf.parallel` over (batch, head, query tile),
    inside an `scf.for` over key tiles whose iter_args carry the running max
    and denominator (one vector lane per query) while the numerator lives in
    an L1 buffer; one division at the end (FuseMax's one-pass cascade).

    Sink logits seed the running max and join the denominator at the end;
    `normalize` drops the running max, `none` the denominator too. Tiles that
    `tile_class` calls empty are skipped, full ones evaluate no mask. Q is
    scaled and transposed once per query tile, so Q·Kᵀ and P·V are
    broadcast-FMA micro-kernels reading K and V in place (GQA: no copies).
    Inputs may be f32, bf16 or f16; accumulation is f32. The results are
    `bufferization.to_tensor`s of fresh buffers.
  }];
  let options = [
    Option<"queryTile", "query-tile", "int64_t", "16",
           "Queries per tile (vector lanes of the micro-kernels)">,
    Option<"keyTile", "key-tile", "int64_t", "32",
           "Keys per tile (a multiple of 8)">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::math::MathDialect"];
}

#endif // ATTN_TRANSFORMS_PASSES_TD
