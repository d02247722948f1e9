//===- GpuKernel.cpp - Compile one attn.attention to PTX ------------------===//

#include "KernelBuilding.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::attn;

static llvm::Error makeError(const Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Expected<GpuKernelArtifact>
mlir::attn::compileAttentionForGpu(ModuleOp module, const GpuOptions &options) {
  SmallVector<AttentionOp> ops;
  module.walk([&](AttentionOp op) { ops.push_back(op); });
  if (ops.size() != 1)
    return makeError("attn-nvgpu: expected exactly one attn.attention, found " +
                     Twine(ops.size()));
  return compileAttentionForGpu(ops.front(), options);
}

llvm::Expected<GpuKernelArtifact>
mlir::attn::compileAttentionForGpu(AttentionOp op, const GpuOptions &options) {
  MLIRContext *context = op.getContext();
  DialectRegistry registry;
  registerGpuCodegenDialects(registry);
  context->appendDialectRegistry(registry);
  context->loadDialect<arith::ArithDialect, gpu::GPUDialect,
                       LLVM::LLVMDialect, math::MathDialect, NVVM::NVVMDialect,
                       scf::SCFDialect, vector::VectorDialect>();

  // Diagnostics become the error message instead of going to stderr.
  std::string diagnostics;
  ScopedDiagnosticHandler handler(context, [&](Diagnostic &diag) {
    llvm::raw_string_ostream os(diagnostics);
    os << diag << "\n";
    return success();
  });

  OwningOpRef<ModuleOp> container = ModuleOp::create(op.getLoc());
  (*container)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                        UnitAttr::get(context));
  OpBuilder builder(context);
  builder.setInsertionPointToEnd(container->getBody());
  GpuKernelArtifact artifact;
  artifact.kernelName = "attn_fwd";
  if (failed(buildAttentionGpuModule(builder, op, options, "attn_gpu",
                                     artifact.kernelName,
                                     artifact.signature)))
    return makeError("attn-nvgpu: cannot build the kernel: " + diagnostics);

  PassManager pm(context);
  addGpuLoweringPasses(pm, options);
  if (failed(pm.run(*container)))
    return makeError("attn-nvgpu: lowering to PTX failed: " + diagnostics);

  gpu::BinaryOp binary;
  container->walk([&](gpu::BinaryOp op) { binary = op; });
  if (!binary || binary.getObjects().size() != 1)
    return makeError("attn-nvgpu: no gpu.binary was produced");
  auto object = cast<gpu::ObjectAttr>(binary.getObjects()[0]);
  if (object.getFormat() != gpu::CompilationTarget::Assembly)
    return makeError("attn-nvgpu: the gpu.binary does not hold PTX");
  artifact.ptx = object.getObject().getValue().str();

  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  artifact.chip = options.chip;
  artifact.blockM = options.blockM;
  artifact.blockDim[0] = getAttentionThreadsPerBlock(options);
  artifact.dynamicSharedMemoryBytes =
      getAttentionSharedMemoryBytes(op, options);
  artifact.elementType = query.getElementType().isBF16() ? "bf16" : "f16";
  artifact.outputElementType = options.outputElementType;
  artifact.headDim = query.getDimSize(3);
  artifact.valueDim = value.getDimSize(3);
  artifact.hasLse = static_cast<bool>(op.getLse());
  artifact.hasSink = static_cast<bool>(op.getSink());
  return artifact;
}

static StringRef kindName(GpuKernelParam::Kind kind) {
  switch (kind) {
  case GpuKernelParam::Kind::Pointer:
    return "ptr";
  case GpuKernelParam::Kind::I32:
    return "i32";
  case GpuKernelParam::Kind::I64:
    return "i64";
  case GpuKernelParam::Kind::F32:
    return "f32";
  case GpuKernelParam::Kind::F64:
    return "f64";
  }
  llvm_unreachable("unknown parameter kind");
}

std::string mlir::attn::describeGpuKernel(const GpuKernelArtifact &artifact) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv(
      "{{\"kernel\": \"{0}\", \"chip\": \"{1}\", \"dtype\": \"{2}\", "
      "\"D\": {3}, \"E\": {4}, \"block\": [{5}, 1, 1], "
      "\"grid\": [\"ceil(M/{6})\", \"H\", \"B\"], \"block_m\": {6}, "
      "\"shared_bytes\": {7}, \"lse\": {8}, \"sink\": {9}, \"params\": [",
      artifact.kernelName, artifact.chip, artifact.elementType,
      artifact.headDim, artifact.valueDim, artifact.blockDim[0],
      artifact.blockM, artifact.dynamicSharedMemoryBytes,
      artifact.hasLse ? "true" : "false",
      artifact.hasSink ? "true" : "false");
  llvm::interleave(
      artifact.signature.params, os,
      [&](const GpuKernelParam &param) {
        os << "[\"" << param.name << "\", \"" << kindName(param.kind)
           << "\"]";
      },
      ", ");
  os << "], \"captures\": [";
  llvm::interleave(
      artifact.signature.captures, os,
      [&](const GpuCapture &capture) {
        os << llvm::formatv("{{\"source\": \"{0}\", \"tensor\": {1}, "
                            "\"type\": \"{2}\", \"rank\": {3}, "
                            "\"first_param\": {4}}",
                            capture.source,
                            capture.isTensor ? "true" : "false",
                            capture.elementType, capture.rank,
                            capture.firstParam);
      },
      ", ");
  os << "]}";
  return text;
}
