//===- attnc.cpp - The attnc driver ---------------------------------------===//
//
// attnc run SPEC      compile, run on random data, optionally check against
//                     the float64 reference evaluator; with --grad the same
//                     for the spec's adjoint kernel and the reference's
//                     reverse mode
// attnc compile SPEC  compile and print an intermediate form, or write the
//                     kernel's object file and its ABI (-o kernel.o|.so),
//                     or with --target sm_90a|sm_80 a GPU kernel package
//                     (-o kernel.attnpkg) for attnc-launch / the runtime
//
//===----------------------------------------------------------------------===//

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/CpuTarget.h"
#include "attn/CPU/ObjectABI.h"
#include "attn/CPU/Pipeline.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/Compile.h"
#include "attn/Driver/CpuBackendChoice.h"
#include "attn/Driver/FatalErrors.h"
#include "attn/Driver/Gradient.h"
#include "attn/Driver/HalideBackend.h"
#include "attn/Driver/Launch.h"
#include "attn/Driver/LaunchMemory.h"
#include "attn/Driver/Spec.h"
#include "attn/Halide/HalideEntry.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Runtime/Package.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unistd.h>

using namespace mlir;
using namespace ::attn;
using mlir::attn::AttentionBackwardOp;
using mlir::attn::AttentionOp;
using mlir::attn::AttnDialect;
using mlir::attn::EinsumOp;
using mlir::attn::IntervalAnalysis;
using mlir::attn::KernelOp;
using mlir::attn::LaunchFacts;
using mlir::attn::ReductionKind;
namespace cl = llvm::cl;

static cl::OptionCategory attncCategory("attnc options");
static cl::SubCommand runCommand("run",
                                 "Compile a spec, run it on random data");
static cl::SubCommand compileCommand("compile",
                                     "Compile a spec and print its IR");

static cl::opt<std::string> specPath(cl::Positional, cl::desc("<spec.attn>"),
                                     cl::Required, cl::sub(runCommand),
                                     cl::sub(compileCommand),
                                     cl::cat(attncCategory));
static cl::opt<std::string>
    shapeList("shape", cl::desc("Sizes of symbolic dims, e.g. B=2,H=16,M=4096"),
              cl::sub(runCommand), cl::sub(compileCommand),
              cl::cat(attncCategory));
static cl::opt<std::string>
    paramList("param", cl::desc("Param values, e.g. window=128,cap=30"),
              cl::sub(runCommand), cl::cat(attncCategory));
