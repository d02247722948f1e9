//===- KernelParams.cpp - Kernel parameter values of a launch -------------===//

#include "KernelParams.h"

#include <cstdint>
#include <optional>

namespace attn {

Status buildSlots(const Package &pkg, size_t e, const BoundLaunch &bound,
                  const std::vector<const attnc_tensor *> &tensorOf,
                  std::vector<SlotValue> &out) {
  const EntrySpec &entry = pkg.manifest.entries[e];
  out.assign(entry.params.size(), SlotValue{0});
  for (size_t i = 0; i < entry.params.size(); ++i) {
    const ParamSlot &p = entry.params[i];
    bool namesArg =
        p.kind == ParamSlot::Kind::Ptr || p.kind == ParamSlot::Kind::Stride ||
        p.kind == ParamSlot::Kind::Size || p.kind == ParamSlot::Kind::Param;
    int argIndex = namesArg ? pkg.findArg(p.arg) : -1;
    const attnc_tensor *t = argIndex >= 0 ? tensorOf[argIndex] : nullptr;
    // Integers (extents, strides, dims, formulas) stay exact up to the range
    // check; params and constants come as doubles.
    std::optional<int64_t> integer;
    double real = 0;
    switch (p.kind) {
    case ParamSlot::Kind::Ptr:
      out[i].ptr = static_cast<char *>(t->data) + t->byte_offset;
      continue;
    case ParamSlot::Kind::Workspace:
    case ParamSlot::Kind::Tma:
      continue;
    case ParamSlot::Kind::Stride: {
      if (t->strides) {
        integer = t->strides[p.axis];
      } else {
        int64_t s = 1;
        for (int32_t k = t->ndim - 1; k > p.axis; --k)
          s *= t->shape[k];
        integer = s;
      }
      break;
    }
    case ParamSlot::Kind::Size:
      integer = t->shape[p.axis];
      break;
    case ParamSlot::Kind::Dim:
      integer = bound.dims[pkg.findDim(p.arg)];
      break;
    case ParamSlot::Kind::Expr: {
      int64_t v;
      if (Status s = pkg.slotExprs[e][i]->evaluate(bound.dims, v))
        return s.withContext("entry '" + entry.name + "': kernel param " +
                             std::to_string(i));
      integer = v;
      break;
    }
    case ParamSlot::Kind::Param:
      real = bound.argValues[argIndex];
      break;
    case ParamSlot::Kind::Const:
      real = p.value;
      break;
    }
    if (integer)
      real = static_cast<double>(*integer);
    auto doesNotFit = [&]() {
      std::string v = integer ? std::to_string(*integer) : std::to_string(real);
      return invalidArgument("entry '" + entry.name + "': kernel param " +
                             std::to_string(i) + " (" + p.arg + ") = " + v +
                             " does not fit " +
                             std::string(slotTypeName(p.type)));
    };
    switch (p.type) {
    case SlotType::I32:
      if (integer ? (*integer < INT32_MIN || *integer > INT32_MAX)
                  : !fitsIntegerDType(real, DType::I32))
        return doesNotFit();
      out[i].i32 =
          integer ? static_cast<int32_t>(*integer) : static_cast<int32_t>(real);
      break;
    case SlotType::I64:
      if (!integer &&
          !(real >= -9223372036854775808.0 && real < 9223372036854775808.0))
        return doesNotFit();
      out[i].i64 = integer ? *integer : static_cast<int64_t>(real);
      break;
    case SlotType::F32:
      out[i].f32 = static_cast<float>(real);
      break;
    case SlotType::F64:
      out[i].f64 = real;
      break;
    case SlotType::Ptr:
      return invalidArgument("entry '" + entry.name +
                             "': non-pointer value in a ptr slot");
    case SlotType::TensorMap:
      return invalidArgument("entry '" + entry.name +
                             "': scalar value in a tmap slot");
    }
  }
  return Status::ok();
}

void setWorkspaceSlots(const Package &pkg, size_t e,
                       const std::vector<void *> &workspaces,
                       std::vector<SlotValue> &slots) {
  const EntrySpec &entry = pkg.manifest.entries[e];
  for (size_t i = 0; i < entry.params.size(); ++i)
    if (entry.params[i].kind == ParamSlot::Kind::Workspace)
      slots[i].ptr = workspaces[pkg.findWorkspace(entry.params[i].arg)];
}

} // namespace attn
