//===- Passes.td - Passes of the CPU code generator --------*- tablegen -*-===//

#ifndef ATTN_CPU_PASSES_TD
#define ATTN_CPU_PASSES_TD

include "mlir/Pass/PassBase.td"

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

def AttnFuseBackward : Pass<"attn-fuse-backward", "::mlir::ModuleOp"> {
  let summary = "Lowers attn.attention_backward to FlashAttention-2's backward";
  let description = [{
    Rewrites every `attn.attention_backward` outside an `attn.kernel` (the
    copies that `convert-attn-to-linalg{keep-attention}` puts into
    functions) into two loop nests on memrefs, each writing only its own
    results, so that no two threads write one element and every sum is
    taken in one order (race-free and deterministic):

    - the dQ pass, `scf.parallel` over (batch, head, query tile), one query
      per vector lane, as attn-fuse-online: per row Delta = dO·O and the
      log-denominator LSE (+) sink, then over the key tiles the recomputed
      weights P = exp(score_mod(s) - LSE'), the score adjoints
      dS = P (dP - Delta) score_mod' (dS = dP score_mod' for `none`) and
      dQ += scale dS K; dSink = -P_sink Delta;
    - the dK/dV pass, `scf.parallel` over (batch, key/value head, key tile),
      one key per vector lane: over the query heads of the group and their
      query tiles, the same P and dS, dV += P dO and dK += scale dS Q,
      reading Delta and the log-denominator the dQ pass stored per row.

    score_mod's derivative is taken by forward mode from the region, one
    rule per scalar op. Tiles that `tile_class` calls empty are skipped,
    full ones evaluate no mask; absent points (masked, past the end)
    contribute nothing and fully masked rows get 0. Inputs may be f32, bf16
    or f16; accumulation is f32. The results are `bufferization.to_tensor`s
    of fresh buffers.
  }];
  let options = [
    Option<"laneTile", "lane-tile", "int64_t", "32",
           "Queries (dQ pass) or keys (dK/dV pass) per tile, one per vector "
           "lane">,
    Option<"rowTile", "row-tile", "int64_t", "32",
           "Keys (dQ pass) or queries (dK/dV pass) per inner tile (a "
           "multiple of 8)">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::bufferization::BufferizationDialect",
                           "::mlir::scf::SCFDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::vector::VectorDialect",
                           "::mlir::memref::MemRefDialect",
                           "::mlir::math::MathDialect"];
}

#endif // ATTN_CPU_PASSES_TD
