//===- LaneKernels.cpp - Micro-kernels with one row per vector lane -------===//

#include "LaneKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

LaneKernelBuilder::LaneKernelBuilder(Operation *anchor, int64_t lanes)
    : b(anchor), loc(anchor->getLoc()), lanes(lanes),
      laneType(VectorType::get({lanes}, b.getF32Type())) {}

Value LaneKernelBuilder::index(int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value LaneKernelBuilder::f32(float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

Value LaneKernelBuilder::splat(float v) {
  return arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(laneType, b.getF32FloatAttr(v)));
}

Value LaneKernelBuilder::addIndex(Value x, Value y) {
  return arith::AddIOp::create(b, loc, x, y);
}

Value LaneKernelBuilder::subIndex(Value x, Value y) {
  return arith::SubIOp::create(b, loc, x, y);
}

Value LaneKernelBuilder::minIndex(Value x, Value y) {
  return arith::MinSIOp::create(b, loc, x, y);
}

Value LaneKernelBuilder::dimOf(Value buffer, int64_t axis) {
  auto type = cast<MemRefType>(buffer.getType());
  if (!type.isDynamicDim(axis))
    return index(type.getDimSize(axis));
  return memref::DimOp::create(b, loc, buffer, axis);
}

Value LaneKernelBuilder::loadF32(Value buffer, ValueRange indices) {
  Value value = memref::LoadOp::create(b, loc, buffer, indices);
  if (!value.getType().isF32())
    value = arith::ExtFOp::create(b, loc, b.getF32Type(), value);
  return value;
}

Value LaneKernelBuilder::toBuffer(Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return bufferization::ToBufferOp::create(b, loc, memrefType, tensor,
                                           /*read_only=*/true);
}

Value LaneKernelBuilder::allocResult(RankedTensorType type,
                                     ArrayRef<Value> sizes) {
  SmallVector<Value> dynamic;
  for (auto [axis, size] : llvm::enumerate(sizes))
    if (type.isDynamicDim(axis))
      dynamic.push_back(size);
  auto memrefType = MemRefType::get(type.getShape(), type.getElementType());
  return memref::AllocOp::create(b, loc, memrefType, dynamic);
}

Value LaneKernelBuilder::laneScratch(Value rows) {
  std::optional<int64_t> size = getConstantIntValue(rows);
  auto type = MemRefType::get({size ? *size : ShapedType::kDynamic, lanes},
                              b.getF32Type());
  return memref::AllocaOp::create(b, loc, type,
                                  size ? ValueRange{} : ValueRange{rows});
}

Value LaneKernelBuilder::wideScratch(Value buffer, Value width, int64_t rows) {
  if (cast<MemRefType>(buffer.getType()).getElementType().isF32())
    return Value();
  std::optional<int64_t> size = getConstantIntValue(width);
  auto type = MemRefType::get({rows, size ? *size : ShapedType::kDynamic},
                              b.getF32Type());
  return memref::AllocaOp::create(b, loc, type,
                                  size ? ValueRange{} : ValueRange{width});
}

scf::ForOp LaneKernelBuilder::forLoop(
    Value ub, int64_t step, ValueRange inits,
    function_ref<SmallVector<Value>(Value iv, ValueRange args)> body) {
  auto loop = scf::ForOp::create(b, loc, index(0), ub, index(step), inits);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  SmallVector<Value> results =
      body(loop.getInductionVar(), loop.getRegionIterArgs());
  // ForOp's builder adds an empty yield only when there are no iter args.
  if (inits.empty())
    return loop;
  scf::YieldOp::create(b, loc, results);
  return loop;
}

Value LaneKernelBuilder::emitHeadsPerGroup(Value heads, Value kvHeads) {
  Value one = index(1);
  return arith::MaxUIOp::create(
      b, loc,
      arith::DivUIOp::create(b, loc, heads,
                             arith::MaxUIOp::create(b, loc, kvHeads, one)),
      one);
}

Value LaneKernelBuilder::isNonEmptyTile(Value tileClass) {
  return arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ne, tileClass,
      arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(0)));
}

Value LaneKernelBuilder::isFullTile(Value tileClass, Value rows,
                                    int64_t tileRows) {
  return arith::AndIOp::create(
      b, loc,
      arith::CmpIOp::create(
          b, loc, arith::CmpIPredicate::eq, tileClass,
          arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(2))),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, rows,
                            index(tileRows)));
}

