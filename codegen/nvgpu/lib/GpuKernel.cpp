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
#include "mlir/Support/Timing.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <atomic>
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

namespace {
/// What compiling attentions (a forward, a backward, or both) for a GPU
/// shares: the code generator's dialects loaded, diagnostics collected as the
/// error message instead of going to stderr, and the gpu.module containers.
/// Every container is built before any is lowered, so that `lower` runs all
/// of their lowerings side by side.
class GpuCompilation {
public:
  explicit GpuCompilation(MLIRContext *context)
      : context(context), builder(context),
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

  /// Builds the modules of `op`'s kernels and fills `artifact` but its PTX,
  /// which `lower` writes: `artifact` must stay where it is until then.
  llvm::Error addForward(AttentionOp op, const GpuOptions &options,
                         GpuKernelArtifact &artifact);
  /// The same for the backward kernels of `op`.
  llvm::Error addBackward(AttentionBackwardOp op, const GpuOptions &options,
                          GpuBackwardKernels &kernels);

  /// Lowers every container built to PTX, each into the place its builder
  /// gave.
  llvm::Error lower();

private:
  /// A container holding one gpu.module, and where its PTX goes.
  struct Container {
    OwningOpRef<ModuleOp> module;
    GpuOptions options;
    std::string *ptx;
  };

  /// A new container for `options`, whose PTX goes to `ptx`; the builder
  /// inserts into it.
  void makeContainer(Location loc, const GpuOptions &options, std::string &ptx);

  /// A container with one kernel per einsum of `einsums` (those that run
  /// around the attention's own kernels), in `prologue`; nothing when there
  /// are none.
  llvm::Error addEinsumKernels(ArrayRef<EinsumOp> einsums, Location loc,
                               const GpuOptions &options, StringRef moduleName,
                               StringRef kernelPrefix, StringRef what,
                               std::optional<GpuPrologue> &prologue);

  /// "cannot build `what`", with the diagnostics.
  llvm::Error fail(const Twine &what) {
    return makeError("attn-nvgpu: cannot build " + what + ": " + diagnostics);
  }

  MLIRContext *context;
  OpBuilder builder;
  std::vector<Container> containers;
  std::string diagnostics;
  std::mutex diagnosticsMutex;
  ScopedDiagnosticHandler handler;
};
} // namespace

void GpuCompilation::makeContainer(Location loc, const GpuOptions &options,
                                   std::string &ptx) {
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  (*module)->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                     UnitAttr::get(context));
  builder.setInsertionPointToEnd(module->getBody());
  containers.push_back({std::move(module), options, &ptx});
}

llvm::Error GpuCompilation::addEinsumKernels(
    ArrayRef<EinsumOp> einsums, Location loc, const GpuOptions &options,
    StringRef moduleName, StringRef kernelPrefix, StringRef what,
    std::optional<GpuPrologue> &prologue) {
  if (einsums.empty())
    return llvm::Error::success();
  prologue.emplace();
  makeContainer(loc, options, prologue->ptx);
  if (failed(buildPrologueGpuModule(builder, einsums, moduleName, kernelPrefix,
                                    prologue->kernels)))
    return fail(what);
  return llvm::Error::success();
}

llvm::Error GpuCompilation::addForward(AttentionOp op,
                                       const GpuOptions &options,
                                       GpuKernelArtifact &artifact) {
  Location loc = op.getLoc();
  artifact.kernelName = "attn_fwd";
  makeContainer(loc, options, artifact.ptx);
  if (failed(buildAttentionGpuModule(builder, op, options, "attn_gpu",
                                     artifact.kernelName, artifact.signature)))
    return fail("the kernel");
  if (options.decode && supportsGpuDecode(op)) {
    artifact.decode = GpuDecodeKernels{"", artifact.kernelName + "_decode",
                                       artifact.kernelName + "_merge",
                                       getDecodeSharedMemoryBytes(op)};
    makeContainer(loc, options, artifact.decode->ptx);
    GpuKernelSignature same;
    if (failed(buildDecodeGpuModule(builder, op, options, "attn_gpu_decode",
                                    artifact.kernelName, same)))
      return fail("the decode kernels");
  }
  if (buildsWgmmaAttention(op, options)) {
    artifact.wgmma.emplace();
    makeContainer(loc, options, artifact.wgmma->ptx);
    if (failed(buildWgmmaGpuModule(builder, op, options, "attn_gpu_wgmma",
                                   artifact.kernelName, *artifact.wgmma)))
      return fail("the Hopper kernel");
  }
  if (llvm::Error error = addEinsumKernels(
          getPrologueEinsums(op), loc, options, "attn_gpu_prologue",
          artifact.kernelName + "_prologue", "the prologue kernels",
          artifact.prologue))
    return error;

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
  return llvm::Error::success();
}

llvm::Error GpuCompilation::addBackward(AttentionBackwardOp op,
                                        const GpuOptions &options,
                                        GpuBackwardKernels &kernels) {
  Location loc = op.getLoc();
  makeContainer(loc, options, kernels.ptx);
  if (failed(buildBackwardGpuModule(builder, op, "attn_gpu_bwd", "attn_bwd",
                                    options, kernels)))
    return fail("the backward kernels");
  return addEinsumKernels(getEpilogueEinsums(op), loc, options,
                          "attn_gpu_bwd_epilogue", "attn_bwd_epilogue",
                          "the epilogue kernels", kernels.epilogue);
}

