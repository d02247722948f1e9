//===- CpuKernel.h - A kernel compiled in process for the host --*- C++ -*-===//
//
// Lowers one attn.kernel with the CPU pipeline, compiles it to an object for
// a CPU, links an object into the process and runs it on HostTensors. The
// artifact cache in front of it is the driver's (attn/Driver/Compile.h).
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_CPUKERNEL_H
#define ATTN_CPU_CPUKERNEL_H

#include "attn/CPU/CpuTarget.h"
#include "attn/CPU/Pipeline.h"
#include "attn/Driver/KernelSignature.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace attn {

class HalideEntry;
class LoadedObject;

/// Which code generator makes a kernel's object.
enum class CpuBackend {
  /// The MLIR pipelines: fused where attn-raise recognises the cascade,
  /// convert-attn-to-linalg otherwise.
  Mlir,
  /// The cascade as a Halide pipeline (codegen/halide), fused or not.
  Halide,
  /// The fused MLIR path where the raise fuses the kernel, else whichever
  /// of the other two is faster on unfused cascades (Halide).
  Auto,
};

/// How the Halide backend schedules and sizes a pipeline.
struct HalideScheduleOptions {
  /// An autoscheduler ("Mullapudi2016", "Li2018", "Adams2019") or "Derived",
  /// the schedule attnc derives itself.
  std::string scheduler = "Mullapudi2016";
  /// One size per kernel dim: the estimates schedules are made for (any
  /// size still runs). Empty: 64 for symbolic dims.
  std::vector<int64_t> dimEstimates;
  /// The worker threads the schedule is made for; 0: every core.
  unsigned parallelism = 0;

  /// `parallelism`, with 0 resolved to the host's cores.
  unsigned getParallelism() const;
};

struct CpuKernelOptions {
  /// LLVM optimization level of the IR and of the code generator (0-3).
  unsigned optLevel = 3;
  /// The pipeline (fused or unfused, tile sizes).
  mlir::attn::CpuPipelineOptions pipeline;
  /// OpenMP threads of the kernel's parallel regions; 0: every core.
  unsigned threads = 0;
  /// Print the time of each pass (as `attnc --time-passes`).
  bool timePasses = false;
  CpuBackend backend = CpuBackend::Mlir;
  HalideScheduleOptions halide;
};

/// Facts about a kernel learned while lowering it; kept in the cache entry
/// because a hit does not lower.
enum CpuKernelFlags : uint32_t {
  /// The module held an attn.attention (or attn.attention_backward) after
  /// raising: the fused path.
  kFusedPath = 1u << 0,
  /// The object is a Halide pipeline (HalideEntry.h's entry and runtime).
  kHalidePath = 1u << 1,
};

/// Where compile time went. A cache hit has lowering and codegen at zero.
struct CpuCompileStats {
  bool cacheHit = false;
  /// MLIR passes down to the LLVM dialect.
  double lowerSeconds = 0;
  /// Translation to LLVM IR, optimization and machine code.
  double codegenSeconds = 0;
  /// Key hashing, cache lookup and store, linking into the process.
  double loadSeconds = 0;
  /// Problems that did not stop compilation (a corrupt cache entry that was
  /// rebuilt, a cache that could not be written), for the caller to print.
  std::vector<std::string> warnings;
};

/// A relocatable object holding one kernel and its packed entry point.
struct CpuKernelObject {
  std::unique_ptr<llvm::MemoryBuffer> object;
  /// An object `object` links against (the Halide runtime of a Halide
  /// kernel, compiled once and shared by every kernel); null for the MLIR
  /// pipelines' objects, which need only the process and libomp.
  std::shared_ptr<const llvm::MemoryBuffer> supportObject;
  KernelSignature signature;
  /// CpuKernelFlags.
  uint32_t flags = 0;
  CpuCompileStats stats;
};

/// Compiles the one attn.kernel in `module` (which may be modified) for
/// `target`.
llvm::Expected<CpuKernelObject>
compileCpuKernelObject(mlir::ModuleOp module, const CpuTarget &target,
                       const CpuKernelOptions &options);

/// Everything an object compiled by compileCpuKernelObject depends on
/// besides the kernel's IR, as text: the artifact cache's key fields.
std::vector<std::string> describeCpuCompile(const CpuTarget &target,
                                            const CpuKernelOptions &options);

/// A param's value as a kernel's entry takes it: in the param's declared
/// type (F32, F64, I32; I64 otherwise).
union KernelScalar {
  float f32;
  double f64;
  int32_t i32;
  int64_t i64;