FailureOr<Value>
LaneKernelBuilder::emitKeptLanes(Block *mask, ArrayRef<LaneValue> args,
                                 Value inRange,
                                 const DenseMap<Value, Value> &buffers) {
  LaneValue keep{inRange, false};
  if (mask) {
    FailureOr<LaneValue> predicate =
        cloneAlongLanes(b, *mask, args, lanes, buffers);
    if (failed(predicate))
      return failure();
    keep = {arith::AndIOp::create(b, loc,
                                  broadcastToLanes(b, loc, *predicate, lanes),
                                  broadcastToLanes(b, loc, keep, lanes)),
            true};
  }
  return broadcastToLanes(b, loc, keep, lanes);
}

LaneTile LaneKernelBuilder::emitParallelLaneTiles(Value batch, Value heads,
                                                 Value rows) {
  Value tiles = arith::CeilDivUIOp::create(b, loc, rows, index(lanes));
  auto parallel = scf::ParallelOp::create(
      b, loc, ValueRange{index(0), index(0), index(0)},
      ValueRange{batch, heads, tiles},
      ValueRange{index(1), index(1), index(1)});
  b.setInsertionPointToStart(parallel.getBody());
  LaneTile tile;
  tile.loop = parallel;
  tile.batch = parallel.getInductionVars()[0];
  tile.head = parallel.getInductionVars()[1];
  tile.first = arith::MulIOp::create(b, loc, parallel.getInductionVars()[2],
                                     index(lanes));
  tile.lastRow = subIndex(rows, index(1));
  tile.lastInTile =
      minIndex(addIndex(tile.first, index(lanes - 1)), tile.lastRow);
  tile.laneRows = laneIndices(tile.first, tile.lastRow);
  tile.count =
      subIndex(minIndex(addIndex(tile.first, index(lanes)), rows), tile.first);
  return tile;
}

void LaneKernelBuilder::emitZero(Value tile, Value width) {
  forLoop(width, 1, {}, [&](Value w, ValueRange) {
    vector::StoreOp::create(b, loc, splat(0.0f), tile, ValueRange{w, index(0)});
    return SmallVector<Value>();
  });
}

Value LaneKernelBuilder::laneIndices(Value first, Value last) {
  SmallVector<int64_t> iota = llvm::to_vector(llvm::seq<int64_t>(0, lanes));
  auto indexLanes = VectorType::get({lanes}, b.getIndexType());
  Value offsets = arith::ConstantOp::create(
      b, loc, DenseElementsAttr::get(indexLanes, ArrayRef(iota)));
  Value rows = arith::AddIOp::create(
      b, loc, vector::BroadcastOp::create(b, loc, indexLanes, first), offsets);
  return arith::MinSIOp::create(
      b, loc, rows, vector::BroadcastOp::create(b, loc, indexLanes, last));
}

void LaneKernelBuilder::emitRowCopy(Value src, Value batch, Value head,
                                    Value first, Value last, int64_t rows,
                                    Value width, Value dst) {
  // Whole rows, 16 elements per vector load and conversion. A bf16 element
  // read in the FMA loops cost a scalar load, a shift and a broadcast from
  // a general register per FMA, which halved the bf16 kernels' speed; the
  // f32 copies (a few KiB, in L1) let the FMAs broadcast straight from
  // memory.
  constexpr int64_t kChunk = 16;
  auto srcType = cast<MemRefType>(src.getType());
  auto wideType = VectorType::get({kChunk}, b.getF32Type());
  auto narrowType = VectorType::get({kChunk}, srcType.getElementType());
  Value chunk = index(kChunk);
  Value mainEnd = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, width, chunk), chunk);
  bool hasTail = srcType.isDynamicDim(3) || srcType.getDimSize(3) % kChunk;
  forLoop(index(rows), 1, {}, [&](Value j, ValueRange) {
    Value row = minIndex(addIndex(first, j), last);
    forLoop(mainEnd, kChunk, {}, [&](Value c, ValueRange) {
      Value v = vector::LoadOp::create(b, loc, narrowType, src,
                                       ValueRange{batch, head, row, c});
      if (v.getType() != wideType)
        v = arith::ExtFOp::create(b, loc, wideType, v);
      vector::StoreOp::create(b, loc, v, dst, ValueRange{j, c});
      return SmallVector<Value>();
    });
    if (hasTail)
      forLoop(subIndex(width, mainEnd), 1, {}, [&](Value i, ValueRange) {
        Value c = addIndex(mainEnd, i);
        memref::StoreOp::create(b, loc, loadF32(src, {batch, head, row, c}),
                                dst, ValueRange{j, c});
        return SmallVector<Value>();
      });
    return SmallVector<Value>();
  });
}

void LaneKernelBuilder::widen(const RowBlock &rows, int64_t count,
                              Value width) {
  emitRowCopy(rows.buffer, rows.batch, rows.head, rows.first, rows.last, count,
              width, rows.wide);
}

