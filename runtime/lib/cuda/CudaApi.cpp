//===- CudaApi.cpp - The device half of the C API -------------------------===//
//
// Devices, streams, events, memory, module loading and launches, all through
// the dlopen'ed driver. Every entry point first asks the driver whether it is
// available, so on a machine without a GPU each returns
// ATTNC_ERROR_NO_DEVICE with "no CUDA device: ..." instead of crashing.
//
//===----------------------------------------------------------------------===//

#include "../PackageHandle.h"
#include "CudaDriver.h"

#include "attn/Runtime/LaunchCheck.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>

using namespace attn;
using namespace attn::cuda;

struct attnc_stream_t {
  int device;
  CUstream stream;
};

struct attnc_event_t {
  int device;
  CUevent event;
};

namespace {

/// The driver, current on `device`; any failure is the Status returned.
Status enter(int device, Driver *&out) {
  Driver &d = Driver::get();
  if (!d.available().isOk())
    return d.available();
  if (Status s = d.makeCurrent(device))
    return s;
  out = &d;
  return Status::ok();
}

CUdeviceptr dptr(const void *p) {
  return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p));
}

/// Whether the package's target can run on a device of capability
/// major.minor: "sm_90a" needs exactly 9.0, "sm_80" PTX runs on 8.0 and up.
Status checkTarget(const Package &pkg, int device, int major, int minor) {
  const std::string &t = pkg.manifest.target;
  int n = std::atoi(t.c_str() + 3);
  int wantMajor = n / 10, wantMinor = n % 10;
  bool archSpecific = t.back() == 'a';
  bool hasCubin = false;
  for (const ModuleBlob &m : pkg.modules)
    hasCubin |= m.format == ModuleFormat::Cubin;
  bool ok;
  if (archSpecific || hasCubin)
    ok = major == wantMajor &&
         (archSpecific ? minor == wantMinor : minor >= wantMinor);
  else
    ok = major > wantMajor || (major == wantMajor && minor >= wantMinor);
  if (ok)
    return Status::ok();
  return invalidArgument("kernel '" + pkg.manifest.name + "' targets " + t +
                         ", but CUDA device " + std::to_string(device) +
                         " is sm_" + std::to_string(major) +
                         std::to_string(minor));
}

