//===- HalideEntry.cpp - Calling a Halide kernel object -------------------===//

#include "attn/Halide/HalideEntry.h"

#include "llvm/ADT/STLExtras.h"

#include <HalideRuntime.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

using namespace attn;

namespace {

/// The message of the last error a Halide kernel reported (runs hold
/// runMutex).
std::string lastHalideError;
std::mutex runMutex;

void recordHalideError(void *, const char *message) {
  lastHalideError = message ? message : "unknown error";
  while (!lastHalideError.empty() && lastHalideError.back() == '\n')
    lastHalideError.pop_back();
}

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

halide_type_t getHalideBufferType(DType type) {
  switch (type) {
  case DType::F32:
    return halide_type_t(halide_type_float, 32);
  case DType::F16:
    return halide_type_t(halide_type_float, 16);
  case DType::BF16:
    return halide_type_t(halide_type_bfloat, 16);
  case DType::F64:
    return halide_type_t(halide_type_float, 64);
  case DType::I1:
    return halide_type_t(halide_type_uint, 1);
  case DType::I8:
    return halide_type_t(halide_type_int, 8);
  case DType::I32:
    return halide_type_t(halide_type_int, 32);
  case DType::I64:
    return halide_type_t(halide_type_int, 64);
  }
  return halide_type_t(halide_type_float, 32);
}

/// A dense row-major tensor as a halide_buffer_t: Halide's first dimension
/// is the innermost.
struct BufferArgument {
  halide_buffer_t buffer{};
  std::vector<halide_dimension_t> dims;
  /// The zeros an empty input is replaced by.
  std::vector<uint64_t> zeros;
};

/// Describes `view` in `argument`. An empty input becomes a zero tensor
/// with its empty axes of size 1: kernels read inputs through a clamp to
/// their edges, which an empty axis does not have, and no value read there
/// reaches an output (the sizes, not the buffers, bound every loop that
/// does).
llvm::Error describe(const TensorView &view, llvm::StringRef name,
                     bool input, BufferArgument &argument) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  size_t rank = view.shape.size();
  argument.dims.resize(rank);
  bool empty = llvm::is_contained(view.shape, 0);
  bool padded = input && empty;
  int64_t stride = 1;
  for (size_t k = 0; k < rank; ++k) {
    int64_t extent = view.shape[rank - 1 - k];
    if (padded)
      extent = std::max<int64_t>(extent, 1);
    if (extent > kMax || (extent > 0 && stride > kMax))
      return makeError("tensor '" + name +
                       "' is too large for the Halide backend, whose "
                       "coordinates and strides are 32-bit");
    argument.dims[k] = halide_dimension_t(0, static_cast<int32_t>(extent),
                                          static_cast<int32_t>(stride));
    stride *= std::max<int64_t>(extent, 1);
  }
  argument.buffer.host = static_cast<uint8_t *>(view.data);
  if (padded) {
    argument.zeros.assign(static_cast<size_t>(stride), 0);
    argument.buffer.host = reinterpret_cast<uint8_t *>(argument.zeros.data());
  }
  argument.buffer.type = getHalideBufferType(view.type);
  argument.buffer.dimensions = static_cast<int32_t>(rank);
  argument.buffer.dim = argument.dims.data();
  return llvm::Error::success();
}

} // namespace

std::string attn::getHalideEntryName(llvm::StringRef kernel) {
  return (kernel + "_argv").str();
}

llvm::Expected<std::unique_ptr<HalideEntry>>
HalideEntry::bind(llvm::StringRef kernel, LookupFn lookup) {
  std::unique_ptr<HalideEntry> bound(new HalideEntry());
  llvm::Expected<void *> entry = lookup(getHalideEntryName(kernel));
  if (!entry)
    return entry.takeError();
  bound->entry = reinterpret_cast<int (*)(void **)>(*entry);
  llvm::Expected<void *> setThreads = lookup("halide_set_num_threads");
  if (!setThreads)
    return setThreads.takeError();
  bound->setThreads = reinterpret_cast<int (*)(int)>(*setThreads);
  llvm::Expected<void *> shutdown = lookup("halide_shutdown_thread_pool");
  if (!shutdown)
    return shutdown.takeError();
  bound->shutdownThreadPool = reinterpret_cast<void (*)()>(*shutdown);
  // Errors are recorded instead of printed; each object has its own
  // handler.
  llvm::Expected<void *> setHandler = lookup("halide_set_error_handler");
  if (!setHandler)
    return setHandler.takeError();
  reinterpret_cast<halide_error_handler_t (*)(halide_error_handler_t)>(
      *setHandler)(recordHalideError);
  return bound;
}

