//===- ObjectEmitter.h - LLVM dialect to an object file ---------*- C++ -*-===//
//
// The code generation half of the JIT, apart from loading: translation of a
// lowered module to LLVM IR, the packed entry points, optimization for the
// target CPU and machine code in memory.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_OBJECTEMITTER_H
#define ATTN_CPU_OBJECTEMITTER_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
} // namespace llvm

namespace attn {

/// The prefix of the packed entry point of a kernel: `_mlir_<name>(void
/// **args)` takes one pointer per argument of `<name>`, the convention of
/// mlir::ExecutionEngine::invokePacked.
inline constexpr const char *kPackedPrefix = "_mlir_";

/// Translates `module` (only the LLVM dialect) to LLVM IR for `tm`, adds a
/// packed entry point for every public function and, when `optLevel` > 0,
/// runs LLVM's middle end with `tm`'s cost model: O1 for `optLevel` 1, else O2
/// without loop unrolling (the kernels arrive tiled and vectorized).
llvm::Expected<std::unique_ptr<llvm::Module>>
translateAndOptimize(mlir::ModuleOp module, llvm::LLVMContext &context,
                     llvm::TargetMachine &tm, unsigned optLevel);

/// Machine code for `module` as a relocatable object file in memory.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>>
emitObjectFile(llvm::Module &module, llvm::TargetMachine &tm);

} // namespace attn

#endif // ATTN_CPU_OBJECTEMITTER_H