/// Lowers the single gpu.module of `container` to PTX, its passes timed
/// under `timing` if given. Its diagnostics go to the context's handler.
static llvm::Expected<std::string>
lowerToPtx(ModuleOp container, const GpuOptions &options, TimingScope *timing) {
  PassManager pm(container.getContext());
  if (timing)
    pm.enableTiming(*timing);
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

/// Operations in `container`, which the time its lowering takes roughly
/// grows with.
static size_t countOperations(ModuleOp container) {
  size_t count = 0;
  container->walk([&](Operation *) { ++count; });
  return count;
}

/// Most of the time is LLVM's, and each lowering has its own LLVM context, so
/// the containers are lowered side by side: by at most one thread per
/// hardware thread (the calling thread among them), each taking the next
/// container, largest first. The largest one, which the others cannot
/// shorten, then has a core to itself from the start and the others fill the
/// rest; a thread per container would share the cores among all of them and
/// finish the largest later. A context without threading gets them one by
/// one: its IR must not be used from two threads. The passes' dialects are
/// loaded first: a context cannot load dialects from two threads at once.
/// The first failure, in build order, is reported with the diagnostics, read
/// after every lowering is done.
llvm::Error GpuCompilation::lower() {
  size_t numWorkers = 1;
  if (context->isMultithreadingEnabled())
    numWorkers = std::min<size_t>(
        containers.size(), std::max(1u, std::thread::hardware_concurrency()));
  if (numWorkers > 1) {
    DialectRegistry dependent;
    for (const Container &container : containers) {
      PassManager pm(context);
      addGpuLoweringPasses(pm, container.options);
      pm.getDependentDialects(dependent);
    }
    context->appendDialectRegistry(dependent);
    for (StringRef name : dependent.getDialectNames())
      context->getOrLoadDialect(name);
  }

  SmallVector<size_t> sizes, order;
  for (const Container &container : containers) {
    order.push_back(sizes.size());
    sizes.push_back(countOperations(*container.module));
  }
  llvm::sort(order, [&](size_t a, size_t b) {
    return std::make_pair(sizes[a], b) > std::make_pair(sizes[b], a);
  });

  // One report for every lowering (the threads' timers nest under its root
  // side by side), printed when the manager goes.
  DefaultTimingManager timingManager;
  timingManager.setEnabled(llvm::any_of(
      containers, [](const Container &c) { return c.options.timePasses; }));
  TimingScope timing = timingManager.getRootScope();
  SmallVector<std::optional<llvm::Expected<std::string>>> ptx(
      containers.size());
  std::atomic<size_t> next = 0;
  auto work = [&] {
    for (size_t i; (i = next++) < order.size();) {
      const Container &container = containers[order[i]];
      ptx[order[i]].emplace(
          lowerToPtx(*container.module, container.options,
                     timingManager.isEnabled() ? &timing : nullptr));
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < numWorkers; ++i)
    threads.emplace_back(work);
  work();
  for (std::thread &thread : threads)
    thread.join();

  // Every result must be consumed; the first failure is reported.
  std::optional<llvm::Error> failure;
  for (auto [container, result] : llvm::zip_equal(containers, ptx)) {
    if (*result) {
      *container.ptx = std::move(**result);
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
  return llvm::Error::success();
}

llvm::Expected<GpuKernelArtifact>
mlir::attn::compileAttentionForGpu(AttentionOp op, const GpuOptions &options) {
  GpuCompilation compilation(op.getContext());
  GpuKernelArtifact artifact;
  if (llvm::Error error = compilation.addForward(op, options, artifact))
    return std::move(error);
  if (llvm::Error error = compilation.lower())
    return std::move(error);
  return artifact;
}

llvm::Expected<GpuBackwardKernels>
mlir::attn::compileAttentionBackwardForGpu(AttentionBackwardOp op,
                                           const GpuOptions &options) {
  GpuCompilation compilation(op.getContext());
  GpuBackwardKernels kernels;
  if (llvm::Error error = compilation.addBackward(op, options, kernels))
    return std::move(error);
  if (llvm::Error error = compilation.lower())
    return std::move(error);
  return kernels;
}

llvm::Expected<GpuAttentionWithBackward>
mlir::attn::compileAttentionWithBackwardForGpu(
    AttentionOp forward, const GpuOptions &forwardOptions,
    AttentionBackwardOp backward, const GpuOptions &backwardOptions) {
  assert(forward.getContext() == backward.getContext() &&
         "the forward and the backward must share a context");
  GpuCompilation compilation(forward.getContext());
  GpuAttentionWithBackward result;
  // The backward first: where both cannot be built, its error is the one
  // reported, as when it is compiled first on its own.
  if (llvm::Error error =
          compilation.addBackward(backward, backwardOptions, result.backward))
    return std::move(error);
  if (llvm::Error error =
          compilation.addForward(forward, forwardOptions, result.forward))
    return std::move(error);
  if (llvm::Error error = compilation.lower())
    return std::move(error);
  return result;
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
