//===- Module.cpp - The attnc._attnc extension module ---------------------===//
//
// The compiler half of the Python package: the front end, the CPU JIT, the
// float64 reference and its gradients, the adjoint kernel (vjp), random
// inputs and GPU packaging, over buffers that Python owns. Launching GPU
// packages needs none of this: attnc/_runtime.py drives libattnc_runtime.so
// through ctypes, so that a machine with only the runtime can run packages made
// elsewhere.
//
// Python-facing errors are Python exceptions: attnc.CompileError for specs
// that do not compile, ValueError for launches the interval analysis
// refuses. The C++ below reports errors as llvm::Error like the rest of the
// project and converts them at this boundary only.
//
//===----------------------------------------------------------------------===//

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/CPU/CpuKernel.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/ArtifactCache.h"
#include "attn/Driver/Compile.h"
#include "attn/Driver/CpuBackendChoice.h"
#include "attn/Driver/FatalErrors.h"
#include "attn/Driver/Gradient.h"
#include "attn/Driver/HalideBackend.h"
#include "attn/Driver/Launch.h"
#include "attn/Driver/LaunchMemory.h"
#include "attn/Driver/Spec.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unistd.h>

namespace py = pybind11;
using namespace ::attn;
using mlir::attn::KernelOp;

namespace {

/// Raises attnc.CompileError (defined in Python, so that a runtime-only
/// installation has it too) with `message`.
[[noreturn]] void throwCompileError(const std::string &message) {
  py::object type = py::module_::import("attnc._spec").attr("CompileError");
  PyErr_SetObject(type.ptr(), py::str(message).ptr());
  throw py::error_already_set();
}

[[noreturn]] void throwValueError(llvm::Error error) {
  throw py::value_error(llvm::toString(std::move(error)));
}

/// Raises MemoryError for a launch refused for the memory it needs
/// (std::errc::not_enough_memory), ValueError for any other refusal.
[[noreturn]] void throwLaunchError(llvm::Error error) {
  bool memory = false;
  std::string message;
  llvm::handleAllErrors(
      std::move(error),
      [&](const llvm::StringError &refusal) {
        memory = refusal.convertToErrorCode() ==
                 std::make_error_code(std::errc::not_enough_memory);
        message = refusal.getMessage();
      },
      [&](const llvm::ErrorInfoBase &other) { message = other.message(); });
  if (memory) {
    PyErr_SetString(PyExc_MemoryError, message.c_str());
    throw py::error_already_set();
  }
  throw py::value_error(message);
}

/// Refuses a launch whose `allocations` the machine cannot hold.
void checkMemory(KernelOp kernel, const std::vector<int64_t> &dims,
                 const LaunchAllocations &allocations) {
  if (llvm::Error error = checkLaunchMemory(kernel, dims, allocations))
    throwLaunchError(std::move(error));
}

/// What remains of LLVM's fatal errors outside a compile (compiles return
/// them as attnc.CompileError): the process cannot continue, but says why.
[[noreturn]] void reportFatalError(const char *message) {
  const char *prefix = "attnc: fatal error in LLVM: ";
  (void)!::write(STDERR_FILENO, prefix, std::strlen(prefix));
  (void)!::write(STDERR_FILENO, message, std::strlen(message));
  (void)!::write(STDERR_FILENO, "\n", 1);
  std::_Exit(1);
}

/// One context for every kernel of the process: kernels keep their cascade
/// in it for the reference, the launch checks and random inputs. It lives
/// until the process ends, like the kernels linked into it.
mlir::MLIRContext &getContext() {
  static mlir::MLIRContext *context = [] {
    installFatalErrorHandlers(reportFatalError);
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    auto *created = new mlir::MLIRContext(registry);
    created->printOpOnDiagnostic(false);
    created->loadDialect<mlir::attn::AttnDialect>();
    return created;
  }();
  return *context;
}

/// The front end over a spec held in memory; diagnostics (with the line and
/// a caret) are collected as text rather than printed.
class SpecCompilation {
public:
  SpecCompilation(const std::string &source, const std::string &filename)
      : os(diagnostics) {
    sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(source, filename), llvm::SMLoc());
    sourceMgr.setDiagHandler(
        [](const llvm::SMDiagnostic &diag, void *stream) {
          diag.print(nullptr, *static_cast<llvm::raw_ostream *>(stream),
                     /*ShowColors=*/false);
        },
        &os);
  }

