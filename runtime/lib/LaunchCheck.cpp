//===- LaunchCheck.cpp - Argument checks before a launch ------------------===//

#include "attn/Runtime/LaunchCheck.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

namespace attn {

attnc_dtype toCDType(DType type) {
  switch (type) {
  case DType::F32:
    return {ATTNC_DTYPE_FLOAT, 32, 1};
  case DType::F16:
    return {ATTNC_DTYPE_FLOAT, 16, 1};
  case DType::BF16:
    return {ATTNC_DTYPE_BFLOAT, 16, 1};
  case DType::F64:
    return {ATTNC_DTYPE_FLOAT, 64, 1};
  case DType::I1:
    return {ATTNC_DTYPE_BOOL, 8, 1};
  case DType::I8:
    return {ATTNC_DTYPE_INT, 8, 1};
  case DType::I32:
    return {ATTNC_DTYPE_INT, 32, 1};
  case DType::I64:
    return {ATTNC_DTYPE_INT, 64, 1};
  }
  return {0, 0, 0};
}

bool fromCDType(attnc_dtype dt, DType &out) {
  static const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::F64,
                              DType::I1,  DType::I8,  DType::I32,  DType::I64};
  for (DType t : all) {
    attnc_dtype c = toCDType(t);
    if (c.code == dt.code && c.bits == dt.bits && c.lanes == dt.lanes) {
      out = t;
      return true;
    }
  }
  return false;
}

