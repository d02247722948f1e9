//===- CudaApi.cpp - The device half of the C API -------------------------===//
//
// Devices, streams, events, memory, module loading and launches, all through
// the dlopen'ed driver. Every entry point first asks the driver whether it is
// available, so on a machine without a GPU each returns
// ATTNC_ERROR_NO_DEVICE with "no CUDA device: ..." instead of crashing.
//
//===----------------------------------------------------------------------===//

#include "../KernelParams.h"
#include "../PackageHandle.h"
#include "CudaDriver.h"
#include "TensorMap.h"

#include "attn/Runtime/LaunchCheck.h"

#include <algorithm>
#include <atomic>
#include <iterator>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>

using namespace attn;
using namespace attn::cuda;

struct attnc_stream_t {
  int device;
  CUstream stream;
  /// False for a stream the caller owns (attnc_stream_wrap): destroying the
  /// handle leaves the stream alone.
  bool owned;
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

/// The grid `entry` is launched with for the formulas' `grid` on a device
/// of `multiprocessors` SMs: a persistent kernel's CTAs take its tiles in
/// turn, so more than a few per SM become that many, resident at once.
std::array<int64_t, 3> residentGrid(const EntrySpec &entry,
                                    const std::array<int64_t, 3> &grid,
                                    int multiprocessors) {
  int64_t resident = entry.persistentCtasPerSm * multiprocessors;
  // The launch checks bound the product by 2^31 - 1.
  if (resident <= 0 || grid[0] * grid[1] * grid[2] <= resident)
    return grid;
  return {resident, 1, 1};
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
  if (Status s = d.multiprocessorCount(device, loaded.multiprocessors))
    return s;
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

/// Sizes are rounded up to this, so that a slightly larger later launch
/// still fits (and it is cuMemAlloc's alignment anyway).
constexpr size_t kWorkspaceGranule = 256;

/// The device pointer of each workspace for a launch on `stream` that needs
/// `bytes[w]` bytes of workspace `w` (null for 0), growing that stream's
/// buffers where they are too small. The caller holds the handle's mutex and
/// keeps it until its kernels are queued, so that no other thread frees a
/// buffer in between.
Status ensureWorkspaces(const Package &pkg, LoadedPackage &loaded,
                        CUstream stream, Driver &d,
                        const std::vector<int64_t> &bytes,
                        std::vector<void *> &out) {
  WorkspaceBuffers &bufs = loaded.workspaces[stream];
  bufs.data.resize(bytes.size(), nullptr);
  bufs.bytes.resize(bytes.size(), 0);
  out.assign(bytes.size(), nullptr);
  bool synchronized = false;
  for (size_t w = 0; w < bytes.size(); ++w) {
    if (bytes[w] <= 0)
      continue;
    size_t need = static_cast<size_t>(bytes[w]);
    if (bufs.bytes[w] < need) {
      if (bufs.data[w]) {
        // Kernels queued earlier on this stream may still use the old one.
        if (!synchronized) {
          if (Status s =
                  d.check(d.cuStreamSynchronize(stream), "cuStreamSynchronize"))
            return s;
          synchronized = true;
        }
        if (Status s = d.check(d.cuMemFree(dptr(bufs.data[w])), "cuMemFree"))
          return s;
        bufs.data[w] = nullptr;
        bufs.bytes[w] = 0;
      }
      size_t size = (need + kWorkspaceGranule - 1) / kWorkspaceGranule *
                    kWorkspaceGranule;
      CUdeviceptr ptr = 0;
      if (Status s = d.check(d.cuMemAlloc(&ptr, size),
                             "cuMemAlloc(" + std::to_string(size) +
                                 " bytes) for workspace '" +
                                 pkg.manifest.workspaces[w].name + "'"))
        return s;
      // Its kernels leave a zeroed workspace as they found it: zeroed once.
      if (pkg.manifest.workspaces[w].zeroed)
        if (Status s = d.check(d.cuMemsetD8Async(ptr, 0, size, stream),
                               "cuMemsetD8Async"))
          return s;
      bufs.data[w] = reinterpret_cast<void *>(static_cast<uintptr_t>(ptr));
      bufs.bytes[w] = size;
    }
    out[w] = bufs.data[w];
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
    for (auto &[stream, bufs] : loaded.workspaces)
      for (void *p : bufs.data)
        if (p)
          (void)isShutdownError(d.cuMemFree(dptr(p)));
    for (void *m : loaded.modules)
      (void)isShutdownError(d.cuModuleUnload(static_cast<CUmodule>(m)));
  }
  handle->loaded.clear();
}

} // namespace attn

/// What attnc_launch derives from everything but the data pointers: the
/// checked dims, the entries that run, their grids and kernel parameters,
/// the layouts of their tensor maps and the workspace sizes.
struct attnc_plan_t {
  /// One tensor argument: inputs first, then outputs.
  struct Tensor {
    size_t arg;          ///< index in the manifest's args
    uint64_t byteOffset; ///< added to each launch's data pointer
    bool empty;          ///< a zero-size axis: never read or written
  };
  /// One kernel of the launch: an entry and, when it loads with TMA, the
  /// entries that run in its place for a launch whose tensor maps cannot be
  /// encoded (a misaligned data pointer, a driver without TMA), or for
  /// every launch of the plan (`fellBack`: strides TMA cannot express).
  struct Step {
    size_t entry;
    std::vector<size_t> fallback;
    bool fellBack = false;
  };
  /// A Tma slot of a step's entry: its tensor map but the address, and the
  /// map the plan encoded last with the address it was made for (a
  /// framework's allocator hands the same buffers out again).
  struct MapSlot {
    size_t slot;   ///< index in the entry's params
    size_t tensor; ///< index in `tensors`, unless it maps a workspace's
    /// The workspace whose tensor it maps (WorkspaceSpec::tensor), if any.
    std::optional<size_t> workspace;
    size_t index; ///< of its map among a launch's
    TensorMapLayout layout;
    /// May be all zeros where the driver cannot make it (ParamSlot's
    /// tile.optional).
    bool optional = false;
    /// Under mapMutex.
    bool cached = false;
    const void *cachedFor = nullptr;
    CUtensorMap cachedMap{};
  };