  /// Routes the context's diagnostics from here on into this compilation's
  /// text, with the spec's lines: for compiles of a kernel built from the
  /// spec later (its adjoint), whose ops point into the same source.
  void captureDiagnostics() { handler.emplace(sourceMgr, &getContext(), os); }

  /// Runs the front end with the float-type override `dtype` (checked as
  /// for `target`) and the dims `shapes` fixes; a failure raises
  /// attnc.CompileError, a bad dtype ValueError.
  LoadedSpec load(std::optional<std::string> dtype, const std::string &target,
                  const std::map<std::string, int64_t> &shapes) {
    llvm::Expected<std::optional<std::string>> checked =
        checkFloatTypeOverride(std::move(dtype), target, "dtype");
    if (!checked)
      throwValueError(checked.takeError());
    dsl::FrontendOptions options;
    options.floatTypeOverride = std::move(*checked);
    options.fixedDims = shapes;
    options.fixedDimsOption = "shapes";
    mlir::FailureOr<LoadedSpec> spec =
        LoadedSpec::load(sourceMgr, getContext(), options);
    if (mlir::failed(spec))
      fail("");
    // Later diagnostics (pass remarks, lowering errors) point into the spec.
    handler.emplace(sourceMgr, &getContext(), os);
    return std::move(*spec);
  }

  /// Raises attnc.CompileError with the diagnostics so far and `message`.
  [[noreturn]] void fail(const std::string &message) {
    std::string text = getDiagnostics();
    if (!message.empty())
      text += (text.empty() || text.back() == '\n' ? "" : "\n") + message;
    while (!text.empty() && text.back() == '\n')
      text.pop_back();
    throwCompileError(text);
  }

  std::string getDiagnostics() {
    os.flush();
    return diagnostics;
  }

private:
  std::string diagnostics;
  llvm::raw_string_ostream os;
  llvm::SourceMgr sourceMgr;
  std::optional<mlir::SourceMgrDiagnosticHandler> handler;
};

/// An (address, dtype name, shape) triple from Python: one dense row-major
/// tensor that Python keeps alive for the duration of the call.
using BufferSpec = std::tuple<uintptr_t, std::string, std::vector<int64_t>>;

DType toDType(const std::string &name) {
  std::optional<DType> type = parseDType(name);
  if (!type)
    throw py::value_error("unknown dtype '" + name + "'");
  return *type;
}

std::vector<TensorView> toViews(const std::vector<BufferSpec> &buffers) {
  std::vector<TensorView> views;
  for (const auto &[address, dtype, shape] : buffers)
    views.push_back({reinterpret_cast<void *>(address), toDType(dtype),
                     llvm::ArrayRef<int64_t>(shape)});
  return views;
}

/// A copy of a view in a HostTensor (for the reference evaluator).
HostTensor copyView(const TensorView &view) {
  HostTensor tensor(view.type, view.shape.vec());
  if (tensor.getNumElements())
    std::memcpy(tensor.data(), view.data,
                tensor.getNumElements() * dtypeSize(view.type));
  return tensor;
}

/// A NumPy array holding `tensor`: bf16 and f16 widened to float32 (NumPy
/// has no bf16), i1 as bool.
py::array toNumPy(const HostTensor &tensor) {
  std::vector<py::ssize_t> shape(tensor.getShape().begin(),
                                 tensor.getShape().end());
  auto copy = [&](auto tag) {
    using T = decltype(tag);
    py::array_t<T> array(shape);
    std::memcpy(array.mutable_data(), tensor.data(),
                tensor.getNumElements() * sizeof(T));
    return py::array(std::move(array));
  };
  switch (tensor.getDType()) {
  case DType::F32:
    return copy(float());
  case DType::F64:
    return copy(double());
  case DType::I32:
    return copy(int32_t());
  case DType::I64:
    return copy(int64_t());
  case DType::I8:
    return copy(int8_t());
  case DType::I1:
    return copy(bool());
  case DType::BF16:
  case DType::F16: {
    py::array_t<float> array(shape);
    float *data = array.mutable_data();
    for (int64_t i = 0; i < tensor.getNumElements(); ++i)
      data[i] = static_cast<float>(tensor.getAsDouble(i));
    return std::move(array);
  }
  }
  return py::none();
}

