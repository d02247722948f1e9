//===- DecodeMergeKernelBuilder.cpp - Merge of the decode kernel's parts --===//
//
// The second kernel of flash-decoding: the decode kernel leaves, for every
// packed row (query, head) and every split of the keys, the split's state
// finalized (O divided by the split's own sum, and its log-sum-exp); this
// kernel merges the splits as the normalizer defines (weights
// exp(lse_s - max_s lse_s)), finalizes the merged state with the sink
// logit, and writes O (and LSE) in the layout of the spec. For `none` the
// parts are plain sums and are added.
//
// One CTA per (row tile, key/value head, batch), 8 threads per row, each
// owning E / 8 adjacent columns.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Splits whose parts one loop step of the merge reads.
constexpr int64_t kSplitsPerStep = 4;

class MergeEmitter : KernelIRBuilder {
public:
  MergeEmitter(OpBuilder &builder, Location loc, AttentionOp op,
               Type outputType, ValueRange args)
      : KernelIRBuilder(builder, loc), op(op), outputType(outputType),
        args(args) {}

  void emit();

private:
  Value blockId(gpu::Dimension d) {
    return arith::IndexCastOp::create(b, loc, i32,
                                      gpu::BlockIdOp::create(b, loc, d));
  }
  Value load(Value pointer) {
    return LLVM::LoadOp::create(b, loc, f32, pointer, /*alignment=*/4);
  }
  /// `count` adjacent floats at `pointer`, 8-byte aligned, two per load.
  SmallVector<Value> loadColumns(Value pointer, int64_t count) {
    auto pairType = VectorType::get({2}, f32);
    SmallVector<Value> values;
    for (int64_t c = 0; c < count; c += 2) {
      Value pair =
          LLVM::LoadOp::create(b, loc, pairType, gep(pointer, f32, c32(c)),
                               /*alignment=*/8);
      for (int64_t i = 0; i < 2; ++i)
        values.push_back(vector::ExtractOp::create(b, loc, pair, i));
    }
    return values;
  }
  /// A loop over the splits carrying `init`, kSplitsPerStep at a time so
  /// that their loads are in flight together (one at a time, each would
  /// wait for the last: with a few CTAs and many splits, the merge would
  /// take as long as the decode kernel). `body` maps the step's splits
  /// (clamped into range), whether each is real, and the carried values to
  /// the next ones.
  ValueRange
  forEachSplit(ValueRange init,
               function_ref<SmallVector<Value>(ArrayRef<Value>, ArrayRef<Value>,
                                               ValueRange)>
                   body) {
    Value zero = arith::ConstantIndexOp::create(b, loc, 0);
    Value step = arith::ConstantIndexOp::create(b, loc, kSplitsPerStep);
    Value lastSplit = sub(numSplits, c32(1));
    auto loop = scf::ForOp::create(
        b, loc, zero, toIndex(numSplits), step, init,
        [&](OpBuilder &nested, Location, Value s, ValueRange carried) {
          OpBuilder::InsertionGuard insertion(b);
          b.setInsertionPoint(nested.getInsertionBlock(),
                              nested.getInsertionPoint());
          Value first = arith::IndexCastOp::create(b, loc, i32, s);
          SmallVector<Value> splits, real;
          for (int64_t u = 0; u < kSplitsPerStep; ++u) {
            Value split = add(first, c32(u));
            real.push_back(cmpi(arith::CmpIPredicate::slt, split, numSplits));
            splits.push_back(minsi(split, lastSplit));
          }
          scf::YieldOp::create(b, loc, body(splits, real, carried));
        });
    return loop.getResults();
  }

  Value arg(FixedParam param) { return getFixedArg(args, param); }

  AttentionOp op;
  Type outputType;
  ValueRange args;
  Value numSplits;
};

} // namespace

