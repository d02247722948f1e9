//===- LinalgPipelines.cpp - attn -> LLVM without fusion ------------------===//
//
// The always-correct CPU path: the unfused lowering, bufferization, plain
// loops and the standard conversions to the LLVM dialect. The order follows
// the pipeline verified in research/mlir22-notes.md ("2.a CPU").
//
//===----------------------------------------------------------------------===//

#include "attn/Linalg/Passes.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/Arith/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Bufferization/Pipelines/Passes.h"
#include "mlir/Dialect/Bufferization/Transforms/FuncBufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/ControlFlow/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Linalg/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/AllocationOpInterfaceImpl.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/OpenMP/OpenMPDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/SCF/Transforms/BufferDeallocationOpInterfaceImpl.h"
#include "mlir/Dialect/SCF/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Tensor/Transforms/BufferizableOpInterfaceImpl.h"
#include "mlir/Dialect/UB/IR/UBOps.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void attn::buildAttnToLinalgPipeline(OpPassManager &pm) {
  pm.nest<attn::KernelOp>().addPass(createAttnGuardIntegerDivision());
  pm.addPass(createConvertAttnToLinalg());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void attn::buildBufferizeToLoopsPipeline(OpPassManager &pm) {
  // Lets the last generic of each output write into the caller's buffer
  // instead of a temporary that is then copied; only that generic (CSE may
  // have given several ops one tensor.empty).
  pm.addPass(createSplitDestinationsPass());
  pm.addPass(bufferization::createEmptyTensorEliminationPass());
  bufferization::OneShotBufferizePassOptions bufferize;
  bufferize.bufferizeFunctionBoundaries = true;
  // Plain strided-less memrefs at the boundary: the JIT passes dense
  // row-major descriptors.
  bufferize.functionBoundaryTypeConversion =
      bufferization::LayoutMapOption::IdentityLayoutMap;
  pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
  bufferization::buildBufferDeallocationPipeline(pm);
  // The deallocation pipeline leaves bufferization.clone behind.
  pm.addPass(createConvertBufferizationToMemRefPass());

  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void attn::buildUnfusedCpuPipeline(OpPassManager &pm) {
  buildAttnToLinalgPipeline(pm);
  buildBufferizeToLoopsPipeline(pm);
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());

  // bf16 conversions become integer code: no soft-float runtime calls.
  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addPass(arith::createArithExpandOpsPass(expand));
  // log1p is left to libm: math-to-llvm's log(1 + x) loses every digit for
  // small x (softplus of a very negative score).
  ConvertMathToLLVMPassOptions toLLVM;
  toLLVM.approximateLog1p = false;
  pm.addPass(createConvertMathToLLVMPass(toLLVM));
  // What math-to-llvm leaves (tanh, log1p, ...) becomes libm calls, which
  // the JIT resolves in the host process.
  pm.addPass(createConvertMathToLibmPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertIndexToLLVMPass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createUBToLLVMConversionPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  pm.addPass(attn::createCheckOnlyLLVMPass());
}

void attn::registerLinalgPipelines() {
  PassPipelineRegistration<>(
      "attn-unfused-cpu-pipeline",
      "Lowers attn kernels to the LLVM dialect without fusion (always "
      "correct, slow)",
      [](OpPassManager &pm) { buildUnfusedCpuPipeline(pm); });
  registerPass([] { return createCheckOnlyLLVMPass(); });
  registerPass([] { return createSplitDestinationsPass(); });
}

void attn::registerCodegenDialects(DialectRegistry &registry) {
  registry.insert<AttnDialect, arith::ArithDialect,
                  bufferization::BufferizationDialect, cf::ControlFlowDialect,
                  func::FuncDialect, linalg::LinalgDialect, LLVM::LLVMDialect,
                  math::MathDialect, memref::MemRefDialect, scf::SCFDialect,
                  omp::OpenMPDialect, tensor::TensorDialect, ub::UBDialect,
                  vector::VectorDialect>();
  arith::registerBufferizableOpInterfaceExternalModels(registry);
  arith::registerBufferDeallocationOpInterfaceExternalModels(registry);
  bufferization::func_ext::registerBufferizableOpInterfaceExternalModels(
      registry);
  cf::registerBufferDeallocationOpInterfaceExternalModels(registry);
  linalg::registerBufferizableOpInterfaceExternalModels(registry);
  memref::registerAllocationOpInterfaceExternalModels(registry);
  scf::registerBufferizableOpInterfaceExternalModels(registry);
  scf::registerBufferDeallocationOpInterfaceExternalModels(registry);
  tensor::registerBufferizableOpInterfaceExternalModels(registry);
  registerBuiltinDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  // The fused pipeline's parallel loops stay omp ops until translation.
  registerOpenMPDialectTranslation(registry);
}

/// Whether pipelines report the time of each pass (`attnc --time-passes`).
static bool timePipelinePasses = false;

void attn::enablePipelineTiming(bool enable) { timePipelinePasses = enable; }

LogicalResult
attn::runPipeline(ModuleOp module,
                  llvm::function_ref<void(OpPassManager &)> build) {
  DialectRegistry registry;
  attn::registerCodegenDialects(registry);
  module->getContext()->appendDialectRegistry(registry);
  PassManager pm(module->getContext());
  if (timePipelinePasses)
    pm.enableTiming();
  build(pm);
  return pm.run(module);
}

LogicalResult attn::lowerToLinalg(ModuleOp module) {
  return runPipeline(module, buildAttnToLinalgPipeline);
}