void warnAll(const std::vector<std::string> &warnings);

/// A kernel compiled in process for the host CPU, with the cascade it came
/// from (the reference runs on it, launches are checked against it).
class PyCpuKernel {
public:
  PyCpuKernel(LoadedSpec spec, std::unique_ptr<CpuKernel> kernel,
              double compileMs, std::string diagnostics, std::string source,
              std::string filename, bool useCache, CpuBackend backend)
      : spec(std::move(spec)), compiled(std::move(kernel)),
        compileMs(compileMs), diagnostics(std::move(diagnostics)),
        source(std::move(source)), filename(std::move(filename)),
        useCache(useCache), backend(backend) {}

  KernelOp getKernel() const { return spec.getKernel(); }
  const CpuKernel &getCompiled() const { return *compiled; }
  double getCompileMs() const { return compileMs; }
  const std::string &getDiagnostics() const { return diagnostics; }

  /// Signature of every input and output: (name, dtype, axes).
  py::list describeTensors(bool outputs) const {
    const KernelSignature &signature = compiled->getSignature();
    py::list result;
    for (const KernelTensor &tensor :
         outputs ? signature.outputs : signature.inputs) {
      py::list axes;
      for (const KernelAxis &axis : tensor.axes)
        axes.append(axis.isDim() ? py::object(py::str(axis.dim))
                                 : py::object(py::int_(axis.size)));
      result.append(py::make_tuple(tensor.name,
                                   std::string(dtypeName(tensor.dtype)), axes));
    }
    return result;
  }

  /// Every param: (name, dtype, default or None).
  py::list describeParams() const {
    py::list result;
    for (const KernelParam &param : compiled->getSignature().params) {
      py::object value = py::none();
      if (param.defaultValue && isFloatDType(param.dtype))
        value = py::float_(*param.defaultValue);
      else if (param.defaultValue)
        value = py::int_(static_cast<int64_t>(*param.defaultValue));
      result.append(py::make_tuple(
          param.name, std::string(dtypeName(param.dtype)), value));
    }
    return result;
  }

  /// Every dim: (name, fixed size or None).
  py::list describeDims() const {
    py::list result;
    for (const KernelDim &dim : compiled->getSignature().dims)
      result.append(
          py::make_tuple(dim.name, dim.size ? py::object(py::int_(*dim.size))
                                            : py::object(py::none())));
    return result;
  }

  /// bindDims: explicit sizes win, the rest get grown defaults.
  std::vector<int64_t>
  bindDims(const std::map<std::string, int64_t> &given) const {
    llvm::StringMap<int64_t> sizes;
    for (const auto &[name, size] : given)
      sizes[name] = size;
    llvm::Expected<std::vector<int64_t>> dims =
        ::attn::bindDims(getKernel(), sizes);
    if (!dims)
      throwValueError(dims.takeError());
    return std::move(*dims);
  }

