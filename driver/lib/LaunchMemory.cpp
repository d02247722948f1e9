//===- LaunchMemory.cpp - The memory a launch needs -----------------------===//

#include "attn/Driver/LaunchMemory.h"

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Driver/KernelSignature.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <sys/resource.h>
#include <unistd.h>

using namespace mlir;
using namespace mlir::attn;

namespace attn {

static llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::string describeDimOutOfRange(StringRef name, StringRef value) {
  return llvm::formatv(
      "size of '{0}' is {1}, outside the range of a dim [0, {2}]", name, value,
      kMaxDimSize);
}

llvm::Error checkDimSize(StringRef name, int64_t size) {
  if (size >= 0 && size <= kMaxDimSize)
    return llvm::Error::success();
  return makeError(describeDimOutOfRange(name, std::to_string(size)));
}

llvm::Error checkDimSizes(KernelOp kernel, ArrayRef<int64_t> dims) {
  for (auto [i, size] : llvm::enumerate(dims))
    if (i < kernel.getNumDims())
      if (llvm::Error error = checkDimSize(
              cast<StringAttr>(kernel.getDimNames()[i]).getValue(), size))
        return error;
  return llvm::Error::success();
}

/// "1 x 4 x 3037000500 x 3037000500".
static std::string describeProduct(ArrayRef<int64_t> shape) {
  std::string text;
  for (auto [i, size] : llvm::enumerate(shape))
    text += (i ? " x " : "") + std::to_string(size);
  return text;
}

llvm::Expected<int64_t> countElements(StringRef name, ArrayRef<int64_t> shape) {
  int64_t count = 1;
  // A zero anywhere makes the tensor empty, whatever the other sizes are.
  if (llvm::is_contained(shape, 0))
    return 0;
  for (int64_t size : shape) {
    std::optional<int64_t> product = llvm::checkedMul(count, size);
    if (size < 0 || !product)
      return makeError(llvm::formatv(
          "this launch is too large: {0} has {1} elements, more than a "
          "64-bit count holds",
          name, describeProduct(shape)));
    count = *product;
  }
  return count;
}

std::string formatBytes(uint64_t bytes) {
  static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
                                      "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  unsigned unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0)
    return llvm::formatv("{0} B", bytes);
  // Whole numbers read better without a trailing ".0".
  std::string text = llvm::formatv("{0:f1}", value);
  if (StringRef(text).ends_with(".0"))
    text.resize(text.size() - 2);
  return text + " " + units[unit];
}

/// The first number after `key` in the file at `path` (a /proc or cgroup
/// file), scaled by `unit`; nullopt when there is none.
static std::optional<uint64_t> readNumber(const char *path, StringRef key,
                                          uint64_t unit = 1) {
  auto buffer = llvm::MemoryBuffer::getFileAsStream(path);
  if (!buffer)
    return std::nullopt;
  SmallVector<StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n');
  for (StringRef line : lines) {
    if (!line.consume_front(key))
      continue;
    line = line.ltrim(" \t:");
    uint64_t value;
    if (line.consumeInteger(10, value))
      return std::nullopt;
    return value * unit;
  }
  return std::nullopt;
}

std::optional<uint64_t> getAvailableMemory() {
  std::optional<uint64_t> available;
  auto limitTo = [&](std::optional<uint64_t> bytes) {
    if (bytes)
      available = std::min(available.value_or(*bytes), *bytes);
  };
  // MemAvailable counts reclaimable caches, which sysconf's free pages do
  // not; a machine with a full page cache has far more than it says free.
  if (std::optional<uint64_t> memAvailable =
          readNumber("/proc/meminfo", "MemAvailable", 1024)) {
    limitTo(memAvailable);
  } else {
    long pages = sysconf(_SC_AVPHYS_PAGES);
    long pageSize = sysconf(_SC_PAGESIZE);
    if (pages > 0 && pageSize > 0)
      limitTo(static_cast<uint64_t>(pages) * static_cast<uint64_t>(pageSize));
  }
  // A container's memory limit (cgroup v2, else v1) and the process's own
  // address-space limit (ulimit -v) end an allocation before the machine
  // runs out.
  auto headroom = [](std::optional<uint64_t> limit,
                     std::optional<uint64_t> used) -> std::optional<uint64_t> {
    if (!limit || !used)
      return std::nullopt;
    return *limit > *used ? *limit - *used : 0;
  };
  limitTo(headroom(readNumber("/sys/fs/cgroup/memory.max", ""),
                   readNumber("/sys/fs/cgroup/memory.current", "")));
  limitTo(
      headroom(readNumber("/sys/fs/cgroup/memory/memory.limit_in_bytes", ""),
               readNumber("/sys/fs/cgroup/memory/memory.usage_in_bytes", "")));
  struct rlimit addressSpace;
  if (getrlimit(RLIMIT_AS, &addressSpace) == 0 &&
      addressSpace.rlim_cur != RLIM_INFINITY)
    limitTo(headroom(static_cast<uint64_t>(addressSpace.rlim_cur),
                     readNumber("/proc/self/status", "VmSize", 1024)));
  return available;
}

llvm::Error LaunchMemory::add(StringRef label, uint64_t bytes) {
  std::optional<uint64_t> sum = llvm::checkedAddUnsigned(total, bytes);
  if (!sum)
    return makeError("this launch is too large: the bytes it allocates do not "
                     "fit in a 64-bit count");
  total = *sum;
  auto it = llvm::find_if(
      items, [&](const MemoryItem &item) { return item.label == label; });
  if (it == items.end())
    items.push_back({label.str(), bytes});
  else
    it->bytes += bytes;
  return llvm::Error::success();
}

llvm::Error LaunchMemory::addElements(StringRef label, int64_t count,
                                      uint64_t elementBytes) {
  std::optional<uint64_t> bytes =
      llvm::checkedMulUnsigned(static_cast<uint64_t>(count), elementBytes);
  if (!bytes)
    return makeError(llvm::formatv(
        "this launch is too large: the bytes of {0} ({1} elements of {2} "
        "bytes) do not fit in a 64-bit count",
        label, count, elementBytes));
  return add(label, *bytes);
}

namespace {

/// A tensor the cascade computes at the kernel's top level, with the shape
/// it has at one launch.
struct CascadeTensor {
  Value value;
  /// Its axes by the dims that size them, "[B, H, M, N]": the spec names
  /// statements but the cascade does not keep the names.
  std::string axes;
  std::vector<int64_t> shape;
  /// Whether its entries may be absent: the reference then keeps a presence
  /// byte per entry, the unfused pipeline an i1 tensor beside the values.
  bool mayBeAbsent = false;
};

/// Whether some attn.read in `region` reads one of `tensors`.
bool readsAny(Region &region, const llvm::DenseSet<Value> &tensors) {
  bool found = false;
  region.walk([&](ReadOp read) {
    found |= tensors.contains(read.getTensor());
    return found ? WalkResult::interrupt() : WalkResult::advance();
  });
  return found;
}

/// The tensors the cascade of `kernel` computes at `dims`, in program order.
/// Shapes come from the extents, evaluated by interval analysis (they are
/// sizes, hence exact), and pass through keeps and normalizers unchanged.
std::vector<CascadeTensor> getCascadeTensors(KernelOp kernel,
                                             ArrayRef<int64_t> dims) {
  IntervalAnalysis analysis(kernel, LaunchFacts{dims, {}, {}});
  // An axis is named by the dim that sizes it, else by its size.
  auto axisOf = [&](Value extent) -> std::pair<std::string, int64_t> {
    int64_t size = analysis.lookupConstant(extent).value_or(0);
    auto arg = dyn_cast<BlockArgument>(extent);
    if (arg && arg.getOwner() == &kernel.getEntryBlock() &&
        arg.getArgNumber() < kernel.getNumDims())
      return {cast<StringAttr>(kernel.getDimNames()[arg.getArgNumber()])
                  .getValue()
                  .str(),
              size};
    return {std::to_string(size), size};
  };
  struct Shape {
    std::vector<std::string> axes;
    std::vector<int64_t> sizes;
  };
  llvm::DenseMap<Value, Shape> shapes;
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    Shape &shape = shapes[kernel.getInputArg(i)];
    shape.sizes = getTensorShape(kernel, i, dims);
    for (Attribute axis : kernel.getShapeOf(i))
      shape.axes.push_back(
          isa<StringAttr>(axis)
              ? cast<StringAttr>(axis).getValue().str()
              : std::to_string(cast<IntegerAttr>(axis).getInt()));
  }
  llvm::DenseSet<Value> mayBeAbsent;
  std::vector<CascadeTensor> tensors;
  for (Operation &op : kernel.getEntryBlock()) {
    if (op.getNumResults() != 1 ||
        !isa<RankedTensorType>(op.getResult(0).getType()))
      continue;
    Value result = op.getResult(0);
    Shape shape;
    bool absent = false;
    auto addAxis = [&](Value extent) {
      auto [name, size] = axisOf(extent);
      shape.axes.push_back(std::move(name));
      shape.sizes.push_back(size);
    };
    if (auto einsum = dyn_cast<EinsumOp>(op)) {
      for (Value extent : einsum.getOutputExtents())
        addAxis(extent);
      absent = einsum.getKind() == ReductionKind::None &&
               readsAny(einsum.getBody(), mayBeAbsent);
    } else if (auto keep = dyn_cast<KeepOp>(op)) {
      shape = shapes.lookup(keep.getInput());
      absent = true;
    } else if (isa<SoftmaxOp, NormalizeOp>(op)) {
      Value input = op.getOperand(0);
      shape = shapes.lookup(input);
      absent = mayBeAbsent.contains(input);
    } else if (auto expand = dyn_cast<tensor::ExpandShapeOp>(op)) {
      for (OpFoldResult size : expand.getMixedOutputShape()) {
        if (auto value = dyn_cast<Value>(size)) {
          addAxis(value);
        } else {
          int64_t fixed = cast<IntegerAttr>(cast<Attribute>(size)).getInt();
          shape.axes.push_back(std::to_string(fixed));
          shape.sizes.push_back(fixed);
        }
      }
      absent = mayBeAbsent.contains(expand.getSrc());
    } else {
      // Ops of other levels (attn.attention after a raise) do not occur in
      // the cascade as written; their static sizes are all there is.
      auto type = cast<RankedTensorType>(result.getType());
      for (int64_t size : type.getShape()) {
        int64_t known = ShapedType::isDynamic(size) ? 0 : size;
        shape.axes.push_back(std::to_string(known));
        shape.sizes.push_back(known);
      }
    }
    shapes[result] = shape;
    if (absent)
      mayBeAbsent.insert(result);
    std::string axes = "[";
    for (auto [k, axis] : llvm::enumerate(shape.axes))
      axes += (k ? ", " : "") + axis;
    tensors.push_back({result, axes + "]", shape.sizes, absent});
  }
  return tensors;
}

} // namespace

