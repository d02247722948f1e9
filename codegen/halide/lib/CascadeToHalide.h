//===- CascadeToHalide.h - An attn.kernel cascade as a Halide pipeline ---===//
//
// One Func per einsum (an RDom over its reduced indices), per keep (its
// presence), per normalizer row statistic; Params for dims and params,
// ImageParams for inputs. Absent entries are a Bool Func beside the values,
// only where entries may be absent, exactly as docs/cascade-ir.md defines
// them: reductions skip them, an empty reduction gives its identity, a row
// with no present entry normalizes to zeros.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_LIB_CASCADETOHALIDE_H
#define ATTN_HALIDE_LIB_CASCADETOHALIDE_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <Halide.h>

#include <string>
#include <vector>

namespace attn::halide {

/// A Func the cascade computes, for a schedule to place.
struct CascadeStage {
  Halide::Func func;
  /// Whether it has an update (a reduction over an RDom).
  bool reduces = false;
};

/// The unscheduled pipeline of one kernel.
struct CascadePipeline {
  /// The arguments of the compiled entry, in the kernel's order: dims (i32),
  /// inputs, params. The outputs follow them in the entry.
  std::vector<Halide::Argument> arguments;
  /// One Func per kernel output, of the declared element type: what a
  /// scheduler places (HalideSchedule.h copies them into the entry's
  /// outputs).
  std::vector<Halide::Func> outputs;
  /// The entry's name of each output.
  std::vector<std::string> outputNames;
  /// The Funcs between inputs and outputs, producers first.
  std::vector<CascadeStage> stages;
};

/// Builds the pipeline of `kernel` (a cascade: no attn.attention), with
/// estimates from `dimEstimates` (one size per kernel dim). Errors are
/// emitted as diagnostics on the offending op.
mlir::FailureOr<CascadePipeline>
buildCascadePipeline(mlir::attn::KernelOp kernel,
                     llvm::ArrayRef<int64_t> dimEstimates);

} // namespace attn::halide

#endif // ATTN_HALIDE_LIB_CASCADETOHALIDE_H
