//===- FakeCuda.h - The fake libcuda's test controls ------------*- C++ -*-===//
//
// FakeCuda.cpp stands in for libcuda. A test reaches its controls (C
// functions next to the driver API) through dlsym in the library that
// ATTNC_LIBCUDA names, the one the runtime loads, and reads its tensor maps
// as the record of what they were encoded from.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_TEST_UNIT_RUNTIME_FAKECUDA_H
#define ATTN_TEST_UNIT_RUNTIME_FAKECUDA_H

#include <cstdint>
#include <dlfcn.h>
#include <type_traits>

namespace attn {
namespace test {

/// The 128 bytes of a CUtensorMap that the fake cuTensorMapEncodeTiled
/// writes: its arguments, so that a test sees which map reached which kernel
/// parameter.
struct FakeTensorMap {
  uint64_t address;
  uint64_t dims[5];
  uint64_t strides[4];
  uint32_t box[5];
  uint32_t elementStrides[5];
  uint8_t dataType, rank, interleave, swizzle, l2Promotion, oobFill;
  uint16_t magic; ///< kFakeTensorMapMagic
};
static_assert(sizeof(FakeTensorMap) == 128, "a CUtensorMap has 128 bytes");
constexpr uint16_t kFakeTensorMapMagic = 0x7e17;

/// The fake's test controls; FakeCuda.cpp documents each.
struct FakeCuda {
  void (*reset)(int);
  int (*calls)();
  int (*unloads)();
  void (*setUnloadResult)(int);
  int (*numLaunches)();
  void (*launch)(int, unsigned *, uint64_t *);
  int (*launchDevice)(int);
  int (*streamSyncs)();
  int (*liveAllocations)();
  uint64_t (*allocationSize)(uint64_t);
  void (*setParamBytes)(const char *, int, const int *);
  const char *(*launchFunction)(int);
  int (*launchParam)(int, int, void *);
  int (*tensorMapEncodes)();
  int (*asyncMemsets)(uint64_t);
};

/// The controls of the fake at `path`; all null when it does not load.
inline FakeCuda loadFakeCuda(const char *path) {
  FakeCuda f{};
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return f;
  auto get = [h](auto &fn, const char *name) {
    fn =
        reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
  };
  get(f.reset, "fake_reset");
  get(f.calls, "fake_calls");
  get(f.unloads, "fake_unloads");
  get(f.setUnloadResult, "fake_set_unload_result");
  get(f.numLaunches, "fake_num_launches");
  get(f.launch, "fake_launch");
  get(f.launchDevice, "fake_launch_device");
  get(f.streamSyncs, "fake_stream_syncs");
  get(f.liveAllocations, "fake_live_allocations");
  get(f.allocationSize, "fake_allocation_size");
  get(f.setParamBytes, "fake_set_param_bytes");
  get(f.launchFunction, "fake_launch_function");
  get(f.launchParam, "fake_launch_param");
  get(f.tensorMapEncodes, "fake_tensor_map_encodes");
  get(f.asyncMemsets, "fake_async_memsets");
  return f;
}

} // namespace test
} // namespace attn

#endif // ATTN_TEST_UNIT_RUNTIME_FAKECUDA_H
