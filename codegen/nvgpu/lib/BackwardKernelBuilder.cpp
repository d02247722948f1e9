//===- BackwardKernelBuilder.cpp - The attention backward's kernels -------===//
//
// What the kernels of an attn.attention_backward share (indices, addresses,
// products on mma.sync or wgmma, tile classes and the live-block scan, the
// rows' statistics, the weights and score adjoints with the inlined
// score_mod, mask and their derivative, gradient stores), and the entry
// points that build their gpu.module. BackwardKernelEmitter.h describes the
// kernels.
//
//===----------------------------------------------------------------------===//

#include "BackwardKernelEmitter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

void BackwardEmitter::emitIndices(gpu::Dimension rowsAxis,
                                  bool firstBlocksFirst) {
  emitThreadIndices();
  warpGroup = divu(warp, c32(kBackwardWarps));
  blockIndex = firstBlocksFirst ? blockIndexAlong(rowsAxis)
                                : lastFirstBlockIndexAlong(rowsAxis);
  headOrGroup = blockIndexAlong(gpu::Dimension::y);
  batch = blockIndexAlong(gpu::Dimension::z);
  batchIdx = toIndex(batch);
  sizeM = arg(FixedParam::M);
  sizeN = arg(FixedParam::N);
  groupSize = divu(arg(FixedParam::H), arg(FixedParam::G));
  scale = arg(FixedParam::Scale);
  smem = LLVM::AddressOfOp::create(b, loc, sharedPtr, "attn_smem");
  if (shape.wgmma) {
    // The swizzle repeats every 1024 bytes: tiles start on such a boundary.
    Value raw = sharedAddressOf(smem);
    Value aligned =
        arith::AndIOp::create(b, loc, add(raw, c32(kSwizzleAtomBytes - 1)),
                              c32(~(kSwizzleAtomBytes - 1)));
    smem = gep(smem, b.getI8Type(), sub(aligned, raw));
  }
}

/// Element offset of row 0 of (batch, `headIndex`) in a tensor whose batch
/// and head strides are the given params.
Value BackwardEmitter::rowOffset(FixedParam strideB, FixedParam strideH,
                                 Value headIndex) {
  return add(mul(ext64(batch), arg(strideB)),
             mul(ext64(headIndex), arg(strideH)));
}

/// Offset of (batch, head, row) in LSE and Delta (laid out alike).
Value BackwardEmitter::statisticOffset(Value headIndex, Value row) {
  return add(add(mul(ext64(batch), arg(FixedParam::LseStrideB)),
                 mul(ext64(headIndex), arg(FixedParam::LseStrideH))),
             ext64(row));
}

Value BackwardEmitter::loadSinkLogit(Value headIndex, Value row) {
  Value offset = add(add(mul(ext64(batch), arg(FixedParam::SinkStrideB)),
                         mul(ext64(headIndex), arg(FixedParam::SinkStrideH))),
                     mul(ext64(row), arg(FixedParam::SinkStrideM)));
  return LLVM::LoadOp::create(b, loc, f32,
                              gep(arg(FixedParam::Sink), f32, offset), 4);
}

Value BackwardEmitter::aAddress(Value tile, int64_t pitch, Value firstRow) {
  Value row = add(firstRow, arith::AndIOp::create(b, loc, lane, c32(15)));
  Value col = mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8));
  return gep(tile, elementType, add(mul(row, c32(pitch)), col));
}

Value BackwardEmitter::bAddress(Value tile, int64_t pitch) {
  Value row = add(arith::AndIOp::create(b, loc, lane, c32(7)),
                  mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8)));
  Value col = mul(arith::AndIOp::create(
                      b, loc, arith::ShRUIOp::create(b, loc, lane, c32(3)),
                      c32(1)),
                  c32(8));
  return gep(tile, elementType, add(mul(row, c32(pitch)), col));
}

Value BackwardEmitter::bTransposedAddress(Value tile, int64_t pitch) {
  return aAddress(tile, pitch, c32(0));
}