void LaneKernelBuilder::emitTranspose(Value src, Value batch, Value head,
                                      Value first, Value last, Value width,
                                      Value scale, Value dst) {
  forLoop(index(lanes), 1, {}, [&](Value lane, ValueRange) {
    Value row = minIndex(addIndex(first, lane), last);
    forLoop(width, 1, {}, [&](Value w, ValueRange) {
      Value x = loadF32(src, {batch, head, row, w});
      if (scale)
        x = arith::MulFOp::create(b, loc, x, scale);
      memref::StoreOp::create(b, loc, x, dst, {w, lane});
      return SmallVector<Value>();
    });
    return SmallVector<Value>();
  });
}

Value LaneKernelBuilder::emitLaneGather(Value src, Value batch, Value head,
                                        Value first, Value last) {
  Value result = splat(0.0f);
  for (int64_t lane = 0; lane < lanes; ++lane) {
    Value row = minIndex(addIndex(first, index(lane)), last);
    Value x = loadF32(src, {batch, head, row});
    result = vector::InsertOp::create(b, loc, x, result, lane);
  }
  return result;
}

void LaneKernelBuilder::emitDots(const RowBlock &rows, Value width,
                                 Value tileT, int64_t count, Value init,
                                 Value outT) {
  // kRowBlock rows at a time: one vector load of the tile and kRowBlock
  // broadcast FMAs per w.
  forLoop(index(count), kRowBlock, {}, [&](Value j0, ValueRange) {
    Value first = addIndex(rows.first, j0);
    if (rows.widenPerBlock)
      emitRowCopy(rows.buffer, rows.batch, rows.head, first, rows.last,
                  kRowBlock, width, rows.wide);
    SmallVector<Value> rowIndices, inits;
    for (int64_t jj = 0; jj < kRowBlock; ++jj) {
      if (rows.widenPerBlock)
        rowIndices.push_back(index(jj));
      else if (rows.wide)
        rowIndices.push_back(addIndex(j0, index(jj)));
      else
        rowIndices.push_back(minIndex(addIndex(first, index(jj)), rows.last));
      inits.push_back(init);
    }
    scf::ForOp dot = forLoop(width, 1, inits, [&](Value w, ValueRange acc) {
      Value x = vector::LoadOp::create(b, loc, laneType, tileT,
                                       ValueRange{w, index(0)});
      SmallVector<Value> next;
      for (int64_t jj = 0; jj < kRowBlock; ++jj) {
        Value r = rows.wide
                      ? memref::LoadOp::create(b, loc, rows.wide,
                                               ValueRange{rowIndices[jj], w})
                      : loadF32(rows.buffer,
                                {rows.batch, rows.head, rowIndices[jj], w});
        Value rb = vector::BroadcastOp::create(b, loc, laneType, r);
        next.push_back(vector::FMAOp::create(b, loc, rb, x, acc[jj]));
      }
      return next;
    });
    for (int64_t jj = 0; jj < kRowBlock; ++jj) {
      Value j = addIndex(j0, index(jj));
      vector::StoreOp::create(b, loc, dot.getResult(jj), outT,
                              ValueRange{j, index(0)});
    }
    return SmallVector<Value>();
  });
}

void LaneKernelBuilder::emitAccumulateBlock(
    const RowBlock &rows, Value w0, int64_t width, Value weightsT,
    int64_t count, Value accT, function_ref<Value(Value)> prepare) {
  // `width` accumulators held in registers over the `count` rows.
  SmallVector<Value> columns, acc;
  for (int64_t i = 0; i < width; ++i) {
    Value w = addIndex(w0, index(i));
    columns.push_back(w);
    Value a = vector::LoadOp::create(b, loc, laneType, accT,
                                     ValueRange{w, index(0)});
    acc.push_back(prepare ? prepare(a) : a);
  }
  auto body = [&](Value j, ValueRange args) {
    Value p = vector::LoadOp::create(b, loc, laneType, weightsT,
                                     ValueRange{j, index(0)});
    Value row = rows.wide ? j : minIndex(addIndex(rows.first, j), rows.last);
    SmallVector<Value> next;
    for (int64_t i = 0; i < width; ++i) {
      Value r = rows.wide ? memref::LoadOp::create(b, loc, rows.wide,
                                                   ValueRange{row, columns[i]})
                          : loadF32(rows.buffer,
                                    {rows.batch, rows.head, row, columns[i]});
      Value rb = vector::BroadcastOp::create(b, loc, laneType, r);
      next.push_back(vector::FMAOp::create(b, loc, rb, p, args[i]));
    }
    return next;
  };
  scf::ForOp loop = forLoop(index(count), 1, acc, body);
  for (int64_t i = 0; i < width; ++i)
    vector::StoreOp::create(b, loc, loop.getResult(i), accT,
                            ValueRange{columns[i], index(0)});
}