  py::tuple randomInputs(const std::vector<int64_t> &dims,
                         uint64_t seed) const {
    // The inputs, and the NumPy arrays they are copied into.
    LaunchAllocations allocations;
    allocations.inputCopies = 2;
    checkMemory(getKernel(), dims, allocations);
    std::vector<HostTensor> inputs =
        makeRandomInputs(getKernel(), dims, seed);
    py::tuple result(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      result[i] = toNumPy(inputs[i]);
    return result;
  }

  /// Entry `flat` of an integer tensor in host memory.
  static int64_t readIntegerEntry(const TensorView &view, int64_t flat) {
    switch (view.type) {
    case DType::I32:
      return static_cast<const int32_t *>(view.data)[flat];
    case DType::I64:
      return static_cast<const int64_t *>(view.data)[flat];
    default:
      return static_cast<const int8_t *>(view.data)[flat];
    }
  }

  /// The subscript checks of a launch on Python's buffers: a refusal is a
  /// ValueError with the driver's message.
  void checkLaunch(const std::vector<int64_t> &dims,
                   const std::vector<TensorView> &inputs,
                   const std::vector<double> &params) const {
    checkLaunchOf(getKernel(), dims, inputs, params);
  }

  /// The same for `kernel`: the spec's, or its adjoint, which reads the
  /// same inputs and more.
  static void checkLaunchOf(KernelOp kernel, llvm::ArrayRef<int64_t> dims,
                            llvm::ArrayRef<TensorView> inputs,
                            llvm::ArrayRef<double> params) {
    auto range =
        [&](unsigned i) -> std::optional<mlir::attn::Interval> {
      const TensorView &view = inputs[i];
      if (isFloatDType(view.type))
        return std::nullopt;
      int64_t count = 1;
      for (int64_t size : view.shape)
        count *= size;
      if (count == 0)
        return mlir::attn::Interval::range(0, 0);
      auto read = [&](int64_t e) { return readIntegerEntry(view, e); };
      int64_t lo = read(0), hi = lo;
      for (int64_t e = 1; e < count; ++e) {
        lo = std::min(lo, read(e));
        hi = std::max(hi, read(e));
      }
      return mlir::attn::Interval::range(lo, hi);
    };
    if (llvm::Error error = checkDimSizes(kernel, dims))
      throwValueError(std::move(error));
    if (llvm::Error error = checkParamValues(kernel, params))
      throwValueError(std::move(error));
    auto tableEntry = [&](unsigned i, int64_t flat) -> std::optional<int64_t> {
      return readIntegerEntry(inputs[i], flat);
    };
    if (llvm::Error error =
            checkSubscripts(kernel, dims, params, range, tableEntry))
      throwValueError(std::move(error));
  }

  /// Runs the kernel on buffers Python owns, without the GIL.
  void run(const std::vector<int64_t> &dims,
           const std::vector<BufferSpec> &inputs,
           const std::vector<double> &params,
           const std::vector<BufferSpec> &outputs) {
    std::vector<TensorView> inputViews = toViews(inputs);
    std::vector<TensorView> outputViews = toViews(outputs);
    checkLaunch(dims, inputViews, params);
    // Python holds the inputs and outputs; an unfused kernel allocates the
    // cascade's intermediate tensors besides.
    if (!compiled->isFused()) {
      LaunchAllocations allocations;
      allocations.unfusedWorkspaces = true;
      checkMemory(getKernel(), dims, allocations);
    }
    if (!hasOutputEntries(getKernel(), dims))
      return;
    llvm::Error error = llvm::Error::success();
    {
      py::gil_scoped_release release;
      // One launch at a time per kernel: the OpenMP thread count is set per
      // call and the kernel is not known to be reentrant.
      std::lock_guard<std::mutex> lock(runMutex);
      error = compiled->run(dims, inputViews, params, outputViews);
    }
    if (error)
      throwValueError(std::move(error));
  }

  /// The adjoint kernel (attn-grad), built and compiled for the host the
  /// first time a gradient is asked for, through the artifact cache like any
  /// kernel. A failure raises attnc.CompileError with the compiler's
  /// diagnostics, pointing into the spec, and is tried again next time.
  const CpuKernel &getGradientKernel() {
    if (gradientCompiled)
      return *gradientCompiled;
    auto start = std::chrono::steady_clock::now();
    SpecCompilation compilation(source, filename);
    compilation.captureDiagnostics();
    // The Halide backend takes cascades: the adjoint as written.
    llvm::Expected<GradientSpec> built =
        GradientSpec::build(spec, backend != CpuBackend::Halide);
    if (!built)
      compilation.fail(llvm::toString(built.takeError()));
    CpuKernelOptions options;
    options.threads = compiled->getThreads();
    options.backend = backend;
    llvm::Expected<std::unique_ptr<CpuKernel>> kernel =
        built->getAdjoint().compileForHost(options,
                                           CacheOptions::standard(!useCache));
    if (!kernel)
      compilation.fail(llvm::toString(kernel.takeError()));
    warnAll((*kernel)->getStats().warnings);
    gradient.emplace(std::move(*built));
    gradientCompiled = std::move(*kernel);
    gradientCompileMs = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start)
                            .count();
    gradientDiagnostics = compilation.getDiagnostics();
    return *gradientCompiled;
  }

