//===- attnc.cpp - The attnc driver ---------------------------------------===//
//
// attnc run SPEC      compile, run on random data, optionally check against
//                     the float64 reference evaluator
// attnc compile SPEC  compile and print an intermediate form, or write the
//                     kernel's object file and its ABI (-o kernel.o|.so),
//                     or with --target sm_90a|sm_80 a GPU kernel package
//                     (-o kernel.attnpkg) for attnc-launch / the runtime
//
//===----------------------------------------------------------------------===//

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/Launch.h"
#include "attn/Frontend/Frontend.h"
#include "attn/GPU/GpuKernel.h"
#include "attn/JIT/CpuKernel.h"
#include "attn/JIT/CpuTarget.h"
#include "attn/JIT/KernelABI.h"
#include "attn/JIT/ObjectCache.h"
#include "attn/Pipelines/Pipelines.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Runtime/Package.h"
#include "attn/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/FileSystem.h"
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

using namespace mlir;
using namespace ::attn;
using mlir::attn::AttnDialect;
using mlir::attn::EinsumOp;
using mlir::attn::GpuCapture;
using mlir::attn::GpuKernelArtifact;
using mlir::attn::GpuKernelParam;
using mlir::attn::GpuKernelSignature;
using mlir::attn::GpuOptions;
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
static cl::opt<std::string>
    cpuOption("cpu",
              cl::desc("CPU of the object file (e.g. sapphirerapids, "
                       "x86-64-v4; default: the host)"),
              cl::sub(compileCommand), cl::cat(attncCategory));

enum class EmitKind { Attn, Linalg, LLVMDialect, LLVMIR, Object };
static cl::opt<EmitKind> emitOption(
    "emit", cl::desc("What to print"), cl::init(EmitKind::Attn),
    cl::values(clEnumValN(EmitKind::Attn, "attn", "the attn cascade"),
               clEnumValN(EmitKind::Linalg, "linalg",
                          "linalg on tensors (unfused)"),
               clEnumValN(EmitKind::LLVMDialect, "llvm-dialect",
                          "the LLVM dialect"),
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

namespace {
using Clock = std::chrono::steady_clock;
double millisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start)
      .count();
}

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "attnc") << message << "\n";
  return 1;
}

int fail(llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  return fail(message);
}

/// The relative-error tolerance that fits the element type of the data.
double toleranceFor(DType type) {
  switch (type) {
  case DType::BF16:
    return 1e-2;
  case DType::F16:
    return 2e-3;
  default:
    return 1e-5;
  }
}

/// The kernel cache directory, unless --no-cache or no home is known.
std::optional<std::string> getCacheDirectory() {
  if (noCacheOption)
    return std::nullopt;
  return ObjectCache::getDefaultDirectory();
}

void printWarnings(const CpuCompileStats &stats) {
  for (const std::string &warning : stats.warnings)
    llvm::WithColor::warning(llvm::errs(), "attnc") << warning << "\n";
}

/// Parses the spec file into a module; diagnostics go to stderr with the
/// source line and a caret.
FailureOr<OwningOpRef<ModuleOp>> loadSpec(MLIRContext &context,
                                          llvm::SourceMgr &sourceMgr) {
  auto buffer = llvm::MemoryBuffer::getFile(specPath, /*IsText=*/true);
  if (std::error_code error = buffer.getError()) {
    fail(llvm::formatv("cannot open '{0}': {1}", specPath, error.message()));
    return failure();
  }
  sourceMgr.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
  ::attn::dsl::FrontendOptions options;
  std::string dtype = dtypeOption;
  if (dtype.empty() && runCommand)
    dtype = "f32";
  if (!dtype.empty() && dtype != "declared") {
    std::optional<DType> type = parseDType(dtype);
    if (!type || !isFloatDType(*type) || *type == DType::F64) {
      fail(llvm::formatv(
          "--dtype: expected f32, bf16, f16 or declared, got '{0}'", dtype));
      return failure();
    }
    options.floatTypeOverride = dtype;
  }
  return ::attn::dsl::compileSpec(sourceMgr, context, options);
}

KernelOp getKernel(ModuleOp module) {
  return *module.getOps<KernelOp>().begin();
}

