//===- PrologueKernelBuilder.cpp - Kernel-level einsums on the GPU --------===//
//
// The attention may read tensors that the kernel body computes first with
// attn.einsum: the per-tile summaries of mask tensors that tile_class reads
// (document ids, block maps) and sink logits. On the GPU each becomes a
// buffer that prologue kernels fill before the attention runs. The same
// kernels compute the einsums after a backward (the per-head sum of the
// rows' sink gradients), into the gradients.
//
// An elementwise einsum gets one thread per element; a reduction gets one
// CTA per element, whose threads stride over the reduced points and combine
// through warp shuffles and shared memory (a summary over a whole sequence
// would otherwise be one thread's serial loop). Einsums that read no other
// einsum share the first kernel; one that reads another runs in a later
// kernel, so that stream order is the only synchronisation.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/SetVector.h"

#include <limits>

using namespace mlir;
using namespace mlir::attn;

namespace {

constexpr int64_t kWarps = kPrologueThreads / 32;
constexpr llvm::StringLiteral kReduceBufferName = "attn_prologue_partials";

/// The kernel (level) of every einsum: 0 when it reads no other einsum of
/// `einsums`, else one more than the latest one it reads.
SmallVector<unsigned> assignLevels(ArrayRef<EinsumOp> einsums) {
  llvm::DenseMap<Operation *, unsigned> levelOf;
  SmallVector<unsigned> levels;
  for (EinsumOp einsum : einsums) {
    llvm::SetVector<Value> read;
    getUsedValuesDefinedAbove(einsum.getBody(), einsum.getBody(), read);
    read.insert(einsum.getExtents().begin(), einsum.getExtents().end());
    unsigned level = 0;
    for (Value value : read)
      if (auto it = levelOf.find(value.getDefiningOp()); it != levelOf.end())
        level = std::max(level, it->second + 1);
    levelOf[einsum] = level;
    levels.push_back(level);
  }
  return levels;
}

class PrologueEmitter : KernelIRBuilder {
public:
  PrologueEmitter(OpBuilder &builder, Location loc, const IRMapping &captures)
      : KernelIRBuilder(builder, loc), captures(captures) {
    index = b.getIndexType();
  }

