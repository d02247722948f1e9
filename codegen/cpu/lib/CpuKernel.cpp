//===- CpuKernel.cpp - A kernel compiled in process for the host ----------===//

#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/DiagnosticCollector.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/CPU/ObjectEmitter.h"
#include "attn/CPU/ObjectLoader.h"
#include "attn/CPU/OpenMPRuntime.h"
#include "attn/CPU/Pipeline.h"
#include "attn/Halide/HalideEntry.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <atomic>
#include <chrono>
#include <thread>

using namespace attn;

unsigned attn::HalideScheduleOptions::getParallelism() const {
  if (parallelism)
    return parallelism;
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// Notes whether an attn.attention or attn.attention_backward exists after
/// some pass: the raising passes make one from a recognised cascade, and the
/// fused lowering consumes it, so the final module no longer shows which
/// path was taken.
class AttentionWatcher : public mlir::PassInstrumentation {
public:
  explicit AttentionWatcher(std::atomic<bool> &seen) : seen(seen) {}

  void runAfterPass(mlir::Pass *, mlir::Operation *op) override {
    if (seen.load(std::memory_order_relaxed))
      return;
    mlir::WalkResult result = op->walk([](mlir::Operation *inner) {
      return mlir::isa<mlir::attn::AttentionOp,
                       mlir::attn::AttentionBackwardOp>(inner)
                 ? mlir::WalkResult::interrupt()
                 : mlir::WalkResult::advance();
    });
    if (result.wasInterrupted())
      seen.store(true, std::memory_order_relaxed);
  }

private:
  std::atomic<bool> &seen;
};

/// Runs the CPU pipeline on `module`; returns the CpuKernelFlags it learned.
llvm::Expected<uint32_t> lowerKernel(mlir::ModuleOp module,
                                     const CpuKernelOptions &options,
                                     llvm::StringRef name) {
  mlir::MLIRContext *context = module->getContext();
  mlir::DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  context->appendDialectRegistry(registry);
  DiagnosticCollector diagnostics(context);
  mlir::PassManager pm(context);
  if (options.timePasses)
    pm.enableTiming();
  std::atomic<bool> sawAttention{false};
  pm.addInstrumentation(std::make_unique<AttentionWatcher>(sawAttention));
  mlir::attn::buildCpuPipeline(pm, options.pipeline);
  if (mlir::failed(pm.run(module)))
    return diagnostics.takeError(
        "lowering kernel '" + name + "' with attn-cpu-pipeline (" +
        (options.pipeline.fused ? "fused" : "unfused") + ") failed");
  return sawAttention.load() ? uint32_t(kFusedPath) : uint32_t(0);
}

} // namespace

CpuKernel::~CpuKernel() = default;

llvm::Expected<CpuKernelObject>
attn::compileCpuKernelObject(mlir::ModuleOp module, const CpuTarget &target,
                             const CpuKernelOptions &options) {
  using Clock = std::chrono::steady_clock;
  llvm::Expected<KernelSignature> signature = KernelSignature::read(module);
  if (!signature)
    return signature.takeError();
  CpuKernelObject result;
  result.signature = std::move(*signature);
  CpuCompileStats &stats = result.stats;

  auto start = Clock::now();
  llvm::Expected<uint32_t> flags =
      lowerKernel(module, options, result.signature.name);
  if (!flags)
    return flags.takeError();
  result.flags = *flags;
  stats.lowerSeconds = secondsSince(start);

  start = Clock::now();
  llvm::Expected<std::unique_ptr<llvm::TargetMachine>> tm =
      createCpuTargetMachine(target, options.optLevel);
  if (!tm)
    return tm.takeError();
  llvm::LLVMContext context;
  llvm::Expected<std::unique_ptr<llvm::Module>> llvmModule =
      translateAndOptimize(module, context, **tm, options.optLevel);
  if (!llvmModule)
    return llvmModule.takeError();
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> object =
      emitObjectFile(**llvmModule, **tm);
  if (!object)
    return object.takeError();
  result.object = std::move(*object);
  stats.codegenSeconds = secondsSince(start);

  return result;
}

