//===- CpuKernel.h - A kernel compiled in process for the host --*- C++ -*-===//
//
// Lowers one attn.kernel with the unfused CPU pipeline and JIT-compiles it
// with mlir::ExecutionEngine for the host CPU, then runs it on HostTensors.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_JIT_CPUKERNEL_H
#define ATTN_JIT_CPUKERNEL_H

#include "attn/Runtime/Tensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <string>
#include <vector>

namespace mlir {
class ExecutionEngine;
} // namespace mlir

namespace llvm {
class TargetMachine;
} // namespace llvm

namespace attn {

struct CpuKernelOptions {
  /// LLVM optimization level of the IR and of the code generator (0-3).
  unsigned optLevel = 3;
};

/// The signature of a kernel as the JIT calls it, read from the attn.kernel
/// before lowering.
struct CpuKernelSignature {
  std::string name;
  unsigned numDims = 0;
  /// Element type and rank of every input and output.
  std::vector<std::pair<DType, int64_t>> inputs, outputs;
  /// Scalar type of every param (F32, F64, I32 or I64).
  std::vector<DType> params;
};

/// A kernel compiled for the host CPU.
class CpuKernel {
public:
  ~CpuKernel();

  /// Lowers `module` (holding one attn.kernel; the module is modified) with
  /// the unfused pipeline and JIT-compiles it. Errors as mlir diagnostics
  /// (to the context's handlers) and as the returned llvm::Error.
  static llvm::Expected<std::unique_ptr<CpuKernel>>
  compile(mlir::ModuleOp module, const CpuKernelOptions &options);

  /// dims: one value per kernel dim; inputs: one per kernel input, dtype as
  /// declared in the kernel's input tensor type, shapes consistent with dims
  /// (the caller checked); params: one per param (converted to the param's
  /// scalar type); outputs: preallocated by the caller with the declared
  /// output dtypes and shapes. Counts, ranks and dtypes are checked.
  llvm::Error run(llvm::ArrayRef<int64_t> dims,
                  llvm::ArrayRef<const HostTensor *> inputs,
                  llvm::ArrayRef<double> params,
                  llvm::ArrayRef<HostTensor *> outputs);

  const CpuKernelSignature &getSignature() const { return signature; }
  /// Seconds spent lowering (MLIR passes) and in LLVM (optimization and
  /// machine code generation) by `compile`.
  double getLoweringSeconds() const { return loweringSeconds; }
  double getCodegenSeconds() const { return codegenSeconds; }

private:
  CpuKernel() = default;

  CpuKernelSignature signature;
  std::unique_ptr<llvm::TargetMachine> targetMachine;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  /// The packed entry point `_mlir_<name>(void **args)`.
  void (*entry)(void **) = nullptr;
  double loweringSeconds = 0, codegenSeconds = 0;
};

/// Reads the JIT signature of the one attn.kernel in `module`.
llvm::Expected<CpuKernelSignature> getCpuKernelSignature(mlir::ModuleOp module);

/// Lowers `module` (modified) with the unfused pipeline and translates it to
/// LLVM IR text; when `optLevel` > 0 the IR is optimized as the JIT would
/// (host CPU). For `attnc --emit=llvm`. For the LLVM dialect or linalg on
/// tensors, use mlir::attn::lowerToLLVMDialect / lowerToLinalg and print the
/// module.
llvm::Expected<std::string> emitLLVMIR(mlir::ModuleOp module,
                                       unsigned optLevel = 0);

} // namespace attn

#endif // ATTN_JIT_CPUKERNEL_H
