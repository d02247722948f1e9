//===- KernelSignature.h - The signature of an attn.kernel ------*- C++ -*-===//
//
// The one reader of a kernel's signature (dims, inputs, params, outputs and
// their element types) and the one mapping of MLIR scalar types to the
// runtime's DTypes, shared by the CLI, the Python module, the CPU JIT and the
// GPU package's manifest.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_KERNELSIGNATURE_H
#define ATTN_DRIVER_KERNELSIGNATURE_H

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace attn {

/// The runtime element type of an MLIR scalar type (`index` is I64), or
/// nullopt for a type the runtime has no DType for.
std::optional<DType> getDType(mlir::Type type);

/// An axis of a kernel tensor: a dim, or a size fixed by the spec.
struct KernelAxis {
  /// The dim's name; empty for a fixed size.
  std::string dim;
  int64_t size = 0;

  bool isDim() const { return !dim.empty(); }
};

/// An input or output of a kernel.
struct KernelTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<KernelAxis> axes;

  int64_t getRank() const { return static_cast<int64_t>(axes.size()); }
};

/// A scalar param of a kernel.
struct KernelParam {
  std::string name;
  /// F32, F64, I32 or I64.
  DType dtype = DType::F32;
  std::optional<double> defaultValue;
};

/// A dim of a kernel.
struct KernelDim {
  std::string name;
  /// Fixed by the spec (`D = 128`), else set at launch.
  std::optional<int64_t> size;
};

/// What a kernel takes and returns, in order, as the spec declares it.
struct KernelSignature {
  std::string name;
  std::vector<KernelDim> dims;
  std::vector<KernelTensor> inputs;
  std::vector<KernelParam> params;
  std::vector<KernelTensor> outputs;

  /// Reads `kernel`'s signature; fails on an element or param type that no
  /// DType can hold.
  static llvm::Expected<KernelSignature> read(mlir::attn::KernelOp kernel);
  /// The signature of the one attn.kernel of `module`.
  static llvm::Expected<KernelSignature> read(mlir::ModuleOp module);
};

/// The element type of input `i` as the kernel declares it.
DType getInputDType(mlir::attn::KernelOp kernel, unsigned i);

/// The shape of input `i` (or output `i - numInputs`) for `dims`.
std::vector<int64_t> getTensorShape(mlir::attn::KernelOp kernel, unsigned i,
                                    llvm::ArrayRef<int64_t> dims);

} // namespace attn

#endif // ATTN_DRIVER_KERNELSIGNATURE_H
