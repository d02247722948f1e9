//===- RegionCaptures.cpp - Region values from above as kernel params -----===//
//
// score_mod, mask and tile_class may read the kernel's dims, params and
// tensors (ALiBi slopes, document ids, the tile summaries of prologue
// einsums); so may the bodies of those einsums. On the GPU these become
// parameters of the generated kernel: scalars by value, tensors as a pointer
// with sizes and strides; scalar index math on them is recomputed in the
// kernel. The regions are then cloned into the kernel.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"
#include "SubscriptConstraints.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/SetVector.h"

using namespace mlir;
using namespace mlir::attn;

static bool isPassableScalar(Type type) {
  return isa<IndexType, FloatType>(type) || type.isInteger();
}

/// Whether the kernel can compute `value` itself from other values it has:
/// a chain of pure scalar ops (constants, index math on dims such as the
/// number of summary tiles) is cloned, not passed.
static bool isRecomputable(Value value) {
  Operation *def = value.getDefiningOp();
  if (!def || def->getNumRegions() != 0 || !isMemoryEffectFree(def) ||
      !llvm::all_of(def->getResultTypes(), isPassableScalar))
    return false;
  return llvm::all_of(def->getOperands(), [](Value operand) {
    return isRecomputable(operand) || isPassableScalar(operand.getType()) ||
           isa<RankedTensorType>(operand.getType());
  });
}

/// The values from above that the regions of `ops` read, and the extents
/// of einsums, in a stable order.
static llvm::SetVector<Value> getValuesFromAbove(ArrayRef<Operation *> ops) {
  llvm::SetVector<Value> values;
  for (Operation *op : ops) {
    for (Region &region : op->getRegions())
      if (!region.empty())
        getUsedValuesDefinedAbove(region, region, values);
    if (auto einsum = dyn_cast<EinsumOp>(op))
      values.insert(einsum.getExtents().begin(), einsum.getExtents().end());
  }
  return values;
}

/// Rewrites the cascade's element reads of captured tensors into
/// tensor.extract: raised regions and prologue einsums read kernel inputs
/// (and einsum results) with attn.read, which on fully present tensors
/// means the same.
static void convertReadsToExtracts(Operation *op) {
  SmallVector<ReadOp> reads;
  op->walk([&](ReadOp read) { reads.push_back(read); });
  for (ReadOp read : reads) {
    OpBuilder builder(read);
    auto extracted = tensor::ExtractOp::create(
        builder, read.getLoc(), read.getTensor(), read.getSubscripts());
    if (read->hasAttr(::attn::kInRangeReadAttr))
      extracted->setAttr(::attn::kInRangeReadAttr, builder.getUnitAttr());
    read.getResult().replaceAllUsesWith(extracted.getResult());
    read.erase();
  }
}

/// Checks that `value` can become kernel parameters.
static LogicalResult checkPassable(Value value, ArrayRef<Operation *> ops) {
  Operation *anchor = ops.front();
  Type type = value.getType();
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor) {
    if (!isPassableScalar(type))
      return anchor->emitError() << "attn-nvgpu: cannot pass a captured "
                                 << type << " to the kernel";
    return success();
  }
  Type element = tensor.getElementType();
  if (!isPassableScalar(element) || isa<IndexType>(element))
    return anchor->emitError() << "attn-nvgpu: cannot pass a captured tensor "
                                  "of "
                               << element << " to the kernel";
  // Only element reads and sizes have a meaning without MLIR tensors.
  for (Operation *user : value.getUsers())
    for (Operation *op : ops)
      if (op->isProperAncestor(user) &&
          !isa<tensor::ExtractOp, tensor::DimOp>(user))
        return user->emitError()
               << "attn-nvgpu: a captured tensor may only be read with "
                  "tensor.extract or tensor.dim";
  return success();
}