  const CpuKernel *findGradientKernel() const { return gradientCompiled.get(); }
  double getGradientCompileMs() const { return gradientCompileMs; }
  const std::string &getGradientDiagnostics() const {
    return gradientDiagnostics;
  }

  /// Compiles the adjoint kernel if needed and says how its arguments map
  /// to the forward's: (the inputs that get a gradient, in the order of the
  /// adjoint's outputs; the outputs that take an adjoint, in the order of
  /// the adjoint's inputs after the forward's).
  py::tuple prepareGradient() {
    getGradientKernel();
    return py::make_tuple(py::cast(gradient->getDifferentiatedInputs().vec()),
                          py::cast(gradient->getAdjointedOutputs().vec()));
  }

  /// Runs the adjoint kernel without the GIL: `inputs` are the forward's
  /// inputs then one f32 adjoint per float output, `gradients` one f32
  /// buffer per float input, all owned by Python.
  void runGradient(const std::vector<int64_t> &dims,
                   const std::vector<BufferSpec> &inputs,
                   const std::vector<double> &params,
                   const std::vector<BufferSpec> &gradients) {
    const CpuKernel &kernel = getGradientKernel();
    KernelOp adjointKernel = gradient->getAdjoint().getKernel();
    std::vector<TensorView> inputViews = toViews(inputs);
    std::vector<TensorView> gradientViews = toViews(gradients);
    unsigned numForwardInputs = getKernel().getNumInputs();
    if (inputViews.size() != adjointKernel.getNumInputs() ||
        gradientViews.size() != adjointKernel.getNumOutputs())
      throw py::value_error(
          "vjp: expected " + std::to_string(adjointKernel.getNumInputs()) +
          " inputs and " + std::to_string(adjointKernel.getNumOutputs()) +
          " gradients for '" + kernel.getSignature().name + "'");
    // The output adjoints are not among the forward's inputs, whose shapes
    // Python bound the dims from: each must have its output's shape.
    for (unsigned i = numForwardInputs; i < inputViews.size(); ++i) {
      std::vector<int64_t> shape = getTensorShape(adjointKernel, i, dims);
      if (inputViews[i].type != DType::F32 ||
          inputViews[i].shape != llvm::ArrayRef<int64_t>(shape))
        throw py::value_error("vjp: the adjoint '" +
                              kernel.getSignature().inputs[i].name +
                              "' must be f32 of the output's shape");
    }
    checkLaunchOf(
        getKernel(), dims,
        llvm::ArrayRef<TensorView>(inputViews).take_front(numForwardInputs),
        params);
    checkLaunchOf(adjointKernel, dims, inputViews, params);
    if (!kernel.isFused()) {
      LaunchAllocations allocations;
      allocations.unfusedWorkspaces = true;
      checkMemory(adjointKernel, dims, allocations);
    }
    if (!hasOutputEntries(adjointKernel, dims))
      return;
    llvm::Error error = llvm::Error::success();
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(gradientRunMutex);
      error = gradientCompiled->run(dims, inputViews, params, gradientViews);
    }
    if (error)
      throwValueError(std::move(error));
  }

  /// The float64 reverse mode of the cascade as written on the same
  /// buffers: one F64 array per input, None for integer inputs.
  /// `outputAdjoints` holds one buffer per output, None for a zero adjoint.
  /// With `withScales`, a pair: the gradients and, alike, the scale of the
  /// terms each gradient entry sums (ReferenceGradients::scales).
  py::tuple referenceGradients(
      const std::vector<int64_t> &dims, const std::vector<BufferSpec> &inputs,
      const std::vector<double> &params,
      const std::vector<std::optional<BufferSpec>> &outputAdjoints,
      bool withScales) const {
    std::vector<TensorView> views = toViews(inputs);
    checkLaunch(dims, views, params);
    KernelOp kernel = getKernel();
    if (outputAdjoints.size() != kernel.getNumOutputs())
      throw py::value_error("reference_vjp: expected one adjoint per output");
    // Copies of the inputs and adjoints, the reference's tensors and their
    // adjoints, and the NumPy arrays of the gradients.
    LaunchAllocations allocations;
    allocations.inputCopies = 1;
    allocations.outputAdjoints = true;
    allocations.referenceGradients = true;
    checkMemory(kernel, dims, allocations);
    std::vector<HostTensor> copies;
    for (const TensorView &view : views)
      copies.push_back(copyView(view));
    std::vector<std::optional<HostTensor>> adjointCopies;
    for (auto [o, adjoint] : llvm::enumerate(outputAdjoints)) {
      if (!adjoint) {
        adjointCopies.emplace_back();
        continue;
      }
      const auto &[address, dtype, adjointShape] = *adjoint;
      TensorView view{reinterpret_cast<void *>(address), toDType(dtype),
                      llvm::ArrayRef<int64_t>(adjointShape)};
      std::vector<int64_t> shape =
          getTensorShape(kernel, kernel.getNumInputs() + o, dims);
      if (!isFloatDType(view.type) ||
          view.shape != llvm::ArrayRef<int64_t>(shape))
        throw py::value_error("reference_vjp: the adjoint of output '" +
                              compiled->getSignature().outputs[o].name +
                              "' must be a float tensor of the output's shape");
      adjointCopies.push_back(copyView(view));
    }
    std::vector<const HostTensor *> pointers, adjointPointers;
    for (const HostTensor &copy : copies)
      pointers.push_back(&copy);
    for (const std::optional<HostTensor> &copy : adjointCopies)
      adjointPointers.push_back(copy ? &*copy : nullptr);
    llvm::Expected<ReferenceGradients> gradients = evaluateReferenceGradients(
        spec, dims, pointers, params, adjointPointers);
    if (!gradients)
      throwValueError(gradients.takeError());
    auto toTuple = [](const std::vector<std::optional<HostTensor>> &tensors) {
      py::tuple result(tensors.size());
      for (size_t i = 0; i < tensors.size(); ++i)
        result[i] = tensors[i] ? py::object(toNumPy(*tensors[i]))
                               : py::object(py::none());
      return result;
    };
    if (!withScales)
      return toTuple(gradients->gradients);
    return py::make_tuple(toTuple(gradients->gradients),
                          toTuple(gradients->scales));
  }

  /// The float64 reference on the same buffers; one F64 array per output.
  py::tuple reference(const std::vector<int64_t> &dims,
                      const std::vector<BufferSpec> &inputs,
                      const std::vector<double> &params) const {
    std::vector<TensorView> views = toViews(inputs);
    checkLaunch(dims, views, params);
    // Copies of the inputs, the reference's tensors and the NumPy arrays of
    // its outputs.
    LaunchAllocations allocations;
    allocations.inputCopies = 1;
    allocations.reference = true;
    allocations.outputs = true;
    checkMemory(getKernel(), dims, allocations);
    std::vector<HostTensor> copies;
    for (const TensorView &view : views)
      copies.push_back(copyView(view));
    std::vector<const HostTensor *> pointers;
    for (const HostTensor &copy : copies)
      pointers.push_back(&copy);
    llvm::Expected<std::vector<HostTensor>> outputs =
        spec.evaluateReference(dims, pointers, params);
    if (!outputs)
      throwValueError(outputs.takeError());
    py::tuple result(outputs->size());
    for (size_t i = 0; i < outputs->size(); ++i)
      result[i] = toNumPy((*outputs)[i]);
    return result;
  }