llvm::Expected<LaunchMemory>
LaunchMemory::estimate(KernelOp kernel, ArrayRef<int64_t> dims,
                       const LaunchAllocations &allocations) {
  if (llvm::Error error = checkDimSizes(kernel, dims))
    return std::move(error);
  LaunchMemory memory;
  unsigned numInputs = kernel.getNumInputs();
  auto tensorName = [&](unsigned i) -> StringRef {
    ArrayAttr names =
        i < numInputs ? kernel.getInputNames() : kernel.getOutputNames();
    return cast<StringAttr>(names[i < numInputs ? i : i - numInputs])
        .getValue();
  };
  // Element counts of inputs and outputs, each checked once.
  std::vector<int64_t> counts;
  for (unsigned i = 0; i < numInputs + kernel.getNumOutputs(); ++i) {
    llvm::Expected<int64_t> count =
        countElements(tensorName(i), getTensorShape(kernel, i, dims));
    if (!count)
      return count.takeError();
    counts.push_back(*count);
  }
  auto elementBytes = [&](unsigned i) -> uint64_t {
    Type type =
        i < numInputs
            ? cast<RankedTensorType>(kernel.getInputArg(i).getType())
                  .getElementType()
            : cast<TypeAttr>(kernel.getOutputTypes()[i - numInputs]).getValue();
    std::optional<DType> dtype = getDType(type);
    return dtype ? dtypeSize(*dtype) : 8;
  };
  for (unsigned copy = 0; copy < allocations.inputCopies; ++copy)
    for (unsigned i = 0; i < numInputs; ++i)
      if (llvm::Error error =
              memory.addElements(tensorName(i), counts[i], elementBytes(i)))
        return std::move(error);
  if (allocations.outputs)
    for (unsigned i = numInputs; i < counts.size(); ++i)
      if (llvm::Error error =
              memory.addElements(tensorName(i), counts[i], elementBytes(i)))
        return std::move(error);
  auto isFloatTensor = [&](unsigned i) {
    Type type =
        i < numInputs
            ? cast<RankedTensorType>(kernel.getInputArg(i).getType())
                  .getElementType()
            : cast<TypeAttr>(kernel.getOutputTypes()[i - numInputs]).getValue();
    return isa<FloatType>(type);
  };
  if (allocations.outputAdjoints)
    for (unsigned i = numInputs; i < counts.size(); ++i)
      if (isFloatTensor(i))
        if (llvm::Error error = memory.addElements(("d" + tensorName(i)).str(),
                                                   counts[i], sizeof(float)))
          return std::move(error);
  if (allocations.gradients)
    for (unsigned i = 0; i < numInputs; ++i)
      if (isFloatTensor(i))
        if (llvm::Error error = memory.addElements(("d" + tensorName(i)).str(),
                                                   counts[i], sizeof(float)))
          return std::move(error);
  bool reference = allocations.reference || allocations.referenceGradients;
  if (!reference && !allocations.unfusedWorkspaces)
    return memory;

  std::vector<CascadeTensor> tensors = getCascadeTensors(kernel, dims);
  llvm::DenseSet<Value> returned;
  for (Value value : kernel.getReturnOp().getValues())
    returned.insert(value);
  if (reference) {
    // The reference holds every tensor it computes until it returns, as
    // float64 values plus a presence byte where entries may be absent, and
    // starts from float64 copies of the inputs.
    for (unsigned i = 0; i < numInputs; ++i)
      if (llvm::Error error = memory.addElements(
              ("the reference's " + tensorName(i)).str(), counts[i], 8))
        return std::move(error);
    for (const CascadeTensor &tensor : tensors) {
      llvm::Expected<int64_t> count = countElements(
          "a " + tensor.axes + " tensor of the reference", tensor.shape);
      if (!count)
        return count.takeError();
      // An elementwise einsum allocates its presence bytes before it knows
      // whether any entry is absent, and keeps their capacity.
      auto einsum = dyn_cast<EinsumOp>(tensor.value.getDefiningOp());
      bool presence = tensor.mayBeAbsent ||
                      (einsum && einsum.getKind() == ReductionKind::None);
      if (llvm::Error error =
              memory.addElements("the reference's " + tensor.axes + " tensors",
                                 *count, presence ? 9 : 8))
        return std::move(error);
    }
    for (unsigned i = numInputs; i < counts.size(); ++i)
      if (llvm::Error error = memory.addElements(
              ("the reference's " + tensorName(i)).str(), counts[i], 8))
        return std::move(error);
  }
  if (allocations.referenceGradients) {
    // Reverse mode keeps a float64 adjoint beside every float tensor it
    // reaches (inputs included) and copies the inputs' adjoints out as the
    // gradients it returns; beside each input's adjoint, the sum of the
    // squares of its terms and the scale it returns.
    for (unsigned i = 0; i < numInputs; ++i)
      if (isFloatTensor(i))
        if (llvm::Error error =
                memory.addElements(("the reference's d" + tensorName(i)).str(),
                                   counts[i], 4 * sizeof(double)))
          return std::move(error);
    for (const CascadeTensor &tensor : tensors) {
      if (!isa<FloatType>(
              cast<RankedTensorType>(tensor.value.getType()).getElementType()))
        continue;
      llvm::Expected<int64_t> count = countElements(
          "a " + tensor.axes + " adjoint of the reference", tensor.shape);
      if (!count)
        return count.takeError();
      if (llvm::Error error =
              memory.addElements("the reference's " + tensor.axes + " adjoints",
                                 *count, sizeof(double)))
        return std::move(error);
    }
  }
  if (allocations.unfusedWorkspaces) {
    for (const CascadeTensor &tensor : tensors) {
      if (returned.contains(tensor.value))
        continue;
      llvm::Expected<int64_t> count = countElements(
          "a " + tensor.axes + " tensor of the unfused kernel", tensor.shape);
      if (!count)
        return count.takeError();
      Type element =
          cast<RankedTensorType>(tensor.value.getType()).getElementType();
      std::optional<DType> dtype = getDType(element);
      uint64_t bytes = (dtype ? dtypeSize(*dtype) : 8) + tensor.mayBeAbsent;
      if (llvm::Error error = memory.addElements("the unfused kernel's " +
                                                     tensor.axes + " tensors",
                                                 *count, bytes))
        return std::move(error);
    }
  }
  return memory;
}