  static KernelScalar of(DType type, double value) {
    KernelScalar scalar;
    switch (type) {
    case DType::F32:
      scalar.f32 = static_cast<float>(value);
      break;
    case DType::F64:
      scalar.f64 = value;
      break;
    case DType::I32:
      scalar.i32 = static_cast<int32_t>(value);
      break;
    default:
      scalar.i64 = static_cast<int64_t>(value);
      break;
    }
    return scalar;
  }
};

/// A dense row-major tensor the caller owns, handed to a kernel as is: how
/// buffers from outside (NumPy arrays, PyTorch tensors) reach the kernel
/// without a copy.
struct TensorView {
  void *data = nullptr;
  DType type = DType::F32;
  llvm::ArrayRef<int64_t> shape;

  /// A view of all of `tensor`.
  static TensorView of(const HostTensor &tensor) {
    return {const_cast<void *>(tensor.data()), tensor.getDType(),
            tensor.getShape()};
  }
};

/// A kernel compiled for the host CPU.
class CpuKernel {
public:
  ~CpuKernel();

  /// Compiles `module` (holding one attn.kernel; it may be modified) for
  /// the host and links it into the process. Errors as mlir diagnostics (to
  /// the context's handlers) and as the returned llvm::Error.
  static llvm::Expected<std::unique_ptr<CpuKernel>>
  compile(mlir::ModuleOp module, const CpuKernelOptions &options);

  /// Links `object` (compiled for the host) into the process; its parallel
  /// regions run with `threads` threads (0: every core).
  static llvm::Expected<std::unique_ptr<CpuKernel>>
  load(CpuKernelObject object, unsigned threads);

  /// dims: one value per kernel dim; inputs: one per kernel input, dtype as
  /// declared in the kernel's input tensor type, shapes consistent with dims
  /// (the caller checked); params: one per param (converted to the param's
  /// scalar type); outputs: preallocated by the caller with the declared
  /// output dtypes and shapes. Counts, ranks and dtypes are checked.
  llvm::Error run(llvm::ArrayRef<int64_t> dims,
                  llvm::ArrayRef<const HostTensor *> inputs,
                  llvm::ArrayRef<double> params,
                  llvm::ArrayRef<HostTensor *> outputs);
  /// The same on views of memory the caller owns (dense row-major); the
  /// kernel reads and writes that memory directly.
  llvm::Error run(llvm::ArrayRef<int64_t> dims,
                  llvm::ArrayRef<TensorView> inputs,
                  llvm::ArrayRef<double> params,
                  llvm::ArrayRef<TensorView> outputs);

  const KernelSignature &getSignature() const { return signature; }
  const CpuCompileStats &getStats() const { return stats; }
  /// Whether the kernel took the fused path (an attn.attention or
  /// attn.attention_backward after raising) rather than the unfused
  /// cascade.
  bool isFused() const { return flags & kFusedPath; }
  /// Whether the kernel is a Halide pipeline.
  bool isHalide() const { return flags & kHalidePath; }
  /// Whether the kernel has OpenMP parallel regions.
  bool usesOpenMP() const;
  /// The thread count its parallel regions run with.
  unsigned getThreads() const { return threads; }

  /// Seconds spent lowering (MLIR passes) and in LLVM (optimization and
  /// machine code generation) by `compile`.
  double getLoweringSeconds() const { return stats.lowerSeconds; }
  double getCodegenSeconds() const { return stats.codegenSeconds; }

private:
  CpuKernel() = default;

  KernelSignature signature;
  CpuCompileStats stats;
  uint32_t flags = 0;
  unsigned threads = 1;
  std::unique_ptr<LoadedObject> loaded;
  /// The entry of a Halide object (declared after `loaded`, so that its
  /// thread pool stops before the object's code is unlinked).
  std::unique_ptr<HalideEntry> halide;
  /// The packed entry point `_mlir_<name>(void **args)`.
  void (*entry)(void **) = nullptr;
};

/// Reads the JIT signature of the one attn.kernel in `module`.
llvm::Expected<KernelSignature> getKernelSignature(mlir::ModuleOp module);

/// Lowers `module` (modified) with the CPU pipeline and translates it to
/// LLVM IR text; when `optLevel` > 0 the IR is optimized as the JIT would
/// (host CPU). For `attnc --emit=llvm`. For the LLVM dialect or linalg on
/// tensors, use mlir::attn::lowerToLLVMDialect / lowerToLinalg and print the
/// module.
llvm::Expected<std::string>
emitLLVMIR(mlir::ModuleOp module, unsigned optLevel = 0,
           const mlir::attn::CpuPipelineOptions &pipeline = {});

} // namespace attn

#endif // ATTN_CPU_CPUKERNEL_H
