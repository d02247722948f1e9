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
#include "llvm/Support/raw_ostream.h"

#include <mutex>
#include <optional>
#include <thread>

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

/// Lowers the single gpu.module of `container` to PTX.
/// Its diagnostics go to the context's handler.
static llvm::Expected<std::string> lowerToPtx(ModuleOp container,
                                              const GpuOptions &options) {
  PassManager pm(container.getContext());
  addGpuLoweringPasses(pm, options);
  if (failed(pm.run(container)))
    return makeError("attn-nvgpu: lowering to PTX failed");
  gpu::BinaryOp binary;
  container.walk([&](gpu::BinaryOp op) { binary = op; });
  if (!binary || binary.getObjects().size() != 1)
    return makeError("attn-nvgpu: no gpu.binary was produced");
  auto object = cast<gpu::ObjectAttr>(binary.getObjects()[0]);
  if (object.getFormat() != gpu::CompilationTarget::Assembly)
    return makeError("attn-nvgpu: the gpu.binary does not hold PTX");
  return object.getObject().getValue().str();
}

/// Lowers each of `containers` (one gpu.module each) to PTX, side by side:
/// most of the time is LLVM's, and each has its own LLVM context. The
/// passes' dialects are loaded first: a context cannot load dialects from
/// two threads at once. The first failure is reported with `diagnostics`,
/// read after every thread is done.
static llvm::Expected<SmallVector<std::string>>
lowerAllToPtx(ArrayRef<ModuleOp> containers, const GpuOptions &options,
              const std::string &diagnostics) {
  MLIRContext *context = containers.front()->getContext();
  if (containers.size() > 1) {
    PassManager pm(context);
    addGpuLoweringPasses(pm, options);
    DialectRegistry dependent;
    pm.getDependentDialects(dependent);
    context->appendDialectRegistry(dependent);
    for (StringRef name : dependent.getDialectNames())
      context->getOrLoadDialect(name);
  }
  SmallVector<std::optional<llvm::Expected<std::string>>> ptx(
      containers.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < containers.size(); ++i)
    threads.emplace_back(
        [&, i] { ptx[i].emplace(lowerToPtx(containers[i], options)); });
  ptx[0].emplace(lowerToPtx(containers[0], options));
  for (std::thread &thread : threads)
    thread.join();
  // Every result must be consumed; the first failure is reported.
  std::optional<llvm::Error> failure;
  SmallVector<std::string> results;
  for (auto &result : ptx) {
    if (*result) {
      results.push_back(std::move(**result));
      continue;
    }
    llvm::Error error = result->takeError();
    if (failure)
      llvm::consumeError(std::move(error));
    else
      failure =
          makeError(llvm::toString(std::move(error)) + ": " + diagnostics);
  }
  if (failure)
    return std::move(*failure);
  return results;
}

namespace {
/// What compiling one attention (forward or backward) for a GPU shares: the
/// code generator's dialects loaded, diagnostics collected as the error
/// message instead of going to stderr, and gpu.module containers.
class GpuCompilation {
public:
  GpuCompilation(Operation *op)
      : context(op->getContext()), loc(op->getLoc()), builder(context),
        handler(context, [this](Diagnostic &diag) {
          std::lock_guard<std::mutex> lock(diagnosticsMutex);
          llvm::raw_string_ostream os(diagnostics);
          os << diag << "\n";
          return success();
        }) {
    DialectRegistry registry;
    registerGpuCodegenDialects(registry);
    context->appendDialectRegistry(registry);
    context->loadDialect<arith::ArithDialect, gpu::GPUDialect,
                         LLVM::LLVMDialect, math::MathDialect,
                         NVVM::NVVMDialect, scf::SCFDialect,
                         vector::VectorDialect>();
  }

  /// A new container module; the builder inserts into it.
  OwningOpRef<ModuleOp> makeContainer() {
    OwningOpRef<ModuleOp> container = ModuleOp::create(loc);
    (*container)
        ->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                  UnitAttr::get(context));
    builder.setInsertionPointToEnd(container->getBody());
    return container;
  }