void LaneKernelBuilder::emitAccumulate(const RowBlock &rows, Value width,
                                       Value weightsT, int64_t count,
                                       Value accT,
                                       function_ref<Value(Value)> prepare) {
  // Blocks of kColumnBlock columns, then the remaining columns one by one.
  Value block = index(kColumnBlock);
  Value mainEnd = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, width, block), block);
  forLoop(mainEnd, kColumnBlock, {}, [&](Value w0, ValueRange) {
    emitAccumulateBlock(rows, w0, kColumnBlock, weightsT, count, accT, prepare);
    return SmallVector<Value>();
  });
  std::optional<int64_t> staticWidth = getConstantIntValue(width);
  if (staticWidth && *staticWidth % kColumnBlock == 0)
    return;
  forLoop(subIndex(width, mainEnd), 1, {}, [&](Value i, ValueRange) {
    emitAccumulateBlock(rows, addIndex(mainEnd, i), 1, weightsT, count, accT,
                        prepare);
    return SmallVector<Value>();
  });
}

void LaneKernelBuilder::emitStoreLanes(Value tileT, Value width, Value scale,
                                       Value count, Value dst, Value batch,
                                       Value head, Value first) {
  forLoop(count, 1, {}, [&](Value lane, ValueRange) {
    Value row = addIndex(first, lane);
    forLoop(width, 1, {}, [&](Value w, ValueRange) {
      Value x = memref::LoadOp::create(b, loc, tileT, ValueRange{w, lane});
      if (scale)
        x = arith::MulFOp::create(b, loc, x, scale);
      memref::StoreOp::create(b, loc, x, dst, ValueRange{batch, head, row, w});
      return SmallVector<Value>();
    });
    return SmallVector<Value>();
  });
}

void LaneKernelBuilder::emitStoreLaneVector(Value values, Value count,
                                            Value dst, Value batch, Value head,
                                            Value first) {
  auto rowType = MemRefType::get({lanes}, b.getF32Type());
  Value rowBuf = memref::AllocaOp::create(b, loc, rowType);
  vector::StoreOp::create(b, loc, values, rowBuf, ValueRange{index(0)});
  forLoop(count, 1, {}, [&](Value lane, ValueRange) {
    Value row = addIndex(first, lane);
    Value x = memref::LoadOp::create(b, loc, rowBuf, ValueRange{lane});
    memref::StoreOp::create(b, loc, x, dst, ValueRange{batch, head, row});
    return SmallVector<Value>();
  });
}

LogicalResult mlir::attn::checkTileSizes(ModuleOp module, StringRef pass,
                                         StringRef lanesOption, int64_t lanes,
                                         StringRef rowsOption, int64_t rows) {
  if (lanes >= 1 && rows >= kRowBlock && rows % kRowBlock == 0)
    return success();
  return module.emitError() << pass << " needs " << lanesOption
                            << " >= 1 and " << rowsOption
                            << " a multiple of " << kRowBlock;
}

LogicalResult mlir::attn::collectReadBuffers(OpBuilder &b, Operation *op,
                                             DenseMap<Value, Value> &buffers) {
  WalkResult reads = op->walk([&](ReadOp read) {
    Value tensor = read.getTensor();
    if (op->isAncestor(tensor.getParentRegion()->getParentOp())) {
      read.emitOpError() << "reads a tensor defined inside the attention";
      return WalkResult::interrupt();
    }
    if (!buffers.count(tensor)) {
      auto type = cast<RankedTensorType>(tensor.getType());
      buffers[tensor] = bufferization::ToBufferOp::create(
          b, read.getLoc(),
          MemRefType::get(type.getShape(), type.getElementType()), tensor,
          /*read_only=*/true);
    }
    return WalkResult::advance();
  });
  return failure(reads.wasInterrupted());
}

FailureOr<Value>
mlir::attn::emitTileClass(OpBuilder &b, Location loc, Region &tileClass,
                          bool trivialMask, ArrayRef<Value> bounds,
                          int64_t lanes, const DenseMap<Value, Value> &buffers) {
  if (tileClass.empty())
    return arith::ConstantOp::create(b, loc,
                                     b.getI32IntegerAttr(trivialMask ? 2 : 1))
        .getResult();
  SmallVector<LaneValue> args = llvm::map_to_vector(
      bounds, [](Value v) { return LaneValue{v, false}; });
  FailureOr<LaneValue> cls =
      cloneAlongLanes(b, tileClass.front(), args, lanes, buffers);
  if (failed(cls))
    return failure();
  return cls->value;
}