LogicalResult mlir::attn::collectCaptures(ArrayRef<Operation *> ops,
                                          SmallVectorImpl<Value> &captures) {
  for (Operation *op : ops)
    convertReadsToExtracts(op);
  llvm::SetVector<Value> leaves;
  SmallVector<Value> worklist(llvm::reverse(getValuesFromAbove(ops)));
  while (!worklist.empty()) {
    Value value = worklist.pop_back_val();
    if (!isRecomputable(value)) {
      // An einsum's buffer is passed as a pointer; the kernel recomputes
      // its sizes from the einsum's extents.
      if (auto einsum = value.getDefiningOp<EinsumOp>())
        for (Value extent : llvm::reverse(einsum.getOutputExtents()))
          worklist.push_back(extent);
      leaves.insert(value);
      continue;
    }
    for (Value operand : llvm::reverse(value.getDefiningOp()->getOperands()))
      worklist.push_back(operand);
  }
  for (Value value : leaves) {
    if (failed(checkPassable(value, ops)))
      return failure();
    captures.push_back(value);
  }
  return success();
}

/// Names the origin of a captured value for the manifest.
static std::string describeSource(Value value) {
  if (auto einsum = value.getDefiningOp<EinsumOp>()) {
    // Prologue kernels compute the kernel's einsums; the k-th one's result
    // lives in a workspace.
    unsigned index = 0;
    for (Operation &op : *einsum->getBlock()) {
      if (&op == einsum.getOperation())
        return "einsum:" + std::to_string(index);
      if (isa<EinsumOp>(op))
        ++index;
    }
  }
  // The rows' sink gradients and grad_reads sums, which the backward
  // writes into workspaces for the einsums after it.
  if (auto backward = value.getDefiningOp<AttentionBackwardOp>()) {
    if (value == backward.getSinkGrad())
      return "sink_grad";
    if (llvm::is_contained(backward.getReadGrads(), value))
      return "read_grad";
  }
  auto arg = dyn_cast<BlockArgument>(value);
  if (!arg)
    return "value";
  if (auto kernel = dyn_cast_or_null<KernelOp>(arg.getOwner()->getParentOp())) {
    unsigned index = arg.getArgNumber();
    if (index < kernel.getNumDims())
      return ("dim:" + cast<StringAttr>(kernel.getDimNames()[index]).getValue())
          .str();
    index -= kernel.getNumDims();
    if (index < kernel.getNumInputs())
      return ("input:" +
              cast<StringAttr>(kernel.getInputNames()[index]).getValue())
          .str();
    index -= kernel.getNumInputs();
    if (index < kernel.getNumParams())
      return ("param:" +
              cast<StringAttr>(kernel.getParamNames()[index]).getValue())
          .str();
  }
  return "arg:" + std::to_string(arg.getArgNumber());
}

static std::string printType(Type type) {
  std::string text;
  llvm::raw_string_ostream os(text);
  type.print(os);
  return text;
}

/// The parameter kind and type of a scalar of `type` (index is passed as
/// i64 so that the runtime needs no knowledge of the index width).
static std::pair<GpuKernelParam::Kind, Type> scalarParam(Type type) {
  MLIRContext *context = type.getContext();
  if (type.isF64())
    return {GpuKernelParam::Kind::F64, type};
  if (isa<FloatType>(type))
    return {GpuKernelParam::Kind::F32, Float32Type::get(context)};
  if (isa<IndexType>(type) || type.getIntOrFloatBitWidth() > 32)
    return {GpuKernelParam::Kind::I64, IntegerType::get(context, 64)};
  return {GpuKernelParam::Kind::I32, IntegerType::get(context, 32)};
}