void BackwardEmitter::multiply(
    MutableArrayRef<Value> acc, int64_t kSteps, int64_t nTiles,
    function_ref<SmallVector<Value, 4>(int64_t)> aFragment, Value bAddr,
    int64_t pitch, bool transposed) {
  for (int64_t kk = 0; kk < kSteps; ++kk) {
    SmallVector<Value, 4> a = aFragment(kk);
    for (int64_t jp = 0; jp < nTiles / 2; ++jp) {
      int64_t offset = transposed ? 16 * kk * pitch + 16 * jp
                                  : 16 * jp * pitch + 16 * kk;
      SmallVector<Value, 4> bf =
          ldmatrix(gep(bAddr, elementType, c32(offset)), transposed);
      for (int64_t half = 0; half < 2; ++half) {
        MutableArrayRef<Value> tile = acc.slice(4 * (2 * jp + half), 4);
        llvm::copy(mma(a, {bf[2 * half], bf[2 * half + 1]}, tile),
                   tile.begin());
      }
    }
  }
}

void BackwardEmitter::issueWgmma(
    MutableArrayRef<Value> acc, int64_t kSteps, ArrayRef<Value> aTiles,
    function_ref<SmallVector<Value, 4>(int64_t)> aFragment, Value bTile,
    int64_t bRows, bool contractRows, bool overwrite) {
  SmallVector<Value> operands(acc.begin(), acc.end());
  if (aTiles.empty())
    for (int64_t kk = 0; kk < kSteps; ++kk)
      llvm::append_range(operands, aFragment(kk));
  operands = fenceOperands(b, loc, operands);
  llvm::copy(ArrayRef<Value>(operands).take_front(acc.size()), acc.begin());
  ArrayRef<Value> fragments = ArrayRef<Value>(operands).drop_front(acc.size());
  Value bAddress = addressInLoop(bTile);
  auto bOperand = [&](int64_t kk) {
    return contractRows ? mnMajorOperand(bAddress, bRows, kk)
                        : kMajorOperand(bAddress, bRows, kk);
  };
  wgmmaFence();
  // The first product of an overwritten accumulator ignores its registers.
  bool accumulate = !overwrite;
  for (Value aTile : aTiles) {
    Value aAddress = addressInLoop(aTile);
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      wgmma(acc, kMajorOperand(aAddress, shape.ownedRows(), kk), {},
            bOperand(kk), /*transposeB=*/contractRows, accumulate);
      accumulate = true;
    }
  }
  if (aTiles.empty())
    for (int64_t kk = 0; kk < kSteps; ++kk) {
      wgmma(acc, Value(), fragments.slice(4 * kk, 4), bOperand(kk),
            /*transposeB=*/contractRows, accumulate);
      accumulate = true;
    }
  wgmmaCommit();
}

SmallVector<Value> BackwardEmitter::freshAccumulators(int64_t count) {
  return SmallVector<Value>(count, LLVM::PoisonOp::create(b, loc, f32));
}

void BackwardEmitter::completeWgmma(ArrayRef<MutableArrayRef<Value>> accs) {
  wgmmaWait(0);
  for (MutableArrayRef<Value> acc : accs)
    llvm::copy(fenceOperands(b, loc, acc), acc.begin());
}

void BackwardEmitter::waitForTiles(int64_t pending) {
  NVVM::CpAsyncWaitGroupOp::create(b, loc, pending);
  if (shape.wgmma)
    asyncProxyFence();
  gpu::BarrierOp::create(b, loc);
}

SmallVector<Value, 4> BackwardEmitter::packedFragment(ArrayRef<Value> acc,
                                                      int64_t kk) {
  const int64_t t0 = 4 * 2 * kk, t1 = t0 + 4;
  return {pack(acc[t0], acc[t0 + 1]), pack(acc[t0 + 2], acc[t0 + 3]),
          pack(acc[t1], acc[t1 + 1]), pack(acc[t1 + 2], acc[t1 + 3])};
}