  attnc_package pkg = nullptr;
  int device = 0;
  size_t numInputs = 0;
  std::vector<Tensor> tensors;
  std::vector<Step> steps;
  std::vector<std::array<int64_t, 3>> grids;
  std::vector<int64_t> workspaceBytes;
  /// Per entry: its kernel parameters, data pointers, workspaces and tensor
  /// maps unset, and (slot, tensor) of each data pointer.
  std::vector<std::vector<SlotValue>> slots;
  std::vector<std::vector<std::pair<size_t, size_t>>> pointerSlots;
  /// Per entry: its Tma slots (of steps' entries only), and their number.
  std::vector<std::vector<MapSlot>> mapSlots;
  size_t numMaps = 0;
  std::mutex mapMutex;
  /// Per tensor, the last data pointer found to be memory of `device`: a
  /// framework's allocator hands the same buffers out again and again, and
  /// cuPointerGetAttribute is the largest host cost of a launch.
  std::unique_ptr<std::atomic<const void *>[]> checkedData;
};

namespace {

/// attnc_plan_launch copies the data pointers into an array this long; more
/// tensors than the largest kernel's are refused when the plan is made.
constexpr size_t kMaxPlanTensors = 64;

/// Step 1 of a launch: everything that needs no driver.
Status makePlan(attnc_package pkg, const char *entryName,
                const attnc_tensor *inputs, size_t numInputs,
                const double *params, size_t numParams,
                const attnc_tensor *outputs, size_t numOutputs,
                attnc_plan_t &plan) {
  if (!pkg)
    return invalidArgument("attnc_launch: NULL package");
  const Package &p = pkg->pkg;
  const PackageManifest &m = p.manifest;
  BoundLaunch bound;
  if (Status s = checkLaunch(p, inputs, numInputs, params, numParams, outputs,
                             numOutputs, bound))
    return s;
  if (numInputs + numOutputs > kMaxPlanTensors)
    return invalidArgument("kernel '" + m.name + "' has more than " +
                           std::to_string(kMaxPlanTensors) +
                           " tensor arguments");
  // The kernels that run: the entry named, or every entry but the
  // fallbacks, where its `when` holds.
  bool found = false;
  for (size_t e = 0; e < m.entries.size(); ++e) {
    if (entryName ? m.entries[e].name != entryName : p.standsInFor[e] >= 0)
      continue;
    found = true;
    if (!bound.enabled[e])
      continue;
    plan.steps.push_back({e, p.fallbackOf[e]});
  }
  if (!found) {
    std::string names;
    for (const EntrySpec &e : m.entries)
      names += (names.empty() ? "" : ", ") + e.name;
    return Status(ATTNC_ERROR_NOT_FOUND, "kernel '" + m.name +
                                             "' has no entry '" + entryName +
                                             "' (entries: " + names + ")");
  }
  std::vector<const attnc_tensor *> tensorOf(m.args.size(), nullptr);
  std::vector<size_t> tensorIndexOf(m.args.size(), 0);
  for (size_t a = 0, in = 0, out = 0; a < m.args.size(); ++a) {
    const attnc_tensor *t;
    if (m.args[a].kind == ArgKind::Input)
      t = &inputs[in++];
    else if (m.args[a].kind == ArgKind::Output)
      t = &outputs[out++];
    else
      continue;
    tensorOf[a] = t;
    tensorIndexOf[a] = plan.tensors.size();
    bool empty = std::any_of(t->shape, t->shape + t->ndim,
                             [](int64_t size) { return size == 0; });
    plan.tensors.push_back({a, t->byte_offset, empty});
  }
  // The tensors were bound in signature order: inputs come first.
  plan.numInputs = numInputs;
  // Tensor maps: a tensor whose extents or strides TMA cannot describe runs
  // the fallback for every launch of the plan (or is an error without one);
  // its data address is checked per launch.
  plan.mapSlots.resize(m.entries.size());
  for (attnc_plan_t::Step &step : plan.steps) {
    if (!p.usesTma(step.entry))
      continue;
    std::vector<TensorMapLayout> layouts;
    if (Status s = tensorMapLayouts(p, step.entry, bound.dims, tensorOf,
                                    /*checkAddresses=*/false, layouts)) {
      if (step.fallback.empty())
        return s;
      step.fellBack = true;
      continue;
    }
    const EntrySpec &entry = m.entries[step.entry];
    for (size_t i = 0, k = 0; i < entry.params.size(); ++i) {
      if (entry.params[i].kind != ParamSlot::Kind::Tma)
        continue;
      attnc_plan_t::MapSlot slot;
      slot.slot = i;
      if (int w = p.tmaWorkspace(entry.params[i]); w >= 0)
        slot.workspace = static_cast<size_t>(w);
      else
        slot.tensor = tensorIndexOf[p.findArg(entry.params[i].arg)];
      slot.index = plan.numMaps++;
      slot.layout = layouts[k++];
      slot.optional = entry.params[i].tile.optional;
      plan.mapSlots[step.entry].push_back(slot);
    }
  }
  // Parameters and workspaces of every entry that may run.
  std::vector<size_t> entries;
  for (const attnc_plan_t::Step &step : plan.steps) {
    if (!step.fellBack)
      entries.push_back(step.entry);
    entries.insert(entries.end(), step.fallback.begin(), step.fallback.end());
  }
  if (Status s = workspaceBytes(p, bound, entries, plan.workspaceBytes))
    return s;
  plan.slots.resize(m.entries.size());
  plan.pointerSlots.resize(m.entries.size());
  for (size_t e : entries) {
    if (Status s = buildSlots(p, e, bound, tensorOf, plan.slots[e]))
      return s;
    const EntrySpec &entry = m.entries[e];
    for (size_t i = 0; i < entry.params.size(); ++i)
      if (entry.params[i].kind == ParamSlot::Kind::Ptr)
        plan.pointerSlots[e].push_back(
            {i, tensorIndexOf[p.findArg(entry.params[i].arg)]});
  }
  plan.pkg = pkg;
  plan.device = bound.device;
  plan.grids = bound.grids;
  plan.checkedData =
      std::make_unique<std::atomic<const void *>[]>(plan.tensors.size());
  for (size_t t = 0; t < plan.tensors.size(); ++t)
    plan.checkedData[t] = nullptr;
  return Status::ok();
}

/// The data address of tensor t of a launch of `plan`.
void *tensorAddress(const attnc_plan_t &plan, void *const *data, size_t t) {
  return static_cast<char *>(data[t]) + plan.tensors[t].byteOffset;
}

/// Puts the tensor maps of entry `e` for a launch with `data` and
/// `workspaces` into `maps`: the ones the plan encoded last where the
/// address is the same, else encoded now by the driver. An optional map the
/// driver cannot make (no TMA, a misaligned address, a refusal) is all
/// zeros.
Status encodeTensorMaps(attnc_plan_t &plan, size_t e, void *const *data,
                        const std::vector<void *> &workspaces, const Driver &d,
                        std::vector<CUtensorMap> &maps) {
  const Package &p = plan.pkg->pkg;
  std::lock_guard<std::mutex> lock(plan.mapMutex);
  for (attnc_plan_t::MapSlot &slot : plan.mapSlots[e]) {
    // A workspace of 0 bytes has no buffer (nor a map: its tensor is
    // empty).
    void *address = !slot.workspace ? tensorAddress(plan, data, slot.tensor)
                    : *slot.workspace < workspaces.size()
                        ? workspaces[*slot.workspace]
                        : nullptr;
    const ArgSpec &arg = slot.workspace
                             ? *p.workspaceTensors[*slot.workspace]
                             : p.manifest.args[plan.tensors[slot.tensor].arg];
    if (!slot.cached || slot.cachedFor != address) {
      slot.cached = false;
      Status s = d.cuTensorMapEncodeTiled
                     ? Status::ok()
                     : Status(ATTNC_ERROR_CUDA,
                              "the CUDA driver has no cuTensorMapEncodeTiled "
                              "(TMA needs a CUDA 12 driver)");
      // The addresses of the other maps were checked before any driver call.
      if (s.isOk() && slot.optional && !slot.layout.empty)
        s = checkTensorMapAddress(arg, address);
      if (s.isOk())
        s = encodeTensorMap(d, arg, slot.layout, address, slot.cachedMap);
      if (!s.isOk()) {
        if (!slot.optional)
          return s;
        slot.cachedMap = CUtensorMap();
      }
      slot.cached = true;
      slot.cachedFor = address;
    }
    maps[slot.index] = slot.cachedMap;
  }
  return Status::ok();
}

/// Step 2: the driver, with tensor t's data at data[t] and workspace w at
/// workspaceData[w] (null: the runtime's buffers for the stream).
Status runPlan(attnc_plan_t &plan, void *const *data,
               void *const *workspaceData, attnc_stream stream) {
  const Package &p = plan.pkg->pkg;
  const PackageManifest &m = p.manifest;
  if (stream && stream->device != plan.device)
    return invalidArgument("the stream is on CUDA device " +
                           std::to_string(stream->device) +
                           " but the tensors are on device " +
                           std::to_string(plan.device));
  if (plan.steps.empty())
    return Status::ok(); // Every selected entry is disabled for these dims.
  // Whether each step runs its fallback, as far as the data addresses decide
  // it: a tensor map needs a 16-byte aligned one. Checked before any driver
  // call, as attnc_launch checks its arguments.
  thread_local std::vector<uint8_t> fallsBack;
  fallsBack.clear();
  for (const attnc_plan_t::Step &step : plan.steps) {
    bool falls = step.fellBack;
    for (const attnc_plan_t::MapSlot &slot : plan.mapSlots[step.entry]) {
      // Workspaces are aligned to kWorkspaceGranule.
      if (falls || slot.layout.empty || slot.optional || slot.workspace)
        continue;
      const ArgSpec &arg = m.args[plan.tensors[slot.tensor].arg];
      if (Status s = checkTensorMapAddress(
              arg, tensorAddress(plan, data, slot.tensor))) {
        if (step.fallback.empty())
          return s.withContext("entry '" + m.entries[step.entry].name + "'");
        falls = true;
      }
    }
    fallsBack.push_back(falls);
  }
  Driver *d;
  if (Status s = enter(plan.device, d))
    return s;
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    const attnc_plan_t::Tensor &tensor = plan.tensors[t];
    // An empty tensor is never read or written (K and V with N = 0): its
    // pointer may be anything a framework gives zero-size tensors.
    if (tensor.empty || !data[t] || plan.checkedData[t].load() == data[t])
      continue;
    // Catches host pointers and memory of another device, which would
    // otherwise fault inside the kernel (or silently read garbage).
    int ordinal = -1;
    CUresult r = d->cuPointerGetAttribute(
        &ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, dptr(data[t]));
    if (r != CUDA_SUCCESS || ordinal != plan.device) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%p", data[t]);
      const ArgSpec &arg = m.args[tensor.arg];
      return invalidArgument(
          std::string(arg.kind == ArgKind::Input ? "input" : "output") +
          " '" + arg.name + "': data pointer " + buf +
          (r != CUDA_SUCCESS
               ? " is not CUDA device memory"
               : " is memory of CUDA device " + std::to_string(ordinal)) +
          " (the tensor says device " + std::to_string(plan.device) + ")");
    }
    plan.checkedData[t].store(data[t]);
  }
  LoadedPackage *loaded;
  if (Status s = ensureLoaded(plan.pkg, plan.device, *d, loaded))
    return s;
  CUstream cuStream = stream ? stream->stream : nullptr;
  // Workspace w of this launch: the caller's, or the runtime's buffer for
  // the stream (kept under the package's lock until the kernels are queued).
  std::vector<void *> workspaces;
  std::unique_lock<std::mutex> workspaceLock(plan.pkg->mutex,
                                             std::defer_lock);
  if (workspaceData) {
    workspaces.assign(plan.workspaceBytes.size(), nullptr);
    for (size_t w = 0; w < workspaces.size(); ++w) {
      if (plan.workspaceBytes[w] <= 0)
        continue;
      workspaces[w] = workspaceData[w];
      if (!workspaces[w] ||
          reinterpret_cast<uintptr_t>(workspaces[w]) % kWorkspaceGranule)
        return invalidArgument(
            "workspace '" + m.workspaces[w].name + "' of kernel '" + m.name +
            "' needs " + std::to_string(plan.workspaceBytes[w]) +
            " bytes of device memory aligned to " +
            std::to_string(kWorkspaceGranule) + " bytes");
    }
    // A caller's memory may have held anything since its last launch.
    for (size_t w = 0; w < workspaces.size(); ++w)
      if (workspaces[w] && m.workspaces[w].zeroed)
        if (Status s = d->check(
                d->cuMemsetD8Async(dptr(workspaces[w]), 0,
                                   static_cast<size_t>(plan.workspaceBytes[w]),
                                   cuStream),
                "cuMemsetD8Async"))
          return s;
  } else if (std::any_of(plan.workspaceBytes.begin(),
                         plan.workspaceBytes.end(),
                         [](int64_t b) { return b > 0; })) {
    workspaceLock.lock();
    if (Status s = ensureWorkspaces(p, *loaded, cuStream, *d,
                                    plan.workspaceBytes, workspaces))
      return s;
  }
  // The tensor maps, before any kernel is queued: a step whose maps the
  // driver cannot encode (or a driver without TMA) runs its fallback.
  thread_local std::vector<CUtensorMap> maps;
  maps.resize(plan.numMaps);
  for (size_t k = 0; k < plan.steps.size(); ++k) {
    size_t e = plan.steps[k].entry;
    if (fallsBack[k] || plan.mapSlots[e].empty())
      continue;
    if (Status s = encodeTensorMaps(plan, e, data, workspaces, *d, maps)) {
      if (plan.steps[k].fallback.empty())
        return s.withContext("entry '" + m.entries[e].name + "'");
      fallsBack[k] = true;
    }
  }
  // The plan is shared by every thread that launches it: each launch fills
  // its own copy of an entry's parameters (a buffer the thread reuses).
  thread_local std::vector<SlotValue> values;
  void *args[256];
  auto launchEntry = [&](size_t e) -> Status {
    const EntrySpec &entry = m.entries[e];
    std::array<int64_t, 3> g = plan.grids[e];
    if (g[0] == 0 || g[1] == 0 || g[2] == 0)
      return Status::ok(); // An empty problem: nothing to launch.
    g = residentGrid(entry, g, loaded->multiprocessors);
    values = plan.slots[e];
    for (auto [slot, t] : plan.pointerSlots[e])
      values[slot].ptr =
          static_cast<char *>(data[t]) + plan.tensors[t].byteOffset;
    if (!workspaces.empty())
      setWorkspaceSlots(p, e, workspaces, values);
    if (values.size() > std::size(args))
      return invalidArgument("entry '" + entry.name + "' has more than " +
                             std::to_string(std::size(args)) +
                             " kernel parameters");
    for (size_t i = 0; i < values.size(); ++i)
      args[i] = &values[i];
    for (const attnc_plan_t::MapSlot &slot : plan.mapSlots[e])
      args[slot.slot] = &maps[slot.index];
    CUresult r = d->cuLaunchKernel(
        static_cast<CUfunction>(loaded->functions[e]),
        static_cast<unsigned>(g[0]), static_cast<unsigned>(g[1]),
        static_cast<unsigned>(g[2]), static_cast<unsigned>(entry.block[0]),
        static_cast<unsigned>(entry.block[1]),
        static_cast<unsigned>(entry.block[2]),
        static_cast<unsigned>(entry.sharedBytes), cuStream,
        values.empty() ? nullptr : args, nullptr);
    return d->check(r, "cuLaunchKernel(" + entry.function + ")");
  };
  for (size_t k = 0; k < plan.steps.size(); ++k) {
    const attnc_plan_t::Step &step = plan.steps[k];
    if (!fallsBack[k]) {
      if (Status s = launchEntry(step.entry))
        return s;
      continue;
    }
    for (size_t e : step.fallback)
      if (Status s = launchEntry(e))
        return s;
  }
  return Status::ok();
}

} // namespace

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
  *out = new attnc_stream_t{device, stream, /*owned=*/true};
  return ATTNC_OK;
}

