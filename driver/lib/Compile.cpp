//===- Compile.cpp - A kernel compiled for a target, through the cache ----===//

#include "attn/Driver/Compile.h"
#include "attn/Driver/ArtifactCache.h"
#include "attn/Driver/CacheKey.h"
#include "attn/Driver/CpuBackendChoice.h"
#include "attn/Driver/FatalErrors.h"
#include "attn/Driver/HalideBackend.h"

#include "CompileRemarks.h"

#include <chrono>
#include <memory>
#include <mutex>

using namespace attn;

namespace {

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// The cache of `options`, if any, and the key of the `kind` artifact of
/// `module` in it.
struct CacheSlot {
  std::optional<ArtifactCache> cache;
  CacheKey key{};
  ArtifactKind kind;

  CacheSlot(const CacheOptions &options, mlir::ModuleOp module,
            ArtifactKind kind, llvm::ArrayRef<std::string> fields)
      : kind(kind) {
    if (!options.directory)
      return;
    cache.emplace(*options.directory);
    key = computeCacheKey(module, kind, fields);
  }

  std::optional<CachedArtifact> lookup(std::vector<std::string> &warnings) {
    if (!cache)
      return std::nullopt;
    std::string warning;
    std::optional<CachedArtifact> entry = cache->lookup(key, kind, warning);
    if (!warning.empty())
      warnings.push_back(warning + "; rebuilding it");
    return entry;
  }

  /// A cache that cannot be written costs the next run a compile, nothing
  /// more: a warning, not an error.
  void store(llvm::StringRef payload, uint32_t flags, llvm::StringRef notes,
             std::vector<std::string> &warnings) {
    if (!cache)
      return;
    if (llvm::Error error = cache->store(key, kind, payload, flags, notes))
      warnings.push_back("cannot write the artifact cache: " +
                         llvm::toString(std::move(error)));
  }
};

std::function<void()> &getCodegenHook() {
  static std::function<void()> hook;
  return hook;
}

/// Runs `generate` (a code generator, a loader: where LLVM may report fatal
/// errors) so that LLVM's fatal errors come back as errors.
template <typename T>
llvm::Expected<T> runCodegen(llvm::function_ref<llvm::Expected<T>()> generate) {
  return runProtected<T>([&]() -> llvm::Expected<T> {
    if (const std::function<void()> &hook = getCodegenHook())
      hook();
    return generate();
  });
}

/// The Halide runtime Halide kernel objects link against: looked up in (or
/// compiled into) `cache` by the first call of the process, then kept.
llvm::Expected<std::shared_ptr<const llvm::MemoryBuffer>>
getHalideRuntime(mlir::MLIRContext *context, const CacheOptions &cache,
                 std::vector<std::string> &warnings) {
  static std::mutex mutex;
  static std::shared_ptr<const llvm::MemoryBuffer> compiled;
  std::lock_guard<std::mutex> lock(mutex);
  if (compiled)
    return compiled;
  // The runtime does not depend on a kernel: its key is made of an empty
  // module.
  mlir::OwningOpRef<mlir::ModuleOp> empty =
      mlir::ModuleOp::create(mlir::UnknownLoc::get(context));
  CacheSlot slot(cache, *empty, ArtifactKind::HalideRuntime,
                 describeHalideRuntime());
  if (std::optional<CachedArtifact> entry = slot.lookup(warnings)) {
    compiled = std::move(entry->payload);
    return compiled;
  }
  llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> object =
      runCodegen<std::unique_ptr<llvm::MemoryBuffer>>(
          [] { return compileHalideRuntime(); });
  if (!object)
    return object.takeError();
  slot.store((*object)->getBuffer(), /*flags=*/0, "", warnings);
  compiled = std::move(*object);
  return compiled;
}

/// Sets `object`'s support object to the Halide runtime.
llvm::Error attachHalideRuntime(CpuKernelObject &object,
                                mlir::MLIRContext *context,
                                const CacheOptions &cache,
                                std::vector<std::string> &warnings) {
  llvm::Expected<std::shared_ptr<const llvm::MemoryBuffer>> runtime =
      getHalideRuntime(context, cache, warnings);
  if (!runtime)
    return runtime.takeError();
  object.supportObject = std::move(*runtime);
  return llvm::Error::success();
}

} // namespace

void attn::setCodegenHookForTesting(std::function<void()> hook) {
  getCodegenHook() = std::move(hook);
}

CacheOptions CacheOptions::standard(bool disabled) {
  CacheOptions options;
  if (!disabled)
    options.directory = ArtifactCache::getDefaultDirectory();
  return options;
}