/// The class of the tile of queries [mFirst, mLast] x keys [nFirst, nLast]
/// (clamped into the problem by the caller): 0 empty, 1 partial, 2 full.
Value BackwardEmitter::tileClass(Value headIndex, Value mFirst, Value mLast,
                                 Value nFirst, Value nLast) {
  if (!op.hasTileClass())
    return c32(op.hasTrivialMask() ? 2 : 1);
  return inlineRegion(b, op.getTileClass(),
                      {batchIdx, toIndex(headIndex), toIndex(mFirst),
                       toIndex(mLast), toIndex(nFirst), toIndex(nLast)},
                      captures);
}

/// The first block at or after `from` whose class is not empty, and its
/// class; `numBlocks` and 0 when there is none. Uniform over the CTA.
/// Each lane classifies one of 32 consecutive blocks and a ballot picks the
/// first live one: a document mask leaves long runs of empty blocks, and a
/// block-by-block scan would pay one dependent load of the tile summaries
/// per block. Every warp computes the same answer.
std::pair<Value, Value> BackwardEmitter::findLiveBlock(
    Value from, Value numBlocks, function_ref<Value(Value)> classOfBlock) {
  if (!op.hasTileClass()) {
    Value inRange = cmpi(arith::CmpIPredicate::slt, from, numBlocks);
    return {from, select(inRange, tileClass(Value(), Value(), Value(), Value(),
                                            Value()),
                         c32(0))};
  }
  // State: the first block of the next group of 32, the live block found
  // (numBlocks until one is), its class (0 until then).
  auto scan = scf::WhileOp::create(
      b, loc, TypeRange{i32, i32, i32}, ValueRange{from, numBlocks, c32(0)},
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value more = cmpi(arith::CmpIPredicate::slt, state[0], numBlocks);
        Value notFound = cmpi(arith::CmpIPredicate::eq, state[2], c32(0));
        scf::ConditionOp::create(
            b, loc, arith::AndIOp::create(b, loc, more, notFound), state);
      },
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value block = add(state[0], lane);
        Value inRange = cmpi(arith::CmpIPredicate::slt, block, numBlocks);
        auto ifInRange = scf::IfOp::create(b, loc, TypeRange{i32}, inRange,
                                           /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard inner(b);
          b.setInsertionPointToStart(ifInRange.thenBlock());
          scf::YieldOp::create(b, loc, classOfBlock(block));
          b.setInsertionPointToStart(ifInRange.elseBlock());
          scf::YieldOp::create(b, loc, c32(0));
        }
        Value blockClass = ifInRange.getResult(0);
        Value live = cmpi(arith::CmpIPredicate::ne, blockClass, c32(0));
        Value ballot = NVVM::VoteSyncOp::create(b, loc, i32, c32(-1), live,
                                                NVVM::VoteSyncKind::ballot);
        // 32 when no lane found one: then the shuffle reads lane 0's 0.
        Value firstLane = LLVM::CountTrailingZerosOp::create(
            b, loc, i32, ballot, /*is_zero_poison=*/false);
        Value any = cmpi(arith::CmpIPredicate::ne, ballot, c32(0));
        Value firstClass =
            gpu::ShuffleOp::create(b, loc, blockClass,
                                   select(any, firstLane, c32(0)), c32(32),
                                   gpu::ShuffleMode::IDX)
                .getShuffleResult();
        scf::YieldOp::create(
            b, loc,
            ValueRange{add(state[0], c32(32)),
                       select(any, add(state[0], firstLane), numBlocks),
                       select(any, firstClass, c32(0))});
      });
  return {scan.getResult(1), scan.getResult(2)};
}

BackwardEmitter::RowStatistics
BackwardEmitter::rowStatistics(Value row, StatisticSlots slots) {
  RowStatistics stats;
  stats.inRange = cmpi(arith::CmpIPredicate::slt, row, sizeM);
  Value clamped = minsi(row, sub(sizeM, c32(1)));
  stats.index = toIndex(clamped);
  if (readsStatistic()) {
    auto [lse, delta] = slots(clamped);
    stats.shift = normalizer.shiftForLogDenominator(
        b, loc, LLVM::LoadOp::create(b, loc, f32, lse, 4));
    stats.delta = LLVM::LoadOp::create(b, loc, f32, delta, 4);
  }
  return stats;
}

