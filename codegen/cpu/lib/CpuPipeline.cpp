//===- CpuPipeline.cpp - The CPU pipeline the JIT uses --------------------===//
//
// `attn-cpu-pipeline`: with fusion, attention cascades are raised to
// attn.attention, their masks analysed, and every attention lowered by
// attn-fuse-online (every attn.attention_backward by attn-fuse-backward) to
// parallel loop nests on memrefs; the rest of each kernel (sink einsums,
// mask summaries, output rounding) follows the unfused path. The order of
// the OpenMP and LLVM conversions is the verified one of
// research/mlir22-notes.md ("2.a CPU"): finalize-memref-to-llvm must run
// before scf-to-cf, or the alloca_scope of the OpenMP loop body gets several
// blocks.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/Pipeline.h"
#include "attn/CPU/Passes.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Linalg/Passes.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

/// attn kernels -> functions on tensors in which every attention is the
/// fused loop nest on memrefs.
static void buildFusedFrontHalf(OpPassManager &pm,
                                const attn::CpuPipelineOptions &options) {
  attn::buildAttentionRecognitionPipeline(pm);

  attn::ConvertAttnToLinalgOptions toLinalg;
  toLinalg.keepAttention = true;
  pm.addPass(attn::createConvertAttnToLinalg(toLinalg));
  attn::AttnFuseOnlineOptions fuse;
  fuse.queryTile = options.queryTile;
  fuse.keyTile = options.keyTile;
  pm.addPass(attn::createAttnFuseOnline(fuse));
  attn::AttnFuseBackwardOptions fuseBackward;
  fuseBackward.laneTile = options.backwardLaneTile;
  fuseBackward.rowTile = options.backwardRowTile;
  pm.addPass(attn::createAttnFuseBackward(fuseBackward));
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  // Hoists what score_mod and mask compute from (b, h) or constants out of
  // the key loops.
  pm.addPass(createLoopInvariantCodeMotionPass());
}

void attn::buildCpuPipeline(OpPassManager &pm,
                            const CpuPipelineOptions &options) {
  if (!options.fused) {
    buildUnfusedCpuPipeline(pm);
    return;
  }
  buildFusedFrontHalf(pm, options);

  buildBufferizeToLoopsPipeline(pm);
  // The only scf.parallel loops are the fused (b, h, query tile) nests.
  pm.addPass(createConvertSCFToOpenMPPass());
  pm.addPass(createApproximateMathPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createSCFToControlFlowPass());

  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addPass(arith::createArithExpandOpsPass(expand));
  pm.addPass(createConvertVectorToLLVMPass());
  // As the unfused pipeline: no log(1 + x) for what approximate-math left.
  ConvertMathToLLVMPassOptions toLLVM;
  toLLVM.approximateLog1p = false;
  pm.addPass(createConvertMathToLLVMPass(toLLVM));
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCheckOnlyLLVMPass());
}

namespace {
/// The textual options of `attn-cpu-pipeline`, mirroring CpuPipelineOptions.
struct CpuPipelineCLOptions
    : public PassPipelineOptions<CpuPipelineCLOptions> {
  Option<bool> fused{*this, "fused",
                     llvm::cl::desc("Fuse attention into the online form"),
                     llvm::cl::init(true)};
  Option<int64_t> queryTile{
      *this, "query-tile", llvm::cl::desc("Queries per tile"),
      llvm::cl::init(attn::CpuPipelineOptions().queryTile)};
  Option<int64_t> keyTile{*this, "key-tile", llvm::cl::desc("Keys per tile"),
                          llvm::cl::init(attn::CpuPipelineOptions().keyTile)};
  Option<int64_t> backwardLaneTile{
      *this, "backward-lane-tile",
      llvm::cl::desc("Queries or keys per tile of the fused backward"),
      llvm::cl::init(attn::CpuPipelineOptions().backwardLaneTile)};
  Option<int64_t> backwardRowTile{
      *this, "backward-row-tile",
      llvm::cl::desc("Keys or queries per inner tile of the fused backward"),
      llvm::cl::init(attn::CpuPipelineOptions().backwardRowTile)};
};
} // namespace

void attn::registerCpuPipeline() {
  PassPipelineRegistration<CpuPipelineCLOptions>(
      "attn-cpu-pipeline",
      "Lowers attn kernels to the LLVM dialect, fusing attention into the "
      "online form (OpenMP-parallel over batch, head and query tile)",
      [](OpPassManager &pm, const CpuPipelineCLOptions &cl) {
        attn::CpuPipelineOptions options;
        options.fused = cl.fused;
        options.queryTile = cl.queryTile;
        options.keyTile = cl.keyTile;
        options.backwardLaneTile = cl.backwardLaneTile;
        options.backwardRowTile = cl.backwardRowTile;
        buildCpuPipeline(pm, options);
      });
  registerPass([] { return createApproximateMathPass(); });
  registerAttnCpuPasses();
}

std::vector<std::string> attn::CpuPipelineOptions::describe() const {
  return {"fused=" + std::to_string(fused),
          "query-tile=" + std::to_string(queryTile),
          "key-tile=" + std::to_string(keyTile),
          "backward-lane-tile=" + std::to_string(backwardLaneTile),
          "backward-row-tile=" + std::to_string(backwardRowTile)};
}

LogicalResult attn::lowerToLLVMDialect(ModuleOp module) {
  return runPipeline(module, buildUnfusedCpuPipeline);
}

LogicalResult attn::lowerToLLVMDialect(ModuleOp module,
                                       const CpuPipelineOptions &options) {
  return runPipeline(module, [&](OpPassManager &pm) {
    buildCpuPipeline(pm, options);
  });
}
