//===- KernelEvaluator.h - The reference's forward pass ---------*- C++ -*-===//
//
// Internal to the reference evaluator. Declared here rather than in
// Evaluator.cpp because reverse mode runs the same forward pass and then
// needs every intermediate tensor it computed, not just the outputs.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_KERNELEVALUATOR_H
#define ATTN_REFERENCE_LIB_KERNELEVALUATOR_H

#include "BodyProgram.h"
#include "TensorValue.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/AsmState.h"

#include <deque>
#include <vector>

namespace attn::ref {

/// Evaluates one kernel on one set of arguments. Every tensor it computes
/// stays alive, and in `getEnvironment()`, until it is destroyed.
class KernelEvaluator {
public:
  KernelEvaluator(mlir::attn::KernelOp kernel, const KernelArguments &args)
      : kernel(kernel), args(args), asmState(kernel) {}

  /// Binds the arguments, evaluates every op and gives the outputs.
  mlir::FailureOr<std::vector<HostTensor>> run();
  /// Binds the arguments and evaluates every op, keeping the results.
  mlir::LogicalResult evaluateAll();
  /// The outputs of an `evaluateAll` that succeeded, absent entries as 0.
  mlir::FailureOr<std::vector<HostTensor>> collectOutputs();

  const Environment &getEnvironment() const { return env; }
  const TensorValue *lookupTensor(mlir::Value value) const {
    return env.tensors.lookup(value);
  }
  /// The sizes `extents` evaluate to, checked to be non-negative and small
  /// enough to allocate.
  mlir::FailureOr<std::vector<int64_t>>
  evaluateExtents(mlir::Operation *op, mlir::ValueRange extents);
  /// Compiles a cascade body against the values computed so far.
  mlir::FailureOr<BodyProgram> compileBody(mlir::Block &block);
  /// Reports `fault` at its op, with the body point it happened at.
  mlir::LogicalResult reportFault(const Fault &fault,
                                  mlir::Operation *cascadeOp,
                                  llvm::ArrayRef<mlir::Attribute> indexNames,
                                  const Reg *regs);

private:
  mlir::LogicalResult bindArguments();
  mlir::LogicalResult evaluate(mlir::Operation *op);
  mlir::LogicalResult evaluateScalar(mlir::Operation *op);
  mlir::LogicalResult evaluateEinsum(mlir::attn::EinsumOp op);
  mlir::LogicalResult evaluateKeep(mlir::attn::KeepOp op);
  mlir::LogicalResult evaluateSoftmax(mlir::attn::SoftmaxOp op);
  mlir::LogicalResult evaluateNormalize(mlir::attn::NormalizeOp op);
  void define(mlir::Value value, TensorValue tensor);

  mlir::attn::KernelOp kernel;
  const KernelArguments &args;
  mlir::AsmState asmState;
  Environment env;
  /// Owns every tensor; a deque so that pointers in `env` stay valid.
  std::deque<TensorValue> storage;
};

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_KERNELEVALUATOR_H
