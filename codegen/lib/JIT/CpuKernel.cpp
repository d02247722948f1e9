//===- CpuKernel.cpp - A kernel compiled in process for the host ----------===//

#include "attn/JIT/CpuKernel.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Pipelines/Pipelines.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

#include <chrono>
#include <functional>
#include <mutex>

using namespace attn;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Keeps the first error diagnostic so it can travel in an llvm::Error, and
/// lets every diagnostic through to the handlers installed before it.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(mlir::MLIRContext *context)
      : handler(context, [this](mlir::Diagnostic &diag) {
          if (diag.getSeverity() == mlir::DiagnosticSeverity::Error &&
              message.empty()) {
            llvm::raw_string_ostream os(message);
            os << diag.getLocation() << ": " << diag;
          }
          return mlir::failure();
        }) {}

  llvm::Error takeError(const llvm::Twine &what) {
    return makeError(what + (message.empty() ? "" : ": " + message));
  }

private:
  std::string message;
  mlir::ScopedDiagnosticHandler handler;
};

std::optional<DType> getDType(mlir::Type type) {
  if (type.isF32())
    return DType::F32;
  if (type.isF16())
    return DType::F16;
  if (type.isBF16())
    return DType::BF16;
  if (type.isF64())
    return DType::F64;
  if (type.isInteger(1))
    return DType::I1;
  if (type.isInteger(8))
    return DType::I8;
  if (type.isInteger(32))
    return DType::I32;
  if (type.isInteger(64))
    return DType::I64;
  return std::nullopt;
}

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

llvm::CodeGenOptLevel getCodeGenOptLevel(unsigned optLevel) {
  switch (optLevel) {
  case 0:
    return llvm::CodeGenOptLevel::None;
  case 1:
    return llvm::CodeGenOptLevel::Less;
  case 2:
    return llvm::CodeGenOptLevel::Default;
  default:
    return llvm::CodeGenOptLevel::Aggressive;
  }
}

/// A target machine for the host CPU with all its features (AVX2, AVX-512,
/// ...), so the IR optimizer's cost models and the code generator agree.
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createHostTargetMachine(unsigned optLevel) {
  initializeNativeTarget();
  llvm::Expected<llvm::orc::JITTargetMachineBuilder> builder =
      llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder)
    return builder.takeError();
  builder->setCodeGenOptLevel(getCodeGenOptLevel(optLevel));
  return builder->createTargetMachine();
}

/// Tags every function with the host CPU and features: the translated module
/// carries none, and without them the vectorizer assumes baseline x86-64.
void setHostAttributes(llvm::Module &module, llvm::TargetMachine &tm) {
  for (llvm::Function &function : module) {
    if (function.isDeclaration())
      continue;
    function.addFnAttr("target-cpu", tm.getTargetCPU());
    function.addFnAttr("target-features", tm.getTargetFeatureString());
  }
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

} // namespace

llvm::Expected<CpuKernelSignature>
attn::getCpuKernelSignature(mlir::ModuleOp module) {
  mlir::attn::KernelOp kernel;
  unsigned count = 0;
  module.walk([&](mlir::attn::KernelOp k) {
    kernel = k;
    ++count;
  });
  if (count != 1)
    return makeError("expected one attn.kernel in the module, found " +
                     llvm::Twine(count));
  CpuKernelSignature signature;
  signature.name = kernel.getSymName().str();
  signature.numDims = kernel.getNumDims();
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    auto type =
        llvm::cast<mlir::RankedTensorType>(kernel.getInputArg(i).getType());
    std::optional<DType> dtype = getDType(type.getElementType());
    if (!dtype)
      return makeError("input #" + llvm::Twine(i) +
                       " has an element type the JIT cannot pass");
    signature.inputs.push_back({*dtype, type.getRank()});
  }
  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    std::optional<DType> dtype = getDType(kernel.getParamArg(i).getType());
    if (!dtype || (*dtype != DType::F32 && *dtype != DType::F64 &&
                   *dtype != DType::I32 && *dtype != DType::I64))
      return makeError("param #" + llvm::Twine(i) +
                       " has a type the JIT cannot pass");
    signature.params.push_back(*dtype);
  }
  auto returned = kernel.getReturnOp().getValues();
  for (unsigned i = 0; i < kernel.getNumOutputs(); ++i) {
    mlir::Type declared =
        llvm::cast<mlir::TypeAttr>(kernel.getOutputTypes()[i]).getValue();
    std::optional<DType> dtype = getDType(declared);
    if (!dtype)
      return makeError("output #" + llvm::Twine(i) +
                       " has an element type the JIT cannot pass");
    auto type = llvm::cast<mlir::RankedTensorType>(returned[i].getType());
    signature.outputs.push_back({*dtype, type.getRank()});
  }
  return signature;
}

