//===- CudaDriver.cpp - libcuda loaded at run time ------------------------===//

#include "CudaDriver.h"

#include <cstdlib>
#include <dlfcn.h>

namespace attn {
namespace cuda {

Driver &Driver::get() {
  // Intentionally leaked: the driver must outlive every static that may
  // unload modules at exit.
  static Driver *driver = new Driver();
  return *driver;
}

Driver::Driver() { load(); }

void Driver::load() {
  auto noDevice = [&](const std::string &why) {
    status = Status(ATTNC_ERROR_NO_DEVICE, "no CUDA device: " + why);
  };
  // ATTNC_LIBCUDA lets tests substitute a fake driver and users point at a
  // driver outside the loader path.
  const char *path = std::getenv("ATTNC_LIBCUDA");
  if (!path || !*path)
    path = "libcuda.so.1";
  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *err = dlerror();
    noDevice(std::string("cannot load ") + path + " (" +
             (err ? err : "unknown error") + ")");
    return;
  }
#define ATTN_CUDA_FN(name, symbol, params)                                     \
  {                                                                            \
    void *sym = dlsym(handle, symbol);                                         \
    if (!sym)                                                                  \
      sym = dlsym(handle, #name);                                              \
    if (!sym) {                                                                \
      noDevice(std::string(path) + " lacks " + symbol);                        \
      return;                                                                  \
    }                                                                          \
    name = reinterpret_cast<decltype(name)>(sym);                              \
  }
#define ATTN_CUDA_OPTIONAL_FN(name, symbol, params)                            \
  {                                                                            \
    void *sym = dlsym(handle, symbol);                                         \
    if (!sym)                                                                  \
      sym = dlsym(handle, #name);                                              \
    name = reinterpret_cast<decltype(name)>(sym);                              \
  }
#include "DriverFunctions.def"

  if (Status s = check(cuInit(0), "cuInit")) {
    noDevice(s.getMessage());
    return;
  }
  int count = 0;
  if (Status s = check(cuDeviceGetCount(&count), "cuDeviceGetCount")) {
    noDevice(s.getMessage());
    return;
  }
  if (count <= 0) {
    noDevice("the driver reports no devices");
    return;
  }
  numDevices = count;
  contexts.assign(static_cast<size_t>(count), nullptr);
}

Status Driver::check(CUresult result, const std::string &what) const {
  if (result == CUDA_SUCCESS)
    return Status::ok();
  const char *name = nullptr, *text = nullptr;
  if (cuGetErrorName)
    cuGetErrorName(result, &name);
  if (cuGetErrorString)
    cuGetErrorString(result, &text);
  std::string msg = what + " failed: " +
                    (name ? name : "CUDA error " + std::to_string(result));
  if (text)
    msg += std::string(" (") + text + ")";
  return Status(ATTNC_ERROR_CUDA, msg);
}

Status Driver::makeCurrent(int device) {
  if (!status.isOk())
    return status;
  if (device < 0 || device >= numDevices)
    return invalidArgument("CUDA device " + std::to_string(device) +
                           " does not exist (this machine has " +
                           std::to_string(numDevices) + ")");
  CUcontext ctx;
  {
    std::lock_guard<std::mutex> lock(mutex);
    ctx = contexts[static_cast<size_t>(device)];
    if (!ctx) {
      CUdevice dev;
      if (Status s = check(cuDeviceGet(&dev, device), "cuDeviceGet"))
        return s;
      if (Status s = check(cuDevicePrimaryCtxRetain(&ctx, dev),
                           "cuDevicePrimaryCtxRetain"))
        return s;
      contexts[static_cast<size_t>(device)] = ctx;
    }
  }
  return check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
}

Status Driver::capability(int device, int &major, int &minor) {
  if (Status s = makeCurrent(device))
    return s;
  CUdevice dev;
  if (Status s = check(cuDeviceGet(&dev, device), "cuDeviceGet"))
    return s;
  if (Status s =
          check(cuDeviceGetAttribute(
                    &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
                "cuDeviceGetAttribute"))
    return s;
  return check(cuDeviceGetAttribute(
                   &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
               "cuDeviceGetAttribute");
}

Status Driver::multiprocessorCount(int device, int &count) {
  if (Status s = makeCurrent(device))
    return s;
  CUdevice dev;
  if (Status s = check(cuDeviceGet(&dev, device), "cuDeviceGet"))
    return s;
  return check(cuDeviceGetAttribute(
                   &count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev),
               "cuDeviceGetAttribute");
}

} // namespace cuda
} // namespace attn