std::vector<std::string>
attn::describeCpuCompile(const CpuTarget &target,
                         const CpuKernelOptions &options) {
  std::vector<std::string> fields{"triple=" + target.triple,
                                  "cpu=" + target.cpu,
                                  "features=" + target.features,
                                  "opt=" + std::to_string(options.optLevel)};
  for (std::string &field : options.pipeline.describe())
    fields.push_back(std::move(field));
  return fields;
}

llvm::Expected<std::unique_ptr<CpuKernel>>
CpuKernel::compile(mlir::ModuleOp module, const CpuKernelOptions &options) {
  llvm::Expected<CpuTarget> host = getHostCpuTarget();
  if (!host)
    return host.takeError();
  llvm::Expected<CpuKernelObject> object =
      compileCpuKernelObject(module, *host, options);
  if (!object)
    return object.takeError();
  return load(std::move(*object), options.threads);
}

llvm::Expected<std::unique_ptr<CpuKernel>>
CpuKernel::load(CpuKernelObject object, unsigned threads) {
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<CpuKernel> kernel(new CpuKernel());
  kernel->signature = std::move(object.signature);
  kernel->stats = std::move(object.stats);
  kernel->flags = object.flags;
  kernel->threads = threads ? threads : getDefaultThreadCount();
  llvm::Expected<std::unique_ptr<LoadedObject>> loaded =
      LoadedObject::load(std::move(object.object), object.supportObject.get());
  if (!loaded)
    return loaded.takeError();
  kernel->loaded = std::move(*loaded);
  if (kernel->isHalide()) {
    llvm::Expected<std::unique_ptr<HalideEntry>> halide = HalideEntry::bind(
        kernel->signature.name,
        [&](llvm::StringRef name) { return kernel->loaded->lookup(name); });
    if (!halide)
      return halide.takeError();
    kernel->halide = std::move(*halide);
    kernel->stats.loadSeconds += secondsSince(start);
    return kernel;
  }
  llvm::Expected<void *> entry =
      kernel->loaded->lookup(kPackedPrefix + kernel->signature.name);
  if (!entry)
    return entry.takeError();
  kernel->entry = reinterpret_cast<void (*)(void **)>(*entry);
  kernel->stats.loadSeconds += secondsSince(start);
  return kernel;
}

bool CpuKernel::usesOpenMP() const { return loaded && loaded->usesOpenMP(); }

llvm::Error CpuKernel::run(llvm::ArrayRef<int64_t> dims,
                           llvm::ArrayRef<const HostTensor *> inputs,
                           llvm::ArrayRef<double> params,
                           llvm::ArrayRef<HostTensor *> outputs) {
  std::vector<TensorView> inputViews, outputViews;
  for (const HostTensor *input : inputs)
    inputViews.push_back(TensorView::of(*input));
  for (const HostTensor *output : outputs)
    outputViews.push_back(TensorView::of(*output));
  return run(dims, inputViews, params, outputViews);
}

