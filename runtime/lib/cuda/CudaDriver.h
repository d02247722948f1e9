//===- CudaDriver.h - libcuda loaded at run time ----------------*- C++ -*-===//
//
// The runtime never links libcuda: it opens libcuda.so.1 with dlopen on first
// use, so that the library, its tests and every CPU path run on machines with
// no GPU. Without a driver or device every GPU call fails with a Status of
// ATTNC_ERROR_NO_DEVICE whose message starts with "no CUDA device".
//
// The types below mirror cuda.h's ABI so that no CUDA header is needed.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_LIB_CUDA_CUDADRIVER_H
#define ATTN_RUNTIME_LIB_CUDA_CUDADRIVER_H

#include "attn/Runtime/Status.h"

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace attn {
namespace cuda {

using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;

/// A TMA descriptor: opaque bytes the driver encodes (cuTensorMapEncodeTiled)
/// and a kernel takes by value.
struct CUtensorMap {
  alignas(64) uint64_t opaque[16];
};

/// The driver constants we use, with cuda.h's values.
enum : int {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_DEINITIALIZED = 4,
  CUDA_ERROR_NO_DEVICE = 100,
  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
  CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
  CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
  CU_JIT_INFO_LOG_BUFFER = 3,
  CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
  CU_JIT_ERROR_LOG_BUFFER = 5,
  CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
  CU_JIT_LOG_VERBOSE = 12,
  CU_STREAM_NON_BLOCKING = 1,
  CU_EVENT_DEFAULT = 0,
  CU_TENSOR_MAP_DATA_TYPE_UINT8 = 0,
  CU_TENSOR_MAP_DATA_TYPE_INT32 = 3,
  CU_TENSOR_MAP_DATA_TYPE_INT64 = 5,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT16 = 6,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT32 = 7,
  CU_TENSOR_MAP_DATA_TYPE_FLOAT64 = 8,
  CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9,
  CU_TENSOR_MAP_INTERLEAVE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_NONE = 0,
  CU_TENSOR_MAP_SWIZZLE_32B = 1,
  CU_TENSOR_MAP_SWIZZLE_64B = 2,
  CU_TENSOR_MAP_SWIZZLE_128B = 3,
  CU_TENSOR_MAP_L2_PROMOTION_NONE = 0,
  CU_TENSOR_MAP_L2_PROMOTION_L2_64B = 1,
  CU_TENSOR_MAP_L2_PROMOTION_L2_128B = 2,
  CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3,
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0,
  CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA = 1,
};

/// The process-wide driver: function pointers from the X-macro list (the
/// optional ones null where the driver lacks them) plus the retained primary
/// context of each device.
class Driver {
public:
  /// Loads libcuda (once; thread safe). Never fails: check `available()`.
  static Driver &get();

  /// OK when the driver loaded, cuInit succeeded and there is a device;
  /// otherwise ATTNC_ERROR_NO_DEVICE with the reason.
  const Status &available() const { return status; }

  int deviceCount() const { return numDevices; }

  /// Makes the primary context of `device` current on this thread
  /// (retaining it on first use; it is never released: the driver tears it
  /// down at exit, and releasing from a static destructor would race that).
  Status makeCurrent(int device);

  /// Compute capability of `device`.
  Status capability(int device, int &major, int &minor);

  /// Streaming multiprocessors of `device`.
  Status multiprocessorCount(int device, int &count);

  /// OK for CUDA_SUCCESS, else ATTNC_ERROR_CUDA naming `what` and the
  /// driver's error name and text.
  Status check(CUresult result, const std::string &what) const;

#define ATTN_CUDA_FN(name, symbol, params) CUresult(*name) params = nullptr;
#include "DriverFunctions.def"

private:
  Driver();
  void load();

  Status status;
  int numDevices = 0;
  std::mutex mutex;
  std::vector<CUcontext> contexts;
};

/// Whether a driver error at teardown means "the driver is already gone",
/// which is harmless then (modules are unloaded with it).
inline bool isShutdownError(CUresult r) {
  return r == CUDA_SUCCESS || r == CUDA_ERROR_DEINITIALIZED;
}

} // namespace cuda
} // namespace attn

#endif // ATTN_RUNTIME_LIB_CUDA_CUDADRIVER_H
