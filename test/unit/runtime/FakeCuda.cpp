//===- FakeCuda.cpp - A fake libcuda for testing the launch path ----------===//
//
// Loaded through ATTNC_LIBCUDA, it lets the tests drive the runtime's whole
// device path on a machine without a GPU: two sm_90 devices, "device
// memory" from malloc (of the device whose context is current), distinct
// streams, launches (with the function, the device they went to and the
// parameter bytes) and stream synchronizations recorded (not run), a JIT
// error for PTX that contains "BAD_PTX", a switch to make teardown calls
// report CUDA_ERROR_DEINITIALIZED as at process exit, and tensor maps that
// record what they were encoded from (FakeCuda.h) after the checks the
// driver documents. Built with ATTN_FAKE_CUDA_NO_TENSOR_MAPS it lacks
// cuTensorMapEncodeTiled, as drivers before CUDA 12 do.
//
//===----------------------------------------------------------------------===//

#include "FakeCuda.h"

#include "../../../runtime/lib/cuda/CudaDriver.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
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
/// SMs of each device, which persistent entries launch a CTA per.
constexpr int kMultiprocessors = 4;
char contexts[kDevices];
int currentDevice = 0;
char streams[64];
int numStreams = 0;
/// A kernel: what cuModuleGetFunction hands out, one per name.
struct Function {
  std::string name;
  /// The size of each parameter; empty: fake_reset's count of 8-byte ones.
  std::vector<int> paramBytes;
};
std::map<std::string, Function> functions;
struct Launch {
  unsigned grid[3], block[3], shared;
  std::vector<uint64_t> params;
  std::vector<std::string> paramBytes; ///< each parameter's bytes
  const Function *function;
  int device;
};
std::vector<Launch> launches;
int encodes = 0;
/// Start address of each cuMemsetD8Async since fake_reset.
std::vector<uintptr_t> asyncMemsets;
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
  encodes = 0;
  asyncMemsets.clear();
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
/// Kernel `function` takes `n` parameters of `bytes[p]` bytes (a tensor map
/// has 128), as its PTX would tell the real driver; kernels not named here
/// take fake_reset's count of 8-byte ones.
void fake_set_param_bytes(const char *function, int n, const int *bytes) {
  Function &f = functions[function];
  f.name = function;
  f.paramBytes.assign(bytes, bytes + n);
}
/// The name of the kernel of launch `i`.
const char *fake_launch_function(int i) {
  return launches[static_cast<size_t>(i)].function->name.c_str();
}
/// Copies parameter `p` of launch `i` to `out`; returns its size.
int fake_launch_param(int i, int p, void *out) {
  const std::string &bytes =
      launches[static_cast<size_t>(i)].paramBytes[static_cast<size_t>(p)];
  std::memcpy(out, bytes.data(), bytes.size());
  return static_cast<int>(bytes.size());
}
/// How many tensor maps were encoded since fake_reset.
int fake_tensor_map_encodes() { return encodes; }
/// How many cuMemsetD8Async calls since fake_reset started at `address`.
int fake_async_memsets(uint64_t address) {
  return static_cast<int>(
      std::count(asyncMemsets.begin(), asyncMemsets.end(), address));
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
  // Compute capability 9.0, 4 SMs.
  *v = attr == 75 ? 9 : attr == 16 ? kMultiprocessors : 0;
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
int cuModuleGetFunction(CUfunction *f, CUmodule, const char *name) {
  ++calls;
  Function &function = functions[name];
  function.name = name;
  *f = reinterpret_cast<CUfunction>(&function);
  return 0;
}
int cuFuncSetAttribute(CUfunction, int, int) { return ++calls, 0; }
int cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                   unsigned bx, unsigned by, unsigned bz, unsigned smem,
                   CUstream, void **params, void **) {
  ++calls;
  const Function *function = reinterpret_cast<const Function *>(f);
  Launch l{{gx, gy, gz}, {bx, by, bz}, smem, {}, {}, function, currentDevice};
  std::vector<int> sizes = function->paramBytes;
  if (sizes.empty())
    sizes.assign(static_cast<size_t>(numParams), 8);
  for (int size : sizes) {
    const char *p = static_cast<const char *>(params[l.params.size()]);
    uint64_t v;
    std::memcpy(&v, p, 8);
    l.params.push_back(v);
    l.paramBytes.emplace_back(p, static_cast<size_t>(size));
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
int cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream) {
  asyncMemsets.push_back(static_cast<uintptr_t>(d));
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

#ifndef ATTN_FAKE_CUDA_NO_TENSOR_MAPS
int cuTensorMapEncodeTiled(CUtensorMap *map, int dataType, uint32_t rank,
                           void *address, const uint64_t *dims,
                           const uint64_t *strides, const uint32_t *box,
                           const uint32_t *elementStrides, int interleave,
                           int swizzle, int l2Promotion, int oobFill) {
  ++calls;
  constexpr int kInvalid = 1; // CUDA_ERROR_INVALID_VALUE
  // Element sizes of CU_TENSOR_MAP_DATA_TYPE_UINT8 ... TFLOAT32_FTZ; the
  // floating-point ones start at FLOAT16.
  static const uint64_t elementBytes[] = {1, 2, 4, 4, 8, 8, 2,
                                          4, 8, 2, 4, 4, 4};
  constexpr int kFirstFloat = 6;
  if (reinterpret_cast<uintptr_t>(map) % 64 != 0 || dataType < 0 ||
      dataType > 12 || interleave < 0 || interleave > 2 || swizzle < 0 ||
      swizzle > 3 || l2Promotion < 0 || l2Promotion > 3 || oobFill < 0 ||
      oobFill > 1)
    return kInvalid;
  if (rank < 1 || rank > 5 || (interleave != 0 && rank < 3))
    return kInvalid;
  // 16-byte aligned, or 32 with 32-byte interleaving.
  uint64_t align = interleave == 2 ? 32 : 16;
  if (reinterpret_cast<uintptr_t>(address) % align != 0)
    return kInvalid;
  for (uint32_t i = 0; i < rank; ++i)
    if (dims[i] == 0 || dims[i] > (uint64_t(1) << 32) || box[i] == 0 ||
        box[i] > 256 || elementStrides[i] == 0 || elementStrides[i] > 8)
      return kInvalid;
  for (uint32_t i = 0; i + 1 < rank; ++i)
    if (strides[i] % align != 0 || strides[i] >= (uint64_t(1) << 40))
      return kInvalid;
  uint64_t innerBytes = box[0] * elementBytes[dataType];
  if (interleave == 0 &&
      (innerBytes % 16 != 0 || (swizzle != 0 && innerBytes > (16u << swizzle))))
    return kInvalid;
  if (oobFill == 1 && dataType < kFirstFloat)
    return kInvalid;
  attn::test::FakeTensorMap record{};
  record.address = reinterpret_cast<uintptr_t>(address);
  for (uint32_t i = 0; i < rank; ++i) {
    record.dims[i] = dims[i];
    record.box[i] = box[i];
    record.elementStrides[i] = elementStrides[i];
    if (i + 1 < rank)
      record.strides[i] = strides[i];
  }
  record.dataType = static_cast<uint8_t>(dataType);
  record.rank = static_cast<uint8_t>(rank);
  record.interleave = static_cast<uint8_t>(interleave);
  record.swizzle = static_cast<uint8_t>(swizzle);
  record.l2Promotion = static_cast<uint8_t>(l2Promotion);
  record.oobFill = static_cast<uint8_t>(oobFill);
  record.magic = attn::test::kFakeTensorMapMagic;
  std::memcpy(map, &record, sizeof(record));
  ++encodes;
  return 0;
}
#endif

} // extern "C"
