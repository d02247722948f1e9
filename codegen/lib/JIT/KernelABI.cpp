//===- KernelABI.cpp - How a harness calls a kernel object ----------------===//

#include "attn/JIT/KernelABI.h"
#include "attn/JIT/ObjectEmitter.h"
#include "attn/JIT/ObjectLoader.h"

#include "llvm/ADT/Twine.h"

using namespace attn;

namespace {

const char *scalarTypeName(DType type) {
  switch (type) {
  case DType::F32:
    return "f32";
  case DType::F64:
    return "f64";
  case DType::I32:
    return "i32";
  default:
    return "i64";
  }
}

/// A memref argument: the fields of its descriptor, each one argument of
/// the direct symbol, in order.
llvm::json::Object describeMemRef(llvm::StringRef kind, llvm::StringRef name,
                                  DType dtype, int64_t rank) {
  llvm::json::Array fields{"allocated:ptr", "aligned:ptr", "offset:i64"};
  for (int64_t i = 0; i < rank; ++i)
    fields.push_back(("size" + llvm::Twine(i) + ":i64").str());
  for (int64_t i = 0; i < rank; ++i)
    fields.push_back(("stride" + llvm::Twine(i) + ":i64").str());
  return llvm::json::Object{{"kind", kind},
                            {"name", name},
                            {"dtype", std::string(dtypeName(dtype))},
                            {"rank", rank},
                            {"fields", std::move(fields)}};
}

} // namespace

llvm::json::Object attn::describeCpuKernelABI(const CpuKernelObject &object,
                                              const CpuTarget &target) {
  const CpuKernelSignature &sig = object.signature;
  llvm::json::Array arguments;
  int64_t flat = 0;
  for (unsigned i = 0; i < sig.numDims; ++i, ++flat)
    arguments.push_back(llvm::json::Object{
        {"kind", "dim"}, {"name", sig.dimNames[i]}, {"type", "i64"}});
  for (size_t i = 0; i < sig.inputs.size(); ++i) {
    arguments.push_back(describeMemRef("input", sig.inputNames[i],
                                       sig.inputs[i].first,
                                       sig.inputs[i].second));
    flat += 3 + 2 * sig.inputs[i].second;
  }
  for (size_t i = 0; i < sig.params.size(); ++i, ++flat)
    arguments.push_back(llvm::json::Object{{"kind", "param"},
                                           {"name", sig.paramNames[i]},
                                           {"type", scalarTypeName(sig.params[i])}});
  for (size_t i = 0; i < sig.outputs.size(); ++i) {
    arguments.push_back(describeMemRef("output", sig.outputNames[i],
                                       sig.outputs[i].first,
                                       sig.outputs[i].second));
    flat += 3 + 2 * sig.outputs[i].second;
  }

  llvm::json::Array libraries{"libc", "libm"};
  llvm::Expected<bool> openMP =
      objectUsesOpenMP(object.object->getMemBufferRef());
  if (!openMP)
    llvm::consumeError(openMP.takeError());
  else if (*openMP)
    libraries.push_back("libomp");

  return llvm::json::Object{
      {"kernel", sig.name},
      {"symbol", sig.name},
      {"packed_symbol", (kPackedPrefix + sig.name)},
      {"convention",
       "symbol(args...) takes the flattened arguments in order, returns "
       "void; packed_symbol(void **args) takes one pointer per flattened "
       "argument. Strides and sizes are in elements; outputs are "
       "preallocated by the caller; bf16/f16 are 16-bit storage."},
      {"num_flat_arguments", flat},
      {"arguments", std::move(arguments)},
      {"path", (object.flags & kFusedPath) ? "fused" : "unfused"},
      {"target", llvm::json::Object{{"triple", target.triple},
                                    {"cpu", target.cpu},
                                    {"features", target.features}}},
      {"libraries", std::move(libraries)}};
}