static cl::opt<std::string> dtypeOption(
    "dtype",
    cl::desc("Element type of float inputs and outputs: f32, bf16, f16, or "
             "'declared' for the spec's own types (default: f32 for run, "
             "declared for compile)"),
    cl::sub(runCommand), cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<std::string> targetOption(
    "target",
    cl::desc("Target: cpu, or a CUDA chip (sm_90a, sm_80) for which "
             "'compile' writes a kernel package (-o FILE.attnpkg)"),
                                         cl::init("cpu"), cl::sub(runCommand),
                                         cl::sub(compileCommand),
                                         cl::cat(attncCategory));
static cl::opt<bool> checkOption(
    "check", cl::desc("Compare with the float64 reference evaluator"),
    cl::sub(runCommand), cl::cat(attncCategory));
static cl::opt<bool> gradOption(
    "grad",
    cl::desc("Run the adjoint kernel (attn-grad) instead: the gradients of "
             "random output adjoints (dO, ...) with respect to every float "
             "input; with --check, each against the float64 reverse mode. "
             "With compile --target sm_*: the adjoint kernel's package"),
    cl::sub(runCommand), cl::sub(compileCommand), cl::cat(attncCategory));
static cl::list<std::string> gradConstantOption(
    "grad-constant",
    cl::desc("With --grad or --emit=grad: float inputs held constant (no "
             "gradient), e.g. a captured bias table nobody trains"),
    cl::CommaSeparated, cl::value_desc("NAME,..."), cl::sub(compileCommand),
    cl::cat(attncCategory));
static cl::opt<bool> wgmmaOption(
    "wgmma",
    cl::desc("With compile --target sm_90a: add the Hopper forward kernel "
             "(TMA, wgmma, warp specialisation), run where TMA can load the "
             "launch's Q, K and V (default; --wgmma=false leaves the "
             "mma.sync kernel alone)"),
    cl::init(true), cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<bool> deterministicOption(
    "deterministic",
    cl::desc("With compile --grad --target sm_90a: backward kernels that "
             "give the same bits on every run (dQ from a kernel of its own "
             "instead of atomics; slower)"),
    cl::init(false), cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<bool> jsonOption("json",
                                cl::desc("Print one JSON object of results"),
                                cl::sub(runCommand), cl::cat(attncCategory));
static cl::opt<uint64_t> seedOption("seed", cl::desc("Random seed"),
                                    cl::init(1), cl::sub(runCommand),
                                    cl::cat(attncCategory));
static cl::opt<unsigned> repeatOption(
    "repeat", cl::desc("Run the kernel this many times; report the median"),
    cl::init(1), cl::sub(runCommand), cl::cat(attncCategory));

static cl::opt<bool> noCacheOption(
    "no-cache",
    cl::desc("Neither read nor write the compiled-kernel cache "
             "($XDG_CACHE_HOME/attnc)"),
    cl::sub(runCommand), cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<unsigned> threadsOption(
    "threads",
    cl::desc("OpenMP threads of the kernel (default 0: every core)"),
    cl::init(0), cl::sub(runCommand), cl::cat(attncCategory));
static cl::opt<bool> fuseOption(
    "fuse",
    cl::desc("Fuse recognised attention into one online pass on the CPU "
             "(--fuse=false runs the unfused pipeline, e.g. to compare)"),
    cl::init(true), cl::sub(runCommand), cl::sub(compileCommand),
    cl::cat(attncCategory));
static cl::opt<std::string> backendOption(
    "backend",
    cl::desc("CPU code generator: auto (the fused MLIR path where attn-raise "
             "fuses the kernel, else Halide; mlir for objects), mlir, or "
             "halide"),
    cl::init("auto"), cl::sub(runCommand), cl::sub(compileCommand),
    cl::cat(attncCategory));
static cl::opt<std::string> halideSchedulerOption(
    "halide-scheduler",
    cl::desc("Schedule of Halide pipelines: Mullapudi2016 (default), "
             "Li2018, Adams2019 (libHalide14's autoschedulers) or Derived "
             "(attnc's own)"),
    cl::init(HalideScheduleOptions().scheduler), cl::sub(runCommand),
    cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<std::string>
    cpuOption("cpu",
              cl::desc("CPU of the object file (e.g. sapphirerapids, "
                       "x86-64-v4; default: the host)"),
              cl::sub(compileCommand), cl::cat(attncCategory));

enum class EmitKind { Attn, Grad, Linalg, LLVMDialect, LLVMIR, Object };
static cl::opt<EmitKind> emitOption(
    "emit", cl::desc("What to print"), cl::init(EmitKind::Attn),
    cl::values(
        clEnumValN(EmitKind::Attn, "attn", "the attn cascade"),
        clEnumValN(EmitKind::Grad, "grad",
                   "the adjoint kernel <name>_grad (attn-grad), a "
                   "cascade"),
        clEnumValN(EmitKind::Linalg, "linalg", "linalg on tensors (unfused)"),
        clEnumValN(EmitKind::LLVMDialect, "llvm-dialect", "the LLVM dialect"),
        clEnumValN(EmitKind::LLVMIR, "llvm", "LLVM IR"),
        clEnumValN(EmitKind::Object, "obj",
                   "an object file and its ABI (the default when -o "
                   "ends in .o or .so)")),
    cl::sub(compileCommand), cl::cat(attncCategory));
static cl::opt<std::string> outputPath("o", cl::desc("Output file"),
                                       cl::value_desc("path"), cl::init("-"),
                                       cl::sub(compileCommand),
                                       cl::cat(attncCategory));
static cl::opt<bool> timePasses("time-passes",
                                cl::desc("Time each pass of the pipeline"),
                                cl::sub(runCommand), cl::sub(compileCommand),
                                cl::cat(attncCategory));

/// The backend --backend asks for; --fuse=false keeps meaning the unfused
/// MLIR pipeline.
static llvm::Expected<CpuBackend> getRequestedBackend() {
  llvm::Expected<CpuBackend> backend =
      parseCpuBackend(backendOption, "--backend");
  if (backend && *backend == CpuBackend::Auto && !fuseOption)
    return CpuBackend::Mlir;
  return backend;
}

/// Kernel options of --backend, --halide-scheduler, --fuse and --threads,
/// with `dims` (when known) as the Halide schedule's size estimates.
static llvm::Expected<CpuKernelOptions>
getKernelOptions(llvm::ArrayRef<int64_t> dims = {}) {
  llvm::Expected<CpuBackend> backend = getRequestedBackend();
  if (!backend)
    return backend.takeError();
  CpuKernelOptions options;
  options.threads = threadsOption;
  options.timePasses = timePasses;
  options.pipeline.fused = fuseOption;
  options.backend = *backend;
  options.halide.scheduler = halideSchedulerOption;
  options.halide.dimEstimates.assign(dims.begin(), dims.end());
  options.halide.parallelism = threadsOption;
  return options;
}

/// The `path` a run reports.
static const char *getPathName(const CpuKernel &kernel) {
  if (kernel.isHalide())
    return "halide";
  return kernel.isFused() ? "fused" : "unfused";
}

namespace {
using Clock = std::chrono::steady_clock;
double millisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

/// Runs `compiled` --repeat times (none when the launch has no output entry)
/// and gives the median time in milliseconds.
llvm::Expected<double> timeRuns(CpuKernel &compiled, KernelOp kernel,
                                const Launch &launch,
                                ArrayRef<const HostTensor *> inputs,
                                ArrayRef<HostTensor *> outputs) {
  std::vector<double> runTimes;
  bool anythingToCompute = hasOutputEntries(kernel, launch.dims);
  for (unsigned r = 0; r < std::max(1u, (unsigned)repeatOption); ++r) {
    auto runStart = Clock::now();
    if (anythingToCompute)
      if (llvm::Error error =
              compiled.run(launch.dims, inputs, launch.params, outputs))
        return std::move(error);
    runTimes.push_back(millisecondsSince(runStart));
  }
  std::sort(runTimes.begin(), runTimes.end());
  return runTimes[runTimes.size() / 2];
}

/// Writes `text` to `fd` as a JSON string, quotes included, without
/// allocating (it also reports failed allocations).
void writeJsonString(int fd, const char *text) {
  auto put = [&](const char *bytes, size_t size) {
    while (size > 0) {
      ssize_t written = ::write(fd, bytes, size);
      if (written <= 0)
        return;
      bytes += written;
      size -= static_cast<size_t>(written);
    }
  };
  put("\"", 1);
  for (const char *c = text; *c; ++c) {
    if (*c == '"' || *c == '\\') {
      char escaped[2] = {'\\', *c};
      put(escaped, 2);
    } else if (static_cast<unsigned char>(*c) < 0x20) {
      char escaped[8];
      int size = std::snprintf(escaped, sizeof(escaped), "\\u%04x",
                               static_cast<unsigned char>(*c));
      put(escaped, static_cast<size_t>(size));
    } else {
      put(c, 1);
    }
  }
  put("\"", 1);
}

/// With --json, the one JSON object of a run that failed: {"error": ...}.
void printJsonError(const char *message) {
  if (!jsonOption)
    return;
  llvm::outs().flush();
  const char *open = "{\"error\": ";
  (void)!::write(STDOUT_FILENO, open, std::strlen(open));
  writeJsonString(STDOUT_FILENO, message);
  (void)!::write(STDOUT_FILENO, "}\n", 2);
}

int fail(const llvm::Twine &message) {
  std::string text = message.str();
  llvm::WithColor::error(llvm::errs(), "attnc") << text << "\n";
  printJsonError(text.c_str());
  return 1;
}

/// What remains of LLVM's fatal errors outside the compile (an output that
/// cannot be written, memory that runs out): reported like every other
/// error, and the process ends with status 1, without a stack dump. It must
/// not allocate; everything buffered so far is flushed first.
[[noreturn]] void reportFatalError(const char *message) {
  llvm::outs().flush();
  llvm::outs().clear_error();
  const char *prefix = "attnc: error: ";
  (void)!::write(STDERR_FILENO, prefix, std::strlen(prefix));
  (void)!::write(STDERR_FILENO, message, std::strlen(message));
  (void)!::write(STDERR_FILENO, "\n", 1);
  printJsonError(message);
  std::_Exit(1);
}

int fail(llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  return fail(message);
}

/// The artifact cache, unless --no-cache or no home is known.
CacheOptions getCacheOptions() { return CacheOptions::standard(noCacheOption); }

void printWarnings(llvm::ArrayRef<std::string> warnings) {
  for (const std::string &warning : warnings)
    llvm::WithColor::warning(llvm::errs(), "attnc") << warning << "\n";
}

/// The float inputs `--grad-constant` holds constant in the gradient.
std::vector<std::string> getGradConstants() {
  return {gradConstantOption.begin(), gradConstantOption.end()};
}

/// The dims `--shape` fixes at compile time (GPU packages), or nullopt
/// after reporting a malformed list.
std::optional<std::map<std::string, int64_t>> getFixedDims() {
  std::map<std::string, int64_t> fixed;
  if (shapeList.empty())
    return fixed;
  auto parsed = parseShapeList(shapeList);
  if (!parsed) {
    fail(parsed.takeError());
    return std::nullopt;
  }
  for (const auto &entry : *parsed)
    fixed[entry.getKey().str()] = entry.getValue();
  return fixed;
}

/// Runs the front end on the spec file with `--dtype` (and, for GPU
/// packages, `fixedDims`); diagnostics go to stderr with the source line and
/// a caret.
FailureOr<LoadedSpec>
loadSpec(MLIRContext &context, llvm::SourceMgr &sourceMgr,
         std::map<std::string, int64_t> fixedDims = {}) {
  std::optional<std::string> dtype;
  if (dtypeOption.getNumOccurrences())
    dtype = dtypeOption;
  else if (runCommand)
    dtype = "f32";
  llvm::Expected<std::optional<std::string>> checked =
      checkFloatTypeOverride(dtype, targetOption, "--dtype");
  if (!checked) {
    fail(checked.takeError());
    return failure();
  }
  auto buffer = llvm::MemoryBuffer::getFile(specPath, /*IsText=*/true);
  if (std::error_code error = buffer.getError()) {
    fail(llvm::formatv("cannot open '{0}': {1}", specPath, error.message()));
    return failure();
  }
  sourceMgr.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
  ::attn::dsl::FrontendOptions options;
  options.floatTypeOverride = std::move(*checked);
  options.fixedDims = std::move(fixedDims);
  return LoadedSpec::load(sourceMgr, context, options);
}

/// The sizes of a rank-4 tensor of `kernel` that an attention reads: an
/// input's from its shape, an einsum's from its extents (0 where unknown).
static SmallVector<double, 4> attentionOperandSizes(
    KernelOp kernel, Value tensor, const IntervalAnalysis &analysis,
    llvm::ArrayRef<int64_t> dims) {
  SmallVector<double, 4> sizes(4, 0.0);
  if (auto einsum = tensor.getDefiningOp<EinsumOp>()) {
    for (auto [size, extent] : llvm::zip(sizes, einsum.getOutputExtents()))
      size = static_cast<double>(analysis.lookupConstant(extent).value_or(0));
    return sizes;
  }
  auto arg = dyn_cast<BlockArgument>(tensor);
  if (!arg || arg.getOwner() != &kernel.getEntryBlock() ||
      arg.getArgNumber() < kernel.getNumDims())
    return sizes;
  unsigned input = arg.getArgNumber() - kernel.getNumDims();
  if (input >= kernel.getNumInputs())
    return sizes;
  for (auto [size, axis] : llvm::zip(sizes, kernel.getShapeOf(input))) {
    if (auto fixed = dyn_cast<IntegerAttr>(axis))
      size = static_cast<double>(fixed.getInt());
    else if (std::optional<unsigned> dim =
                 kernel.lookupDim(cast<StringAttr>(axis).getValue()))
      size = static_cast<double>(dims[*dim]);
  }
  return sizes;
}

/// Floating-point operations of the cascade: one per elementwise point, two
/// per reduction term; for a raised attention its products over every
/// (query, key) pair, 2 (D + E) each, and for its backward 2 (3 D + 2 E)
/// (S, dP, dV, dK, dQ). It measures the unfused work, not the ideal.
double countCascadeFlops(KernelOp kernel, llvm::ArrayRef<int64_t> dims) {
  IntervalAnalysis analysis(kernel, LaunchFacts{dims, {}, {}});
  double flops = 0;
  for (Operation &op : kernel.getEntryBlock()) {
    if (auto einsum = dyn_cast<EinsumOp>(op)) {
      double points = 1;
      for (Value extent : einsum.getExtents())
        points *=
            static_cast<double>(analysis.lookupConstant(extent).value_or(0));
      flops += points * (einsum.getKind() == ReductionKind::None ? 1 : 2);
      continue;
    }
    Value query, key, value;
    double perPair = 0;
    if (auto attention = dyn_cast<AttentionOp>(op)) {
      query = attention.getQuery(), key = attention.getKey(),
      value = attention.getValue();
      perPair = 1;
    } else if (auto backward = dyn_cast<AttentionBackwardOp>(op)) {
      query = backward.getQuery(), key = backward.getKey(),
      value = backward.getValue();
      perPair = 2;
    } else {
      continue;
    }
    SmallVector<double, 4> q =
        attentionOperandSizes(kernel, query, analysis, dims);
    SmallVector<double, 4> k = attentionOperandSizes(kernel, key, analysis, dims);
    SmallVector<double, 4> v =
        attentionOperandSizes(kernel, value, analysis, dims);
    double pairs = q[0] * q[1] * q[2] * k[2];
    double work = perPair == 1 ? q[3] + v[3] : 3 * q[3] + 2 * v[3];
    flops += 2 * pairs * work;
  }
  return flops;
}

std::string describeDims(KernelOp kernel, llvm::ArrayRef<int64_t> dims) {
  std::string text;
  for (unsigned i = 0; i < kernel.getNumDims(); ++i)
    text += llvm::formatv("{0}{1}={2}", i ? "," : "",
                          cast<StringAttr>(kernel.getDimNames()[i]).getValue(),
                          dims[i]);
  return text;
}

/// The dims of a launch as a JSON object, name -> size.
llvm::json::Object describeDimsJson(KernelOp kernel,
                                    llvm::ArrayRef<int64_t> dims) {
  llvm::json::Object shapes;
  for (unsigned i = 0; i < kernel.getNumDims(); ++i)
    shapes[cast<StringAttr>(kernel.getDimNames()[i]).getValue()] = dims[i];
  return shapes;
}

/// The params of a launch as a JSON object, name -> value.
llvm::json::Object describeParamsJson(KernelOp kernel,
                                      llvm::ArrayRef<double> values) {
  llvm::json::Object params;
  for (unsigned i = 0; i < kernel.getNumParams(); ++i)
    params[cast<StringAttr>(kernel.getParamNames()[i]).getValue()] = values[i];
  return params;
}

/// A relative error for JSON, which has no infinity.
double toJsonError(double error) {
  return std::isfinite(error) ? error : 1e308;
}

/// `attnc run --grad`: the adjoint kernel of `spec` (attn-grad) on random
/// inputs and random N(0, 1) output adjoints, compiled through the same
/// pipeline and cache as any kernel, and with --check each gradient against
/// the float64 reverse mode of the cascade as written.
int runGradient(const LoadedSpec &spec, Launch launch, double frontendMs) {
  KernelOp kernel = spec.getKernel();
  const KernelSignature &signature = spec.getSignature();
  // Everything this run allocates, refused before any of it is: the
  // forward's inputs, the output adjoints, the gradients and, to check
  // them, the reference's reverse mode.
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputAdjoints = true;
  allocations.gradients = true;
  allocations.referenceGradients = checkOption;
  if (llvm::Error error = checkLaunchMemory(kernel, launch.dims, allocations))
    return fail(std::move(error));
  launch.inputs = makeRandomInputs(kernel, launch.dims, seedOption);
  if (llvm::Error error = checkLaunch(kernel, launch))
    return fail(std::move(error));

  auto compileStart = Clock::now();
  llvm::Expected<CpuBackend> backend = getRequestedBackend();
  if (!backend)
    return fail(backend.takeError());
  // The Halide backend takes cascades: the adjoint of the forward as written.
  llvm::Expected<GradientSpec> gradient =
      GradientSpec::build(spec, fuseOption && *backend != CpuBackend::Halide);
  if (!gradient)
    return fail(gradient.takeError());
  const LoadedSpec &adjoint = gradient->getAdjoint();
  KernelOp adjointKernel = adjoint.getKernel();
  llvm::ArrayRef<unsigned> adjointedOutputs = gradient->getAdjointedOutputs();
  llvm::ArrayRef<unsigned> differentiated = gradient->getDifferentiatedInputs();
  double buildMs = millisecondsSince(compileStart);

  // The adjoint kernel reads the forward's inputs, then the output
  // adjoints; it is checked as a launch of its own, since it is the kernel
  // that runs.
  unsigned numForwardInputs = signature.inputs.size();
  Launch adjointLaunch;
  adjointLaunch.dims = launch.dims;
  adjointLaunch.params = launch.params;
  adjointLaunch.inputs = std::move(launch.inputs);
  for (HostTensor &outputAdjoint :
       makeRandomOutputAdjoints(spec, launch.dims, seedOption))
    adjointLaunch.inputs.push_back(std::move(outputAdjoint));
  if (llvm::Error error = checkLaunch(adjointKernel, adjointLaunch))
    return fail(std::move(error));
  std::vector<const HostTensor *> inputPointers;
  for (const HostTensor &input : adjointLaunch.inputs)
    inputPointers.push_back(&input);

  // The reference differentiates the cascade as written, before any
  // lowering, with the same adjoints (none for integer outputs).
  ReferenceGradients expected;
  if (checkOption) {
    std::vector<const HostTensor *> outputAdjoints(signature.outputs.size(),
                                                   nullptr);
    for (auto [k, output] : llvm::enumerate(adjointedOutputs))
      outputAdjoints[output] = inputPointers[numForwardInputs + k];
    llvm::Expected<ReferenceGradients> result = evaluateReferenceGradients(
        spec, launch.dims,
        llvm::ArrayRef<const HostTensor *>(inputPointers)
            .take_front(numForwardInputs),
        launch.params, outputAdjoints);
    if (!result)
      return fail(result.takeError());
    expected = std::move(*result);
  }

  auto codegenStart = Clock::now();
  llvm::Expected<CpuKernelOptions> kernelOptions =
      getKernelOptions(launch.dims);
  if (!kernelOptions)
    return fail(kernelOptions.takeError());
  auto compiled = adjoint.compileForHost(*kernelOptions, getCacheOptions());
  if (!compiled)
    return fail(compiled.takeError());
  double compileMs = frontendMs + buildMs + millisecondsSince(codegenStart);
  const CpuCompileStats &stats = (*compiled)->getStats();
  printWarnings(stats.warnings);
  const char *path = getPathName(**compiled);
  unsigned threads = (*compiled)->getThreads();
  if (!(*compiled)->isFused()) {
    LaunchAllocations workspaces;
    workspaces.unfusedWorkspaces = true;
    if (llvm::Error error =
            checkLaunchMemory(adjointKernel, launch.dims, workspaces))
      return fail(std::move(error));
  }

  const KernelSignature &adjointSignature = adjoint.getSignature();
  std::vector<HostTensor> gradients;
  for (unsigned k = 0; k < adjointSignature.outputs.size(); ++k)
    gradients.emplace_back(adjointSignature.outputs[k].dtype,
                           getTensorShape(adjointKernel,
                                          adjointSignature.inputs.size() + k,
                                          launch.dims));
  std::vector<HostTensor *> gradientPointers;
  for (HostTensor &gradientTensor : gradients)
    gradientPointers.push_back(&gradientTensor);
  llvm::Expected<double> timed = timeRuns(**compiled, adjointKernel, launch,
                                          inputPointers, gradientPointers);
  if (!timed)
    return fail(timed.takeError());
  double runMs = *timed;

  std::vector<double> errors;
  std::vector<bool> cancelling;
  double maxError = 0, tolerance = 0;
  bool ok = true;
  if (checkOption) {
    for (auto [k, input] : llvm::enumerate(differentiated)) {
      if (!expected.gradients[input] || !expected.scales[input])
        return fail("the reference has no gradient for float input '" +
                    signature.inputs[input].name + "'");
      auto [error, cancels] = getGradientError(
          gradients[k], *expected.gradients[input], *expected.scales[input]);
      cancelling.push_back(cancels);
      error = std::isnan(error) ? INFINITY : error;
      errors.push_back(error);
      maxError = std::max(maxError, error);
    }
    DType dataType = DType::F32;
    for (unsigned input : differentiated)
      if (signature.inputs[input].dtype == DType::BF16 ||
          signature.inputs[input].dtype == DType::F16)
        dataType = signature.inputs[input].dtype;
    tolerance = getGradientCheckTolerance(dataType);
    ok = maxError <= tolerance;
  }

  double flops = countCascadeFlops(adjointKernel, launch.dims);
  double gflops = runMs > 0 ? flops / (runMs * 1e6) : 0;
  std::vector<std::string> gradientNames, adjointNames;
  for (const KernelTensor &output : adjointSignature.outputs)
    gradientNames.push_back(output.name);
  for (unsigned k = 0; k < adjointedOutputs.size(); ++k)
    adjointNames.push_back(adjointSignature.inputs[numForwardInputs + k].name);
  if (jsonOption) {
    llvm::json::Array gradientArray, adjointArray;
    for (const std::string &name : gradientNames)
      gradientArray.push_back(name);
    for (const std::string &name : adjointNames)
      adjointArray.push_back(name);
    llvm::json::Object result{
        {"spec", signature.name},
        {"kernel", adjointSignature.name},
        {"grad", true},
        {"file", specPath},
        {"target", targetOption},
        {"path", path},
        {"threads", threads},
        {"shapes", describeDimsJson(kernel, launch.dims)},
        {"params", describeParamsJson(kernel, launch.params)},
        {"gradients", std::move(gradientArray)},
        {"output_adjoints", std::move(adjointArray)},
        {"compile_ms", compileMs},
        {"grad_build_ms", buildMs},
        {"cache_hit", stats.cacheHit},
        {"lower_ms", stats.lowerSeconds * 1e3},
        {"codegen_ms", stats.codegenSeconds * 1e3},
        {"load_ms", stats.loadSeconds * 1e3},
        {"run_ms", runMs},
        {"gflops", gflops}};
    if (checkOption) {
      llvm::json::Object perGradient;
      llvm::json::Array cancellingArray;
      for (auto [name, error, cancels] :
           llvm::zip(gradientNames, errors, cancelling)) {
        perGradient[name] = toJsonError(error);
        if (cancels)
          cancellingArray.push_back(name);
      }
      result["grad_rel_err"] = std::move(perGradient);
      // Gradients whose reference cancels, so that their error is relative
      // to the scale of their terms (getGradientError).
      result["cancelling_gradients"] = std::move(cancellingArray);
      result["max_rel_err"] = toJsonError(maxError);
      result["tol"] = tolerance;
      result["ok"] = ok;
    }
    llvm::outs() << llvm::json::Value(std::move(result)) << "\n";
    return ok ? 0 : 1;
  }
  llvm::outs() << llvm::formatv("{0}: target={1} path={2} threads={3}\n",
                                adjointSignature.name, targetOption, path,
                                threads);
  llvm::outs() << "shapes: " << describeDims(kernel, launch.dims) << "\n";
  llvm::outs() << "gradients: " << llvm::join(gradientNames, ", ")
               << " (output adjoints: "
               << (adjointNames.empty() ? "none"
                                        : llvm::join(adjointNames, ", "))
               << ")\n";
  llvm::outs() << llvm::formatv(
      "compile: {0:f1} ms{1}  run: {2:f2} ms  ({3:f2} GFLOP/s cascade)\n",
      compileMs, stats.cacheHit ? " (cache hit)" : "", runMs, gflops);
  if (checkOption) {
    for (auto [name, error, cancels] :
         llvm::zip(gradientNames, errors, cancelling))
      llvm::outs() << llvm::formatv(
          cancels ? "grad {0}: rel_err={1:e2} (against its terms' scale: the "
                    "reference cancels)\n"
                  : "grad {0}: rel_err={1:e2}\n",
          name, error);
    llvm::outs() << llvm::formatv("check: max_rel_err={0:e2} tol={1:e0} {2}\n",
                                  maxError, tolerance, ok ? "ok" : "FAIL");
  }
  return ok ? 0 : 1;
}

int runSpec(MLIRContext &context) {
  llvm::SourceMgr sourceMgr;
  auto frontendStart = Clock::now();
  FailureOr<LoadedSpec> spec = loadSpec(context, sourceMgr);
  if (failed(spec))
    return 1;
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  double frontendMs = millisecondsSince(frontendStart);
  KernelOp kernel = spec->getKernel();

  llvm::StringMap<int64_t> givenSizes;
  if (!shapeList.empty()) {
    auto parsed = parseShapeList(shapeList);
    if (!parsed)
      return fail(parsed.takeError());
    givenSizes = std::move(*parsed);
  }
  llvm::StringMap<double> givenParams;
  if (!paramList.empty()) {
    auto parsed = parseParamList(paramList);
    if (!parsed)
      return fail(parsed.takeError());
    givenParams = std::move(*parsed);
  }
  Launch launch;
  auto dims = bindDims(kernel, givenSizes);
  if (!dims)
    return fail(dims.takeError());
  launch.dims = std::move(*dims);
  auto params = bindParams(kernel, givenParams);
  if (!params)
    return fail(params.takeError());
  launch.params = std::move(*params);
  if (gradOption)
    return runGradient(*spec, std::move(launch), frontendMs);
  // Everything this run allocates, refused before any of it is.
  LaunchAllocations allocations;
  allocations.inputCopies = 1;
  allocations.outputs = true;
  allocations.reference = checkOption;
  if (llvm::Error error = checkLaunchMemory(kernel, launch.dims, allocations))
    return fail(std::move(error));
  launch.inputs = makeRandomInputs(kernel, launch.dims, seedOption);
  if (llvm::Error error = checkLaunch(kernel, launch))
    return fail(std::move(error));

  // The reference runs on the cascade as written, before any lowering.
  std::vector<const HostTensor *> inputPointers;
  for (const HostTensor &input : launch.inputs)
    inputPointers.push_back(&input);
  std::vector<HostTensor> expected;
  if (checkOption) {
    llvm::Expected<std::vector<HostTensor>> result =
        spec->evaluateReference(launch.dims, inputPointers, launch.params);
    if (!result)
      return fail(result.takeError());
    expected = std::move(*result);
  }
  double flops = countCascadeFlops(kernel, launch.dims);
  std::string kernelName = kernel.getSymName().str();
  std::string shapeText = describeDims(kernel, launch.dims);
  const KernelSignature &signature = spec->getSignature();
  std::vector<DType> outputTypes;
  std::vector<std::vector<int64_t>> outputShapes;
  for (unsigned i = 0; i < signature.outputs.size(); ++i) {
    outputTypes.push_back(signature.outputs[i].dtype);
    outputShapes.push_back(
        getTensorShape(kernel, signature.inputs.size() + i, launch.dims));
  }

  auto compileStart = Clock::now();
  llvm::Expected<CpuKernelOptions> kernelOptions =
      getKernelOptions(launch.dims);
  if (!kernelOptions)
    return fail(kernelOptions.takeError());
  auto compiled = spec->compileForHost(*kernelOptions, getCacheOptions());
  if (!compiled)
    return fail(compiled.takeError());
  double compileMs = frontendMs + millisecondsSince(compileStart);
  const CpuCompileStats &stats = (*compiled)->getStats();
  printWarnings(stats.warnings);
  const char *path = getPathName(**compiled);
  unsigned threads = (*compiled)->getThreads();
  // Only now is it known whether the kernel allocates the cascade's
  // intermediate tensors; what is allocated so far is no longer available.
  if (!(*compiled)->isFused()) {
    LaunchAllocations workspaces;
    workspaces.unfusedWorkspaces = true;
    if (llvm::Error error = checkLaunchMemory(kernel, launch.dims, workspaces))
      return fail(std::move(error));
  }

  std::vector<HostTensor> outputs;
  for (unsigned i = 0; i < outputTypes.size(); ++i)
    outputs.emplace_back(outputTypes[i], outputShapes[i]);
  std::vector<HostTensor *> outputPointers;
  for (HostTensor &output : outputs)
    outputPointers.push_back(&output);
  llvm::Expected<double> timed =
      timeRuns(**compiled, kernel, launch, inputPointers, outputPointers);
  if (!timed)
    return fail(timed.takeError());
  double runMs = *timed;

  double maxError = 0, tolerance = 0;
  bool ok = true;
  if (checkOption) {
    for (unsigned i = 0; i < outputs.size(); ++i) {
      double error = relativeError(outputs[i], expected[i]);
      maxError = std::max(maxError, std::isnan(error) ? INFINITY : error);
    }
    DType dataType = DType::F32;
    for (const KernelTensor &input : signature.inputs)
      if (isFloatDType(input.dtype))
        dataType = input.dtype;
    for (DType type : outputTypes)
      if (type == DType::BF16 || type == DType::F16)
        dataType = type;
    tolerance = getCheckTolerance(dataType);
    ok = maxError <= tolerance;
  }

  double gflops = runMs > 0 ? flops / (runMs * 1e6) : 0;
  if (jsonOption) {
    llvm::json::Object result{
        {"spec", kernelName},
        {"grad", false},
        {"file", specPath},
        {"target", targetOption},
        {"path", path},
        {"threads", threads},
        {"shapes", describeDimsJson(kernel, launch.dims)},
        {"params", describeParamsJson(kernel, launch.params)},
        {"compile_ms", compileMs},
        {"cache_hit", stats.cacheHit},
        {"lower_ms", stats.lowerSeconds * 1e3},
        {"codegen_ms", stats.codegenSeconds * 1e3},
        {"load_ms", stats.loadSeconds * 1e3},
        {"run_ms", runMs},
        {"gflops", gflops}};
    if (checkOption) {
      result["max_rel_err"] = toJsonError(maxError);
      result["tol"] = tolerance;
      result["ok"] = ok;
    }
    llvm::outs() << llvm::json::Value(std::move(result)) << "\n";
  } else {
    llvm::outs() << llvm::formatv("{0}: target={1} path={2} threads={3}\n",
                                  kernelName, targetOption, path, threads);
    llvm::outs() << "shapes: " << shapeText << "\n";
    llvm::outs() << llvm::formatv(
        "compile: {0:f1} ms{1}  run: {2:f2} ms  ({3:f2} GFLOP/s cascade)\n",
        compileMs, stats.cacheHit ? " (cache hit)" : "", runMs, gflops);
    if (checkOption)
      llvm::outs() << llvm::formatv(
          "check: max_rel_err={0:e2} tol={1:e0} {2}\n", maxError, tolerance,
          ok ? "ok" : "FAIL");
  }
  return ok ? 0 : 1;
}

/// Links `objectPath` into the shared library `libraryPath` with the
/// system's compiler driver or linker, whichever is found first.
int linkSharedLibrary(llvm::StringRef objectPath, llvm::StringRef libraryPath,
                      bool needsOpenMP) {
  for (const char *tool : {"cc", "clang", "gcc", "ld"}) {
    llvm::ErrorOr<std::string> program = llvm::sys::findProgramByName(tool);
    if (!program)
      continue;
    bool isLinker = llvm::StringRef(tool) == "ld";
    std::vector<std::string> args{*program, "-shared", "-o", libraryPath.str(),
                                  objectPath.str()};
    if (!isLinker) {
      args.push_back("-lm");
      if (needsOpenMP)
        args.push_back("-lomp");
    }
    std::vector<llvm::StringRef> argRefs(args.begin(), args.end());
    std::string error;
    int rc = llvm::sys::ExecuteAndWait(*program, argRefs, std::nullopt, {}, 0,
                                       0, &error);
    if (rc != 0)
      return fail(llvm::formatv("linking '{0}' with {1} failed{2}{3}",
                                libraryPath, *program,
                                error.empty() ? "" : ": ", error));
    return 0;
  }
  return fail("no linker (cc, clang, gcc or ld) found to build '" +
              libraryPath + "'; write a .o instead");
}

/// `attnc compile -o kernel.o|.so`: the object for --cpu (or the host), and
/// `kernel.json` beside it with the ABI a harness needs to call it.
int emitKernelObject(const LoadedSpec &spec) {
  if (outputPath == "-")
    return fail("--emit=obj needs -o FILE.o or -o FILE.so");
  llvm::Expected<CpuTarget> target =
      cpuOption.empty() ? getHostCpuTarget() : getNamedCpuTarget(cpuOption);
  if (!target)
    return fail(target.takeError());
  llvm::Expected<CpuKernelOptions> options = getKernelOptions();
  if (!options)
    return fail(options.takeError());
  // An object's ABI is its consumer's contract: auto keeps the MLIR one.
  if (options->backend == CpuBackend::Auto)
    options->backend = CpuBackend::Mlir;
  llvm::Expected<CpuKernelObject> object =
      spec.compileForCpu(*target, *options, getCacheOptions());
  if (!object)
    return fail(object.takeError());
  printWarnings(object->stats.warnings);

  bool sharedLibrary = llvm::StringRef(outputPath).ends_with(".so");
  if (sharedLibrary && (object->flags & kHalidePath))
    return fail("the Halide backend writes objects (-o FILE.o), not shared "
                "libraries");
  std::string objectPath = outputPath;
  llvm::SmallString<128> temporary;
  if (sharedLibrary) {
    if (std::error_code error = llvm::sys::fs::createTemporaryFile(
            "attnc-kernel", "o", temporary))
      return fail("cannot create a temporary file: " + error.message());
    objectPath = std::string(temporary);
  }
  if (llvm::Error error =
          llvm::writeToOutput(objectPath, [&](llvm::raw_ostream &os) {
            os << object->object->getBuffer();
            return llvm::Error::success();
          }))
    return fail(std::move(error));
  llvm::json::Object abi;
  if (object->flags & kHalidePath) {
    // A Halide object calls the Halide runtime, written beside it.
    llvm::SmallString<128> runtimePath(outputPath);
    llvm::sys::path::replace_extension(runtimePath, "halide_runtime.o");
    if (llvm::Error error =
            llvm::writeToOutput(runtimePath, [&](llvm::raw_ostream &os) {
              os << object->supportObject->getBuffer();
              return llvm::Error::success();
            }))
      return fail(std::move(error));
    abi = llvm::json::Object{
        {"kernel", object->signature.name},
        {"symbol", getHalideEntryName(object->signature.name)},
        {"convention", "halide_argv"},
        {"link_with", llvm::sys::path::filename(runtimePath).str()}};
  } else {
    abi = describeCpuKernelABI(*object, *target);
  }
  if (sharedLibrary) {
    bool needsOpenMP = false;
    if (const llvm::json::Array *libraries = abi.getArray("libraries"))
      for (const llvm::json::Value &library : *libraries)
        needsOpenMP |= library.getAsString() == "libomp";
    int rc = linkSharedLibrary(objectPath, outputPath, needsOpenMP);
    llvm::sys::fs::remove(objectPath);
    if (rc)
      return rc;
  }
  abi["file"] = llvm::sys::path::filename(outputPath).str();
  llvm::SmallString<128> abiPath(outputPath);
  llvm::sys::path::replace_extension(abiPath, "json");
  std::string text;
  {
    llvm::raw_string_ostream os(text);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(abi))) << "\n";
  }
  if (llvm::Error error =
          llvm::writeToOutput(abiPath, [&](llvm::raw_ostream &os) {
            os << text;
            return llvm::Error::success();
          }))
    return fail(std::move(error));
  llvm::outs() << text;
  return 0;
}

int compileSpec(MLIRContext &context) {
  llvm::SourceMgr sourceMgr;
  FailureOr<LoadedSpec> spec = loadSpec(context, sourceMgr);
  // Later diagnostics (remarks of passes that leave a cascade unfused,
  // lowering errors) point into the spec with its line and a caret.
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  if (failed(spec))
    return 1;
  // What is printed is lowered in place: the spec is not used afterwards.
  ModuleOp module = spec->getModule();
  llvm::StringRef outputName(outputPath);
  bool objectByName =
      emitOption.getNumOccurrences() == 0 &&
      (outputName.ends_with(".o") || outputName.ends_with(".so"));
  if (emitOption == EmitKind::Object || objectByName)
    return emitKernelObject(*spec);
  if (!cpuOption.empty())
    return fail("--cpu applies to object output (-o FILE.o|.so) only");
  std::string errorMessage;
  auto output = openOutputFile(outputPath, &errorMessage);
  if (!output)
    return fail(errorMessage);
  llvm::raw_ostream &os = output->os();
  switch (emitOption) {
  case EmitKind::Attn:
    module->print(os);
    break;
  case EmitKind::Grad: {
    llvm::Expected<GradientSpec> gradient =
        GradientSpec::build(*spec, fuseOption, getGradConstants());
    if (!gradient)
      return fail(gradient.takeError());
    gradient->getAdjoint().getModule()->print(os);
    break;
  }
  case EmitKind::Linalg:
  case EmitKind::LLVMDialect:
    if (failed(emitOption == EmitKind::Linalg
                   ? mlir::attn::lowerToLinalg(module)
                   : mlir::attn::lowerToLLVMDialect(module)))
      return fail("lowering failed");
    module->print(os);
    break;
  case EmitKind::Object:
    break;
  case EmitKind::LLVMIR: {
    llvm::Expected<std::string> ir = ::attn::emitLLVMIR(module);
    if (!ir)
      return fail(ir.takeError());
    os << *ir;
    break;
  }
  }
  output->keep();
  return 0;
}
//===----------------------------------------------------------------------===//
// attnc compile --target sm_90a|sm_80 -o X.attnpkg
//===----------------------------------------------------------------------===//

int compileGpuPackage(MLIRContext &context) {
  if (!llvm::StringRef(outputPath).ends_with(".attnpkg"))
    return fail("--target " + targetOption +
                " writes a kernel package: pass -o FILE.attnpkg");
  if (emitOption.getNumOccurrences() || !cpuOption.empty())
    return fail("--emit and --cpu apply to --target cpu only");
  llvm::Expected<std::string> chip = resolveGpuChip(targetOption, "--target");
  if (!chip)
    return fail(chip.takeError());
  std::optional<std::map<std::string, int64_t>> fixedDims = getFixedDims();
  if (!fixedDims)
    return 1;
  llvm::SourceMgr sourceMgr;
  FailureOr<LoadedSpec> spec =
      loadSpec(context, sourceMgr, std::move(*fixedDims));
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  if (failed(spec))
    return 1;
  std::string producer = "attnc compile --target " + targetOption;
  GpuPackageOptions packageOptions;
  packageOptions.target = *chip;
  packageOptions.producer = producer;
  packageOptions.wgmma = wgmmaOption;
  packageOptions.deterministic = deterministicOption;
  packageOptions.timePasses = timePasses;
  // --grad: the package of the adjoint kernel, which recomputes the forward
  // and runs the backward kernels.
  std::optional<GradientSpec> gradient;
  if (gradOption) {
    llvm::Expected<GradientSpec> built =
        GradientSpec::build(*spec, /*fused=*/true, getGradConstants());
    if (!built)
      return fail(built.takeError());
    gradient.emplace(std::move(*built));
  }
  const LoadedSpec &compiled = gradient ? gradient->getAdjoint() : *spec;
  llvm::Expected<GpuPackageArtifact> package =
      compiled.compileForGpu(packageOptions, getCacheOptions());
  if (!package)
    return fail(package.takeError());
  printWarnings(package->warnings);
  if (llvm::Error error =
          llvm::writeToOutput(outputPath, [&](llvm::raw_ostream &os) {
            os << package->bytes;
            return llvm::Error::success();
          }))
    return fail("cannot write '" + outputPath +
                "': " + llvm::toString(std::move(error)));
  return 0;
}

} // namespace

/// attnc's own version, then the LLVM and MLIR it was built with (the
/// artifact cache keys entries by both).
void printVersion(llvm::raw_ostream &os) {
  os << "attnc version " << ATTN_VERSION << "\n"
     << "  built with LLVM and MLIR " << LLVM_VERSION_STRING << "\n";
  llvm::Expected<std::string> halide = findHalideBackend();
  if (halide)
    os << "  Halide backend: " << *halide << "\n";
  else
    os << "  Halide backend: none (" << llvm::toString(halide.takeError())
       << ")\n";
}

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  installFatalErrorHandlers(reportFatalError);
  cl::SetVersionPrinter(printVersion);
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  cl::HideUnrelatedOptions(attncCategory);
  cl::ParseCommandLineOptions(argc, argv,
                              "attnc: attention variant compiler\n");

  DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  MLIRContext context(registry);
  // Diagnostics point into the spec; the IR of the op is noise for users.
  context.printOpOnDiagnostic(false);
  context.loadDialect<AttnDialect, arith::ArithDialect, math::MathDialect,
                      tensor::TensorDialect>();

  mlir::attn::enablePipelineTiming(timePasses);
  if (!gradConstantOption.empty() && !gradOption &&
      !(emitOption.getNumOccurrences() && emitOption == EmitKind::Grad))
    return fail("--grad-constant applies to compile --grad and --emit=grad");
  if (isGpuTarget(targetOption)) {
    if (compileCommand)
      return compileGpuPackage(context);
    return fail("attnc run executes on the CPU; for --target " + targetOption +
                " write a package with 'attnc compile SPEC --target " +
                targetOption + " -o X.attnpkg' and launch it with "
                "attnc-launch");
  }
  if (targetOption != "cpu")
    return fail(llvm::formatv(
        "--target: '{0}' is not supported (cpu, sm_80, sm_90a)", targetOption));
  if (runCommand)
    return runSpec(context);
  if (compileCommand)
    return compileSpec(context);
  return fail("expected a command: attnc run SPEC | attnc compile SPEC "
              "(see attnc --help)");
}