private:
  LoadedSpec spec;
  std::unique_ptr<CpuKernel> compiled;
  double compileMs;
  std::string diagnostics;
  std::mutex runMutex;
  /// The spec's text and file name, for the diagnostics of compiling the
  /// adjoint, and whether the compile used the artifact cache.
  std::string source;
  std::string filename;
  bool useCache;
  /// The backend asked for, which the adjoint kernel is compiled with too.
  CpuBackend backend;
  /// The adjoint kernel, once a gradient was asked for.
  std::optional<GradientSpec> gradient;
  std::unique_ptr<CpuKernel> gradientCompiled;
  double gradientCompileMs = 0;
  std::string gradientDiagnostics;
  std::mutex gradientRunMutex;
};

double millisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

/// Issues each warning as a Python warning.
void warnAll(const std::vector<std::string> &warnings) {
  if (warnings.empty())
    return;
  py::object warn = py::module_::import("warnings").attr("warn");
  for (const std::string &warning : warnings)
    warn(py::str("attnc: " + warning));
}

std::unique_ptr<PyCpuKernel>
compileCpu(const std::string &source, const std::string &filename,
           std::optional<std::string> dtype,
           const std::map<std::string, int64_t> &shapes, bool useCache,
           unsigned threads, const std::string &backendName) {
  auto start = std::chrono::steady_clock::now();
  llvm::Expected<CpuBackend> backend = parseCpuBackend(backendName, "backend");
  if (!backend)
    throw py::value_error(llvm::toString(backend.takeError()));
  SpecCompilation compilation(source, filename);
  LoadedSpec spec = compilation.load(std::move(dtype), "cpu", shapes);
  CpuKernelOptions options;
  options.threads = threads;
  options.backend = *backend;
  options.halide.parallelism = threads;
  llvm::Expected<std::unique_ptr<CpuKernel>> kernel =
      spec.compileForHost(options, CacheOptions::standard(!useCache));
  if (!kernel)
    compilation.fail(llvm::toString(kernel.takeError()));
  warnAll((*kernel)->getStats().warnings);
  return std::make_unique<PyCpuKernel>(
      std::move(spec), std::move(*kernel), millisecondsSince(start),
      compilation.getDiagnostics(), source, filename, useCache, *backend);
}