/// Loads the package's modules on `device` (once) and resolves its entries.
Status ensureLoaded(attnc_package handle, int device, Driver &d,
                    LoadedPackage *&out) {
  std::lock_guard<std::mutex> lock(handle->mutex);
  auto it = handle->loaded.find(device);
  if (it != handle->loaded.end()) {
    out = &it->second;
    return Status::ok();
  }
  const Package &pkg = handle->pkg;
  int major = 0, minor = 0;
  if (Status s = d.capability(device, major, minor))
    return s;
  if (Status s = checkTarget(pkg, device, major, minor))
    return s;

  LoadedPackage loaded;
  auto unloadAll = [&]() {
    for (void *m : loaded.modules)
      d.cuModuleUnload(static_cast<CUmodule>(m));
  };
  for (const ModuleBlob &blob : pkg.modules) {
    // PTX must be NUL-terminated for the driver; cubins are passed as is.
    std::string image = blob.bytes;
    if (blob.format == ModuleFormat::Ptx)
      image.push_back('\0');
    std::vector<char> errorLog(16384, '\0'), infoLog(16384, '\0');
    int options[] = {CU_JIT_ERROR_LOG_BUFFER,
                     CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_INFO_LOG_BUFFER,
                     CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
    void *values[] = {
        errorLog.data(), reinterpret_cast<void *>(errorLog.size() - 1),
        infoLog.data(), reinterpret_cast<void *>(infoLog.size() - 1)};
    CUmodule module = nullptr;
    CUresult r =
        d.cuModuleLoadDataEx(&module, image.data(), 4, options, values);
    if (r != CUDA_SUCCESS) {
      unloadAll();
      std::string log(errorLog.data());
      std::string what =
          "loading " +
          std::string(blob.format == ModuleFormat::Ptx ? "PTX" : "cubin") +
          " module '" + blob.name + "' of kernel '" + pkg.manifest.name +
          "' on device " + std::to_string(device) + " (sm_" +
          std::to_string(major) + std::to_string(minor) + ")";
      Status s = d.check(r, what);
      return Status(s.getCode(),
                    s.getMessage() + (log.empty() ? "" : "\nJIT log:\n" + log));
    }
    loaded.modules.push_back(module);
  }
  for (const EntrySpec &e : pkg.manifest.entries) {
    size_t m = 0;
    while (pkg.modules[m].name != e.module)
      ++m;
    CUfunction fn = nullptr;
    if (Status s = d.check(
            d.cuModuleGetFunction(&fn, static_cast<CUmodule>(loaded.modules[m]),
                                  e.function.c_str()),
            "cuModuleGetFunction(" + e.function + ")")) {
      unloadAll();
      return s;
    }
    // Beyond 48 KiB, dynamic shared memory must be opted into per function.
    if (e.sharedBytes > 48 * 1024) {
      if (Status s = d.check(
              d.cuFuncSetAttribute(
                  fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                  static_cast<int>(e.sharedBytes)),
              "cuFuncSetAttribute(max dynamic shared memory = " +
                  std::to_string(e.sharedBytes) + ") for " + e.function)) {
        unloadAll();
        return s;
      }
    }
    loaded.functions.push_back(fn);
  }
  out = &(handle->loaded[device] = std::move(loaded));
  return Status::ok();
}

/// The 8-byte storage of one kernel parameter.
union SlotValue {
  uint64_t u64;
  int64_t i64;
  int32_t i32;
  float f32;
  double f64;
  void *ptr;
};

/// Computes every kernel parameter of entry `e`, converting to its slot type
/// with range checks. Pure host code: runs before any driver call.
Status buildSlots(const Package &pkg, size_t e, const BoundLaunch &bound,
                  const std::vector<const attnc_tensor *> &tensorOf,
                  std::vector<SlotValue> &out) {
  const EntrySpec &entry = pkg.manifest.entries[e];
  out.assign(entry.params.size(), SlotValue{0});
  for (size_t i = 0; i < entry.params.size(); ++i) {
    const ParamSlot &p = entry.params[i];
    int argIndex =
        p.kind == ParamSlot::Kind::Dim || p.kind == ParamSlot::Kind::Const
            ? -1
            : pkg.findArg(p.arg);
    const attnc_tensor *t = argIndex >= 0 ? tensorOf[argIndex] : nullptr;
    double value = 0;
    switch (p.kind) {
    case ParamSlot::Kind::Ptr:
      out[i].ptr = static_cast<char *>(t->data) + t->byte_offset;
      continue;
    case ParamSlot::Kind::Stride: {
      if (t->strides) {
        value = static_cast<double>(t->strides[p.axis]);
      } else {
        int64_t s = 1;
        for (int32_t k = t->ndim - 1; k > p.axis; --k)
          s *= t->shape[k];
        value = static_cast<double>(s);
      }
      break;
    }
    case ParamSlot::Kind::Size:
      value = static_cast<double>(t->shape[p.axis]);
      break;
    case ParamSlot::Kind::Dim:
      value = static_cast<double>(bound.dims[pkg.findDim(p.arg)]);
      break;
    case ParamSlot::Kind::Param:
      value = bound.argValues[argIndex];
      break;
    case ParamSlot::Kind::Const:
      value = p.value;
      break;
    }
    switch (p.type) {
    case SlotType::I32:
      if (!(value >= -2147483648.0 && value <= 2147483647.0) ||
          std::floor(value) != value)
        return invalidArgument("entry '" + entry.name + "': kernel param " +
                               std::to_string(i) + " (" + p.arg + ") = " +
                               std::to_string(value) + " does not fit i32");
      out[i].i32 = static_cast<int32_t>(value);
      break;
    case SlotType::I64:
      if (!(value >= -9223372036854775808.0 && value < 9223372036854775808.0))
        return invalidArgument("entry '" + entry.name + "': kernel param " +
                               std::to_string(i) + " does not fit i64");
      out[i].i64 = static_cast<int64_t>(value);
      break;
    case SlotType::F32:
      out[i].f32 = static_cast<float>(value);
      break;
    case SlotType::F64:
      out[i].f64 = value;
      break;
    case SlotType::Ptr:
      return invalidArgument("entry '" + entry.name +
                             "': non-pointer value in a ptr slot");
    }
  }
  return Status::ok();
}

} // namespace

namespace attn {

void unloadPackageModules(attnc_package handle) {
  std::lock_guard<std::mutex> lock(handle->mutex);
  if (handle->loaded.empty())
    return;
  Driver &d = Driver::get();
  if (!d.available().isOk())
    return;
  for (auto &[device, loaded] : handle->loaded) {
    // At exit the driver may already be deinitialized; then the modules are
    // gone with it and every error here is harmless.
    if (d.makeCurrent(device))
      continue;
    for (void *m : loaded.modules)
      (void)isShutdownError(d.cuModuleUnload(static_cast<CUmodule>(m)));
  }
  handle->loaded.clear();
}

} // namespace attn