  /// A container with one kernel per einsum of `einsums` (those that run
  /// around the attention's own kernels), in `kernels`; null when there are
  /// none.
  llvm::Expected<OwningOpRef<ModuleOp>>
  buildEinsumKernels(ArrayRef<EinsumOp> einsums, StringRef moduleName,
                     StringRef kernelPrefix, StringRef what,
                     std::vector<GpuPrologueKernel> &kernels) {
    if (einsums.empty())
      return OwningOpRef<ModuleOp>();
    OwningOpRef<ModuleOp> container = makeContainer();
    if (failed(buildPrologueGpuModule(builder, einsums, moduleName,
                                      kernelPrefix, kernels)))
      return fail(what);
    return container;
  }

  /// "cannot build `what`", with the diagnostics.
  llvm::Error fail(const Twine &what) {
    return makeError("attn-nvgpu: cannot build " + what + ": " + diagnostics);
  }

  /// PTX of each of `containers`, side by side.
  llvm::Expected<SmallVector<std::string>>
  lower(ArrayRef<ModuleOp> containers, const GpuOptions &options) {
    return lowerAllToPtx(containers, options, diagnostics);
  }

  OpBuilder &getBuilder() { return builder; }

private:
  MLIRContext *context;
  Location loc;
  OpBuilder builder;
  std::string diagnostics;
  std::mutex diagnosticsMutex;
  ScopedDiagnosticHandler handler;
};
} // namespace

llvm::Expected<GpuKernelArtifact>
mlir::attn::compileAttentionForGpu(AttentionOp op, const GpuOptions &options) {
  GpuCompilation compilation(op);
  OpBuilder &builder = compilation.getBuilder();
  GpuKernelArtifact artifact;
  artifact.kernelName = "attn_fwd";
  OwningOpRef<ModuleOp> container = compilation.makeContainer();
  if (failed(buildAttentionGpuModule(builder, op, options, "attn_gpu",
                                     artifact.kernelName,
                                     artifact.signature)))
    return compilation.fail("the kernel");
  OwningOpRef<ModuleOp> decodeContainer;
  if (options.decode && supportsGpuDecode(op)) {
    decodeContainer = compilation.makeContainer();
    GpuKernelSignature same;
    if (failed(buildDecodeGpuModule(builder, op, options, "attn_gpu_decode",
                                    artifact.kernelName, same)))
      return compilation.fail("the decode kernels");
  }
  OwningOpRef<ModuleOp> wgmmaContainer;
  GpuWgmmaKernel wgmma;
  if (buildsWgmmaAttention(op, options)) {
    wgmmaContainer = compilation.makeContainer();
    if (failed(buildWgmmaGpuModule(builder, op, options, "attn_gpu_wgmma",
                                   artifact.kernelName, wgmma)))
      return compilation.fail("the Hopper kernel");
  }
  std::vector<GpuPrologueKernel> prologueKernels;
  llvm::Expected<OwningOpRef<ModuleOp>> prologueContainer =
      compilation.buildEinsumKernels(
          getPrologueEinsums(op), "attn_gpu_prologue",
          artifact.kernelName + "_prologue", "the prologue kernels",
          prologueKernels);
  if (!prologueContainer)
    return prologueContainer.takeError();

  SmallVector<ModuleOp> containers = {*container};
  if (decodeContainer)
    containers.push_back(*decodeContainer);
  if (wgmmaContainer)
    containers.push_back(*wgmmaContainer);
  if (*prologueContainer)
    containers.push_back(**prologueContainer);
  llvm::Expected<SmallVector<std::string>> ptx =
      compilation.lower(containers, options);
  if (!ptx)
    return ptx.takeError();
  artifact.ptx = std::move((*ptx)[0]);
  size_t next = 1;
  if (decodeContainer)
    artifact.decode = GpuDecodeKernels{
        std::move((*ptx)[next++]), artifact.kernelName + "_decode",
        artifact.kernelName + "_merge", getDecodeSharedMemoryBytes(op)};
  if (wgmmaContainer) {
    wgmma.ptx = std::move((*ptx)[next++]);
    artifact.wgmma = std::move(wgmma);
  }
  if (*prologueContainer)
    artifact.prologue =
        GpuPrologue{std::move((*ptx)[next++]), std::move(prologueKernels)};

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
  if (usesGpuTileList(op))
    artifact.tileList =
        GpuTileList{artifact.kernelName + "_tiles", options.blockM,
                    getAttentionBlockN(op, options),
                    !op.getTileClass().getArgument(1).use_empty()};
  return artifact;
}