/// The package's bytes and whether the artifact cache held it.
py::tuple compilePackage(const std::string &source, const std::string &filename,
                         const std::string &target,
                         std::optional<std::string> dtype,
                         const std::map<std::string, int64_t> &shapes,
                         bool useCache, bool grad,
                         const std::vector<std::string> &gradConstants,
                         bool deterministic) {
  llvm::Expected<std::string> chip = resolveGpuChip(target, "target");
  if (!chip)
    throwValueError(chip.takeError());
  SpecCompilation compilation(source, filename);
  LoadedSpec spec = compilation.load(std::move(dtype), target, shapes);
  GpuPackageOptions options;
  options.target = *chip;
  options.producer = "attnc.compile(target='" + target + "')";
  options.shapeOption = "shapes=";
  options.shapeExample = "shapes={'D': 128}";
  options.deterministic = deterministic;
  // grad: the package of the adjoint kernel, which recomputes the forward
  // and runs the backward kernels.
  std::optional<GradientSpec> gradient;
  if (grad) {
    compilation.captureDiagnostics();
    llvm::Expected<GradientSpec> built =
        GradientSpec::build(spec, /*fused=*/true, gradConstants);
    if (!built)
      compilation.fail(llvm::toString(built.takeError()));
    gradient.emplace(std::move(*built));
  }
  const LoadedSpec &compiled = gradient ? gradient->getAdjoint() : spec;
  llvm::Expected<GpuPackageArtifact> package =
      compiled.compileForGpu(options, CacheOptions::standard(!useCache));
  if (!package)
    compilation.fail(llvm::toString(package.takeError()));
  warnAll(package->warnings);
  return py::make_tuple(py::bytes(package->bytes), package->cacheHit);
}

} // namespace