llvm::Error LaunchMemory::checkFits(uint64_t availableBytes) const {
  if (total <= availableBytes)
    return llvm::Error::success();
  // The tensors that matter: anything under a hundredth of the total is
  // summed up at the end instead of listed.
  std::string parts;
  uint64_t smallBytes = 0;
  unsigned smallCount = 0;
  for (const MemoryItem &item : items) {
    if (item.bytes == 0)
      continue;
    if (item.bytes < total / 100) {
      smallBytes += item.bytes;
      ++smallCount;
      continue;
    }
    parts += (parts.empty() ? "" : ", ") + item.label + " " +
             formatBytes(item.bytes);
  }
  if (smallCount)
    parts += llvm::formatv("{0}{1} smaller {2}", parts.empty() ? "" : ", ",
                           smallCount, formatBytes(smallBytes));
  return llvm::createStringError(
      std::make_error_code(std::errc::not_enough_memory),
      llvm::formatv("this launch needs {0} ({1}) but {2} is available",
                    formatBytes(total), parts, formatBytes(availableBytes))
          .str());
}

llvm::Error checkLaunchMemory(KernelOp kernel, ArrayRef<int64_t> dims,
                              const LaunchAllocations &allocations,
                              std::optional<uint64_t> available) {
  llvm::Expected<LaunchMemory> memory =
      LaunchMemory::estimate(kernel, dims, allocations);
  if (!memory)
    return memory.takeError();
  if (!available)
    return llvm::Error::success();
  return memory->checkFits(*available);
}

} // namespace attn