BackwardEmitter::RowStatistics
BackwardEmitter::loadRowStatistics(Value head, Value row, bool splitDelta) {
  return rowStatistics(row, [&](Value clamped) {
    Value offset = statisticOffset(head, clamped);
    Value delta = gep(arg(FixedParam::Delta), f32, offset);
    if (splitDelta)
      delta = gep(delta, f32, deltaPlaneOffset());
    return std::make_pair(gep(arg(FixedParam::Lse), f32, offset), delta);
  });
}

BackwardEmitter::ScoreAdjoint BackwardEmitter::emitWeightAndAdjoint(
    Value product, Value dp, Value head, Value m, Value n, Value inRange,
    bool full, const RowStatistics &row, bool withReadTerm) {
  Value keep = inRange;
  if (!full)
    keep = arith::AndIOp::create(
        b, loc, keep,
        inlineRegion(b, op.getMask(), {batchIdx, head, m, n}, captures));
  Value s = mulf(product, scale), derivative, readDerivative;
  if (!op.hasTrivialScoreMod()) {
    // The derivative's clone reads from above through `captures`.
    FailureOr<ScoreModValues> values = emitScoreModDerivative(
        b, op.getScoreModBlock(), {s, batchIdx, head, m, n}, &captures,
        withReadTerm ? op.getGradReads() : ArrayRef<int64_t>());
    assert(succeeded(values) && "checked by checkGpuBackwardSupport");
    s = values->score;
    derivative = values->derivative;
    if (withReadTerm)
      readDerivative = values->readDerivatives.front();
  }
  Value p = s;
  if (readsStatistic())
    p = normalizer.weight(b, loc, row.shift, s);
  Value ds = normalizer.getScoreAdjoint(b, loc, p, s, dp, row.delta);
  Value zero = cf(0.0);
  ScoreAdjoint result;
  if (readDerivative) {
    result.readTerm = select(keep, mulf(ds, readDerivative), zero);
    // dS' is affine in Delta: its slope is the adjoint at dP = 1, Delta = 0.
    if (readsStatistic())
      result.readDeltaCoefficient = select(
          keep,
          mulf(normalizer.getScoreAdjoint(b, loc, p, s, cf(1.0), zero),
               readDerivative),
          zero);
  }
  if (derivative)
    ds = mulf(ds, derivative);
  result.weight = select(keep, p, zero);
  result.scoreAdjoint = select(keep, ds, zero);
  return result;
}

/// Stores the f32 rows of a 16-row accumulator tile of each warp (`cols`
/// columns) times `factor`, rows firstRow + 16 warp + ... below `rowLimit`,
/// at `rowBase` + row * stride.
void BackwardEmitter::storeGradient(ArrayRef<Value> acc, int64_t cols,
                                    Value factor, Value rowBase,
                                    FixedParam rowStride, Value firstRow,
                                    Value rowLimit) {
  auto pairType = VectorType::get({2}, f32);
  for (int64_t r = 0; r < 2; ++r) {
    Value row = add(add(firstRow, mul(warp, c32(16))),
                    add(quadRow, c32(8 * r)));
    auto ifRow = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, row, rowLimit),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifRow.thenBlock());
    Value rowPtr =
        gep(rowBase, f32,
            add(mul(ext64(row), arg(rowStride)), ext64(mul(quadCol, c32(2)))));
    // Pairs of adjacent columns, 4-byte aligned: a gradient's base and row
    // stride may be odd multiples of 4 bytes.
    for (int64_t j = 0; j < cols / 8; ++j) {
      Value pair = vector::FromElementsOp::create(
          b, loc, pairType,
          ValueRange{mulf(acc[slot(j, r, 0)], factor),
                     mulf(acc[slot(j, r, 1)], factor)});
      LLVM::StoreOp::create(b, loc, pair, gep(rowPtr, f32, c32(8 * j)), 4);
    }
  }
}