llvm::Expected<GpuBackwardKernels>
mlir::attn::compileAttentionBackwardForGpu(AttentionBackwardOp op,
                                           const GpuOptions &options) {
  GpuCompilation compilation(op);
  OwningOpRef<ModuleOp> container = compilation.makeContainer();
  GpuBackwardKernels kernels;
  if (failed(buildBackwardGpuModule(compilation.getBuilder(), op,
                                    "attn_gpu_bwd", "attn_bwd", options,
                                    kernels)))
    return compilation.fail("the backward kernels");
  std::vector<GpuPrologueKernel> epilogueKernels;
  llvm::Expected<OwningOpRef<ModuleOp>> epilogueContainer =
      compilation.buildEinsumKernels(getEpilogueEinsums(op),
                                     "attn_gpu_bwd_epilogue",
                                     "attn_bwd_epilogue",
                                     "the epilogue kernels", epilogueKernels);
  if (!epilogueContainer)
    return epilogueContainer.takeError();
  SmallVector<ModuleOp> containers = {*container};
  if (*epilogueContainer)
    containers.push_back(**epilogueContainer);
  llvm::Expected<SmallVector<std::string>> ptx =
      compilation.lower(containers, options);
  if (!ptx)
    return ptx.takeError();
  kernels.ptx = std::move((*ptx)[0]);
  if (*epilogueContainer)
    kernels.epilogue =
        GpuPrologue{std::move((*ptx)[1]), std::move(epilogueKernels)};
  return kernels;
}

GpuKernelParam mlir::attn::getFixedParam(FixedParam param) {
  using Kind = GpuKernelParam::Kind;
  static const GpuKernelParam params[kNumFixedParams] = {
      {"q", Kind::Pointer},         {"k", Kind::Pointer},
      {"v", Kind::Pointer},         {"o", Kind::Pointer},
      {"lse", Kind::Pointer},       {"sink", Kind::Pointer},
      {"B", Kind::I32},             {"H", Kind::I32},
      {"G", Kind::I32},             {"M", Kind::I32},
      {"N", Kind::I32},             {"q.stride.b", Kind::I64},
      {"q.stride.h", Kind::I64},    {"q.stride.m", Kind::I64},
      {"k.stride.b", Kind::I64},    {"k.stride.g", Kind::I64},
      {"k.stride.n", Kind::I64},    {"v.stride.b", Kind::I64},
      {"v.stride.g", Kind::I64},    {"v.stride.n", Kind::I64},
      {"o.stride.b", Kind::I64},    {"o.stride.h", Kind::I64},
      {"o.stride.m", Kind::I64},    {"lse.stride.b", Kind::I64},
      {"lse.stride.h", Kind::I64},  {"sink.stride.b", Kind::I64},
      {"sink.stride.h", Kind::I64}, {"sink.stride.m", Kind::I64},
      {"scale", Kind::F32},         {"partials", Kind::Pointer},
      {"splits", Kind::I32},        {"tiles", Kind::Pointer},
      {"do", Kind::Pointer},        {"do.stride.b", Kind::I64},
      {"do.stride.h", Kind::I64},   {"do.stride.m", Kind::I64},
      {"dlse", Kind::Pointer},      {"dlse.stride.b", Kind::I64},
      {"dlse.stride.h", Kind::I64}, {"dlse.stride.m", Kind::I64},
      {"do16", Kind::Pointer},      {"delta", Kind::Pointer},
      {"dsink", Kind::Pointer},     {"read_grad", Kind::Pointer},
      {"dq", Kind::Pointer},
      {"dq.stride.b", Kind::I64},   {"dq.stride.h", Kind::I64},
      {"dq.stride.m", Kind::I64},   {"dk", Kind::Pointer},
      {"dk.stride.b", Kind::I64},   {"dk.stride.g", Kind::I64},
      {"dk.stride.n", Kind::I64},   {"dv", Kind::Pointer},
      {"dv.stride.b", Kind::I64},   {"dv.stride.g", Kind::I64},
      {"dv.stride.n", Kind::I64}};
  return params[static_cast<unsigned>(param)];
}
