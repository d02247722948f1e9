//===- SubscriptConstraints.h - Gathers in range, as dim formulas -*- C++
//-*-===//
//
// A GPU package is launched by a runtime that knows the dims but not the
// IR, so the proof the CPU driver makes before a launch (every element a
// mask or score_mod reads lies inside its tensor) becomes manifest
// constraints: for each subscript built from the region's indices, the
// dims, integer constants, +, -, * and / by constants, min and max, the
// formulas "lowest >= 0" and "highest < size" over the dims. Subscripts
// that depend on anything else (a param, a value read from a tensor) get
// none: the kernel clamps every read into its tensor, so memory stays safe,
// but such a launch is not refused.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_SUBSCRIPTCONSTRAINTS_H
#define ATTN_DRIVER_SUBSCRIPTCONSTRAINTS_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include <optional>
#include <string>
#include <vector>

namespace attn {

/// The constraints for the reads of kernel inputs (attn.read or
/// tensor.extract) in the score_mod and mask of `attention`, whose indices b,
/// h, m, n range over [0, size) with the sizes given as formulas (a dim name or
/// a number). Constraints that hold for every size are left out. Each read
/// whose every subscript they bound is marked with kInRangeReadAttr: it lies
/// in its axis for every size, or for the sizes the constraints admit, which
/// the runtime checks before a launch, so kernels whose indices stay inside
/// the problem may read it without clamping the subscripts.
std::vector<std::string>
constrainSubscripts(mlir::attn::KernelOp kernel,
                    mlir::attn::AttentionOp attention,
                    const std::vector<std::string> &indexSizes);
constexpr llvm::StringLiteral kInRangeReadAttr = "attn.in_range";

/// `value`, a kernel-level index computed from dims and constants with the
/// same operations (the extents of prologue einsums, e.g. (N + 63)/64), as
/// a manifest formula; nullopt when it is computed otherwise. Divisions are
/// of non-negative values, where truncating and floor division agree.
std::optional<std::string> getDimFormula(mlir::attn::KernelOp kernel,
                                         mlir::Value value);

} // namespace attn

#endif // ATTN_DRIVER_SUBSCRIPTCONSTRAINTS_H