void mlir::attn::appendCaptureParams(ArrayRef<Value> captures,
                                     GpuKernelSignature &signature,
                                     SmallVectorImpl<Type> &argTypes) {
  MLIRContext *context = captures.empty() ? nullptr
                                          : captures.front().getContext();
  for (auto [index, value] : llvm::enumerate(captures)) {
    GpuCapture capture;
    capture.source = describeSource(value);
    capture.firstParam = signature.params.size();
    std::string name = "capture." + std::to_string(index);
    if (auto tensor = dyn_cast<RankedTensorType>(value.getType())) {
      capture.isTensor = true;
      capture.rank = tensor.getRank();
      capture.elementType = printType(tensor.getElementType());
      capture.dense = value.getDefiningOp<EinsumOp>() != nullptr;
      signature.params.push_back({name, GpuKernelParam::Kind::Pointer});
      argTypes.push_back(LLVM::LLVMPointerType::get(context, 1));
      for (int64_t d = 0; !capture.dense && d < capture.rank; ++d) {
        signature.params.push_back(
            {name + ".size." + std::to_string(d), GpuKernelParam::Kind::I64});
        argTypes.push_back(IntegerType::get(context, 64));
      }
      for (int64_t d = 0; !capture.dense && d < capture.rank; ++d) {
        signature.params.push_back(
            {name + ".stride." + std::to_string(d), GpuKernelParam::Kind::I64});
        argTypes.push_back(IntegerType::get(context, 64));
      }
    } else {
      capture.elementType = printType(value.getType());
      auto [kind, type] = scalarParam(value.getType());
      signature.params.push_back({name, kind});
      argTypes.push_back(type);
    }
    signature.captures.push_back(std::move(capture));
  }
}

/// Casts a scalar parameter back to the type the region reads.
static Value castFromParam(OpBuilder &builder, Location loc, Value param,
                           Type type) {
  if (param.getType() == type)
    return param;
  if (isa<IndexType>(type))
    return arith::IndexCastOp::create(builder, loc, type, param);
  if (isa<FloatType>(type))
    return arith::TruncFOp::create(builder, loc, type, param);
  return arith::TruncIOp::create(builder, loc, type, param);
}

/// Clones the ops computing `value` (see isRecomputable) at `builder`'s
/// point, operands first.
static Value recompute(OpBuilder &builder, Value value, IRMapping &mapping) {
  if (Value mapped = mapping.lookupOrNull(value))
    return mapped;
  Operation *def = value.getDefiningOp();
  for (Value operand : def->getOperands())
    recompute(builder, operand, mapping);
  Operation *clone = builder.clone(*def, mapping);
  return clone->getResult(cast<OpResult>(value).getResultNumber());
}

void mlir::attn::mapCaptures(OpBuilder &builder, Location loc,
                             ArrayRef<Operation *> ops,
                             ArrayRef<Value> captures,
                             const GpuKernelSignature &signature,
                             ValueRange kernelArgs, IRMapping &mapping) {
  SmallVector<std::pair<Value, const GpuCapture *>> tensors;
  for (auto [value, capture] : llvm::zip(captures, signature.captures)) {
    if (capture.isTensor)
      tensors.push_back({value, &capture});
    else
      mapping.map(value, castFromParam(builder, loc,
                                       kernelArgs[capture.firstParam],
                                       value.getType()));
  }
  // A placeholder tensor whose operands are the pointer, sizes and strides;
  // lowerCapturedTensorAccesses rewrites its uses and erases it.
  Type i64 = builder.getI64Type();
  for (auto [value, capture] : tensors) {
    SmallVector<Value> operands = {kernelArgs[capture->firstParam]};
    if (!capture->dense) {
      llvm::append_range(operands, kernelArgs.slice(capture->firstParam + 1,
                                                    2 * capture->rank));
    } else {
      // Dense row-major over the einsum's output extents.
      SmallVector<Value> sizes, strides(capture->rank);
      for (Value extent : value.getDefiningOp<EinsumOp>().getOutputExtents())
        sizes.push_back(arith::IndexCastOp::create(
            builder, loc, i64, recompute(builder, extent, mapping)));
      Value stride =
          arith::ConstantOp::create(builder, loc, builder.getI64IntegerAttr(1));
      for (int64_t d = capture->rank - 1; d >= 0; --d) {
        strides[d] = stride;
        stride = arith::MulIOp::create(builder, loc, stride, sizes[d]);
      }
      llvm::append_range(operands, sizes);
      llvm::append_range(operands, strides);
    }
    auto placeholder = UnrealizedConversionCastOp::create(
        builder, loc, TypeRange{value.getType()}, operands);
    placeholder->setAttr("attn.captured_tensor", builder.getUnitAttr());
    mapping.map(value, placeholder.getResult(0));
  }
  for (Value value : getValuesFromAbove(ops))
    recompute(builder, value, mapping);
}