CpuKernel::~CpuKernel() = default;

llvm::Expected<std::unique_ptr<CpuKernel>>
CpuKernel::compile(mlir::ModuleOp module, const CpuKernelOptions &options) {
  llvm::Expected<CpuKernelSignature> signature = getCpuKernelSignature(module);
  if (!signature)
    return signature.takeError();
  std::unique_ptr<CpuKernel> kernel(new CpuKernel());
  kernel->signature = std::move(*signature);

  auto start = std::chrono::steady_clock::now();
  {
    DiagnosticCollector diagnostics(module->getContext());
    if (mlir::failed(mlir::attn::lowerToLLVMDialect(module)))
      return diagnostics.takeError("lowering kernel '" +
                                   kernel->signature.name +
                                   "' with attn-unfused-cpu-pipeline failed");
  }
  kernel->loweringSeconds = secondsSince(start);

  start = std::chrono::steady_clock::now();
  llvm::Expected<std::unique_ptr<llvm::TargetMachine>> tm =
      createHostTargetMachine(options.optLevel);
  if (!tm)
    return tm.takeError();
  kernel->targetMachine = std::move(*tm);
  llvm::TargetMachine *rawTm = kernel->targetMachine.get();
  // ExecutionEngineOptions::transformer is a function_ref: both functions
  // must outlive ExecutionEngine::create.
  std::function<llvm::Error(llvm::Module *)> optimize =
      mlir::makeOptimizingTransformer(options.optLevel, /*sizeLevel=*/0, rawTm);
  std::function<llvm::Error(llvm::Module *)> transformer =
      [&](llvm::Module *llvmModule) {
        setHostAttributes(*llvmModule, *rawTm);
        return optimize(llvmModule);
      };
  mlir::ExecutionEngineOptions engineOptions;
  engineOptions.transformer = transformer;
  engineOptions.jitCodeGenOptLevel = getCodeGenOptLevel(options.optLevel);
  engineOptions.enableGDBNotificationListener = false;
  engineOptions.enablePerfNotificationListener = false;
  llvm::Expected<std::unique_ptr<mlir::ExecutionEngine>> engine =
      mlir::ExecutionEngine::create(module, engineOptions);
  if (!engine)
    return engine.takeError();
  kernel->engine = std::move(*engine);
  // Looking the entry up makes ORC generate machine code now, so compile
  // errors and compile time belong to compile().
  llvm::Expected<void (*)(void **)> entry =
      kernel->engine->lookupPacked(kernel->signature.name);
  if (!entry)
    return entry.takeError();
  kernel->entry = *entry;
  kernel->codegenSeconds = secondsSince(start);
  return kernel;
}