attnc_status attnc_stream_wrap(int device, void *cuda_stream,
                               attnc_stream *out) {
  if (!out)
    return setLastError(invalidArgument("attnc_stream_wrap: NULL out"));
  *out = nullptr;
  Driver *d;
  if (Status s = enter(device, d))
    return setLastError(s);
  *out = new attnc_stream_t{device, static_cast<CUstream>(cuda_stream),
                            /*owned=*/false};
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
  if (!stream->owned) {
    delete stream;
    return ATTNC_OK;
  }
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
  // cuMemsetD8 may return before it is done, and kernels on non-blocking
  // streams do not wait for it.
  if (Status s = d->check(d->cuCtxSynchronize(), "cuCtxSynchronize"))
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
  attnc_plan_t plan;
  if (Status s = makePlan(pkg, entry_name, inputs, num_inputs, params,
                          num_params, outputs, num_outputs, plan))
    return setLastError(s);
  std::vector<void *> data;
  for (size_t i = 0; i < num_inputs; ++i)
    data.push_back(inputs[i].data);
  for (size_t i = 0; i < num_outputs; ++i)
    data.push_back(outputs[i].data);
  if (Status s = runPlan(plan, data.data(), nullptr, stream))
    return setLastError(s);
  return ATTNC_OK;
}

