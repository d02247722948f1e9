//===- LaneCloning.h - Region bodies cloned along vector lanes --*- C++ -*-===//
//
// Private to attn-fuse-online and attn-fuse-backward: the fused loop nests
// keep one query (or one key) per vector lane, so the bodies of the
// attention ops' regions are cloned "along lanes": values that depend on
// the lane's index or the score become vectors, the rest stay scalars.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_LANECLONING_H
#define ATTN_CPU_LANECLONING_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/Block.h"
#include "llvm/ADT/DenseMap.h"

namespace mlir::attn {

/// A value of a region body cloned along lanes: a vector with one element
/// per lane when `varying`, else a scalar shared by every lane.
struct LaneValue {
  Value value;
  bool varying = false;
};

/// Clones the body of `block` (an attn.attention region) at the builder's
/// insertion point with `args` for its block arguments, and returns what its
/// attn.yield yields. Elementwise ops with a varying operand become the same
/// op on vector<lanes x T>; attn.read with varying subscripts becomes one
/// scalar load per lane. `buffers` maps every tensor read in the body to its
/// memref. Fails (with an error on the offending op) on anything else.
FailureOr<LaneValue> cloneAlongLanes(OpBuilder &builder, Block &block,
                                     ArrayRef<LaneValue> args, int64_t lanes,
                                     const DenseMap<Value, Value> &buffers);

/// The same for a block whose attn.yield yields any number of values (a
/// score_mod together with its derivative), returned in order.
FailureOr<SmallVector<LaneValue>>
cloneAllAlongLanes(OpBuilder &builder, Block &block, ArrayRef<LaneValue> args,
                   int64_t lanes, const DenseMap<Value, Value> &buffers);

/// `value` as a vector<lanes x T>: varying values unchanged, scalars
/// broadcast.
Value broadcastToLanes(OpBuilder &builder, Location loc, LaneValue value,
                       int64_t lanes);

} // namespace mlir::attn

#endif // ATTN_CPU_LANECLONING_H