llvm::Error CpuKernel::run(llvm::ArrayRef<int64_t> dims,
                           llvm::ArrayRef<const HostTensor *> inputs,
                           llvm::ArrayRef<double> params,
                           llvm::ArrayRef<HostTensor *> outputs) {
  const CpuKernelSignature &sig = signature;
  if (dims.size() != sig.numDims || inputs.size() != sig.inputs.size() ||
      params.size() != sig.params.size() ||
      outputs.size() != sig.outputs.size())
    return makeError("kernel '" + sig.name + "' takes " +
                     llvm::Twine(sig.numDims) + " dims, " +
                     llvm::Twine(sig.inputs.size()) + " inputs, " +
                     llvm::Twine(sig.params.size()) + " params and " +
                     llvm::Twine(sig.outputs.size()) + " outputs");
  auto check = [&](const HostTensor &tensor, std::pair<DType, int64_t> want,
                   const char *what, size_t i) -> llvm::Error {
    if (tensor.getDType() != want.first || tensor.getRank() != want.second)
      return makeError("kernel '" + sig.name + "' " + what + " #" +
                       llvm::Twine(i) + " is " + tensor.describe() +
                       ", expected a rank-" + llvm::Twine(want.second) + " " +
                       std::string(dtypeName(want.first)) + " tensor");
    return llvm::Error::success();
  };
  for (size_t i = 0; i < inputs.size(); ++i)
    if (llvm::Error error = check(*inputs[i], sig.inputs[i], "input", i))
      return error;
  for (size_t i = 0; i < outputs.size(); ++i)
    if (llvm::Error error = check(*outputs[i], sig.outputs[i], "output", i))
      return error;

  // The packed convention: one pointer per LLVM-level argument. A memref is
  // (allocated, aligned, offset, sizes..., strides...); a scalar is itself.
  // Storage is reserved up front so the pointers into it stay valid.
  size_t numInts = dims.size();
  for (const HostTensor *t : inputs)
    numInts += 1 + 2 * t->getRank();
  for (const HostTensor *t : outputs)
    numInts += 1 + 2 * t->getRank();
  std::vector<int64_t> ints;
  ints.reserve(numInts);
  std::vector<void *> pointers;
  pointers.reserve(2 * (inputs.size() + outputs.size()));
  union Scalar {
    float f32;
    double f64;
    int32_t i32;
    int64_t i64;
  };
  std::vector<Scalar> scalars(params.size());
  std::vector<void *> args;

  auto addInt = [&](int64_t value) {
    ints.push_back(value);
    args.push_back(&ints.back());
  };
  auto addMemRef = [&](const HostTensor &tensor) {
    void *data = const_cast<void *>(tensor.data());
    for (int copy = 0; copy < 2; ++copy) {
      pointers.push_back(data);
      args.push_back(&pointers.back());
    }
    addInt(0);
    for (int64_t size : tensor.getShape())
      addInt(size);
    for (int64_t stride : tensor.getStrides())
      addInt(stride);
  };

  for (int64_t dim : dims)
    addInt(dim);
  for (const HostTensor *input : inputs)
    addMemRef(*input);
  for (size_t i = 0; i < params.size(); ++i) {
    switch (sig.params[i]) {
    case DType::F32:
      scalars[i].f32 = static_cast<float>(params[i]);
      break;
    case DType::F64:
      scalars[i].f64 = params[i];
      break;
    case DType::I32:
      scalars[i].i32 = static_cast<int32_t>(params[i]);
      break;
    default:
      scalars[i].i64 = static_cast<int64_t>(params[i]);
      break;
    }
    args.push_back(&scalars[i]);
  }
  for (HostTensor *output : outputs)
    addMemRef(*output);

  entry(args.data());
  return llvm::Error::success();
}

llvm::Expected<std::string> attn::emitLLVMIR(mlir::ModuleOp module,
                                             unsigned optLevel) {
  {
    DiagnosticCollector diagnostics(module->getContext());
    if (mlir::failed(mlir::attn::lowerToLLVMDialect(module)))
      return diagnostics.takeError(
          "lowering with attn-unfused-cpu-pipeline failed");
  }
  llvm::LLVMContext context;
  std::unique_ptr<llvm::Module> llvmModule =
      mlir::translateModuleToLLVMIR(module, context);
  if (!llvmModule)
    return makeError("translation to LLVM IR failed");
  if (optLevel > 0) {
    llvm::Expected<std::unique_ptr<llvm::TargetMachine>> tm =
        createHostTargetMachine(optLevel);
    if (!tm)
      return tm.takeError();
    mlir::ExecutionEngine::setupTargetTripleAndDataLayout(llvmModule.get(),
                                                          tm->get());
    setHostAttributes(*llvmModule, **tm);
    std::function<llvm::Error(llvm::Module *)> optimize =
        mlir::makeOptimizingTransformer(optLevel, /*sizeLevel=*/0, tm->get());
    if (llvm::Error error = optimize(llvmModule.get()))
      return std::move(error);
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  llvmModule->print(os, nullptr);
  return text;
}
