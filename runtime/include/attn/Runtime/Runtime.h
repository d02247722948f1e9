//===- Runtime.h - C++ wrapper of the attnc C API ---------------*- C++ -*-===//
//
// RAII handles over attnc.h for C++ users (the driver, tests, the future
// Python binding). Header-only and free of LLVM: it only calls the C API, so
// it works against a prebuilt runtime library. No exceptions: fallible
// operations return attn::Status.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_RUNTIME_H
#define ATTN_RUNTIME_RUNTIME_H

#include "attn/Runtime/Status.h"
#include "attnc/attnc.h"

#include <string>
#include <utility>
#include <vector>

namespace attn {
namespace rt {

/// Converts a C API result into a Status carrying attnc_last_error().
inline Status fromC(attnc_status code) {
  if (code == ATTNC_OK)
    return Status::ok();
  return Status(code, attnc_last_error());
}

/// A loaded kernel package.
class KernelPackage {
public:
  KernelPackage() = default;
  ~KernelPackage() { attnc_package_free(handle); }
  KernelPackage(KernelPackage &&o) noexcept : handle(o.handle) {
    o.handle = nullptr;
  }
  KernelPackage &operator=(KernelPackage &&o) noexcept {
    std::swap(handle, o.handle);
    return *this;
  }
  KernelPackage(const KernelPackage &) = delete;
  KernelPackage &operator=(const KernelPackage &) = delete;

  static Status load(const std::string &path, KernelPackage &out) {
    attnc_package p = nullptr;
    if (Status s = fromC(attnc_package_load(path.c_str(), &p)))
      return s;
    out = KernelPackage(p);
    return Status::ok();
  }

  attnc_package get() const { return handle; }
  std::string name() const { return attnc_package_name(handle); }
  std::string target() const { return attnc_package_target(handle); }

  /// The signature, dims first.
  std::vector<attnc_arg_info> signature() const {
    std::vector<attnc_arg_info> out(attnc_package_num_args(handle));
    for (size_t i = 0; i < out.size(); ++i)
      attnc_package_arg(handle, i, &out[i]);
    return out;
  }

  Status prepare(int device) const {
    return fromC(attnc_package_prepare(handle, device));
  }

  Status launch(const std::vector<attnc_tensor> &inputs,
                const std::vector<double> &params,
                const std::vector<attnc_tensor> &outputs,
                attnc_stream stream = nullptr,
                const char *entry = nullptr) const {
    return fromC(attnc_launch(handle, entry, inputs.data(), inputs.size(),
                              params.data(), params.size(), outputs.data(),
                              outputs.size(), stream));
  }

  Status check(const std::vector<attnc_tensor> &inputs,
               const std::vector<double> &params,
               const std::vector<attnc_tensor> &outputs,
               std::vector<int64_t> *dims = nullptr) const {
    std::vector<int64_t> values(attnc_package_num_args(handle));
    Status s = fromC(attnc_check_args(
        handle, inputs.data(), inputs.size(), params.data(), params.size(),
        outputs.data(), outputs.size(), values.data()));
    if (dims && s.isOk())
      *dims = std::move(values);
    return s;
  }

private:
  explicit KernelPackage(attnc_package p) : handle(p) {}
  attnc_package handle = nullptr;
};

/// A CUDA stream.
class Stream {
public:
  Stream() = default;
  ~Stream() { attnc_stream_destroy(handle); }
  Stream(Stream &&o) noexcept : handle(o.handle) { o.handle = nullptr; }
  Stream &operator=(Stream &&o) noexcept {
    std::swap(handle, o.handle);
    return *this;
  }
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;

  static Status create(int device, Stream &out) {
    attnc_stream s = nullptr;
    if (Status st = fromC(attnc_stream_create(device, &s)))
      return st;
    out.reset(s);
    return Status::ok();
  }
  Status synchronize() const { return fromC(attnc_stream_synchronize(handle)); }
  attnc_stream get() const { return handle; }

private:
  void reset(attnc_stream s) {
    attnc_stream_destroy(handle);
    handle = s;
  }
  attnc_stream handle = nullptr;
};

/// Device memory owned by this object.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { attnc_device_free(device, ptr); }
  DeviceBuffer(DeviceBuffer &&o) noexcept
      : device(o.device), ptr(o.ptr), bytes(o.bytes) {
    o.ptr = nullptr;
  }
  DeviceBuffer &operator=(DeviceBuffer &&o) noexcept {
    std::swap(device, o.device);
    std::swap(ptr, o.ptr);
    std::swap(bytes, o.bytes);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  static Status allocate(int device, size_t bytes, DeviceBuffer &out) {
    void *p = nullptr;
    if (Status s = fromC(attnc_device_alloc(device, bytes, &p)))
      return s;
    DeviceBuffer b;
    b.device = device;
    b.ptr = p;
    b.bytes = bytes;
    out = std::move(b);
    return Status::ok();
  }
  Status upload(const void *src, size_t n) const {
    return fromC(attnc_copy_to_device(device, ptr, src, n));
  }
  Status download(void *dst, size_t n) const {
    return fromC(attnc_copy_to_host(device, dst, ptr, n));
  }
  void *data() const { return ptr; }
  size_t size() const { return bytes; }
  int getDevice() const { return device; }

private:
  int device = 0;
  void *ptr = nullptr;
  size_t bytes = 0;
};

/// A compact row-major CUDA tensor descriptor over `data`; `shape` must
/// outlive the descriptor.
inline attnc_tensor cudaTensor(void *data, int device, attnc_dtype dtype,
                               const std::vector<int64_t> &shape) {
  attnc_tensor t{};
  t.data = data;
  t.device_type = ATTNC_DEVICE_CUDA;
  t.device_id = device;
  t.ndim = static_cast<int32_t>(shape.size());
  t.dtype = dtype;
  t.shape = shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  return t;
}

} // namespace rt
} // namespace attn

#endif // ATTN_RUNTIME_RUNTIME_H