  /// Emits the code computing `einsum` into the buffer `output`.
  void emit(EinsumOp einsum, Value output);

private:
  Value ci(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value extent(Value value) { return captures.lookupOrDefault(value); }
  Value product(ValueRange extents) {
    Value total = ci(1);
    for (Value e : extents)
      total = mul(total, extent(e));
    return total;
  }
  /// The row-major multi-index of `linear` over `extents`.
  SmallVector<Value> delinearize(Value linear, ValueRange extents) {
    SmallVector<Value> indices(extents.size());
    for (int64_t d = extents.size() - 1; d >= 0; --d) {
      Value e = extent(extents[d]);
      indices[d] = d == 0 ? linear : remu(linear, e);
      linear = divu(linear, e);
    }
    return indices;
  }
  Value combine(ReductionKind kind, Value x, Value y) {
    switch (kind) {
    case ReductionKind::Min:
      return LLVM::MinNumOp::create(b, loc, x, y);
    case ReductionKind::Max:
      return LLVM::MaxNumOp::create(b, loc, x, y);
    default:
      return addf(x, y);
    }
  }
  Value identity(ReductionKind kind) {
    double inf = std::numeric_limits<double>::infinity();
    return cf(kind == ReductionKind::Min   ? inf
              : kind == ReductionKind::Max ? -inf
                                           : 0.0);
  }
  Value body(EinsumOp einsum, ValueRange indices) {
    return inlineRegion(b, einsum.getBody(), indices, captures);
  }
  void store(Value output, Value linear, Value value) {
    Value address =
        gep(output, f32, arith::IndexCastOp::create(b, loc, i64, linear));
    LLVM::StoreOp::create(b, loc, value, address, /*alignment=*/4);
  }
  void emitElementwise(EinsumOp einsum, Value output);
  void emitReduction(EinsumOp einsum, Value output);

  const IRMapping &captures;
  Type index;
};

} // namespace

void PrologueEmitter::emit(EinsumOp einsum, Value output) {
  if (einsum.getKind() == ReductionKind::None)
    emitElementwise(einsum, output);
  else
    emitReduction(einsum, output);
}

void PrologueEmitter::emitElementwise(EinsumOp einsum, Value output) {
  Value linear = add(mul(gpu::BlockIdOp::create(b, loc, gpu::Dimension::x),
                         ci(kPrologueThreads)),
                     gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x));
  Value inRange = cmpi(arith::CmpIPredicate::ult, linear,
                       product(einsum.getOutputExtents()));
  auto guard = scf::IfOp::create(b, loc, inRange, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(&guard.getThenRegion().front());
  store(output, linear,
        body(einsum, delinearize(linear, einsum.getOutputExtents())));
}

void PrologueEmitter::emitReduction(EinsumOp einsum, Value output) {
  ReductionKind kind = einsum.getKind();
  Value element = gpu::BlockIdOp::create(b, loc, gpu::Dimension::x);
  Value inRange = cmpi(arith::CmpIPredicate::ult, element,
                       product(einsum.getOutputExtents()));
  // Uniform per CTA, so the barriers below are reached by all threads.
  auto guard = scf::IfOp::create(b, loc, inRange, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(&guard.getThenRegion().front());
  SmallVector<Value> outputIndices =
      delinearize(element, einsum.getOutputExtents());
  Value reducedPoints = product(einsum.getReducedExtents());
  Value tid = gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
  auto loop =
      scf::ForOp::create(b, loc, tid, reducedPoints, ci(kPrologueThreads),
                         ValueRange{identity(kind)});
  {
    OpBuilder::InsertionGuard inLoop(b);
    b.setInsertionPointToStart(loop.getBody());
    SmallVector<Value> indices(outputIndices);
    llvm::append_range(indices, delinearize(loop.getInductionVar(),
                                            einsum.getReducedExtents()));
    scf::YieldOp::create(
        b, loc,
        combine(kind, loop.getRegionIterArgs()[0], body(einsum, indices)));
  }
  Value partial = loop.getResult(0);
  for (int64_t offset = 16; offset >= 1; offset /= 2)
    partial = combine(kind, partial,
                      gpu::ShuffleOp::create(b, loc, partial, c32(offset),
                                             c32(32), gpu::ShuffleMode::XOR)
                          .getShuffleResult());

  // One partial per warp through shared memory; thread 0 combines them.
  Value buffer =
      LLVM::AddressOfOp::create(b, loc, sharedPtr, kReduceBufferName);
  Value tid32 = arith::IndexCastOp::create(b, loc, i32, tid);
  Value warp = arith::ShRUIOp::create(b, loc, tid32, c32(5));
  Value isLaneZero =
      cmpi(arith::CmpIPredicate::eq,
           arith::AndIOp::create(b, loc, tid32, c32(31)), c32(0));
  auto writePartial = scf::IfOp::create(b, loc, isLaneZero, false);
  {
    OpBuilder::InsertionGuard inIf(b);
    b.setInsertionPointToStart(&writePartial.getThenRegion().front());
    LLVM::StoreOp::create(b, loc, partial, gep(buffer, f32, warp), 4);
  }
  gpu::BarrierOp::create(b, loc);
  auto finish = scf::IfOp::create(
      b, loc, cmpi(arith::CmpIPredicate::eq, tid32, c32(0)), false);
  {
    OpBuilder::InsertionGuard inIf(b);
    b.setInsertionPointToStart(&finish.getThenRegion().front());
    Value result = identity(kind);
    for (int64_t w = 0; w < kWarps; ++w)
      result = combine(
          kind, result,
          LLVM::LoadOp::create(b, loc, f32, gep(buffer, f32, c32(w)), 4));
    if (kind == ReductionKind::Mean)
      result = arith::DivFOp::create(
          b, loc, result,
          arith::UIToFPOp::create(
              b, loc, f32,
              arith::IndexCastOp::create(b, loc, i32, reducedPoints)));
    store(output, element, result);
  }
  // The buffer is reused by the next reduction of the kernel.
  gpu::BarrierOp::create(b, loc);
}

std::vector<EinsumOp> mlir::attn::getPrologueEinsums(AttentionOp op) {
  std::vector<EinsumOp> einsums;
  for (Operation &before : *op->getBlock()) {
    if (&before == op.getOperation())
      break;
    if (auto einsum = dyn_cast<EinsumOp>(before))
      einsums.push_back(einsum);
  }
  return einsums;
}

std::vector<EinsumOp> mlir::attn::getEpilogueEinsums(AttentionBackwardOp op) {
  std::vector<EinsumOp> einsums;
  for (Operation *after = op->getNextNode(); after;
       after = after->getNextNode())
    if (auto einsum = dyn_cast<EinsumOp>(after))
      einsums.push_back(einsum);
  return einsums;
}

int64_t mlir::attn::getPrologueElementsPerBlock(EinsumOp op) {
  return op.getKind() == ReductionKind::None ? kPrologueThreads : 1;
}

FailureOr<gpu::GPUModuleOp> mlir::attn::buildPrologueGpuModule(
    OpBuilder &builder, ArrayRef<EinsumOp> einsums, StringRef moduleName,
    StringRef kernelPrefix, std::vector<GpuPrologueKernel> &kernels) {
  for (EinsumOp einsum : einsums) {
    auto type = cast<RankedTensorType>(einsum.getType());
    if (!type.getElementType().isF32())
      return einsum.emitError()
             << "attn-nvgpu: a prologue einsum of " << type.getElementType()
             << " elements (only f32 is supported)";
    if (einsum.getKind() == ReductionKind::LogSumExp)
      return einsum.emitError()
             << "attn-nvgpu: a prologue einsum reducing with logsumexp";
  }
  MLIRContext *context = builder.getContext();
  Location loc = einsums.front()->getLoc();
  auto module = gpu::GPUModuleOp::create(builder, loc, moduleName);
  OpBuilder::InsertionGuard insertion(builder);
  builder.setInsertionPointToStart(module.getBody());
  LLVM::GlobalOp::create(builder, loc,
                         LLVM::LLVMArrayType::get(builder.getF32Type(), kWarps),
                         /*isConstant=*/false, LLVM::Linkage::Internal,
                         kReduceBufferName, Attribute(), /*alignment=*/4,
                         /*addrSpace=*/3);

  SmallVector<unsigned> levels = assignLevels(einsums);
  unsigned numLevels = *llvm::max_element(levels) + 1;
  kernels.clear();
  for (unsigned level = 0; level < numLevels; ++level) {
    GpuPrologueKernel kernel;
    kernel.name = (kernelPrefix + Twine(level)).str();
    SmallVector<Operation *> ops;
    for (auto [position, einsum] : llvm::enumerate(einsums))
      if (levels[position] == level) {
        kernel.einsums.push_back(position);
        ops.push_back(einsum);
      }
    SmallVector<Value> captureValues;
    if (failed(collectCaptures(ops, captureValues)))
      return failure();
    SmallVector<Type> argTypes;
    auto globalPtr = LLVM::LLVMPointerType::get(context, 1);
    for (unsigned position : kernel.einsums) {
      kernel.signature.params.push_back(
          {"out." + std::to_string(position), GpuKernelParam::Kind::Pointer});
      argTypes.push_back(globalPtr);
    }
    appendCaptureParams(captureValues, kernel.signature, argTypes);

    builder.setInsertionPointToEnd(module.getBody());
    auto func = gpu::GPUFuncOp::create(builder, loc, kernel.name,
                                       builder.getFunctionType(argTypes, {}));
    func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                  builder.getUnitAttr());
    func.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr(
        {static_cast<int32_t>(kPrologueThreads), 1, 1}));
    Block &entry = func.getBody().front();
    OpBuilder::InsertionGuard inFunc(builder);
    builder.setInsertionPointToStart(&entry);
    IRMapping captures;
    mapCaptures(builder, loc, ops, captureValues, kernel.signature,
                entry.getArguments(), captures);
    PrologueEmitter emitter(builder, loc, captures);
    for (auto [output, op] : llvm::enumerate(ops))
      emitter.emit(cast<EinsumOp>(op), entry.getArgument(output));
    gpu::ReturnOp::create(builder, loc);
    if (failed(lowerCapturedTensorAccesses(func)) ||
        failed(lowerMathForNVPTX(func)))
      return failure();
    kernels.push_back(std::move(kernel));
  }
  return module;
}