namespace {

std::string describeCDType(attnc_dtype dt) {
  DType t;
  if (fromCDType(dt, t))
    return std::string(dtypeName(t));
  return "(code " + std::to_string(dt.code) + ", bits " +
         std::to_string(dt.bits) + ", lanes " + std::to_string(dt.lanes) + ")";
}

std::string listOf(const int64_t *values, int32_t n) {
  std::string s = "[";
  for (int32_t i = 0; i < n; ++i)
    s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

const char *deviceTypeName(int32_t type) {
  switch (type) {
  case ATTNC_DEVICE_CPU:
    return "CPU";
  case ATTNC_DEVICE_CUDA:
    return "CUDA";
  case ATTNC_DEVICE_CUDA_HOST:
    return "CUDA host";
  case ATTNC_DEVICE_CUDA_MANAGED:
    return "CUDA managed";
  default:
    return "unknown";
  }
}

/// Binds and checks one tensor argument.
class TensorChecker {
public:
  TensorChecker(const Package &pkg, BoundLaunch &out,
                std::vector<std::string> &dimSource, bool &haveDevice)
      : pkg(pkg), out(out), dimSource(dimSource), haveDevice(haveDevice) {}

  Status check(const ArgSpec &spec, const attnc_tensor &t,
               std::string &firstTensor) {
    std::string who =
        std::string(spec.kind == ArgKind::Input ? "input" : "output") + " '" +
        spec.name + "'";
    auto fail = [&](const std::string &what) {
      return invalidArgument(who + ": " + what);
    };
    if (t.device_type != ATTNC_DEVICE_CUDA &&
        t.device_type != ATTNC_DEVICE_CUDA_MANAGED)
      return fail(std::string("expected a CUDA tensor, got device type ") +
                  std::to_string(t.device_type) + " (" +
                  deviceTypeName(t.device_type) + ")");
    if (t.device_id < 0)
      return fail("negative device id");
    if (!haveDevice) {
      out.device = t.device_id;
      haveDevice = true;
      firstTensor = spec.name;
    } else if (t.device_id != out.device) {
      return fail("is on CUDA device " + std::to_string(t.device_id) +
                  " but '" + firstTensor + "' is on device " +
                  std::to_string(out.device));
    }
    DType dt;
    if (!fromCDType(t.dtype, dt) || dt != spec.dtype)
      return fail("expected dtype " + std::string(dtypeName(spec.dtype)) +
                  ", got " + describeCDType(t.dtype));
    int32_t rank = static_cast<int32_t>(spec.axes.size());
    if (t.ndim < 0 || t.ndim > 64 || (t.ndim > 0 && !t.shape))
      return fail("malformed descriptor (ndim " + std::to_string(t.ndim) +
                  ", shape " + (t.shape ? "set" : "NULL") + ")");
    if (t.ndim != rank)
      return fail("expected rank " + std::to_string(rank) + " " +
                  expectedShape(spec, /*withValues=*/false) + ", got rank " +
                  std::to_string(t.ndim) + " " + listOf(t.shape, t.ndim));
    for (int32_t k = 0; k < rank; ++k)
      if (t.shape[k] < 0)
        return fail("negative extent in shape " + listOf(t.shape, rank));

    // Bind the dims this tensor is first to mention.
    for (int32_t k = 0; k < rank; ++k) {
      const AxisSpec &ax = spec.axes[k];
      if (!ax.isDim())
        continue;
      int d = pkg.findDim(ax.dim);
      if (dimSource[d].empty()) {
        out.dims[d] = t.shape[k];
        dimSource[d] = spec.name;
      }
    }
    // Now every axis has an expected extent: compare them all at once so
    // the message shows the whole expected shape.
    bool match = true;
    for (int32_t k = 0; k < rank; ++k)
      match &= t.shape[k] == expectedExtent(spec.axes[k]);
    if (!match) {
      // Sources in the order the axes name them: "from Q, K".
      std::vector<std::string> sources;
      bool fromSpec = false;
      for (const AxisSpec &ax : spec.axes) {
        if (!ax.isDim()) {
          fromSpec = true;
          continue;
        }
        const std::string &src = dimSource[pkg.findDim(ax.dim)];
        if (src == "(spec)")
          fromSpec = true;
        else if (src != spec.name && std::find(sources.begin(), sources.end(),
                                               src) == sources.end())
          sources.push_back(src);
      }
      std::string from;
      for (const std::string &s : sources)
        from += (from.empty() ? "" : ", ") + s;
      if (fromSpec)
        from += from.empty() ? "the spec" : " and the spec";
      if (from.empty())
        from = spec.name + " itself";
      return fail("expected shape " + expectedShape(spec, true) + " (from " +
                  from + "), got " + listOf(t.shape, rank));
    }

    bool empty = false;
    for (int32_t k = 0; k < rank; ++k)
      empty |= t.shape[k] == 0;

    if (Status s = checkStrides(spec, t, who))
      return s;

    if (!t.data && !empty)
      return fail("data pointer is NULL");
    uintptr_t address = reinterpret_cast<uintptr_t>(t.data) +
                        static_cast<uintptr_t>(t.byte_offset);
    uint64_t align = spec.alignment ? static_cast<uint64_t>(spec.alignment)
                                    : dtypeSize(spec.dtype);
    if (!empty && align > 1 && address % align != 0)
      return fail("data address (data + byte_offset) must be aligned to " +
                  std::to_string(align) + " bytes");
    // The kernel reads such a tensor's rows with vector loads: every row
    // (each index of the axes outside the innermost) starts aligned too.
    uint64_t elementBytes = dtypeSize(spec.dtype);
    if (!empty && t.strides && align > elementBytes) {
      for (int32_t k = 0; k + 1 < rank; ++k) {
        uint64_t stride = static_cast<uint64_t>(t.strides[k]);
        if (t.shape[k] > 1 && (stride * elementBytes) % align != 0)
          return fail("the kernel reads rows with " + std::to_string(align) +
                      "-byte loads, so strides must be multiples of " +
                      std::to_string(align / elementBytes) +
                      " elements; stride of axis " + std::to_string(k) +
                      " is " + std::to_string(t.strides[k]));
      }
    }
    return Status::ok();
  }

private:
  int64_t expectedExtent(const AxisSpec &ax) const {
    return ax.isDim() ? out.dims[pkg.findDim(ax.dim)] : ax.size;
  }

  /// "[B=2, G=8, N=4096, 128]" or, before binding, "[B, G, N, 128]".
  std::string expectedShape(const ArgSpec &spec, bool withValues) const {
    std::string s = "[";
    for (size_t k = 0; k < spec.axes.size(); ++k) {
      const AxisSpec &ax = spec.axes[k];
      s += k ? ", " : "";
      if (!ax.isDim())
        s += std::to_string(ax.size);
      else if (withValues)
        s += ax.dim + "=" + std::to_string(expectedExtent(ax));
      else
        s += ax.dim;
    }
    return s + "]";
  }

  Status checkStrides(const ArgSpec &spec, const attnc_tensor &t,
                      const std::string &who) const {
    int32_t rank = t.ndim;
    if (!t.strides) // DLPack: NULL strides mean compact row-major.
      return Status::ok();
    std::vector<int64_t> compact(static_cast<size_t>(rank));
    int64_t running = 1;
    for (int32_t k = rank - 1; k >= 0; --k) {
      compact[k] = running;
      if (__builtin_mul_overflow(running, t.shape[k] ? t.shape[k] : 1,
                                 &running))
        return invalidArgument(who + ": shape overflows int64");
    }
    for (int32_t k = 0; k < rank; ++k)
      if (t.strides[k] < 0)
        return invalidArgument(who +
                               ": negative strides are not supported, "
                               "got strides " +
                               listOf(t.strides, rank));
    bool ok = true;
    std::string need;
    switch (spec.layout) {
    case Layout::Contiguous:
      // Axes of extent 1 may carry any stride (as PyTorch produces them).
      for (int32_t k = 0; k < rank; ++k)
        ok &= t.shape[k] <= 1 || t.strides[k] == compact[k];
      need = "a contiguous row-major tensor (strides " +
             listOf(compact.data(), rank) + ")";
      break;
    case Layout::InnerContiguous:
      ok = rank == 0 || t.shape[rank - 1] <= 1 || t.strides[rank - 1] == 1;
      need = "innermost stride 1";
      break;
    case Layout::Strided:
      break;
    }
    if (!ok)
      return invalidArgument(who + ": the kernel needs " + need +
                             ", got strides " + listOf(t.strides, rank));
    return Status::ok();
  }

  const Package &pkg;
  BoundLaunch &out;
  std::vector<std::string> &dimSource;
  bool &haveDevice;
};

/// "B=2, H=16, ...": the dims of a launch, for messages.
std::string describeDims(const PackageManifest &m,
                         const std::vector<int64_t> &dims) {
  std::string s;
  for (size_t d = 0; d < m.dims.size(); ++d)
    s += (d ? ", " : "") + m.dims[d].name + "=" + std::to_string(dims[d]);
  return s;
}

std::string namesOf(const Package &pkg, ArgKind kind, size_t &count) {
  std::string s;
  count = 0;
  for (const ArgSpec &a : pkg.manifest.args) {
    if (a.kind != kind)
      continue;
    s += (count++ ? ", " : "") + a.name;
  }
  return s;
}

} // namespace

Status checkLaunch(const Package &pkg, const attnc_tensor *inputs,
                   size_t numInputs, const double *params, size_t numParams,
                   const attnc_tensor *outputs, size_t numOutputs,
                   BoundLaunch &out) {
  const PackageManifest &m = pkg.manifest;
  out = BoundLaunch();
  out.dims.assign(m.dims.size(), 0);
  out.argValues.assign(m.args.size(), 0.0);

  size_t nIn, nParam, nOut;
  std::string inNames = namesOf(pkg, ArgKind::Input, nIn);
  std::string paramNames = namesOf(pkg, ArgKind::Param, nParam);
  std::string outNames = namesOf(pkg, ArgKind::Output, nOut);
  std::string kernel = "kernel '" + m.name + "'";
  if (numInputs != nIn)
    return invalidArgument(kernel + " takes " + std::to_string(nIn) +
                           " inputs (" + inNames + "), got " +
                           std::to_string(numInputs));
  if (numOutputs != nOut)
    return invalidArgument(kernel + " takes " + std::to_string(nOut) +
                           " outputs (" + outNames + "), got " +
                           std::to_string(numOutputs));
  if (numParams > nParam)
    return invalidArgument(kernel + " takes at most " + std::to_string(nParam) +
                           " params (" + paramNames + "), got " +
                           std::to_string(numParams));
  if ((numInputs && !inputs) || (numOutputs && !outputs) ||
      (numParams && !params))
    return invalidArgument("NULL argument array with a nonzero count");

  // Fixed dims are known up front; "(spec)" marks their source.
  std::vector<std::string> dimSource(m.dims.size());
  for (size_t d = 0; d < m.dims.size(); ++d) {
    if (m.dims[d].size) {
      out.dims[d] = *m.dims[d].size;
      dimSource[d] = "(spec)";
    }
  }

  bool haveDevice = false;
  std::string firstTensor;
  TensorChecker checker(pkg, out, dimSource, haveDevice);
  size_t inputIndex = 0, outputIndex = 0, paramIndex = 0;
  // Inputs first (they define the problem), then outputs.
  for (int pass = 0; pass < 2; ++pass) {
    for (const ArgSpec &a : m.args) {
      if (pass == 0 && a.kind == ArgKind::Input) {
        if (Status s = checker.check(a, inputs[inputIndex++], firstTensor))
          return s;
      } else if (pass == 1 && a.kind == ArgKind::Output) {
        if (Status s = checker.check(a, outputs[outputIndex++], firstTensor))
          return s;
      }
    }
  }

  for (size_t i = 0; i < m.args.size(); ++i) {
    const ArgSpec &a = m.args[i];
    if (a.kind != ArgKind::Param)
      continue;
    size_t p = paramIndex++;
    double v;
    if (p < numParams) {
      v = params[p];
    } else if (a.defaultValue) {
      v = *a.defaultValue;
    } else {
      return invalidArgument("param '" + a.name +
                             "' was not given and has no default");
    }
    if (isIntegerDType(a.dtype) && !fitsIntegerDType(v, a.dtype)) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.17g", v);
      return invalidArgument("param '" + a.name + "': expected an integer " +
                             "that fits " + std::string(dtypeName(a.dtype)) +
                             ", got " + buf);
    }
    out.argValues[i] = v;
  }