//===----------------------------------------------------------------------===//
// Entry points.
//===----------------------------------------------------------------------===//

/// 64 streamed rows at D, E <= 64; at 128, 32 keep the products' results
/// within the registers beside the gradient accumulators, and 16 where the
/// mask or score_mod reads tensors, whose loads need registers too
/// (calibrated with ptxas on the examples).
static bool regionsReadTensors(AttentionBackwardOp op) {
  bool readsTensors = false;
  for (Region *region : {&op.getScoreMod(), &op.getMask()})
    region->walk([&](Operation *nested) {
      readsTensors |= isa<ReadOp, tensor::ExtractOp>(nested);
    });
  return readsTensors;
}

static int64_t chooseStreamRows(AttentionBackwardOp op) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  if (query.getDimSize(3) <= 64 && value.getDimSize(3) <= 64)
    return 64;
  return regionsReadTensors(op) ? 16 : 32;
}

bool mlir::attn::backwardSplitsOutputGrad(AttentionBackwardOp op) {
  return !op.getGradReads().empty() &&
         cast<RankedTensorType>(op.getOutputGrad().getType())
             .getElementType()
             .isF32();
}

LogicalResult mlir::attn::checkGpuBackwardSupport(AttentionBackwardOp op) {
  if (op.getNormalizer() == Normalizer::Normalize &&
      op.getMap() == WeightMap::Identity)
    return op.emitError() << "attn-nvgpu: the GPU backward supports softmax, "
                             "normalize with a weight map and none";
  if (op.getGradReads().size() > 1)
    return op.emitError() << "attn-nvgpu: the GPU backward sums the gradient "
                             "of one tensor score_mod reads, not "
                          << op.getGradReads().size()
                          << "; hold the others constant (--grad-constant) "
                             "or run on the CPU";
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  Type element = query.getElementType();
  if (!element.isBF16() && !element.isF16())
    return op.emitError() << "attn-nvgpu: Q, K and V must hold bf16 or f16, "
                             "got "
                          << element;
  int64_t d = query.getDimSize(3), e = value.getDimSize(3);
  if (ShapedType::isDynamic(d) || ShapedType::isDynamic(e))
    return op.emitError() << "attn-nvgpu: the head dims D and E must be "
                             "static";
  if (d % 16 != 0 || d > 128 || e % 16 != 0 || e > 128)
    return op.emitError() << "attn-nvgpu: the GPU backward needs D and E "
                             "multiples of 16, at most 128; got D = "
                          << d << ", E = " << e;
  Type doElement =
      cast<RankedTensorType>(op.getOutputGrad().getType()).getElementType();
  if (!doElement.isF32() && !doElement.isBF16() && !doElement.isF16())
    return op.emitError() << "attn-nvgpu: dO must hold f32, bf16 or f16";
  // Every op of score_mod must have a derivative rule: build it once on a
  // scratch block.
  if (!op.hasTrivialScoreMod()) {
    OpBuilder scratch(op.getContext());
    Block *block = new Block();
    Block &scoreMod = op.getScoreModBlock();
    for (BlockArgument arg : scoreMod.getArguments())
      block->addArgument(arg.getType(), arg.getLoc());
    scratch.setInsertionPointToStart(block);
    FailureOr<ScoreModValues> values =
        emitScoreModDerivative(scratch, scoreMod, block->getArguments());
    // Clones read values from above; drop them before the block.
    block->dropAllDefinedValueUses();
    for (Operation &nested : llvm::make_early_inc_range(llvm::reverse(*block)))
      nested.erase();
    delete block;
    if (failed(values))
      return failure();
  }
  return success();
}

