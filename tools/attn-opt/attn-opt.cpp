//===- attn-opt.cpp - mlir-opt with the attn dialect and passes -----------===//

#include "attn/Linalg/Passes.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/NVGPU/GpuKernel.h"
#include "attn/CPU/Pipeline.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::attn::registerAttnLinalgPasses();
  mlir::attn::registerLinalgPipelines();
  mlir::attn::registerCpuPipeline();
  mlir::attn::registerAttnPasses();
  mlir::attn::registerAttnGPUPasses();
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  registry.insert<mlir::attn::AttnDialect>();
  mlir::attn::registerCodegenDialects(registry);
  mlir::attn::registerGpuCodegenDialects(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "attn optimizer driver\n", registry));
}
