//===- Launch.h - Binding sizes, params and data to a kernel ----*- C++ -*-===//
//
// Everything between a compiled kernel and a run: sizes from `--shape`
// strings or defaults, params from `--param` strings or defaults, random
// inputs that keep every gather in range, and the checks a launch passes
// before anything runs.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_LAUNCH_H
#define ATTN_DRIVER_LAUNCH_H

#include "attn/Analysis/IntervalAnalysis.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/KernelSignature.h"
#include "attn/Driver/ZeroDivisors.h"
#include "attn/Runtime/Tensor.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <vector>

namespace attn {

/// Parses "B=2,H=16,M=4096" into name -> integer. Errors name the bad item.
llvm::Expected<llvm::StringMap<int64_t>> parseShapeList(llvm::StringRef text);
/// Parses "window=128,cap=30.5" into name -> number.
llvm::Expected<llvm::StringMap<double>> parseParamList(llvm::StringRef text);

/// The sizes, params and tensors of one launch.
struct Launch {
  std::vector<int64_t> dims;
  std::vector<double> params;
  std::vector<HostTensor> inputs;
};

/// Binds every dim: fixed dims keep their size (an explicit different value
/// is an error), explicit values win, and the rest get defaults that are
/// grown until every subscript provably stays in range.
llvm::Expected<std::vector<int64_t>>
bindDims(mlir::attn::KernelOp kernel, const llvm::StringMap<int64_t> &given);

/// Binds every param from `given` or its default; an unknown name, a
/// missing value without default, or a non-integer value for an integer
/// param is an error.
llvm::Expected<std::vector<double>>
bindParams(mlir::attn::KernelOp kernel, const llvm::StringMap<double> &given);

/// Checks that every integer param's value is an integer inside the range of
/// its type (an i32 window of 2^40 would wrap); errors name the param.
llvm::Error checkParamValues(mlir::attn::KernelOp kernel,
                             llvm::ArrayRef<double> params);

/// Random inputs: floats N(0, 1); integer inputs drawn for what the cascade
/// does with them (IntegerInputs.h): gather indices inside the axis they
/// index, divisors never 0, bounds compared with an index spread over its
/// range, ids in runs; booleans fair coin flips.
std::vector<HostTensor> makeRandomInputs(mlir::attn::KernelOp kernel,
                                         llvm::ArrayRef<int64_t> dims,
                                         uint64_t seed);

/// Whether a launch at `dims` has any output entry to compute. One without
/// (a zero-size dim in every output, H = 0) runs no kernel: there is nothing
/// to write, and a kernel may divide its work by the zero size.
bool hasOutputEntries(mlir::attn::KernelOp kernel,
                      llvm::ArrayRef<int64_t> dims);

/// Checks a launch before it runs: one tensor per input with the declared
/// dtype and the shape the dims imply, and every subscript provably inside
/// its tensor given the data of integer inputs. Sizes may be 0: reads and
/// divisions in cascade bodies that then run at no point are not checked.
llvm::Error checkLaunch(mlir::attn::KernelOp kernel, const Launch &launch);

/// The subscript half of checkLaunch, for callers that checked dtypes and
/// shapes themselves and hold the inputs in memory of their own (the Python
/// binding): `inputRange(i)` gives the values of integer input `i`, nullopt
/// for float inputs; `tableEntry(i, flat)` an entry of integer input `i`, so
/// that a divisor computed from a table that is 0 somewhere refuses the
/// launch (without it, only divisors of indices, sizes and params are
/// checked).
llvm::Error
checkSubscripts(mlir::attn::KernelOp kernel, llvm::ArrayRef<int64_t> dims,
                llvm::ArrayRef<double> params,
                std::function<std::optional<mlir::attn::Interval>(unsigned)>
                    inputRange,
                const TableEntry &tableEntry = nullptr);

} // namespace attn

#endif // ATTN_DRIVER_LAUNCH_H