  // A launch without output entries (a zero-size dim in every output, such
  // as H = 0) computes nothing: no entry runs, and no formula is evaluated,
  // since grids and workspaces may divide by the zero size.
  bool anyOutputEntry = false;
  for (size_t o = 0; o < numOutputs; ++o)
    anyOutputEntry |=
        std::none_of(outputs[o].shape, outputs[o].shape + outputs[o].ndim,
                     [](int64_t size) { return size == 0; });
  if (numOutputs > 0 && !anyOutputEntry) {
    out.enabled.assign(m.entries.size(), false);
    out.grids.assign(m.entries.size(), {0, 0, 0});
    return Status::ok();
  }

  auto dimList = [&]() { return describeDims(m, out.dims); };
  for (size_t c = 0; c < pkg.constraintExprs.size(); ++c) {
    int64_t v;
    if (Status s = pkg.constraintExprs[c].evaluate(out.dims, v))
      return s;
    if (v == 0)
      return invalidArgument("constraint \"" + m.constraints[c] +
                             "\" of kernel '" + m.name +
                             "' does not hold for " + dimList());
  }

  out.enabled.assign(m.entries.size(), true);
  for (size_t e = 0; e < m.entries.size(); ++e) {
    // A fallback runs when the entry it stands in for does.
    size_t whenOf =
        pkg.standsInFor[e] >= 0 ? static_cast<size_t>(pkg.standsInFor[e]) : e;
    if (const std::optional<DimExpr> &when = pkg.whenExprs[whenOf]) {
      int64_t v;
      if (Status s = when->evaluate(out.dims, v))
        return s.withContext("entry '" + m.entries[e].name + "': when");
      if (v == 0) {
        out.enabled[e] = false;
        out.grids.push_back({0, 0, 0});
        continue;
      }
    }
    std::array<int64_t, 3> grid = {1, 1, 1};
    const std::vector<DimExpr> &exprs = pkg.gridExprs[e];
    for (size_t k = 0; k < exprs.size(); ++k) {
      if (Status s = exprs[k].evaluate(out.dims, grid[k]))
        return s.withContext("entry '" + m.entries[e].name + "'");
      int64_t limit = k == 0 ? 2147483647 : 65535;
      if (grid[k] < 0 || grid[k] > limit)
        return invalidArgument("entry '" + m.entries[e].name + "': grid." +
                               std::string(1, "xyz"[k]) + " = " +
                               m.entries[e].grid[k] + " = " +
                               std::to_string(grid[k]) + " is outside [0, " +
                               std::to_string(limit) + "] for " + dimList());
    }
    // A persistent kernel numbers its tiles in 32 bits.
    if (m.entries[e].persistentCtasPerSm &&
        grid[0] * grid[1] * grid[2] > 2147483647)
      return invalidArgument("entry '" + m.entries[e].name + "': " +
                             std::to_string(grid[0] * grid[1] * grid[2]) +
                             " tiles, more than 2147483647, for " + dimList());
    out.grids.push_back(grid);
  }
  return Status::ok();
}