attnc_status attnc_plan_create(attnc_package pkg, const char *entry_name,
                               const attnc_tensor *inputs, size_t num_inputs,
                               const double *params, size_t num_params,
                               const attnc_tensor *outputs, size_t num_outputs,
                               attnc_plan *out) {
  if (!out)
    return setLastError(invalidArgument("attnc_plan_create: NULL out"));
  *out = nullptr;
  auto plan = std::make_unique<attnc_plan_t>();
  if (Status s = makePlan(pkg, entry_name, inputs, num_inputs, params,
                          num_params, outputs, num_outputs, *plan))
    return setLastError(s);
  *out = plan.release();
  return ATTNC_OK;
}

size_t attnc_plan_num_workspaces(attnc_plan plan) {
  return plan ? plan->workspaceBytes.size() : 0;
}

size_t attnc_plan_workspace_bytes(attnc_plan plan, size_t index) {
  if (!plan || index >= plan->workspaceBytes.size())
    return 0;
  int64_t bytes = plan->workspaceBytes[index];
  return bytes > 0 ? static_cast<size_t>(bytes) : 0;
}

attnc_status attnc_plan_launch(attnc_plan plan, void *const *input_data,
                               void *const *output_data,
                               void *const *workspace_data,
                               attnc_stream stream) {
  if (!plan)
    return setLastError(invalidArgument("attnc_plan_launch: NULL plan"));
  size_t numInputs = plan->numInputs;
  size_t numTensors = plan->tensors.size();
  if ((numInputs && !input_data) || (numTensors > numInputs && !output_data))
    return setLastError(
        invalidArgument("attnc_plan_launch: NULL data pointer array"));
  void *data[kMaxPlanTensors];
  for (size_t t = 0; t < numTensors; ++t)
    data[t] = t < numInputs ? input_data[t] : output_data[t - numInputs];
  if (Status s = runPlan(*plan, data, workspace_data, stream))
    return setLastError(s);
  return ATTNC_OK;
}

void attnc_plan_free(attnc_plan plan) { delete plan; }

} // extern "C"
