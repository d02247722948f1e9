//===- ObjectEmitter.cpp - LLVM dialect to an object file -----------------===//

#include "attn/CPU/ObjectEmitter.h"

#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/SmallVectorMemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Target/TargetMachine.h"

using namespace attn;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Tags every function with the target CPU and features: the translated
/// module carries none, and without them the vectorizer assumes baseline
/// x86-64.
void setTargetAttributes(llvm::Module &module, llvm::TargetMachine &tm) {
  for (llvm::Function &function : module) {
    if (function.isDeclaration())
      continue;
    function.addFnAttr("target-cpu", tm.getTargetCPU());
    if (!tm.getTargetFeatureString().empty())
      function.addFnAttr("target-features", tm.getTargetFeatureString());
  }
}

/// Adds `_mlir_<name>(ptr args)`, which loads each argument of `<name>`
/// through args[i] and calls it (a result, if any, is stored through
/// args[n]); one C signature for every kernel, for the JIT and harnesses.
void addPackedEntryPoints(llvm::Module &module) {
  llvm::SmallVector<llvm::Function *> functions;
  for (llvm::Function &function : module)
    if (!function.isDeclaration() && function.hasExternalLinkage() &&
        !function.getName().starts_with(kPackedPrefix))
      functions.push_back(&function);
  llvm::LLVMContext &context = module.getContext();
  for (llvm::Function *function : functions) {
    llvm::IRBuilder<> builder(context);
    auto *type = llvm::FunctionType::get(builder.getVoidTy(),
                                         {builder.getPtrTy()}, false);
    llvm::Function *packed = llvm::Function::Create(
        type, llvm::GlobalValue::ExternalLinkage,
        kPackedPrefix + function->getName(), module);
    builder.SetInsertPoint(llvm::BasicBlock::Create(context, "entry", packed));
    llvm::Value *argList = packed->getArg(0);
    llvm::SmallVector<llvm::Value *> args;
    auto slot = [&](unsigned i) {
      llvm::Value *address = builder.CreateGEP(builder.getPtrTy(), argList,
                                               builder.getInt64(i));
      return builder.CreateLoad(builder.getPtrTy(), address);
    };
    for (llvm::Argument &arg : function->args())
      args.push_back(builder.CreateLoad(arg.getType(), slot(arg.getArgNo())));
    llvm::Value *result = builder.CreateCall(function, args);
    if (!result->getType()->isVoidTy())
      builder.CreateStore(result, slot(function->arg_size()));
    builder.CreateRetVoid();
  }
}

/// Runs LLVM's middle end on `module`: the O1 pipeline for `optLevel` 1,
/// else O2 without loop unrolling, whatever higher level is asked for. The
/// fused kernels arrive tiled, vectorized and with their exponentials
/// approximated; on them O3 adds loop versioning and the unroller copies the
/// micro-kernel loops, which multiplied the machine code by 2.5 to 4 and the
/// back end's time with it (causal: about 0.9 s of codegen at O3, 0.1 s
/// now) without a measurable change in kernel speed: the loops are long
/// (D or key-tile trips of 8 FMAs each) and their counter updates issue
/// beside the FMAs. The vectorizers stay on for the unfused kernels' scalar
/// linalg loops.
void optimizeModule(llvm::Module &module, llvm::TargetMachine &tm,
                    unsigned optLevel) {
  llvm::PipelineTuningOptions tuning;
  tuning.LoopUnrolling = false;
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager cgscc;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(&tm, tuning);
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(cgscc);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, cgscc, modules);
  llvm::ModulePassManager passes = builder.buildPerModuleDefaultPipeline(
      optLevel == 1 ? llvm::OptimizationLevel::O1
                    : llvm::OptimizationLevel::O2);
  passes.run(module, modules);
}

} // namespace

llvm::Expected<std::unique_ptr<llvm::Module>>
attn::translateAndOptimize(mlir::ModuleOp module, llvm::LLVMContext &context,
                           llvm::TargetMachine &tm, unsigned optLevel) {
  // The fused kernels keep omp.parallel / omp.wsloop down to translation,
  // which turns them into calls of the OpenMP runtime.
  mlir::DialectRegistry registry;
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  mlir::registerOpenMPDialectTranslation(registry);
  module->getContext()->appendDialectRegistry(registry);
  std::unique_ptr<llvm::Module> llvmModule =
      mlir::translateModuleToLLVMIR(module, context);
  if (!llvmModule)
    return makeError("translation to LLVM IR failed");
  llvmModule->setTargetTriple(tm.getTargetTriple());
  llvmModule->setDataLayout(tm.createDataLayout());
  addPackedEntryPoints(*llvmModule);
  setTargetAttributes(*llvmModule, tm);
  if (optLevel > 0)
    optimizeModule(*llvmModule, tm, optLevel);
  return llvmModule;
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
attn::emitObjectFile(llvm::Module &module, llvm::TargetMachine &tm) {
  llvm::SmallVector<char, 0> bytes;
  {
    llvm::raw_svector_ostream os(bytes);
    llvm::legacy::PassManager passes;
    if (tm.addPassesToEmitFile(passes, os, nullptr,
                               llvm::CodeGenFileType::ObjectFile))
      return makeError("the target cannot emit object files");
    passes.run(module);
  }
  return std::make_unique<llvm::SmallVectorMemoryBuffer>(
      std::move(bytes), "attn-kernel.o", /*RequiresNullTerminator=*/false);
}
