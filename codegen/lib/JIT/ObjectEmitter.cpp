//===- ObjectEmitter.cpp - LLVM dialect to an object file -----------------===//

#include "attn/JIT/ObjectEmitter.h"

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

#include <cstdlib>

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

/// Runs LLVM's middle end on `module`. Whatever O-level is asked for, at
/// most the O2 pipeline runs: the kernels arrive already tiled, vectorized
/// and with their exponentials approximated, and O3 mostly adds loop
/// versioning and unrolling of those loops, which multiplied the machine
/// code about four times (and the back end's time with it) without making
/// the kernels faster. The loop and SLP vectorizers have nothing left to do
/// on this code either.
llvm::Error optimizeModule(llvm::Module &module, llvm::TargetMachine &tm,
                           unsigned optLevel) {
  if (const char *env = std::getenv("ATTN_TUNE_OPT"))
    optLevel = std::atoi(env);
  llvm::OptimizationLevel level = optLevel == 1   ? llvm::OptimizationLevel::O1
                                  : optLevel == 2 ? llvm::OptimizationLevel::O2
                                                  : llvm::OptimizationLevel::O3;
  llvm::PipelineTuningOptions tuning;
  if (!std::getenv("ATTN_TUNE_VEC")) {
  tuning.LoopVectorization = false;
  tuning.SLPVectorization = false;
  }
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
  llvm::ModulePassManager passes =
      builder.buildPerModuleDefaultPipeline(level);
  passes.run(module, modules);
  return llvm::Error::success();
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
  if (optLevel > 0) {
    if (llvm::Error error = optimizeModule(*llvmModule, tm, optLevel))
      return std::move(error);
  }
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