FailureOr<gpu::GPUModuleOp>
mlir::attn::buildBackwardGpuModule(OpBuilder &builder, AttentionBackwardOp op,
                                   StringRef moduleName, StringRef kernelPrefix,
                                   const GpuOptions &options,
                                   GpuBackwardKernels &kernels) {
  if (failed(checkGpuBackwardSupport(op)))
    return failure();
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  BackwardShape shape{query.getDimSize(3), value.getDimSize(3), 0};
  // The swizzled layout holds 64-column chunks.
  shape.wgmma = options.usesWgmma() && shape.headDim % 64 == 0 &&
                shape.valueDim % 64 == 0;
  shape.lowPartTile = shape.wgmma && backwardSplitsOutputGrad(op);
  // dQ from the dK/dV kernel, unless asked for the same bits on every run
  // or the dQ kernel's row sums are needed (grad_reads); 64 queries per
  // block keep dQ's product on whole wgmma rows.
  shape.fusedQuery =
      shape.wgmma && !options.deterministic && op.getGradReads().empty();
  // Measured on an H200: deferred, a block's dQ runs beside the next
  // block's Sᵀ, 2-5% faster; but where the regions' tensor loads need
  // registers too (document masks), the registers dQ then holds longer
  // spill, 6% slower.
  shape.deferQueryGrad = shape.fusedQuery && !regionsReadTensors(op);
  shape.queryGradMap = shape.fusedQuery && options.queryGradTensorMap;
  shape.streamMaps = shape.fusedQuery && options.streamTensorMaps;
  shape.streamRows = shape.fusedQuery ? 64 : chooseStreamRows(op);
  Type elementType = query.getElementType();
  KernelModuleBuilder module(builder, op, kernels.signature);
  FailureOr<gpu::GPUModuleOp> gpuModule =
      module.create(moduleName, /*tensorMaps=*/shape.tensorMaps());
  if (failed(gpuModule))
    return failure();
  kernels.preprocessName = (kernelPrefix + "_pre").str();
  kernels.keyValueName = (kernelPrefix + "_dkdv").str();
  kernels.queryName =
      shape.fusedQuery ? std::string() : (kernelPrefix + "_dq").str();
  kernels.queryBlock = kWarpGroupRows;
  kernels.keyBlock = shape.ownedRows();
  kernels.preprocessThreads = kernels.queryThreads = 32 * kBackwardWarps;
  kernels.keyValueThreads = 32 * shape.keyValueWarps();
  // At D = E = 128 the fused kernel takes all of a Hopper CTA's 227 KiB.
  assert(shape.sharedBytes() <= 227 * 1024 && "more shared memory than a CTA");
  kernels.keyValueSharedBytes = kernels.querySharedBytes = shape.sharedBytes();
  using TensorMap = GpuBackwardKernels::TensorMap;
  kernels.tensorMaps.clear();
  if (shape.queryGradMap)
    kernels.tensorMaps.push_back({TensorMap::Of::QueryGrad, shape.stream(),
                                  BackwardShape::kQueryGradBoxColumns});
  if (shape.streamMaps) {
    // A swizzled chunk of 64 16-bit columns per box.
    kernels.tensorMaps.push_back({TensorMap::Of::Query, shape.stream(), 64});
    kernels.tensorMaps.push_back(
        {TensorMap::Of::OutputGrad16, shape.stream(), 64});
  }
  auto add = [&](StringRef name, int64_t threads,
                 void (BackwardEmitter::*emit)()) {
    return module.addRegionKernel(
        name, threads, [&](ValueRange args, const IRMapping &captures) {
          BackwardEmitter emitter(builder, op.getLoc(), op, shape, elementType,
                                  threads / 32, args, captures);
          (emitter.*emit)();
        });
  };
  if (failed(add(kernels.preprocessName, kernels.preprocessThreads,
                 &BackwardEmitter::emitPreprocess)) ||
      failed(add(kernels.keyValueName, kernels.keyValueThreads,
                 &BackwardEmitter::emitKeyValue)))
    return failure();
  if (!kernels.queryName.empty() &&
      failed(add(kernels.queryName, kernels.queryThreads,
                 &BackwardEmitter::emitQuery)))
    return failure();
  return gpuModule;
}
