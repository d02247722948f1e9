//===- CApi.cpp - The host-only half of the C API -------------------------===//
//
// Errors, packages and signatures: nothing here touches the driver, so all of
// it works on machines without a GPU.
//
//===----------------------------------------------------------------------===//

#include "PackageHandle.h"
#include "cuda/TensorMap.h"

#include "attn/Runtime/LaunchCheck.h"

#include <new>

namespace attn {

namespace {
thread_local std::string lastError;
} // namespace

attnc_status setLastError(const Status &status) {
  lastError = status.getMessage();
  return status.getCode();
}

} // namespace attn

using namespace attn;

extern "C" {

const char *attnc_last_error(void) { return lastError.c_str(); }

const char *attnc_status_name(attnc_status status) {
  switch (status) {
  case ATTNC_OK:
    return "ATTNC_OK";
  case ATTNC_ERROR_INVALID_ARGUMENT:
    return "ATTNC_ERROR_INVALID_ARGUMENT";
  case ATTNC_ERROR_INVALID_PACKAGE:
    return "ATTNC_ERROR_INVALID_PACKAGE";
  case ATTNC_ERROR_IO:
    return "ATTNC_ERROR_IO";
  case ATTNC_ERROR_NO_DEVICE:
    return "ATTNC_ERROR_NO_DEVICE";
  case ATTNC_ERROR_CUDA:
    return "ATTNC_ERROR_CUDA";
  case ATTNC_ERROR_NOT_FOUND:
    return "ATTNC_ERROR_NOT_FOUND";
  }
  return "ATTNC_ERROR_UNKNOWN";
}

static attnc_status finishLoad(Status status, Package &pkg,
                               attnc_package *out) {
  if (status)
    return setLastError(status);
  attnc_package handle = new (std::nothrow) attnc_package_t();
  if (!handle)
    return setLastError(invalidArgument("out of memory"));
  handle->pkg = std::move(pkg);
  for (const ArgSpec &a : handle->pkg.manifest.args) {
    std::vector<const char *> dims;
    std::vector<int64_t> sizes;
    for (const AxisSpec &ax : a.axes) {
      dims.push_back(ax.isDim() ? ax.dim.c_str() : nullptr);
      sizes.push_back(ax.isDim() ? -1 : ax.size);
    }
    handle->axisDims.push_back(std::move(dims));
    handle->axisSizes.push_back(std::move(sizes));
  }
  *out = handle;
  return ATTNC_OK;
}

attnc_status attnc_package_load(const char *path, attnc_package *out) {
  if (!path || !out)
    return setLastError(invalidArgument("attnc_package_load: NULL argument"));
  *out = nullptr;
  Package pkg;
  Status s = readPackageFile(path, pkg);
  return finishLoad(std::move(s), pkg, out);
}

attnc_status attnc_package_load_memory(const void *bytes, size_t size,
                                       attnc_package *out) {
  if ((!bytes && size) || !out)
    return setLastError(
        invalidArgument("attnc_package_load_memory: NULL argument"));
  *out = nullptr;
  Package pkg;
  Status s = readPackage(
      std::string_view(static_cast<const char *>(bytes), size), pkg);
  return finishLoad(std::move(s), pkg, out);
}

void attnc_package_free(attnc_package pkg) {
  if (!pkg)
    return;
  unloadPackageModules(pkg);
  delete pkg;
}

const char *attnc_package_name(attnc_package pkg) {
  return pkg ? pkg->pkg.manifest.name.c_str() : "";
}

const char *attnc_package_target(attnc_package pkg) {
  return pkg ? pkg->pkg.manifest.target.c_str() : "";
}

size_t attnc_package_num_args(attnc_package pkg) {
  return pkg ? pkg->pkg.manifest.dims.size() + pkg->pkg.manifest.args.size()
             : 0;
}

attnc_status attnc_package_arg(attnc_package pkg, size_t index,
                               attnc_arg_info *out) {
  if (!pkg || !out)
    return setLastError(invalidArgument("attnc_package_arg: NULL argument"));
  const PackageManifest &m = pkg->pkg.manifest;
  *out = attnc_arg_info();
  if (index < m.dims.size()) {
    const DimSpec &d = m.dims[index];
    out->name = d.name.c_str();
    out->kind = ATTNC_ARG_DIM;
    out->dtype = toCDType(DType::I64);
    out->size = d.size ? *d.size : -1;
    return ATTNC_OK;
  }
  index -= m.dims.size();
  if (index >= m.args.size())
    return setLastError(
        Status(ATTNC_ERROR_NOT_FOUND,
               "argument index " + std::to_string(index) + " out of range"));
  const ArgSpec &a = m.args[index];
  out->name = a.name.c_str();
  out->dtype = toCDType(a.dtype);
  switch (a.kind) {
  case ArgKind::Input:
    out->kind = ATTNC_ARG_INPUT;
    break;
  case ArgKind::Output:
    out->kind = ATTNC_ARG_OUTPUT;
    break;
  case ArgKind::Param:
    out->kind = ATTNC_ARG_PARAM;
    out->has_default = a.defaultValue.has_value();
    out->default_value = a.defaultValue.value_or(0.0);
    return ATTNC_OK;
  }
  out->size = static_cast<int64_t>(a.axes.size());
  out->axis_dims = pkg->axisDims[index].data();
  out->axis_sizes = pkg->axisSizes[index].data();
  out->layout = static_cast<int32_t>(a.layout);
  return ATTNC_OK;
}

size_t attnc_package_num_entries(attnc_package pkg) {
  return pkg ? pkg->pkg.manifest.entries.size() : 0;
}

const char *attnc_package_entry_name(attnc_package pkg, size_t index) {
  if (!pkg || index >= pkg->pkg.manifest.entries.size())
    return nullptr;
  return pkg->pkg.manifest.entries[index].name.c_str();
}

attnc_status attnc_check_args(attnc_package pkg, const attnc_tensor *inputs,
                              size_t num_inputs, const double *params,
                              size_t num_params, const attnc_tensor *outputs,
                              size_t num_outputs, int64_t *dim_values) {
  if (!pkg)
    return setLastError(invalidArgument("attnc_check_args: NULL package"));
  BoundLaunch bound;
  if (Status s = checkLaunch(pkg->pkg, inputs, num_inputs, params, num_params,
                             outputs, num_outputs, bound))
    return setLastError(s);
  std::vector<size_t> all(pkg->pkg.manifest.entries.size());
  for (size_t e = 0; e < all.size(); ++e)
    all[e] = e;
  std::vector<int64_t> bytes;
  if (Status s = workspaceBytes(pkg->pkg, bound, all, bytes))
    return setLastError(s);
  // An entry that loads with TMA and has no fallback needs tensors a tensor
  // map describes (checked without the driver, as attnc_launch does).
  const PackageManifest &m = pkg->pkg.manifest;
  std::vector<const attnc_tensor *> tensorOf(m.args.size(), nullptr);
  for (size_t a = 0, in = 0, out = 0; a < m.args.size(); ++a) {
    if (m.args[a].kind == ArgKind::Input)
      tensorOf[a] = &inputs[in++];
    else if (m.args[a].kind == ArgKind::Output)
      tensorOf[a] = &outputs[out++];
  }
  for (size_t e = 0; e < m.entries.size(); ++e) {
    if (!bound.enabled[e] || pkg->pkg.standsInFor[e] >= 0 ||
        !pkg->pkg.fallbackOf[e].empty() || !pkg->pkg.usesTma(e))
      continue;
    std::vector<cuda::TensorMapLayout> layouts;
    if (Status s = cuda::tensorMapLayouts(pkg->pkg, e, bound.dims, tensorOf,
                                          /*checkAddresses=*/true, layouts))
      return setLastError(s);
  }
  if (dim_values)
    for (size_t d = 0; d < bound.dims.size(); ++d)
      dim_values[d] = bound.dims[d];
  return ATTNC_OK;
}

} // extern "C"