/// Floating-point operations of the cascade: one per elementwise point, two
/// per reduction term. It measures the unfused work, not the ideal.
double countCascadeFlops(KernelOp kernel, llvm::ArrayRef<int64_t> dims) {
  IntervalAnalysis analysis(kernel, LaunchFacts{dims, {}, {}});
  double flops = 0;
  for (auto einsum : kernel.getEntryBlock().getOps<EinsumOp>()) {
    double points = 1;
    for (Value extent : einsum.getExtents())
      points *= static_cast<double>(analysis.lookupConstant(extent).value_or(0));
    flops += points * (einsum.getKind() == ReductionKind::None ? 1 : 2);
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

int runSpec(MLIRContext &context) {
  llvm::SourceMgr sourceMgr;
  auto frontendStart = Clock::now();
  FailureOr<OwningOpRef<ModuleOp>> module = loadSpec(context, sourceMgr);
  if (failed(module))
    return 1;
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  double frontendMs = millisecondsSince(frontendStart);
  KernelOp kernel = getKernel(**module);

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
  launch.inputs = makeRandomInputs(kernel, launch.dims, seedOption);
  if (llvm::Error error = checkLaunch(kernel, launch))
    return fail(std::move(error));

  // The reference runs on the cascade as written, before any lowering.
  std::vector<HostTensor> expected;
  if (checkOption) {
    ::attn::ref::KernelArguments arguments;
    arguments.dims = launch.dims;
    for (const HostTensor &input : launch.inputs)
      arguments.inputs.push_back(&input);
    arguments.params = launch.params;
    FailureOr<std::vector<HostTensor>> result =
        ::attn::ref::evaluate(kernel, arguments);
    if (failed(result))
      return fail("the reference evaluator failed");
    expected = std::move(*result);
  }
  double flops = countCascadeFlops(kernel, launch.dims);
  std::string kernelName = kernel.getSymName().str();
  std::string shapeText = describeDims(kernel, launch.dims);
  std::vector<DType> outputTypes;
  std::vector<std::vector<int64_t>> outputShapes;
  for (unsigned i = 0; i < kernel.getNumOutputs(); ++i) {
    outputTypes.push_back(getOutputDType(kernel, i));
    outputShapes.push_back(
        getTensorShape(kernel, kernel.getNumInputs() + i, launch.dims));
  }
  std::vector<std::string> outputNames(
      kernel.getOutputNames().getAsValueRange<StringAttr>().begin(),
      kernel.getOutputNames().getAsValueRange<StringAttr>().end());

  auto compileStart = Clock::now();
  // Lowering rewrites the module; keep the cascade for reporting.
  OwningOpRef<ModuleOp> lowered = (**module).clone();
  CpuKernelOptions kernelOptions;
  kernelOptions.cacheDir = getCacheDirectory();
  kernelOptions.threads = threadsOption;
  kernelOptions.timePasses = timePasses;
  auto compiled = CpuKernel::compile(*lowered, kernelOptions);
  if (!compiled)
    return fail(compiled.takeError());
  double compileMs = frontendMs + millisecondsSince(compileStart);
  const CpuCompileStats &stats = (*compiled)->getStats();
  printWarnings(stats);
  const char *path = (*compiled)->isFused() ? "fused" : "unfused";
  unsigned threads = (*compiled)->getThreads();

  std::vector<HostTensor> outputs;
  for (unsigned i = 0; i < outputTypes.size(); ++i)
    outputs.emplace_back(outputTypes[i], outputShapes[i]);
  std::vector<const HostTensor *> inputPointers;
  for (const HostTensor &input : launch.inputs)
    inputPointers.push_back(&input);
  std::vector<HostTensor *> outputPointers;
  for (HostTensor &output : outputs)
    outputPointers.push_back(&output);
  std::vector<double> runTimes;
  for (unsigned r = 0; r < std::max(1u, (unsigned)repeatOption); ++r) {
    auto runStart = Clock::now();
    if (llvm::Error error = (*compiled)->run(launch.dims, inputPointers,
                                             launch.params, outputPointers))
      return fail(std::move(error));
    runTimes.push_back(millisecondsSince(runStart));
  }
  std::sort(runTimes.begin(), runTimes.end());
  double runMs = runTimes[runTimes.size() / 2];

  double maxError = 0, tolerance = 0;
  bool ok = true;
  if (checkOption) {
    for (unsigned i = 0; i < outputs.size(); ++i) {
      double error = relativeError(outputs[i], expected[i]);
      maxError = std::max(maxError, std::isnan(error) ? INFINITY : error);
    }
    DType dataType = DType::F32;
    for (unsigned i = 0; i < kernel.getNumInputs(); ++i)
      if (isFloatDType(getInputDType(kernel, i)))
        dataType = getInputDType(kernel, i);
    for (DType type : outputTypes)
      if (type == DType::BF16 || type == DType::F16)
        dataType = type;
    tolerance = toleranceFor(dataType);
    ok = maxError <= tolerance;
  }

  double gflops = runMs > 0 ? flops / (runMs * 1e6) : 0;
  if (jsonOption) {
    llvm::json::Object shapes;
    for (unsigned i = 0; i < kernel.getNumDims(); ++i)
      shapes[cast<StringAttr>(kernel.getDimNames()[i]).getValue()] =
          launch.dims[i];
    llvm::json::Object params;
    for (unsigned i = 0; i < kernel.getNumParams(); ++i)
      params[cast<StringAttr>(kernel.getParamNames()[i]).getValue()] =
          launch.params[i];
    llvm::json::Object result{{"spec", kernelName},
                              {"file", specPath},
                              {"target", targetOption},
                              {"path", path},
                              {"threads", threads},
                              {"shapes", std::move(shapes)},
                              {"params", std::move(params)},
                              {"compile_ms", compileMs},
                              {"cache_hit", stats.cacheHit},
                              {"lower_ms", stats.lowerSeconds * 1e3},
                              {"codegen_ms", stats.codegenSeconds * 1e3},
                              {"load_ms", stats.loadSeconds * 1e3},
                              {"run_ms", runMs},
                              {"gflops", gflops}};
    if (checkOption) {
      result["max_rel_err"] = std::isfinite(maxError) ? maxError : 1e308;
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
      llvm::outs() << llvm::formatv("check: max_rel_err={0:e2} tol={1:e0} {2}\n",
                                    maxError, tolerance, ok ? "ok" : "FAIL");
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
int emitKernelObject(ModuleOp module) {
  if (outputPath == "-")
    return fail("--emit=obj needs -o FILE.o or -o FILE.so");
  llvm::Expected<CpuTarget> target =
      cpuOption.empty() ? getHostCpuTarget() : getNamedCpuTarget(cpuOption);
  if (!target)
    return fail(target.takeError());
  CpuKernelOptions options;
  options.cacheDir = getCacheDirectory();
  options.timePasses = timePasses;
  llvm::Expected<CpuKernelObject> object =
      compileCpuKernelObject(module, *target, options);
  if (!object)
    return fail(object.takeError());
  printWarnings(object->stats);

  bool sharedLibrary = llvm::StringRef(outputPath).ends_with(".so");
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
  llvm::json::Object abi = describeCpuKernelABI(*object, *target);
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
  FailureOr<OwningOpRef<ModuleOp>> module = loadSpec(context, sourceMgr);
  // Later diagnostics (remarks of passes that leave a cascade unfused,
  // lowering errors) point into the spec with its line and a caret.
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  if (failed(module))
    return 1;
  llvm::StringRef outputName(outputPath);
  bool objectByName =
      emitOption.getNumOccurrences() == 0 &&
      (outputName.ends_with(".o") || outputName.ends_with(".so"));
  if (emitOption == EmitKind::Object || objectByName)
    return emitKernelObject(**module);
  if (!cpuOption.empty())
    return fail("--cpu applies to object output (-o FILE.o|.so) only");
  std::string errorMessage;
  auto output = openOutputFile(outputPath, &errorMessage);
  if (!output)
    return fail(errorMessage);
  llvm::raw_ostream &os = output->os();
  switch (emitOption) {
  case EmitKind::Attn:
    (*module)->print(os);
    break;
  case EmitKind::Linalg:
  case EmitKind::LLVMDialect:
    if (failed(emitOption == EmitKind::Linalg
                   ? mlir::attn::lowerToLinalg(**module)
                   : mlir::attn::lowerToLLVMDialect(**module)))
      return fail("lowering failed");
    (*module)->print(os);
    break;
  case EmitKind::Object:
    break;
  case EmitKind::LLVMIR: {
    llvm::Expected<std::string> ir = ::attn::emitLLVMIR(**module);
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

/// Whether `--target` names a CUDA chip (sm_NN or sm_NNa).
bool isGpuTarget(llvm::StringRef target) { return target.starts_with("sm_"); }

/// Rewrites the `dims` line of the spec so that every dim named in
/// `sizes` reads `NAME = SIZE`: the DSL's own syntax for a compile-time
/// size. The front end then gives the tensors static extents and the GPU
/// backend its static head dims, with no second way of fixing a dim.
llvm::Expected<std::string>
fixDimsInSource(llvm::StringRef text, const llvm::StringMap<int64_t> &sizes) {
  llvm::StringMap<bool> used;
  std::string result;
  bool done = false;
  while (!text.empty()) {
    auto [line, rest] = text.split('\n');
    bool hadNewline = text.size() > line.size();
    text = rest;
    llvm::StringRef trimmed = line.ltrim();
    if (done || !trimmed.starts_with("dims") ||
        (trimmed.size() > 4 && !llvm::isSpace(trimmed[4]))) {
      result += line.str();
      if (hadNewline)
        result += '\n';
      continue;
    }
    done = true;
    auto [code, comment] = line.split("//");
    llvm::StringRef indent = line.take_front(line.size() - trimmed.size());
    llvm::SmallVector<llvm::StringRef> items;
    code.ltrim().drop_front(4).split(items, ',');
    std::string rewritten = indent.str() + "dims  ";
    for (auto [i, item] : llvm::enumerate(items)) {
      llvm::StringRef name = item.split('=').first.trim();
      std::string entry = item.trim().str();
      auto it = sizes.find(name);
      if (it != sizes.end()) {
        if (item.contains('='))
          return llvm::createStringError(
              "--shape: dim '" + name + "' is already fixed by the spec");
        entry = (name + " = " + llvm::Twine(it->second)).str();
        used[name] = true;
      }
      rewritten += (i ? ", " : "") + entry;
    }
    result += rewritten;
    if (line.size() > code.size())
      result += "  //" + comment.str();
    if (hadNewline)
      result += '\n';
  }
  for (const auto &entry : sizes)
    if (!used.count(entry.getKey()))
      return llvm::createStringError("--shape: the spec has no dim '" +
                                     entry.getKey() + "'");
  return result;
}

/// The value of `value` when it is computed only from constants and fixed
/// dims: the scale `rsqrt(D)` of a spec compiled with D fixed.
std::optional<double> evaluateScalar(Value value, KernelOp kernel) {
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    if (arg.getOwner() != &kernel.getEntryBlock() ||
        arg.getArgNumber() >= kernel.getNumDims())
      return std::nullopt;
    int64_t size = kernel.getDimSizes()[arg.getArgNumber()];
    if (ShapedType::isDynamic(size))
      return std::nullopt;
    return static_cast<double>(size);
  }
  Operation *op = value.getDefiningOp();
  if (!op || op->getNumResults() != 1)
    return std::nullopt;
  if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
    if (auto attr = dyn_cast<FloatAttr>(constant.getValue()))
      return attr.getValueAsDouble();
    if (auto attr = dyn_cast<IntegerAttr>(constant.getValue()))
      return static_cast<double>(attr.getInt());
    return std::nullopt;
  }
  llvm::SmallVector<double, 2> operands;
  for (Value operand : op->getOperands()) {
    std::optional<double> v = evaluateScalar(operand, kernel);
    if (!v)
      return std::nullopt;
    operands.push_back(*v);
  }
  if (isa<arith::IndexCastOp, arith::SIToFPOp, arith::UIToFPOp,
          arith::ExtFOp, arith::TruncFOp>(op))
    return operands[0];
  if (isa<math::RsqrtOp>(op))
    return 1.0 / std::sqrt(operands[0]);
  if (isa<math::SqrtOp>(op))
    return std::sqrt(operands[0]);
  if (isa<arith::MulFOp, arith::MulIOp>(op))
    return operands[0] * operands[1];
  if (isa<arith::DivFOp>(op))
    return operands[0] / operands[1];
  if (isa<arith::AddFOp, arith::AddIOp>(op))
    return operands[0] + operands[1];
  if (isa<arith::SubFOp, arith::SubIOp>(op))
    return operands[0] - operands[1];
  if (isa<arith::NegFOp>(op))
    return -operands[0];
  return std::nullopt;
}

/// Where axis `axis` of a 4-D attention operand lives in a kernel tensor:
/// an axis of the input, or a unit axis that tensor.expand_shape inserted
/// (MQA's single key/value head).
struct OperandAxis {
  int input = -1; ///< kernel input index
  int64_t axis = -1; ///< -1: a unit axis (size 1, stride 0)
};

/// Maps the axes of `value` (Q, K, V or the sink) to a kernel input, or
/// fails with a message.
llvm::Expected<llvm::SmallVector<OperandAxis>>
mapOperandAxes(Value value, KernelOp kernel, llvm::StringRef what) {
  auto inputIndex = [&](Value v) -> int {
    auto arg = dyn_cast<BlockArgument>(v);
    if (!arg || arg.getOwner() != &kernel.getEntryBlock())
      return -1;
    int64_t i = static_cast<int64_t>(arg.getArgNumber()) - kernel.getNumDims();
    return i >= 0 && i < kernel.getNumInputs() ? static_cast<int>(i) : -1;
  };
  int64_t rank = cast<RankedTensorType>(value.getType()).getRank();
  llvm::SmallVector<OperandAxis> axes(rank);
  if (int input = inputIndex(value); input >= 0) {
    for (int64_t d = 0; d < rank; ++d)
      axes[d] = {input, d};
    return axes;
  }
  if (auto expand = value.getDefiningOp<tensor::ExpandShapeOp>()) {
    int input = inputIndex(expand.getSrc());
    if (input >= 0) {
      auto resultType = expand.getResultType();
      bool ok = true;
      for (auto [source, group] :
           llvm::enumerate(expand.getReassociationIndices())) {
        int nonUnit = 0;
        for (int64_t d : group) {
          if (group.size() > 1 && resultType.getDimSize(d) == 1) {
            axes[d] = {input, -1};
          } else {
            axes[d] = {input, static_cast<int64_t>(source)};
            ++nonUnit;
          }
        }
        ok &= nonUnit == 1;
      }
      if (ok)
        return axes;
    }
  }
  return llvm::createStringError(
      (what + " of the attention is computed in the kernel, not read from an "
              "input; the GPU backend needs it to be an input (or an input "
              "with unit axes inserted)")
          .str());
}

SlotType toSlotType(GpuKernelParam::Kind kind) {
  switch (kind) {
  case GpuKernelParam::Kind::Pointer:
    return SlotType::Ptr;
  case GpuKernelParam::Kind::I32:
    return SlotType::I32;
  case GpuKernelParam::Kind::I64:
    return SlotType::I64;
  case GpuKernelParam::Kind::F32:
    return SlotType::F32;
  case GpuKernelParam::Kind::F64:
    return SlotType::F64;
  }
  return SlotType::I64;
}

/// The DType of a scalar param of the kernel.
std::optional<DType> scalarDType(Type type) {
  if (type.isF32())
    return DType::F32;
  if (type.isF64())
    return DType::F64;
  if (type.isInteger(32))
    return DType::I32;
  if (type.isInteger(64) || type.isIndex())
    return DType::I64;
  return std::nullopt;
}

/// Runs `pass` on the kernels of `module`; remarks go to the handler.
LogicalResult runOnKernels(ModuleOp module, std::unique_ptr<Pass> pass) {
  PassManager pm(module.getContext());
  pm.addNestedPass<KernelOp>(std::move(pass));
  return pm.run(module);
}

int compileGpuPackage(MLIRContext &context) {
  if (!llvm::StringRef(outputPath).ends_with(".attnpkg"))
    return fail("--target " + targetOption +
                " writes a kernel package: pass -o FILE.attnpkg");
  if (emitOption.getNumOccurrences() || !cpuOption.empty())
    return fail("--emit and --cpu apply to --target cpu only");
  llvm::StringMap<int64_t> fixedDims;
  if (!shapeList.empty()) {
    auto parsed = parseShapeList(shapeList);
    if (!parsed)
      return fail(parsed.takeError());
    fixedDims = std::move(*parsed);
  }
  auto buffer = llvm::MemoryBuffer::getFile(specPath, /*IsText=*/true);
  if (std::error_code error = buffer.getError())
    return fail(llvm::formatv("cannot open '{0}': {1}", specPath,
                              error.message()));
  llvm::Expected<std::string> source =
      fixDimsInSource((*buffer)->getBuffer(), fixedDims);
  if (!source)
    return fail(source.takeError());
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(*source, specPath), llvm::SMLoc());
  ::attn::dsl::FrontendOptions frontendOptions;
  std::string dtype = dtypeOption;
  if (!dtype.empty() && dtype != "declared") {
    if (dtype != "bf16" && dtype != "f16")
      return fail("--dtype: the GPU backend takes bf16 or f16, got '" + dtype +
                  "'");
    frontendOptions.floatTypeOverride = dtype;
  }
  FailureOr<OwningOpRef<ModuleOp>> loaded =
      ::attn::dsl::compileSpec(sourceMgr, context, frontendOptions);
  SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);
  if (failed(loaded))
    return 1;
  OwningOpRef<ModuleOp> module = std::move(*loaded);
  KernelOp kernel = getKernel(*module);
  std::string kernelName = kernel.getSymName().str();
  auto unsupported = [&](const llvm::Twine &what) {
    return fail("kernel '" + kernelName + "': " + what +
                " is not supported by the GPU backend yet");
  };

  auto notRaised = [&] {
    return fail("kernel '" + kernelName +
                "': the cascade is not raised (see remark), so the GPU "
                "backend cannot compile it");
  };
  if (failed(runOnKernels(*module, mlir::attn::createAttnRaise())))
    return fail("attn-raise failed");
  auto countEinsums = [](ModuleOp m) {
    unsigned n = 0;
    m.walk([&](EinsumOp) { ++n; });
    return n;
  };
  // Masks that read tensors get a tile_class over per-tile summaries that a
  // prologue computes; the GPU kernel would need that prologue too, so such
  // masks keep no tile_class: the kernel evaluates the mask on every tile.
  unsigned einsumsBefore = countEinsums(*module);
  {
    OwningOpRef<ModuleOp> analyzed = (*module).clone();
    if (failed(runOnKernels(*analyzed, mlir::attn::createAttnAnalyzeMask())))
      return fail("attn-analyze-mask failed");
    if (countEinsums(*analyzed) == einsumsBefore)
      module = std::move(analyzed);
  }
  kernel = getKernel(*module);

  // The kernel body must be scalars, expand_shapes and one attention.
  mlir::attn::AttentionOp attention;
  for (Operation &op : kernel.getEntryBlock()) {
    if (auto found = dyn_cast<mlir::attn::AttentionOp>(op)) {
      if (attention)
        return unsupported("more than one attention in a kernel");
      attention = found;
      continue;
    }
    if (isa<tensor::ExpandShapeOp>(op) || op.hasTrait<OpTrait::IsTerminator>())
      continue;
    if (auto einsum = dyn_cast<EinsumOp>(op)) {
      for (Operation *user : einsum->getUsers())
        if (auto a = dyn_cast<mlir::attn::AttentionOp>(user))
          if (a.getSink() == einsum.getResult())
            return unsupported("a sink logit computed by a prologue einsum");
    }
    auto isTensor = [](Type t) { return isa<ShapedType>(t); };
    if (llvm::any_of(op.getOperandTypes(), isTensor) ||
        llvm::any_of(op.getResultTypes(), isTensor)) {
      if (!llvm::any_of(kernel.getEntryBlock(), [](Operation &o) {
            return isa<mlir::attn::AttentionOp>(o);
          }))
        return notRaised();
      return unsupported(llvm::Twine("a tensor computed outside the "
                                     "attention ('") +
                         op.getName().getStringRef() + "')");
    }
  }
  if (!attention)
    return notRaised();

  // Outputs: O (and LSE) of the attention, as the spec declares them.
  auto returnOp = kernel.getEntryBlock().getTerminator();
  int oOutput = -1, lseOutput = -1;
  for (auto [i, value] : llvm::enumerate(returnOp->getOperands())) {
    if (value == attention.getOutput())
      oOutput = i;
    else if (attention.getLse() && value == attention.getLse())
      lseOutput = i;
    else
      return unsupported("an output that is not the attention's O or LSE");
  }
  if (oOutput < 0 || (attention.getLse() && lseOutput < 0))
    return unsupported("an attention whose O is not an output");
  GpuOptions gpuOptions;
  gpuOptions.chip = targetOption;
  DType oType = getOutputDType(kernel, oOutput);
  if (oType != DType::F32 && oType != DType::BF16 && oType != DType::F16)
    return unsupported("an O of type " + std::string(dtypeName(oType)));
  gpuOptions.outputElementType = std::string(dtypeName(oType));
  if (lseOutput >= 0 && getOutputDType(kernel, lseOutput) != DType::F32)
    return unsupported("an LSE output that is not f32");

  unsigned numInputs = kernel.getNumInputs();
  auto q = mapOperandAxes(attention.getQuery(), kernel, "Q");
  if (!q)
    return fail(q.takeError());
  auto k = mapOperandAxes(attention.getKey(), kernel, "K");
  if (!k)
    return fail(k.takeError());
  auto v = mapOperandAxes(attention.getValue(), kernel, "V");
  if (!v)
    return fail(v.takeError());
  llvm::SmallVector<OperandAxis> sink;
  if (attention.getSink()) {
    auto s = mapOperandAxes(attention.getSink(), kernel, "the sink logits");
    if (!s)
      return unsupported("a sink logit computed by a prologue einsum");
    sink = std::move(*s);
  }

  // The scale: a constant once the dims it reads are fixed, or a param.
  std::optional<double> scale = evaluateScalar(attention.getScale(), kernel);
  int scaleParam = -1;
  if (!scale) {
    auto arg = dyn_cast<BlockArgument>(attention.getScale());
    unsigned firstParam = kernel.getNumDims() + numInputs;
    if (!arg || arg.getOwner() != &kernel.getEntryBlock() ||
        arg.getArgNumber() < firstParam)
      return fail("kernel '" + kernelName +
                  "': the scale is computed from symbolic dims; fix them with "
                  "--shape (e.g. --shape D=128) so that it is a constant");
    scaleParam = arg.getArgNumber() - firstParam;
  }

  llvm::Expected<GpuKernelArtifact> artifact =
      compileAttentionForGpu(attention, gpuOptions);
  if (!artifact) {
    std::string message = llvm::toString(artifact.takeError());
    if (message.find("must be static") != std::string::npos)
      message += " (fix them with --shape, e.g. --shape D=128)";
    return fail(message);
  }

  // The manifest: the kernel's signature as the spec declares it.
  PackageManifest manifest;
  manifest.name = kernelName;
  manifest.target = targetOption;
  manifest.producer = "attnc compile --target " + targetOption;
  for (unsigned i = 0; i < kernel.getNumDims(); ++i) {
    DimSpec dim{cast<StringAttr>(kernel.getDimNames()[i]).getValue().str(),
                std::nullopt};
    int64_t size = kernel.getDimSizes()[i];
    if (!ShapedType::isDynamic(size))
      dim.size = size;
    manifest.dims.push_back(dim);
  }
  auto axesOf = [&](unsigned tensor) {
    std::vector<AxisSpec> axes;
    for (Attribute axis : kernel.getShapeOf(tensor)) {
      if (auto name = dyn_cast<StringAttr>(axis))
        axes.push_back(AxisSpec::ofDim(name.getValue().str()));
      else
        axes.push_back(AxisSpec::ofSize(cast<IntegerAttr>(axis).getInt()));
    }
    return axes;
  };
  auto inputName = [&](int i) {
    return cast<StringAttr>(kernel.getInputNames()[i]).getValue().str();
  };
  auto outputName = [&](int i) {
    return cast<StringAttr>(kernel.getOutputNames()[i]).getValue().str();
  };
  for (unsigned i = 0; i < numInputs; ++i) {
    ArgSpec arg;
    arg.name = inputName(i);
    arg.kind = ArgKind::Input;
    arg.dtype = getInputDType(kernel, i);
    arg.axes = axesOf(i);
    // Q, K, V: rows read with 16-byte vector loads; other tensors (sinks,
    // mask inputs) are read through their strides.
    bool isQkv = (*q)[0].input == static_cast<int>(i) ||
                 (*k)[0].input == static_cast<int>(i) ||
                 (*v)[0].input == static_cast<int>(i);
    arg.layout = isQkv ? Layout::InnerContiguous : Layout::Strided;
    arg.alignment = isQkv ? 16 : 0;
    manifest.args.push_back(arg);
  }
  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    ArgSpec arg;
    arg.name = cast<StringAttr>(kernel.getParamNames()[i]).getValue().str();
    arg.kind = ArgKind::Param;
    std::optional<DType> type = scalarDType(kernel.getParamArg(i).getType());
    if (!type)
      return unsupported("param '" + arg.name + "' of its type");
    arg.dtype = *type;
    Attribute def = kernel.getParamDefaults()[i];
    if (auto f = dyn_cast<FloatAttr>(def))
      arg.defaultValue = f.getValueAsDouble();
    else if (auto n = dyn_cast<IntegerAttr>(def))
      arg.defaultValue = static_cast<double>(n.getInt());
    manifest.args.push_back(arg);
  }
  for (unsigned i = 0; i < kernel.getNumOutputs(); ++i) {
    ArgSpec arg;
    arg.name = outputName(i);
    arg.kind = ArgKind::Output;
    arg.dtype = getOutputDType(kernel, i);
    arg.axes = axesOf(numInputs + i);
    arg.layout = Layout::InnerContiguous;
    manifest.args.push_back(arg);
  }

  // Launch geometry: grid [ceil(M/BM), H, B] over Q's axes.
  auto axisFormula = [&](const OperandAxis &a) -> std::string {
    if (a.axis < 0)
      return "1";
    AxisSpec spec = axesOf(a.input)[a.axis];
    return spec.isDim() ? spec.dim : std::to_string(spec.size);
  };
  EntrySpec entry;
  entry.name = "attn_fwd";
  entry.function = artifact->kernelName;
  entry.module = "attn";
  entry.grid = {"ceil(" + axisFormula((*q)[2]) + "/" +
                    std::to_string(artifact->blockM) + ")",
                axisFormula((*q)[1]), axisFormula((*q)[0])};
  for (int d = 0; d < 3; ++d)
    entry.block[d] = artifact->blockDim[d];
  entry.sharedBytes = artifact->dynamicSharedMemoryBytes;
  // Query heads share key/value heads in groups of H / G.
  std::string heads = axisFormula((*q)[1]), groups = axisFormula((*k)[1]);
  if (heads != groups)
    manifest.constraints.push_back(heads + " % " + groups + " == 0");

  auto tensorSlot = [](ParamSlot::Kind kind, const std::string &arg,
                       int64_t axis, SlotType type) {
    ParamSlot slot;
    slot.kind = kind;
    slot.arg = arg;
    slot.axis = axis;
    slot.type = type;
    return slot;
  };
  auto constSlot = [](double value, SlotType type) {
    ParamSlot slot;
    slot.kind = ParamSlot::Kind::Const;
    slot.value = value;
    slot.type = type;
    return slot;
  };
  /// Size or stride of axis `a` of an operand: a unit axis inserted by
  /// expand_shape has size 1 and stride 0.
  auto axisSlot = [&](const OperandAxis &a, bool stride, SlotType type) {
    if (a.axis < 0)
      return constSlot(stride ? 0 : 1, type);
    return tensorSlot(stride ? ParamSlot::Kind::Stride : ParamSlot::Kind::Size,
                      inputName(a.input), a.axis, type);
  };
  auto outputStride = [&](int output, int64_t axis) {
    return tensorSlot(ParamSlot::Kind::Stride, outputName(output), axis,
                      SlotType::I64);
  };
  const GpuKernelSignature &signature = artifact->signature;
  for (unsigned p = 0; p < GpuKernelSignature::kNumFixedParams; ++p) {
    llvm::StringRef name = signature.params[p].name;
    ParamSlot slot;
    if (name == "q" || name == "k" || name == "v") {
      auto &axes = name == "q" ? *q : name == "k" ? *k : *v;
      slot = tensorSlot(ParamSlot::Kind::Ptr, inputName(axes[0].input), 0,
                        SlotType::Ptr);
    } else if (name == "o") {
      slot = tensorSlot(ParamSlot::Kind::Ptr, outputName(oOutput), 0,
                        SlotType::Ptr);
    } else if (name == "lse") {
      // An absent tensor is a null pointer: eight zero bytes.
      slot = lseOutput >= 0 ? tensorSlot(ParamSlot::Kind::Ptr,
                                         outputName(lseOutput), 0,
                                         SlotType::Ptr)
                            : constSlot(0, SlotType::I64);
    } else if (name == "sink") {
      slot = !sink.empty() ? tensorSlot(ParamSlot::Kind::Ptr,
                                        inputName(sink[0].input), 0,
                                        SlotType::Ptr)
                           : constSlot(0, SlotType::I64);
    } else if (name == "B" || name == "H" || name == "M") {
      slot = axisSlot((*q)[name == "B" ? 0 : name == "H" ? 1 : 2],
                      /*stride=*/false, SlotType::I32);
    } else if (name == "G" || name == "N") {
      slot = axisSlot((*k)[name == "G" ? 1 : 2], /*stride=*/false,
                      SlotType::I32);
    } else if (name.consume_front("q.stride.")) {
      slot = axisSlot((*q)[name == "b" ? 0 : name == "h" ? 1 : 2], true,
                      SlotType::I64);
    } else if (name.consume_front("k.stride.")) {
      slot = axisSlot((*k)[name == "b" ? 0 : name == "g" ? 1 : 2], true,
                      SlotType::I64);
    } else if (name.consume_front("v.stride.")) {
      slot = axisSlot((*v)[name == "b" ? 0 : name == "g" ? 1 : 2], true,
                      SlotType::I64);
    } else if (name.consume_front("o.stride.")) {
      slot = outputStride(oOutput, name == "b" ? 0 : name == "h" ? 1 : 2);
    } else if (name.consume_front("lse.stride.")) {
      slot = lseOutput >= 0 ? outputStride(lseOutput, name == "b" ? 0 : 1)
                            : constSlot(0, SlotType::I64);
    } else if (name.consume_front("sink.stride.")) {
      slot = !sink.empty()
                 ? axisSlot(sink[name == "b" ? 0 : name == "h" ? 1 : 2], true,
                            SlotType::I64)
                 : constSlot(0, SlotType::I64);
    } else if (name == "scale") {
      if (scale) {
        slot = constSlot(*scale, SlotType::F32);
      } else {
        slot.kind = ParamSlot::Kind::Param;
        slot.arg = cast<StringAttr>(kernel.getParamNames()[scaleParam])
                       .getValue()
                       .str();
        slot.type = SlotType::F32;
      }
    } else {
      return fail("internal error: unknown GPU kernel parameter '" + name +
                  "'");
    }
    entry.params.push_back(slot);
  }
  for (const GpuCapture &capture : signature.captures) {
    llvm::StringRef source = capture.source;
    SlotType type = toSlotType(signature.params[capture.firstParam].kind);
    if (source.consume_front("dim:")) {
      ParamSlot slot;
      slot.kind = ParamSlot::Kind::Dim;
      slot.arg = source.str();
      slot.type = type;
      entry.params.push_back(slot);
    } else if (source.consume_front("param:")) {
      ParamSlot slot;
      slot.kind = ParamSlot::Kind::Param;
      slot.arg = source.str();
      slot.type = type;
      entry.params.push_back(slot);
    } else if (source.consume_front("input:")) {
      entry.params.push_back(
          tensorSlot(ParamSlot::Kind::Ptr, source.str(), 0, SlotType::Ptr));
      for (int64_t d = 0; d < capture.rank; ++d)
        entry.params.push_back(tensorSlot(ParamSlot::Kind::Size, source.str(),
                                          d, SlotType::I64));
      for (int64_t d = 0; d < capture.rank; ++d)
        entry.params.push_back(tensorSlot(ParamSlot::Kind::Stride,
                                          source.str(), d, SlotType::I64));
    } else {
      return unsupported("a mask or score_mod that reads a value computed in "
                         "the kernel ('" +
                         source + "')");
    }
  }
  manifest.entries.push_back(std::move(entry));

  PackageWriter writer(std::move(manifest));
  writer.addModule("attn", ModuleFormat::Ptx, artifact->ptx);
  if (Status status = writer.writeFile(outputPath))
    return fail("cannot write '" + outputPath + "': " + status.getMessage());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  cl::HideUnrelatedOptions(attncCategory);
  cl::ParseCommandLineOptions(argc, argv, "attnc: attention variant compiler\n");

  DialectRegistry registry;
  mlir::attn::registerCodegenDialects(registry);
  MLIRContext context(registry);
  // Diagnostics point into the spec; the IR of the op is noise for users.
  context.printOpOnDiagnostic(false);
  context.loadDialect<AttnDialect, arith::ArithDialect, math::MathDialect,
                      tensor::TensorDialect>();

  mlir::attn::enablePipelineTiming(timePasses);
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
