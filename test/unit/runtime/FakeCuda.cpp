//===- FakeCuda.cpp - A fake libcuda for testing the launch path ----------===//
//
// Loaded through ATTNC_LIBCUDA, it lets the tests drive the runtime's whole
// device path on a machine without a GPU: two sm_90 devices, "device
// memory" from malloc (of the device whose context is current), distinct
// streams, launches (with the device they went to) and stream synchronizations
// recorded (not run), a JIT error for PTX that contains
// "BAD_PTX", and a switch to make teardown calls report
// CUDA_ERROR_DEINITIALIZED as at process exit.
//
//===----------------------------------------------------------------------===//

#include "../../../runtime/lib/cuda/CudaDriver.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

namespace {
int calls = 0;
int unloads = 0;
int unloadResult = 0;
int numParams = 0;
int syncs = 0;
std::map<uintptr_t, size_t> allocations; ///< address -> size
std::map<uintptr_t, int> allocationDevices; ///< address -> device
constexpr int kDevices = 2;
char contexts[kDevices];
int currentDevice = 0;
char streams[64];
int numStreams = 0;
struct Launch {
  unsigned grid[3], block[3], shared;
  std::vector<uint64_t> params;
  int device;
};
std::vector<Launch> launches;
int marker;
} // namespace

using namespace attn::cuda;