void MergeEmitter::emit() {
  const int64_t valueDim =
      cast<RankedTensorType>(op.getValue().getType()).getDimSize(3);
  const int64_t columns = valueDim / 8;
  NormalizerDefinition normalizer(op.getNormalizer(), bool(op.getSink()),
                                  getNVPTXNormalizerMath(), op.getMap());
  Value tid = arith::IndexCastOp::create(
      b, loc, i32, gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x));
  Value rowBlock = blockId(gpu::Dimension::x);
  Value kvHead = blockId(gpu::Dimension::y);
  Value batch = blockId(gpu::Dimension::z);
  Value numKvHeads = arg(FixedParam::G), sizeM = arg(FixedParam::M);
  Value groupSize = divu(arg(FixedParam::H), numKvHeads);
  Value numRows = mul(sizeM, groupSize);
  Value rowBlocks = ceilDiv(numRows, kDecodeRows);
  numSplits = arg(FixedParam::Splits);

  Value rowInTile = divu(tid, c32(8));
  Value row = add(mul(rowBlock, c32(kDecodeRows)), rowInTile);
  auto ifRow =
      scf::IfOp::create(b, loc, cmpi(arith::CmpIPredicate::slt, row, numRows),
                        /*withElseRegion=*/false);
  b.setInsertionPointToStart(ifRow.thenBlock());
  Value query = divu(row, groupSize);
  Value head = add(mul(kvHead, groupSize), remu(row, groupSize));
  Value firstColumn = mul(remu(tid, c32(8)), c32(columns));

  // Workspace row of split s: ((b G + g) S + s) RB 16 + row; the LSEs
  // follow the B G S RB 16 rows of O.
  Value rowsPerSplit = ext64(mul(rowBlocks, c32(kDecodeRows)));
  Value groupIndex = add(mul(ext64(batch), ext64(numKvHeads)), ext64(kvHead));
  auto partRow = [&](Value split) {
    return add(
        mul(add(mul(groupIndex, ext64(numSplits)), ext64(split)), rowsPerSplit),
        ext64(row));
  };
  Value partials = arg(FixedParam::Partials);
  Value lseBase =
      gep(partials, f32,
          mul(mul(mul(mul(ext64(arg(FixedParam::B)), ext64(numKvHeads)),
                      ext64(numSplits)),
                  rowsPerSplit),
              c64(valueDim)));
  auto partColumns = [&](Value split) {
    return gep(partials, f32,
               add(mul(partRow(split), c64(valueDim)), ext64(firstColumn)));
  };

  SmallVector<Value> init(columns, cf(0.0));
  Value factor = cf(1.0), lse;
  SmallVector<Value> acc;
  if (normalizer.rescales()) {
    ValueRange top =
        forEachSplit(negInf(), [&](ArrayRef<Value> splits, ArrayRef<Value> real,
                                   ValueRange carried) {
          SmallVector<Value> partLse;
          for (Value split : splits)
            partLse.push_back(load(gep(lseBase, f32, partRow(split))));
          Value max = carried[0];
          for (auto [lse, isReal] : llvm::zip(partLse, real))
            max = normalizer.maxOf(b, loc, max, select(isReal, lse, negInf()));
          return SmallVector<Value>{max};
        });
    Value shift = normalizer.getMergeShift(b, loc, top[0]);
    init.push_back(cf(0.0));
    ValueRange merged = forEachSplit(init, [&](ArrayRef<Value> splits,
                                               ArrayRef<Value> real,
                                               ValueRange carried) {
      SmallVector<Value> partLse;
      SmallVector<SmallVector<Value>> parts;
      for (Value split : splits) {
        partLse.push_back(load(gep(lseBase, f32, partRow(split))));
        parts.push_back(loadColumns(partColumns(split), columns));
      }
      SmallVector<Value> next(carried);
      // Each part is the state (lse, 1) with its output divided by its sum.
      for (auto [u, lse] : llvm::enumerate(partLse)) {
        Value weight =
            select(real[u], normalizer.partWeight(b, loc, shift, lse), cf(0.0));
        for (int64_t c = 0; c < columns; ++c)
          next[c] = addf(next[c], mulf(weight, parts[u][c]));
        next[columns] = normalizer.accumulate(b, loc, next[columns], weight);
      }
      return next;
    });
    acc.assign(merged.begin(), merged.begin() + columns);
    Value sink;
    if (op.getSink()) {
      Value offset = add(add(mul(ext64(batch), arg(FixedParam::SinkStrideB)),
                             mul(ext64(head), arg(FixedParam::SinkStrideH))),
                         mul(ext64(query), arg(FixedParam::SinkStrideM)));
      sink = load(gep(arg(FixedParam::Sink), f32, offset));
    }
    // Where the merged state is not empty, the shift is its max.
    NormalizerState state;
    state.max = shift;
    state.sum = merged[columns];
    factor = normalizer.getOutputFactor(b, loc, state, sink);
    if (op.getLse())
      lse = normalizer.getStatistic(b, loc, state);
  } else {
    ValueRange merged =
        forEachSplit(init, [&](ArrayRef<Value> splits, ArrayRef<Value> real,
                               ValueRange carried) {
          SmallVector<SmallVector<Value>> parts;
          for (Value split : splits)
            parts.push_back(loadColumns(partColumns(split), columns));
          SmallVector<Value> next(carried);
          for (auto [u, part] : llvm::enumerate(parts))
            for (int64_t c = 0; c < columns; ++c)
              next[c] = addf(next[c], select(real[u], part[c], cf(0.0)));
          return next;
        });
    acc.assign(merged.begin(), merged.end());
  }

  Value out = gep(arg(FixedParam::O), outputType,
                  add(add(mul(ext64(batch), arg(FixedParam::OStrideB)),
                          mul(ext64(head), arg(FixedParam::OStrideH))),
                      add(mul(ext64(query), arg(FixedParam::OStrideM)),
                          ext64(firstColumn))));
  for (int64_t c = 0; c < columns; ++c) {
    Value x = mulf(acc[c], factor);
    if (!outputType.isF32())
      x = arith::TruncFOp::create(b, loc, outputType, x);
    LLVM::StoreOp::create(b, loc, x, gep(out, outputType, c32(c)));
  }
  if (op.getLse()) {
    auto ifWriter = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::eq, remu(tid, c32(8)), c32(0)),
        /*withElseRegion=*/false);
    b.setInsertionPointToStart(ifWriter.thenBlock());
    Value offset = add(add(mul(ext64(batch), arg(FixedParam::LseStrideB)),
                           mul(ext64(head), arg(FixedParam::LseStrideH))),
                       ext64(query));
    LLVM::StoreOp::create(b, loc, lse, gep(arg(FixedParam::Lse), f32, offset),
                          /*alignment=*/4);
  }
}

void mlir::attn::emitDecodeMerge(OpBuilder &builder, Location loc,
                                 AttentionOp op, Type outputType,
                                 ValueRange args) {
  OpBuilder::InsertionGuard insertion(builder);
  MergeEmitter(builder, loc, op, outputType, args).emit();
}