Value mlir::attn::inlineRegion(OpBuilder &builder, Region &region,
                               ValueRange args, const IRMapping &captures) {
  IRMapping mapping = captures;
  Block &block = region.front();
  for (auto [arg, value] : llvm::zip(block.getArguments(), args))
    mapping.map(arg, value);
  for (Operation &op : block.without_terminator())
    builder.clone(op, mapping);
  return mapping.lookup(block.getTerminator()->getOperand(0));
}

LogicalResult mlir::attn::lowerCapturedTensorAccesses(gpu::GPUFuncOp func,
                                                      bool trustInRangeReads) {
  SmallVector<UnrealizedConversionCastOp> placeholders;
  func.walk([&](UnrealizedConversionCastOp cast) {
    if (cast->hasAttr("attn.captured_tensor"))
      placeholders.push_back(cast);
  });
  for (UnrealizedConversionCastOp placeholder : placeholders) {
    auto type = cast<RankedTensorType>(placeholder.getResult(0).getType());
    int64_t rank = type.getRank();
    Value pointer = placeholder.getOperand(0);
    OperandRange sizes = placeholder.getOperands().slice(1, rank);
    OperandRange strides = placeholder.getOperands().slice(1 + rank, rank);
    for (Operation *user : llvm::make_early_inc_range(placeholder->getUsers())) {
      OpBuilder builder(user);
      Location loc = user->getLoc();
      if (auto dim = dyn_cast<tensor::DimOp>(user)) {
        std::optional<int64_t> index = dim.getConstantIndex();
        if (!index)
          return dim.emitError() << "attn-nvgpu: tensor.dim of a captured "
                                    "tensor needs a constant dim";
        dim.getResult().replaceAllUsesWith(arith::IndexCastOp::create(
            builder, loc, builder.getIndexType(), sizes[*index]));
        dim.erase();
        continue;
      }
      auto extract = dyn_cast<tensor::ExtractOp>(user);
      if (!extract)
        return user->emitError() << "attn-nvgpu: unsupported use of a "
                                    "captured tensor";
      Type i64 = builder.getI64Type();
      auto constant = [&](int64_t value) -> Value {
        return arith::ConstantOp::create(builder, loc,
                                         builder.getI64IntegerAttr(value));
      };
      Value offset = constant(0);
      // The package's constraints keep subscripts built from the indices
      // and dims in range (reads constrainSubscripts marked), but not ones
      // computed from params or tensor values (the CPU driver and the
      // reference refuse such launches): there a subscript outside the axis
      // reads its nearest element, never other memory.
      bool inRange =
          trustInRangeReads && extract->hasAttr(::attn::kInRangeReadAttr);
      for (auto [index, size, stride] :
           llvm::zip(extract.getIndices(), sizes, strides)) {
        Value wide = arith::IndexCastOp::create(builder, loc, i64, index);
        if (!inRange) {
          Value last = arith::SubIOp::create(builder, loc, size, constant(1));
          wide = arith::MaxSIOp::create(
              builder, loc, arith::MinSIOp::create(builder, loc, wide, last),
              constant(0));
        }
        Value term = arith::MulIOp::create(builder, loc, wide, stride);
        offset = arith::AddIOp::create(builder, loc, offset, term);
      }
      Type element = type.getElementType();
      // i1 tensors are stored one byte per element.
      Type stored = element.isInteger(1) ? builder.getI8Type() : element;
      Value address = LLVM::GEPOp::create(builder, loc, pointer.getType(),
                                          stored, pointer, ValueRange{offset});
      Value loaded = LLVM::LoadOp::create(
          builder, loc, stored, address,
          /*alignment=*/stored.getIntOrFloatBitWidth() / 8,
          /*isVolatile=*/false, /*isNonTemporal=*/false, /*isInvariant=*/true);
      if (stored != element) {
        Value zero = arith::ConstantOp::create(builder, loc,
                                               builder.getI8IntegerAttr(0));
        loaded = arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::ne,
                                       loaded, zero);
      }
      extract.getResult().replaceAllUsesWith(loaded);
      extract.erase();
    }
    placeholder.erase();
  }
  return success();
}
