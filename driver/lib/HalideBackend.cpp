//===- HalideBackend.cpp - The Halide backend, loaded on first use --------===//

#include "attn/Driver/HalideBackend.h"
#include "attn/CPU/CpuTarget.h"
#include "attn/Halide/HalideWing.h"

#include "mlir/Bytecode/BytecodeWriter.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include "CodegenFingerprint.h"

#include <dlfcn.h>

#include <atomic>
#include <mutex>

using namespace attn;

namespace {

/// The plugin's entry points once loaded (isHalideBackendLoaded reads it
/// without the loader's lock).
std::atomic<const HalideWingInterface *> loadedPlugin{nullptr};

/// Where the plugin may be, in the order tried (see HalideBackend.h).
std::vector<std::string> getPluginCandidates() {
  std::vector<std::string> candidates;
  Dl_info self;
  if (dladdr(reinterpret_cast<void *>(&getPluginCandidates), &self) &&
      self.dli_fname && llvm::sys::path::is_absolute(self.dli_fname)) {
    llvm::SmallString<256> beside(llvm::sys::path::parent_path(self.dli_fname));
    llvm::sys::path::append(beside, kHalideWingFileName);
    candidates.push_back(beside.str().str());
  }
  std::string executable = llvm::sys::fs::getMainExecutable(
      nullptr, reinterpret_cast<void *>(&getPluginCandidates));
  if (!executable.empty()) {
    llvm::SmallString<256> installed(ATTN_INSTALL_LIBDIR);
    if (llvm::sys::path::is_relative(installed)) {
      installed = llvm::sys::path::parent_path(executable);
      llvm::sys::path::append(installed, "..", ATTN_INSTALL_LIBDIR);
      // The executable's path is resolved (no link to climb out of).
      llvm::sys::path::remove_dots(installed, /*remove_dot_dot=*/true);
    }
    llvm::sys::path::append(installed, kHalideWingFileName);
    candidates.push_back(installed.str().str());
  }
  candidates.push_back(ATTN_HALIDE_WING_BUILD_PATH);
  return candidates;
}

/// Loads the plugin once per process (an error is kept and returned again).
llvm::Expected<const HalideWingInterface *> getPlugin() {
  static std::mutex mutex;
  static std::string failure;
  std::lock_guard<std::mutex> lock(mutex);
  if (const HalideWingInterface *plugin = loadedPlugin)
    return plugin;
  if (!failure.empty())
    return llvm::createStringError(failure);
  llvm::Expected<std::string> found = findHalideBackend();
  if (!found) {
    failure = llvm::toString(found.takeError());
    return llvm::createStringError(failure);
  }
  // Local: the plugin's symbols stay its own (it holds its own copy of
  // attnc's libraries).
  void *handle = dlopen(found->c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *reason = dlerror();
    failure = "cannot load the Halide backend's plugin " + *found + ": " +
              (reason ? reason : "unknown error");
    return llvm::createStringError(failure);
  }
  using Entry = const HalideWingInterface *(*)();
  auto entry = reinterpret_cast<Entry>(dlsym(handle, kHalideWingEntryName));
  const HalideWingInterface *interface = entry ? entry() : nullptr;
  if (!interface) {
    failure = "the Halide backend's plugin " + *found + " has no entry point " +
              kHalideWingEntryName;
    return llvm::createStringError(failure);
  }
  if (llvm::StringRef(interface->fingerprint) != ATTN_CODEGEN_FINGERPRINT) {
    failure = "the Halide backend's plugin " + *found +
              " is from another build of attnc; rebuild it (target "
              "attnc_halide)";
    return llvm::createStringError(failure);
  }
  loadedPlugin = interface;
  return interface;
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
takeObject(HalideWingResult &result, llvm::StringRef name) {
  if (!result.error.empty())
    return llvm::createStringError(result.error);
  return llvm::MemoryBuffer::getMemBufferCopy(result.object, name);
}

} // namespace

llvm::Expected<std::string> attn::findHalideBackend() {
  std::vector<std::string> candidates = getPluginCandidates();
  for (const std::string &path : candidates)
    if (llvm::sys::fs::exists(path))
      return path;
  return llvm::createStringError(
      std::string("the Halide backend's plugin ") + kHalideWingFileName +
      " is in none of " + llvm::join(candidates, ", ") +
      " (build the target attnc_halide, or use --backend mlir)");
}

llvm::Expected<CpuKernelObject>
attn::compileHalideObject(mlir::ModuleOp module,
                          const HalideScheduleOptions &options) {
  llvm::Expected<KernelSignature> signature = KernelSignature::read(module);
  if (!signature)
    return signature.takeError();
  llvm::Expected<const HalideWingInterface *> plugin = getPlugin();
  if (!plugin)
    return plugin.takeError();
  std::string bytecode;
  llvm::raw_string_ostream os(bytecode);
  if (mlir::failed(mlir::writeBytecodeToFile(module, os)))
    return llvm::createStringError("cannot write the kernel as bytecode for "
                                   "the Halide backend");
  HalideWingResult result;
  (*plugin)->compileKernel(bytecode, options, result);
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> object =
      takeObject(result, signature->name);
  if (!object)
    return object.takeError();
  CpuKernelObject kernel;
  kernel.object = std::move(*object);
  kernel.signature = std::move(*signature);
  kernel.flags = kHalidePath;
  kernel.stats.lowerSeconds = result.lowerSeconds;
  kernel.stats.codegenSeconds = result.codegenSeconds;
  kernel.stats.warnings = std::move(result.warnings);
  return kernel;
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
attn::compileHalideRuntime() {
  llvm::Expected<const HalideWingInterface *> plugin = getPlugin();
  if (!plugin)
    return plugin.takeError();
  HalideWingResult result;
  (*plugin)->compileRuntime(result);
  return takeObject(result, "halide_runtime");
}

std::vector<std::string> attn::describeHalideRuntime() {
  // Halide targets the host with features of its own choosing: the host's
  // CPU and features decide them.
  std::string host = "unknown";
  if (llvm::Expected<CpuTarget> target = getHostCpuTarget())
    host = target->triple + "," + target->cpu + "," + target->features;
  else
    llvm::consumeError(target.takeError());
  return {"halide=" ATTN_HALIDE_LIBRARY, "halide-host=" + host};
}

std::vector<std::string>
attn::describeHalideCompile(const HalideScheduleOptions &options) {
  // The runtime's fields first: a kernel and the runtime it links against
  // share them.
  std::vector<std::string> fields = describeHalideRuntime();
  fields.push_back("scheduler=" + options.scheduler);
  fields.push_back("parallelism=" + std::to_string(options.getParallelism()));
  std::string estimates = "estimates=";
  for (int64_t size : options.dimEstimates)
    estimates += std::to_string(size) + ",";
  fields.push_back(estimates);
  return fields;
}

bool attn::isHalideBackendLoaded() { return loadedPlugin != nullptr; }
