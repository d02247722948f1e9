//===- PackageHandle.h - What an attnc_package points to --------*- C++ -*-===//
//
// Private to the runtime library: the C API's package handle, shared by the
// host-only part of the API (CApi.cpp) and the CUDA part (cuda/).
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_LIB_PACKAGEHANDLE_H
#define ATTN_RUNTIME_LIB_PACKAGEHANDLE_H

#include "attn/Runtime/Package.h"
#include "attnc/attnc.h"

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace attn {

/// The workspace buffers of launches on one stream, one per workspace of the
/// package (null until a launch needs it), grown to the largest size needed.
struct WorkspaceBuffers {
  std::vector<void *> data;  ///< CUdeviceptr, parallel to workspaces
  std::vector<size_t> bytes; ///< allocated size of each
};

/// Modules and functions of one package loaded on one device.
struct LoadedPackage {
  std::vector<void *> modules;   ///< CUmodule, parallel to Package::modules
  std::vector<void *> functions; ///< CUfunction, parallel to entries
  /// The device's SMs: persistent entries launch a few CTAs per SM.
  int multiprocessors = 0;
  /// Keyed by CUstream (null: the default stream). Launches on one stream
  /// are ordered, so they share buffers; launches on two streams may run at
  /// once, so they never do. Kept until the package is freed.
  std::map<void *, WorkspaceBuffers> workspaces;
};

/// Sets the calling thread's last error and returns its code.
attnc_status setLastError(const Status &status);

/// Unloads every module and frees every workspace buffer of `handle`
/// (tolerating a driver already shut down).
void unloadPackageModules(attnc_package handle);

} // namespace attn

struct attnc_package_t {
  attn::Package pkg;
  /// C views of the signature, built once at load.
  std::vector<std::vector<const char *>> axisDims;
  std::vector<std::vector<int64_t>> axisSizes;

  std::mutex mutex; ///< guards `loaded`, workspace buffers included
  std::map<int, attn::LoadedPackage> loaded;
};

#endif // ATTN_RUNTIME_LIB_PACKAGEHANDLE_H