PYBIND11_MODULE(_attnc, m) {
  m.doc() = "The attnc compiler: front end, CPU JIT, reference, GPU packages";
  m.attr("version") = ATTN_VERSION;
  m.attr("llvm_version") = LLVM_VERSION_STRING;
  // The artifact cache compiled kernels go through (None without a home).
  m.def("cache_directory", [] { return ArtifactCache::getDefaultDirectory(); });
  // The Halide backend's plugin: where it is and whether it is loaded (or
  // why there is none).
  m.def("halide_backend", [] {
    py::dict facts;
    llvm::Expected<std::string> path = findHalideBackend();
    if (path)
      facts["path"] = *path;
    else
      facts["error"] = llvm::toString(path.takeError());
    facts["loaded"] = isHalideBackendLoaded();
    return facts;
  });

  py::class_<PyCpuKernel>(m, "CpuKernel")
      .def_property_readonly("name",
                             [](const PyCpuKernel &k) {
                               return k.getCompiled().getSignature().name;
                             })
      .def_property_readonly(
          "inputs",
          [](const PyCpuKernel &k) { return k.describeTensors(false); })
      .def_property_readonly(
          "outputs",
          [](const PyCpuKernel &k) { return k.describeTensors(true); })
      .def_property_readonly("params", &PyCpuKernel::describeParams)
      .def_property_readonly("dims", &PyCpuKernel::describeDims)
      .def_property_readonly(
          "fused",
          [](const PyCpuKernel &k) { return k.getCompiled().isFused(); })
      .def_property_readonly(
          "halide",
          [](const PyCpuKernel &k) { return k.getCompiled().isHalide(); })
      .def_property_readonly("cache_hit",
                             [](const PyCpuKernel &k) {
                               return k.getCompiled().getStats().cacheHit;
                             })
      .def_property_readonly("compile_ms", &PyCpuKernel::getCompileMs)
      .def_property_readonly(
          "threads",
          [](const PyCpuKernel &k) { return k.getCompiled().getThreads(); })
      .def_property_readonly("diagnostics", &PyCpuKernel::getDiagnostics)
      .def("bind_dims", &PyCpuKernel::bindDims, py::arg("given"))
      .def("random_inputs", &PyCpuKernel::randomInputs, py::arg("dims"),
           py::arg("seed"))
      .def(
          "check",
          [](const PyCpuKernel &k, const std::vector<int64_t> &dims,
             const std::vector<BufferSpec> &inputs,
             const std::vector<double> &params) {
            k.checkLaunch(dims, toViews(inputs), params);
          },
          py::arg("dims"), py::arg("inputs"), py::arg("params"))
      .def("run", &PyCpuKernel::run, py::arg("dims"), py::arg("inputs"),
           py::arg("params"), py::arg("outputs"))
      .def("reference", &PyCpuKernel::reference, py::arg("dims"),
           py::arg("inputs"), py::arg("params"))
      .def_property_readonly("grad_fused",
                             [](const PyCpuKernel &k) -> py::object {
                               const CpuKernel *g = k.findGradientKernel();
                               return g ? py::object(py::bool_(g->isFused()))
                                        : py::object(py::none());
                             })
      .def_property_readonly("grad_halide",
                             [](const PyCpuKernel &k) -> py::object {
                               const CpuKernel *g = k.findGradientKernel();
                               return g ? py::object(py::bool_(g->isHalide()))
                                        : py::object(py::none());
                             })
      .def_property_readonly("grad_cache_hit",
                             [](const PyCpuKernel &k) -> py::object {
                               const CpuKernel *g = k.findGradientKernel();
                               return g ? py::object(
                                              py::bool_(g->getStats().cacheHit))
                                        : py::object(py::none());
                             })
      .def_property_readonly("grad_compile_ms",
                             &PyCpuKernel::getGradientCompileMs)
      .def_property_readonly("grad_diagnostics",
                             &PyCpuKernel::getGradientDiagnostics)
      .def("prepare_grad", &PyCpuKernel::prepareGradient,
           "Compiles the adjoint kernel if needed: (inputs with a gradient, "
           "outputs with an adjoint)")
      .def("vjp", &PyCpuKernel::runGradient, py::arg("dims"), py::arg("inputs"),
           py::arg("params"), py::arg("gradients"))
      .def("reference_vjp", &PyCpuKernel::referenceGradients, py::arg("dims"),
           py::arg("inputs"), py::arg("params"), py::arg("output_adjoints"),
           py::arg("with_scales") = false);

  m.def("compile_cpu", &compileCpu, py::arg("source"), py::arg("filename"),
        py::arg("dtype"), py::arg("shapes"), py::arg("use_cache") = true,
        py::arg("threads") = 0, py::arg("backend") = "auto",
        "Compiles a spec for the host CPU; raises attnc.CompileError");
  m.def("compile_gpu_package", &compilePackage, py::arg("source"),
        py::arg("filename"), py::arg("target"), py::arg("dtype"),
        py::arg("shapes"), py::arg("use_cache") = true, py::arg("grad") = false,
        py::arg("grad_constants") = std::vector<std::string>(),
        py::arg("deterministic") = false,
        "Compiles a spec for a CUDA chip through the artifact cache: the "
        "bytes of an .attnpkg and whether the cache held it; with grad, the "
        "package of its adjoint kernel <name>_grad, the float inputs named in "
        "grad_constants held constant");
}
