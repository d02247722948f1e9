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

#endif // ATTN_CPU_PASSES_TD