llvm::Expected<CpuKernelObject>
attn::compileCpuObject(mlir::ModuleOp module, const CpuTarget &target,
                       const CpuKernelOptions &options,
                       const CacheOptions &cache) {
  // On a hit nothing below the lookup runs: the key needs only the module
  // as written and the backend, whose choice under `auto` runs the raise's
  // recognition on a copy of the module (under a millisecond; the kinds of
  // object differ, so it cannot wait for the lookup).
  auto start = std::chrono::steady_clock::now();
  CpuBackend backend = resolveCpuBackend(module, options.backend);
  bool halide = backend == CpuBackend::Halide;
  if (halide) {
    llvm::Expected<CpuTarget> host = getHostCpuTarget();
    if (!host)
      return host.takeError();
    if (host->triple != target.triple || host->cpu != target.cpu ||
        host->features != target.features)
      return llvm::createStringError(
          "the Halide backend compiles for the host CPU only; use --backend "
          "mlir for another CPU");
  }
  CacheSlot slot(cache, module,
                 halide ? ArtifactKind::HalideObject : ArtifactKind::CpuObject,
                 halide ? describeHalideCompile(options.halide)
                        : describeCpuCompile(target, options));
  std::vector<std::string> warnings;
  if (std::optional<CachedArtifact> entry = slot.lookup(warnings)) {
    replayRemarks(module, entry->notes);
    // A miss reads the signature while compiling.
    llvm::Expected<KernelSignature> signature = KernelSignature::read(module);
    if (!signature)
      return signature.takeError();
    CpuKernelObject result;
    result.signature = std::move(*signature);
    result.object = std::move(entry->payload);
    result.flags = entry->flags;
    if (halide)
      if (llvm::Error error = attachHalideRuntime(result, module->getContext(),
                                                  cache, warnings))
        return std::move(error);
    result.stats.cacheHit = true;
    result.stats.warnings = std::move(warnings);
    result.stats.loadSeconds = secondsSince(start);
    return result;
  }
  double lookupSeconds = secondsSince(start);

  RemarkRecorder remarks(module);
  llvm::Expected<CpuKernelObject> result =
      runCodegen<CpuKernelObject>([&]() -> llvm::Expected<CpuKernelObject> {
        if (halide)
          return compileHalideObject(module, options.halide);
        return compileCpuKernelObject(module, target, options);
      });
  if (!result)
    return result.takeError();
  start = std::chrono::steady_clock::now();
  slot.store(result->object->getBuffer(), result->flags, remarks.serialize(),
             warnings);
  if (halide)
    if (llvm::Error error =
            attachHalideRuntime(*result, module->getContext(), cache, warnings))
      return std::move(error);
  result->stats.loadSeconds += lookupSeconds + secondsSince(start);
  warnings.insert(warnings.end(), result->stats.warnings.begin(),
                  result->stats.warnings.end());
  result->stats.warnings = std::move(warnings);
  return result;
}

llvm::Expected<std::unique_ptr<CpuKernel>>
attn::compileCpuKernel(mlir::ModuleOp module, const CpuKernelOptions &options,
                       const CacheOptions &cache) {
  llvm::Expected<CpuTarget> host = getHostCpuTarget();
  if (!host)
    return host.takeError();
  llvm::Expected<CpuKernelObject> object =
      compileCpuObject(module, *host, options, cache);
  if (!object)
    return object.takeError();
  // Linking into the process runs LLVM too.
  return runCodegen<std::unique_ptr<CpuKernel>>(
      [&] { return CpuKernel::load(std::move(*object), options.threads); });
}

llvm::Expected<GpuPackageArtifact>
attn::compileGpuPackage(mlir::ModuleOp module, const GpuPackageOptions &options,
                        const CacheOptions &cache) {
  CacheSlot slot(cache, module, ArtifactKind::GpuPackage,
                 describeGpuPackageOptions(options));
  GpuPackageArtifact artifact;
  if (std::optional<CachedArtifact> entry = slot.lookup(artifact.warnings)) {
    replayRemarks(module, entry->notes);
    artifact.bytes = entry->payload->getBuffer().str();
    artifact.cacheHit = true;
    return artifact;
  }
  RemarkRecorder remarks(module);
  llvm::Expected<PackageWriter> writer = runCodegen<PackageWriter>(
      [&] { return buildGpuPackage(module, options); });
  if (!writer)
    return writer.takeError();
  if (Status status = writer->serialize(artifact.bytes))
    return llvm::createStringError(status.getMessage());
  slot.store(artifact.bytes, /*flags=*/0, remarks.serialize(),
             artifact.warnings);
  return artifact;
}
