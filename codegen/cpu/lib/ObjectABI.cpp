//===- ObjectABI.cpp - How a harness calls a kernel object ----------------===//

#include "attn/CPU/ObjectABI.h"
#include "attn/CPU/ObjectEmitter.h"
#include "attn/CPU/ObjectLoader.h"

#include "llvm/ADT/Twine.h"

using namespace attn;

namespace {

/// A memref argument: the fields of its descriptor, each one argument of
/// the direct symbol, in order.
llvm::json::Object describeMemRef(llvm::StringRef kind,
                                  const KernelTensor &tensor) {
  int64_t rank = tensor.getRank();
  llvm::json::Array fields{"allocated:ptr", "aligned:ptr", "offset:i64"};
  for (int64_t i = 0; i < rank; ++i)
    fields.push_back(("size" + llvm::Twine(i) + ":i64").str());
  for (int64_t i = 0; i < rank; ++i)
    fields.push_back(("stride" + llvm::Twine(i) + ":i64").str());
  return llvm::json::Object{{"kind", kind},
                            {"name", tensor.name},
                            {"dtype", std::string(dtypeName(tensor.dtype))},
                            {"rank", rank},
                            {"fields", std::move(fields)}};
}

} // namespace

llvm::json::Object attn::describeCpuKernelABI(const CpuKernelObject &object,
                                              const CpuTarget &target) {
  const KernelSignature &sig = object.signature;
  llvm::json::Array arguments;
  int64_t flat = 0;
  for (const KernelDim &dim : sig.dims) {
    arguments.push_back(llvm::json::Object{
        {"kind", "dim"}, {"name", dim.name}, {"type", "i64"}});
    ++flat;
  }
  for (const KernelTensor &input : sig.inputs) {
    arguments.push_back(describeMemRef("input", input));
    flat += 3 + 2 * input.getRank();
  }
  for (const KernelParam &param : sig.params) {
    arguments.push_back(
        llvm::json::Object{{"kind", "param"},
                           {"name", param.name},
                           {"type", std::string(dtypeName(param.dtype))}});
    ++flat;
  }
  for (const KernelTensor &output : sig.outputs) {
    arguments.push_back(describeMemRef("output", output));
    flat += 3 + 2 * output.getRank();
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
