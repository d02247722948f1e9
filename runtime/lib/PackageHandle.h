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

/// Modules and functions of one package loaded on one device.
struct LoadedPackage {
  std::vector<void *> modules;   ///< CUmodule, parallel to Package::modules
  std::vector<void *> functions; ///< CUfunction, parallel to entries
};

/// Sets the calling thread's last error and returns its code.
attnc_status setLastError(const Status &status);

/// Unloads every module of `handle` (tolerating a driver already shut down).
void unloadPackageModules(attnc_package handle);

} // namespace attn

struct attnc_package_t {
  attn::Package pkg;
  /// C views of the signature, built once at load.
  std::vector<std::vector<const char *>> axisDims;
  std::vector<std::vector<int64_t>> axisSizes;

  std::mutex mutex; ///< guards `loaded`
  std::map<int, attn::LoadedPackage> loaded;
};

#endif // ATTN_RUNTIME_LIB_PACKAGEHANDLE_H