extern "C" {

int attnc_device_count(void) {
  Driver &d = Driver::get();
  if (!d.available().isOk()) {
    setLastError(d.available());
    return 0;
  }
  return d.deviceCount();
}

attnc_status attnc_stream_create(int device, attnc_stream *out) {
  if (!out)
    return setLastError(invalidArgument("attnc_stream_create: NULL out"));
  *out = nullptr;
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  CUstream stream;
  if (Status s = d->check(d->cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING),
                          "cuStreamCreate"))
    return setLastError(s);
  *out = new attnc_stream_t{device, stream};
  return ATTNC_OK;
}

attnc_status attnc_stream_synchronize(attnc_stream stream) {
  if (!stream)
    return setLastError(invalidArgument("attnc_stream_synchronize: NULL"));
  Driver *d;
  if (Status s = enter(stream->device, d))
    return setLastError(s);
  if (Status s = d->check(d->cuStreamSynchronize(stream->stream),
                          "cuStreamSynchronize"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_stream_destroy(attnc_stream stream) {
  if (!stream)
    return ATTNC_OK;
  Driver *d;
  Status s = enter(stream->device, d);
  CUresult r = s.isOk() ? d->cuStreamDestroy(stream->stream) : CUDA_SUCCESS;
  delete stream;
  if (s)
    return setLastError(s);
  if (!isShutdownError(r))
    return setLastError(d->check(r, "cuStreamDestroy"));
  return ATTNC_OK;
}

attnc_status attnc_event_create(int device, attnc_event *out) {
  if (!out)
    return setLastError(invalidArgument("attnc_event_create: NULL out"));
  *out = nullptr;
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  CUevent event;
  if (Status s =
          d->check(d->cuEventCreate(&event, CU_EVENT_DEFAULT), "cuEventCreate"))
    return setLastError(s);
  *out = new attnc_event_t{device, event};
  return ATTNC_OK;
}

attnc_status attnc_event_record(attnc_event event, attnc_stream stream) {
  if (!event)
    return setLastError(invalidArgument("attnc_event_record: NULL event"));
  if (stream && stream->device != event->device)
    return setLastError(invalidArgument(
        "attnc_event_record: event and stream are on different devices"));
  Driver *d;
  if (Status s = enter(event->device, d))
    return setLastError(s);
  if (Status s = d->check(
          d->cuEventRecord(event->event, stream ? stream->stream : nullptr),
          "cuEventRecord"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_event_elapsed_ms(attnc_event start, attnc_event end,
                                    float *ms) {
  if (!start || !end || !ms)
    return setLastError(invalidArgument("attnc_event_elapsed_ms: NULL"));
  Driver *d;
  if (Status s = enter(end->device, d))
    return setLastError(s);
  if (Status s =
          d->check(d->cuEventSynchronize(end->event), "cuEventSynchronize"))
    return setLastError(s);
  if (Status s = d->check(d->cuEventElapsedTime(ms, start->event, end->event),
                          "cuEventElapsedTime"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_event_destroy(attnc_event event) {
  if (!event)
    return ATTNC_OK;
  Driver *d;
  Status s = enter(event->device, d);
  CUresult r = s.isOk() ? d->cuEventDestroy(event->event) : CUDA_SUCCESS;
  delete event;
  if (s)
    return setLastError(s);
  if (!isShutdownError(r))
    return setLastError(d->check(r, "cuEventDestroy"));
  return ATTNC_OK;
}

attnc_status attnc_device_alloc(int device, size_t bytes, void **out) {
  if (!out)
    return setLastError(invalidArgument("attnc_device_alloc: NULL out"));
  *out = nullptr;
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  CUdeviceptr p = 0;
  if (Status s = d->check(d->cuMemAlloc(&p, bytes ? bytes : 1),
                          "cuMemAlloc(" + std::to_string(bytes) + " bytes)"))
    return setLastError(s);
  *out = reinterpret_cast<void *>(static_cast<uintptr_t>(p));
  return ATTNC_OK;
}

attnc_status attnc_device_free(int device, void *ptr) {
  if (!ptr)
    return ATTNC_OK;
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  CUresult r = d->cuMemFree(dptr(ptr));
  if (!isShutdownError(r))
    return setLastError(d->check(r, "cuMemFree"));
  return ATTNC_OK;
}

attnc_status attnc_copy_to_device(int device, void *dst, const void *src,
                                  size_t bytes) {
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  if (Status s =
          d->check(d->cuMemcpyHtoD(dptr(dst), src, bytes), "cuMemcpyHtoD"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_copy_to_host(int device, void *dst, const void *src,
                                size_t bytes) {
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  if (Status s =
          d->check(d->cuMemcpyDtoH(dst, dptr(src), bytes), "cuMemcpyDtoH"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_device_memset(int device, void *dst, uint8_t value,
                                 size_t bytes) {
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  if (Status s = d->check(d->cuMemsetD8(dptr(dst), value, bytes), "cuMemsetD8"))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_package_prepare(attnc_package pkg, int device) {
  if (!pkg)
    return setLastError(invalidArgument("attnc_package_prepare: NULL"));
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  LoadedPackage *loaded;
  if (Status s = ensureLoaded(pkg, device, *d, loaded))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_launch(attnc_package pkg, const char *entry_name,
                          const attnc_tensor *inputs, size_t num_inputs,
                          const double *params, size_t num_params,
                          const attnc_tensor *outputs, size_t num_outputs,
                          attnc_stream stream) {
  if (!pkg)
    return setLastError(invalidArgument("attnc_launch: NULL package"));
  const Package &p = pkg->pkg;
  const PackageManifest &m = p.manifest;

  // 1. Everything that needs no driver.
  BoundLaunch bound;
  if (Status s = checkLaunch(p, inputs, num_inputs, params, num_params, outputs,
                             num_outputs, bound))
    return setLastError(s);
  std::vector<size_t> selected;
  for (size_t e = 0; e < m.entries.size(); ++e)
    if (!entry_name || m.entries[e].name == entry_name)
      selected.push_back(e);
  if (selected.empty()) {
    std::string names;
    for (const EntrySpec &e : m.entries)
      names += (names.empty() ? "" : ", ") + e.name;
    return setLastError(Status(ATTNC_ERROR_NOT_FOUND,
                               "kernel '" + m.name + "' has no entry '" +
                                   entry_name + "' (entries: " + names + ")"));
  }
  if (stream && stream->device != bound.device)
    return setLastError(invalidArgument(
        "the stream is on CUDA device " + std::to_string(stream->device) +
        " but the tensors are on device " + std::to_string(bound.device)));
  std::vector<const attnc_tensor *> tensorOf(m.args.size(), nullptr);
  {
    size_t in = 0, out = 0;
    for (size_t a = 0; a < m.args.size(); ++a) {
      if (m.args[a].kind == ArgKind::Input)
        tensorOf[a] = &inputs[in++];
      else if (m.args[a].kind == ArgKind::Output)
        tensorOf[a] = &outputs[out++];
    }
  }
  std::vector<std::vector<SlotValue>> slots(m.entries.size());
  for (size_t e : selected)
    if (Status s = buildSlots(p, e, bound, tensorOf, slots[e]))
      return setLastError(s);

  // 2. The driver.
  Driver *d;
  if (Status s = enter(bound.device, d))
    return setLastError(s);
  for (size_t a = 0; a < m.args.size(); ++a) {
    const attnc_tensor *t = tensorOf[a];
    if (!t || !t->data)
      continue;
    // Catches host pointers and memory of another device, which would
    // otherwise fault inside the kernel (or silently read garbage).
    int ordinal = -1;
    CUresult r = d->cuPointerGetAttribute(
        &ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, dptr(t->data));
    if (r != CUDA_SUCCESS || ordinal != bound.device) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%p", t->data);
      std::string kind = m.args[a].kind == ArgKind::Input ? "input" : "output";
      return setLastError(invalidArgument(
          kind + " '" + m.args[a].name + "': data pointer " + buf +
          (r != CUDA_SUCCESS
               ? " is not CUDA device memory"
               : " is memory of CUDA device " + std::to_string(ordinal)) +
          " (the tensor says device " + std::to_string(bound.device) + ")"));
    }
  }
  LoadedPackage *loaded;
  if (Status s = ensureLoaded(pkg, bound.device, *d, loaded))
    return setLastError(s);
  for (size_t e : selected) {
    const EntrySpec &entry = m.entries[e];
    const std::array<int64_t, 3> &g = bound.grids[e];
    if (g[0] == 0 || g[1] == 0 || g[2] == 0)
      continue; // An empty problem: nothing to launch.
    std::vector<void *> args(slots[e].size());
    for (size_t i = 0; i < args.size(); ++i)
      args[i] = &slots[e][i];
    CUresult r = d->cuLaunchKernel(
        static_cast<CUfunction>(loaded->functions[e]),
        static_cast<unsigned>(g[0]), static_cast<unsigned>(g[1]),
        static_cast<unsigned>(g[2]), static_cast<unsigned>(entry.block[0]),
        static_cast<unsigned>(entry.block[1]),
        static_cast<unsigned>(entry.block[2]),
        static_cast<unsigned>(entry.sharedBytes),
        stream ? stream->stream : nullptr, args.empty() ? nullptr : args.data(),
        nullptr);
    if (Status s = d->check(r, "cuLaunchKernel(" + entry.function + ")"))
      return setLastError(s);
  }
  return ATTNC_OK;
}

} // extern "C"
