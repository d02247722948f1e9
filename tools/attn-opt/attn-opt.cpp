//===- attn-opt.cpp - mlir-opt with the attn dialect and passes -----------===//

#include "attn/Conversion/Passes.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/GPU/GpuKernel.h"
#include "attn/Pipelines/Pipelines.h"
#include "attn/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::attn::registerAttnConversionPasses();
  mlir::attn::registerAttnPipelines();
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