llvm::Error CpuKernel::run(llvm::ArrayRef<int64_t> dims,
                           llvm::ArrayRef<TensorView> inputs,
                           llvm::ArrayRef<double> params,
                           llvm::ArrayRef<TensorView> outputs) {
  const KernelSignature &sig = signature;
  if (dims.size() != sig.dims.size() || inputs.size() != sig.inputs.size() ||
      params.size() != sig.params.size() ||
      outputs.size() != sig.outputs.size())
    return makeError("kernel '" + sig.name + "' takes " +
                     llvm::Twine(sig.dims.size()) + " dims, " +
                     llvm::Twine(sig.inputs.size()) + " inputs, " +
                     llvm::Twine(sig.params.size()) + " params and " +
                     llvm::Twine(sig.outputs.size()) + " outputs");
  auto check = [&](const TensorView &tensor, const KernelTensor &want,
                   const char *what, size_t i) -> llvm::Error {
    int64_t rank = static_cast<int64_t>(tensor.shape.size());
    if (tensor.type == want.dtype && rank == want.getRank())
      return llvm::Error::success();
    std::string shape;
    for (int64_t size : tensor.shape)
      shape += (shape.empty() ? "" : ", ") + std::to_string(size);
    return makeError("kernel '" + sig.name + "' " + what + " #" +
                     llvm::Twine(i) + " ('" + want.name + "') is " +
                     dtypeName(tensor.type) + "[" + shape +
                     "], expected a rank-" + llvm::Twine(want.getRank()) + " " +
                     dtypeName(want.dtype) + " tensor");
  };
  for (size_t i = 0; i < inputs.size(); ++i)
    if (llvm::Error error = check(inputs[i], sig.inputs[i], "input", i))
      return error;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (llvm::Error error = check(outputs[i], sig.outputs[i], "output", i))
      return error;

  if (halide)
    return halide->run(sig, dims, inputs, params, outputs, threads);

  // The packed convention: one pointer per LLVM-level argument. A memref is
  // (allocated, aligned, offset, sizes..., strides...); a scalar is itself.
  // Storage is reserved up front so the pointers into it stay valid.
  size_t numInts = dims.size();
  for (const TensorView &t : inputs)
    numInts += 1 + 2 * t.shape.size();
  for (const TensorView &t : outputs)
    numInts += 1 + 2 * t.shape.size();
  std::vector<int64_t> ints;
  ints.reserve(numInts);
  std::vector<void *> pointers;
  pointers.reserve(2 * (inputs.size() + outputs.size()));
  std::vector<KernelScalar> scalars(params.size());
  std::vector<void *> args;

  auto addInt = [&](int64_t value) {
    ints.push_back(value);
    args.push_back(&ints.back());
  };
  auto addMemRef = [&](const TensorView &tensor) {
    for (int copy = 0; copy < 2; ++copy) {
      pointers.push_back(tensor.data);
      args.push_back(&pointers.back());
    }
    addInt(0);
    for (int64_t size : tensor.shape)
      addInt(size);
    // Row-major strides, innermost last.
    size_t first = ints.size();
    for (size_t d = 0; d < tensor.shape.size(); ++d)
      addInt(1);
    for (size_t d = tensor.shape.size(); d-- > 1;)
      ints[first + d - 1] = ints[first + d] * tensor.shape[d];
  };

  for (int64_t dim : dims)
    addInt(dim);
  for (const TensorView &input : inputs)
    addMemRef(input);
  for (size_t i = 0; i < params.size(); ++i) {
    scalars[i] = KernelScalar::of(sig.params[i].dtype, params[i]);
    args.push_back(&scalars[i]);
  }
  for (const TensorView &output : outputs)
    addMemRef(output);

  // The thread count is per calling thread in OpenMP: set it on the thread
  // that starts the parallel regions.
  if (usesOpenMP())
    setOpenMPThreads(threads);
  entry(args.data());
  return llvm::Error::success();
}

llvm::Expected<std::string>
attn::emitLLVMIR(mlir::ModuleOp module, unsigned optLevel,
                 const mlir::attn::CpuPipelineOptions &pipeline) {
  llvm::Expected<KernelSignature> signature = KernelSignature::read(module);
  std::string name = signature ? signature->name : "";
  if (!signature)
    llvm::consumeError(signature.takeError());
  CpuKernelOptions options;
  options.optLevel = optLevel;
  options.pipeline = pipeline;
  if (llvm::Expected<uint32_t> flags = lowerKernel(module, options, name);
      !flags)
    return flags.takeError();
  llvm::Expected<CpuTarget> host = getHostCpuTarget();
  if (!host)
    return host.takeError();
  llvm::Expected<std::unique_ptr<llvm::TargetMachine>> tm =
      createCpuTargetMachine(*host, optLevel);
  if (!tm)
    return tm.takeError();
  llvm::LLVMContext context;
  llvm::Expected<std::unique_ptr<llvm::Module>> llvmModule =
      translateAndOptimize(module, context, **tm, optLevel);
  if (!llvmModule)
    return llvmModule.takeError();
  std::string text;
  llvm::raw_string_ostream os(text);
  (*llvmModule)->print(os, nullptr);
  return text;
}