extern "C" {

// Test controls.
void fake_reset(int params) {
  calls = 0;
  unloads = 0;
  unloadResult = 0;
  numParams = params;
  syncs = 0;
  launches.clear();
}
int fake_calls() { return calls; }
int fake_unloads() { return unloads; }
void fake_set_unload_result(int r) { unloadResult = r; }
int fake_num_launches() { return static_cast<int>(launches.size()); }
int fake_stream_syncs() { return syncs; }
int fake_live_allocations() { return static_cast<int>(allocations.size()); }
/// The size of the allocation at `p`, or 0 if there is none.
uint64_t fake_allocation_size(uint64_t p) {
  auto it = allocations.find(static_cast<uintptr_t>(p));
  return it == allocations.end() ? 0 : it->second;
}
/// The device whose context was current at launch `i`.
int fake_launch_device(int i) { return launches[static_cast<size_t>(i)].device; }
/// Copies launch `i`: grid[3], block[3], shared, then the parameters.
void fake_launch(int i, unsigned *dims7, uint64_t *params) {
  const Launch &l = launches[static_cast<size_t>(i)];
  for (int k = 0; k < 3; ++k) {
    dims7[k] = l.grid[k];
    dims7[3 + k] = l.block[k];
  }
  dims7[6] = l.shared;
  for (size_t p = 0; p < l.params.size(); ++p)
    params[p] = l.params[p];
}

// The driver API.
int cuInit(unsigned) { return ++calls, 0; }
int cuDriverGetVersion(int *v) { return ++calls, *v = 13000, 0; }
int cuGetErrorName(int r, const char **s) {
  *s = r == 218 ? "CUDA_ERROR_INVALID_PTX"
       : r == 4 ? "CUDA_ERROR_DEINITIALIZED"
                : "CUDA_ERROR_INVALID_VALUE";
  return 0;
}
int cuGetErrorString(int, const char **s) { return *s = "fake", 0; }
int cuDeviceGetCount(int *n) { return ++calls, *n = kDevices, 0; }
int cuDeviceGet(int *d, int i) { return ++calls, *d = i, 0; }
int cuDeviceGetName(char *s, int n, int) {
  return ++calls, std::strncpy(s, "Fake H100", n), 0;
}
int cuDeviceGetAttribute(int *v, int attr, int) {
  ++calls;
  *v = attr == 75 ? 9 : 0; // compute capability 9.0
  return 0;
}
int cuDevicePrimaryCtxRetain(CUcontext *ctx, int device) {
  return ++calls, *ctx = reinterpret_cast<CUcontext>(&contexts[device]), 0;
}
int cuCtxSetCurrent(CUcontext ctx) {
  ++calls;
  currentDevice = static_cast<int>(reinterpret_cast<char *>(ctx) - contexts);
  return 0;
}
int cuCtxSynchronize() { return ++calls, 0; }
int cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned n, int *opts,
                       void **values) {
  ++calls;
  if (std::strstr(static_cast<const char *>(image), "BAD_PTX")) {
    for (unsigned i = 0; i < n; ++i)
      if (opts[i] == 5) // CU_JIT_ERROR_LOG_BUFFER
        std::strcpy(static_cast<char *>(values[i]),
                    "ptxas fatal   : fake syntax error at line 3");
    return 218;
  }
  *m = reinterpret_cast<CUmodule>(&marker);
  return 0;
}
int cuModuleUnload(CUmodule) { return ++calls, ++unloads, unloadResult; }
int cuModuleGetFunction(CUfunction *f, CUmodule, const char *) {
  return ++calls, *f = reinterpret_cast<CUfunction>(&marker), 0;
}
int cuFuncSetAttribute(CUfunction, int, int) { return ++calls, 0; }
int cuLaunchKernel(CUfunction, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned smem,
                   CUstream, void **params, void **) {
  ++calls;
  Launch l{{gx, gy, gz}, {bx, by, bz}, smem, {}, currentDevice};
  for (int i = 0; i < numParams; ++i) {
    uint64_t v;
    std::memcpy(&v, params[i], 8);
    l.params.push_back(v);
  }
  launches.push_back(l);
  return 0;
}
int cuStreamCreate(CUstream *s, unsigned) {
  ++calls;
  *s = reinterpret_cast<CUstream>(&streams[numStreams++ % 64]);
  return 0;
}
int cuStreamSynchronize(CUstream) { return ++calls, ++syncs, 0; }
int cuStreamDestroy_v2(CUstream) { return ++calls, 0; }
int cuEventCreate(CUevent *e, unsigned) {
  return ++calls, *e = reinterpret_cast<CUevent>(&marker), 0;
}
int cuEventRecord(CUevent, CUstream) { return ++calls, 0; }
int cuEventSynchronize(CUevent) { return ++calls, 0; }
int cuEventElapsedTime_v2(float *ms, CUevent, CUevent) {
  return ++calls, *ms = 1.5f, 0;
}
int cuEventDestroy_v2(CUevent) { return ++calls, 0; }
int cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
  ++calls;
  void *m = std::aligned_alloc(256, (n + 255) / 256 * 256);
  allocations[reinterpret_cast<uintptr_t>(m)] = n;
  allocationDevices[reinterpret_cast<uintptr_t>(m)] = currentDevice;
  *p = reinterpret_cast<uintptr_t>(m);
  return 0;
}
int cuMemFree_v2(CUdeviceptr p) {
  ++calls;
  if (!allocations.erase(p))
    return 1;
  allocationDevices.erase(p);
  std::free(reinterpret_cast<void *>(p));
  return 0;
}
int cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n) {
  return ++calls, std::memcpy(reinterpret_cast<void *>(d), s, n), 0;
}
int cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n) {
  return ++calls, std::memcpy(d, reinterpret_cast<void *>(s), n), 0;
}
int cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) {
  return ++calls, std::memset(reinterpret_cast<void *>(d), v, n), 0;
}
int cuPointerGetAttribute(void *out, int attr, CUdeviceptr p) {
  ++calls;
  if (attr != 9)
    return 1;
  // Any address inside the first 4 KiB of an allocation counts (enough for
  // tests that use byte offsets).
  for (const auto &[a, size] : allocations)
    if (p >= a && p < a + 4096)
      return *static_cast<int *>(out) = allocationDevices[a], 0;
  return 1; // CUDA_ERROR_INVALID_VALUE: not device memory
}

} // extern "C"