HalideEntry::~HalideEntry() {
  if (shutdownThreadPool)
    shutdownThreadPool();
}

llvm::Error HalideEntry::run(const KernelSignature &signature,
                             llvm::ArrayRef<int64_t> dims,
                             llvm::ArrayRef<TensorView> inputs,
                             llvm::ArrayRef<double> params,
                             llvm::ArrayRef<TensorView> outputs,
                             unsigned threads) {
  std::vector<int32_t> dimValues;
  for (auto [i, dim] : llvm::enumerate(dims)) {
    if (dim < 0 || dim > std::numeric_limits<int32_t>::max())
      return makeError("dim " + signature.dims[i].name + " = " +
                       llvm::Twine(dim) +
                       " is outside the Halide backend's 32-bit sizes");
    dimValues.push_back(static_cast<int32_t>(dim));
  }
  // Halide kernels read inputs through a clamp at their edges (a schedule
  // may compute tiles past a smaller launch's end), so a tensor smaller than
  // the sizes say would be read without a fault: refused here instead.
  auto checkShape = [&](const TensorView &view,
                        const KernelTensor &tensor) -> llvm::Error {
    bool matches = view.shape.size() == tensor.axes.size();
    std::string want;
    for (size_t k = 0; k < tensor.axes.size(); ++k) {
      const KernelAxis &axis = tensor.axes[k];
      int64_t size = axis.size;
      if (axis.isDim())
        for (size_t d = 0; d < signature.dims.size(); ++d)
          if (signature.dims[d].name == axis.dim)
            size = dims[d];
      want += (k ? ", " : "") + std::to_string(size);
      matches = matches && view.shape[k] == size;
    }
    if (matches)
      return llvm::Error::success();
    std::string got;
    for (size_t k = 0; k < view.shape.size(); ++k)
      got += (k ? ", " : "") + std::to_string(view.shape[k]);
    return makeError("tensor '" + tensor.name + "' of kernel '" +
                     signature.name + "' has shape [" + got +
                     "], but the sizes make it [" + want + "]");
  };
  for (auto [view, tensor] : llvm::zip(inputs, signature.inputs))
    if (llvm::Error error = checkShape(view, tensor))
      return error;
  for (auto [view, tensor] : llvm::zip(outputs, signature.outputs))
    if (llvm::Error error = checkShape(view, tensor))
      return error;

  std::vector<BufferArgument> buffers(inputs.size() + outputs.size());
  for (auto [i, input] : llvm::enumerate(inputs))
    if (llvm::Error error = describe(input, signature.inputs[i].name,
                                     /*input=*/true, buffers[i]))
      return error;
  for (auto [i, output] : llvm::enumerate(outputs))
    if (llvm::Error error = describe(output, signature.outputs[i].name,
                                     /*input=*/false,
                                     buffers[inputs.size() + i]))
      return error;
  std::vector<KernelScalar> scalars(params.size());
  std::vector<void *> args;
  for (int32_t &dim : dimValues)
    args.push_back(&dim);
  for (size_t i = 0; i < inputs.size(); ++i)
    args.push_back(&buffers[i].buffer);
  for (size_t i = 0; i < params.size(); ++i) {
    scalars[i] = KernelScalar::of(signature.params[i].dtype, params[i]);
    args.push_back(&scalars[i]);
  }
  for (size_t i = 0; i < outputs.size(); ++i)
    args.push_back(&buffers[inputs.size() + i].buffer);

  // The pool's size is global to the object, and errors are recorded in
  // one place: one launch at a time.
  std::lock_guard<std::mutex> lock(runMutex);
  setThreads(static_cast<int>(threads));
  lastHalideError.clear();
  if (int status = entry(args.data()))
    return makeError("Halide kernel '" + signature.name + "' failed (" +
                     llvm::Twine(status) + "): " +
                     (lastHalideError.empty() ? std::string("no message")
                                              : lastHalideError));
  return llvm::Error::success();
}
