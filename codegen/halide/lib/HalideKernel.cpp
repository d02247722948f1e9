//===- HalideKernel.cpp - A cascade compiled through Halide ---------------===//

#include "attn/Halide/HalideKernel.h"
#include "attn/CPU/DiagnosticCollector.h"
#include "attn/Transforms/Passes.h"

#include "CascadeToHalide.h"
#include "HalideSchedule.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <chrono>
#include <stdexcept>

using namespace attn;
namespace HL = Halide;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// Halide's compile-time reports: warnings (an autoscheduler's notes on a
/// schedule) are dropped, errors thrown as std::runtime_error for the
/// compile to catch; the default reporter would print both.
class ErrorReporter : public HL::CompileTimeErrorReporter {
public:
  void warning(const char *) override {}
  void error(const char *message) override {
    std::string text = message ? message : "unknown Halide error";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
      text.pop_back();
    throw std::runtime_error(text);
  }
};

void installErrorReporter() {
  static ErrorReporter reporter;
  static bool installed = [] {
    HL::set_custom_compile_time_error_reporter(&reporter);
    return true;
  }();
  (void)installed;
}

/// The host, as Halide targets it, with IEEE float semantics: Halide's
/// default fast math would let LLVM assume no infinities (absent entries,
/// empty rows and their -inf statistics rely on them) and reassociate
/// shifted exponentials. Without the sapphirerapids feature: with it,
/// Halide 14 emits bf16 conversions that crash at run time.
HL::Target getTarget() {
  return HL::get_host_target()
      .without_feature(HL::Target::AVX512_SapphireRapids)
      .with_feature(HL::Target::StrictFloat);
}

/// The object `write` writes to the path it is given: Halide writes files,
/// so through a temporary one.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
compileObject(const std::string &name,
              llvm::function_ref<void(const std::string &)> write) {
  llvm::SmallString<128> path;
  if (std::error_code error =
          llvm::sys::fs::createTemporaryFile("attnc-halide", "o", path))
    return makeError("cannot create a temporary file for the Halide object: " +
                     error.message());
  llvm::FileRemover remover(path);
  write(path.str().str());
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> object =
      llvm::MemoryBuffer::getFile(path);
  if (!object)
    return makeError("cannot read the Halide object: " +
                     object.getError().message());
  // The buffer outlives the file.
  return llvm::MemoryBuffer::getMemBufferCopy((*object)->getBuffer(), name);
}

} // namespace

llvm::Expected<CpuKernelObject>
attn::compileHalideKernelObject(mlir::ModuleOp module,
                                const HalideScheduleOptions &options) {
  using Clock = std::chrono::steady_clock;
  if (!halide::isKnownScheduler(options.scheduler))
    return makeError("unknown Halide scheduler '" + options.scheduler +
                     "' (Mullapudi2016, Li2018, Adams2019 or Derived)");
  llvm::Expected<KernelSignature> signature = KernelSignature::read(module);
  if (!signature)
    return signature.takeError();
  CpuKernelObject result;
  result.signature = std::move(*signature);
  result.flags = kHalidePath;
  const std::string &name = result.signature.name;

  auto start = Clock::now();
  mlir::MLIRContext *context = module->getContext();
  DiagnosticCollector diagnostics(context);
  mlir::PassManager pm(context);
  // Divisions by values known only at run time made total, as on the
  // other paths.
  pm.nest<mlir::attn::KernelOp>().addPass(
      mlir::attn::createAttnGuardIntegerDivision());
  if (mlir::failed(pm.run(module)))
    return diagnostics.takeError("preparing kernel '" + name +
                                 "' for the Halide backend failed");
  mlir::attn::KernelOp kernel;
  module.walk([&](mlir::attn::KernelOp op) { kernel = op; });
  if (!kernel)
    return makeError("the module holds no attn.kernel");
  result.stats.lowerSeconds = secondsSince(start);

  installErrorReporter();
  HL::Target target = getTarget();
  // Builds, schedules with `scheduler` and compiles the pipeline; Halide's
  // errors are thrown.
  auto compileWith = [&](llvm::StringRef scheduler) -> llvm::Error {
    auto phase = Clock::now();
    mlir::FailureOr<halide::CascadePipeline> cascade =
        halide::buildCascadePipeline(kernel, options.dimEstimates);
    if (mlir::failed(cascade))
      return diagnostics.takeError("building the Halide pipeline of kernel '" +
                                   name + "' failed");
    HL::Pipeline pipeline = halide::schedulePipeline(
        *cascade, scheduler, target, options.getParallelism());
    result.stats.lowerSeconds += secondsSince(phase);
    phase = Clock::now();
    llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> object =
        compileObject(name, [&](const std::string &path) {
          HL::Module module = pipeline.compile_to_module(
              cascade->arguments, name,
              target.with_feature(HL::Target::NoRuntime));
          module.compile({{HL::OutputFileType::object, path}});
        });
    if (!object)
      return object.takeError();
    result.object = std::move(*object);
    result.stats.codegenSeconds += secondsSince(phase);
    return llvm::Error::success();
  };
  try {
    try {
      if (llvm::Error error = compileWith(options.scheduler))
        return std::move(error);
    } catch (const std::exception &error) {
      if (options.scheduler == "Derived")
        throw;
      // Halide 14's autoschedulers fail on some pipelines (internal errors,
      // schedules that do not lower): the derived schedule always applies.
      result.stats.warnings.push_back(
          "Halide's " + options.scheduler + " autoscheduler failed on kernel '" +
          name + "' (" + llvm::StringRef(error.what()).split('\n').first.str() +
          "); it runs with the derived schedule");
      if (llvm::Error error = compileWith("Derived"))
        return std::move(error);
    }
  } catch (const std::exception &error) {
    return makeError("Halide could not compile kernel '" + name +
                     "': " + error.what());
  } catch (...) {
    return makeError("Halide could not compile kernel '" + name + "'");
  }
  return result;
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
attn::compileHalideRuntimeObject() {
  installErrorReporter();
  try {
    return compileObject("halide_runtime", [](const std::string &path) {
      HL::compile_standalone_runtime(path, getTarget());
    });
  } catch (const std::exception &error) {
    return makeError(std::string("Halide could not compile its runtime: ") +
                     error.what());
  }
}
