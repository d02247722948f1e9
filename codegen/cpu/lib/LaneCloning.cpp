//===- LaneCloning.cpp - Region bodies cloned along vector lanes ----------===//
//
// attn-fuse-online evaluates score_mod and mask for one key and a vector of
// queries at a time (attn-fuse-backward also for one query and a vector of
// keys). Values that depend only on the batch, the head or the scalar index
// stay scalar (computed once per key, hoisted further by LICM); the rest
// become vectors, so the common cases (causal masks, softcapping, ALiBi)
// turn into a handful of vector instructions per key.
//
//===----------------------------------------------------------------------===//

#include "LaneCloning.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/OpDefinition.h"

using namespace mlir;
using namespace mlir::attn;

Value mlir::attn::broadcastToLanes(OpBuilder &builder, Location loc,
                                   LaneValue value, int64_t lanes) {
  if (value.varying)
    return value.value;
  auto type = VectorType::get({lanes}, value.value.getType());
  return vector::BroadcastOp::create(builder, loc, type, value.value);
}

/// One load per lane: reads whose subscripts differ between queries (a
/// document id indexed by the query) have no contiguous vector form.
static Value gatherAlongLanes(OpBuilder &builder, Location loc, Value buffer,
                              ArrayRef<LaneValue> subscripts, int64_t lanes) {
  auto elementType = cast<MemRefType>(buffer.getType()).getElementType();
  auto vectorType = VectorType::get({lanes}, elementType);
  Value result = arith::ConstantOp::create(builder, loc,
                                           builder.getZeroAttr(vectorType));
  for (int64_t lane = 0; lane < lanes; ++lane) {
    SmallVector<Value> indices;
    for (LaneValue subscript : subscripts)
      indices.push_back(subscript.varying
                            ? vector::ExtractOp::create(builder, loc,
                                                        subscript.value, lane)
                                  .getResult()
                            : subscript.value);
    Value element = memref::LoadOp::create(builder, loc, buffer, indices);
    result = vector::InsertOp::create(builder, loc, element, result, lane);
  }
  return result;
}

FailureOr<LaneValue>
mlir::attn::cloneAlongLanes(OpBuilder &builder, Block &block,
                            ArrayRef<LaneValue> args, int64_t lanes,
                            const DenseMap<Value, Value> &buffers) {
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield || yield.getValues().size() != 1)
    return block.getTerminator()->emitOpError() << "must yield one value";
  FailureOr<SmallVector<LaneValue>> values =
      cloneAllAlongLanes(builder, block, args, lanes, buffers);
  if (failed(values))
    return failure();
  return values->front();
}

FailureOr<SmallVector<LaneValue>>
mlir::attn::cloneAllAlongLanes(OpBuilder &builder, Block &block,
                               ArrayRef<LaneValue> args, int64_t lanes,
                               const DenseMap<Value, Value> &buffers) {
  DenseMap<Value, LaneValue> values;
  for (auto [arg, value] : llvm::zip_equal(block.getArguments(), args))
    values[arg] = value;
  // Values from above (dims, params) are scalars of the enclosing function.
  auto lookup = [&](Value v) -> LaneValue {
    auto it = values.find(v);
    return it == values.end() ? LaneValue{v, false} : it->second;
  };

  for (Operation &op : block) {
    Location loc = op.getLoc();
    if (auto yield = dyn_cast<YieldOp>(op))
      return llvm::map_to_vector(yield.getValues(), lookup);
    SmallVector<LaneValue> operands =
        llvm::map_to_vector(op.getOperands(), lookup);
    bool varying = llvm::any_of(operands, [](LaneValue v) { return v.varying; });

    if (auto read = dyn_cast<ReadOp>(op)) {
      Value buffer = buffers.lookup(read.getTensor());
      if (!buffer)
        return read.emitOpError() << "reads a tensor attn-fuse-online did not "
                                     "bring to memory";
      ArrayRef<LaneValue> subscripts = ArrayRef(operands).drop_front();
      Value result;
      if (varying) {
        result = gatherAlongLanes(builder, loc, buffer, subscripts, lanes);
      } else {
        SmallVector<Value> indices =
            llvm::map_to_vector(subscripts, [](LaneValue v) { return v.value; });
        result = memref::LoadOp::create(builder, loc, buffer, indices);
      }
      values[read.getResult()] = {result, varying};
      continue;
    }
    if (op.getNumRegions() != 0 || op.getNumResults() != 1)
      return op.emitOpError() << "is not supported in an attention region by "
                                 "attn-fuse-online";
    if (!varying) {
      IRMapping mapping;
      for (auto [from, to] : llvm::zip_equal(op.getOperands(), operands))
        mapping.map(from, to.value);
      Operation *copy = builder.clone(op, mapping);
      values[op.getResult(0)] = {copy->getResult(0), false};
      continue;
    }
    if (!OpTrait::hasElementwiseMappableTraits(&op))
      return op.emitOpError() << "depends on the query index but is not "
                                 "elementwise; attn-fuse-online cannot "
                                 "vectorize it";
    OperationState state(loc, op.getName());
    for (LaneValue operand : operands)
      state.addOperands(broadcastToLanes(builder, loc, operand, lanes));
    state.addTypes(VectorType::get({lanes}, op.getResult(0).getType()));
    state.propertiesAttr = op.getPropertiesAsAttribute();
    state.addAttributes(llvm::to_vector(op.getDiscardableAttrs()));
    Operation *vectorOp = builder.create(state);
    values[op.getResult(0)] = {vectorOp->getResult(0), true};
  }
  return failure();
}