Status workspaceTensorShape(const Package &pkg, size_t w,
                            const std::vector<int64_t> &dims,
                            std::vector<int64_t> &out) {
  const WorkspaceSpec &ws = pkg.manifest.workspaces[w];
  const std::vector<DimExpr> &exprs = pkg.workspaceShapeExprs[w];
  out.assign(exprs.size(), 0);
  for (size_t k = 0; k < exprs.size(); ++k) {
    std::string who =
        "workspace '" + ws.name + "': tensor shape[" + std::to_string(k) + "]";
    if (Status s = exprs[k].evaluate(dims, out[k]))
      return s.withContext(who);
    if (out[k] < 0)
      return invalidArgument(who + " = " + ws.tensor->shape[k] + " = " +
                             std::to_string(out[k]) + " is negative for " +
                             describeDims(pkg.manifest, dims));
  }
  return Status::ok();
}

Status workspaceBytes(const Package &pkg, const BoundLaunch &bound,
                      const std::vector<size_t> &entries,
                      std::vector<int64_t> &out) {
  const PackageManifest &m = pkg.manifest;
  out.assign(m.workspaces.size(), 0);
  std::vector<bool> used(m.workspaces.size(), false);
  for (size_t e : entries) {
    if (!bound.enabled[e])
      continue;
    for (const ParamSlot &p : m.entries[e].params) {
      if (p.kind == ParamSlot::Kind::Workspace)
        used[pkg.findWorkspace(p.arg)] = true;
      else if (p.kind == ParamSlot::Kind::Tma && pkg.tmaWorkspace(p) >= 0)
        used[pkg.tmaWorkspace(p)] = true;
    }
  }
  for (size_t w = 0; w < m.workspaces.size(); ++w) {
    if (!used[w])
      continue;
    const WorkspaceSpec &ws = m.workspaces[w];
    std::string who = "workspace '" + ws.name + "'";
    if (Status s = pkg.workspaceExprs[w].evaluate(bound.dims, out[w]))
      return s.withContext(who);
    if (out[w] < 0)
      return invalidArgument(who + ": bytes = " + ws.bytes + " = " +
                             std::to_string(out[w]) + " is negative for " +
                             describeDims(m, bound.dims));
    // The tensor it begins with must fit in it (a package that promised
    // otherwise would have its tensor maps read past the buffer).
    if (ws.tensor) {
      std::vector<int64_t> shape;
      if (Status s = workspaceTensorShape(pkg, w, bound.dims, shape))
        return s;
      int64_t tensorBytes = static_cast<int64_t>(dtypeSize(ws.tensor->dtype));
      for (int64_t extent : shape)
        if (__builtin_mul_overflow(tensorBytes, extent, &tensorBytes))
          tensorBytes = INT64_MAX;
      if (tensorBytes > out[w])
        return invalidPackage(
            who + ": its tensor takes " + std::to_string(tensorBytes) +
            " bytes, more than "
            "its " +
            std::to_string(out[w]) + " for " + describeDims(m, bound.dims));
    }
  }
  return Status::ok();
}

} // namespace attn
