//===- LaneKernels.h - Micro-kernels, one row per lane ----------*- C++ -*-===//
//
// Private to attn-fuse-online and attn-fuse-backward. Both keep a tile of
// rows of one operand in the lanes of a vector (queries; keys in the
// backward's dK/dV pass), transposed once per tile into f32 scratch
// X[w][lane], and stream the rows R of other operands past it, one broadcast
// element per FMA, so that nothing is transposed per inner tile and no
// horizontal reduction is needed. Two micro-kernels cover every product of
// the forward and the backward:
//
//   dots:        T[j][lane] = init + sum_w R[j][w] X[w][lane]    (Q·Kᵀ, dO·Vᵀ)
//   accumulate:  A[w][lane] = f(A[w][lane]) + sum_j R[j][w] P[j][lane]
//                                                    (P·V, dS·K, dS·Q, P·dO)
//
// R is `count` rows of a [B, heads, rows, width] buffer, read in place when
// it holds f32 and otherwise from an f32 copy.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_LANEKERNELS_H
#define ATTN_CPU_LANEKERNELS_H

#include "LaneCloning.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"

namespace mlir::attn {

/// Rows per block of the dots micro-kernel and columns per block of the
/// accumulate micro-kernel: 8 vector accumulators, leaving registers for the
/// broadcasts on AVX2 (two ymm per 16 lanes) and AVX-512.
constexpr int64_t kRowBlock = 8;
constexpr int64_t kColumnBlock = 8;

/// The rows R of a micro-kernel: row j is row min(first + j, last) of head
/// `head` of batch `batch` of `buffer` ([B, heads, rows, width]); rows past
/// the end repeat the last one, so that no lane computes from garbage.
struct RowBlock {
  Value buffer, batch, head, first, last;
  /// An f32 copy of the rows, read in place of `buffer`: [count x width]
  /// made by LaneKernelBuilder::widen, or, with `widenPerBlock`,
  /// [kRowBlock x width], refilled by the dots kernel before each block
  /// (what a tile whose rows are used once needs). Null: `buffer` holds f32
  /// and is read in place.
  Value wide;
  bool widenPerBlock = false;
};

/// One iteration of a parallel loop over tiles of `lanes` rows of a
/// [B, heads, rows, ...] tensor, one row per lane.
struct LaneTile {
  scf::ParallelOp loop;
  /// The iteration's batch and head, and the tile's first row.
  Value batch, head, first;
  /// The tensor's last row (rows - 1) and the tile's (rows past the end
  /// repeat it).
  Value lastRow, lastInTile;
  /// vector<lanes x index>: min(first + lane, lastRow).
  Value laneRows;
  /// How many rows the tile holds: min(first + lanes, rows) - first.
  Value count;
};

/// Emits the loops of the fused CPU passes at a builder's insertion point,
/// with one row of a tile per lane of vector<lanes x f32>.
class LaneKernelBuilder {
public:
  LaneKernelBuilder(Operation *anchor, int64_t lanes);

  //===--------------------------------------------------------------------===//
  // Small builders.
  //===--------------------------------------------------------------------===//

  Value index(int64_t v);
  Value f32(float v);
  /// vector<lanes x f32> with every lane `v`.
  Value splat(float v);
  Value addIndex(Value x, Value y);
  Value subIndex(Value x, Value y);
  Value minIndex(Value x, Value y);
  Value dimOf(Value buffer, int64_t axis);
  /// Loads an element of a buffer as f32 (bf16/f16 are extended).
  Value loadF32(Value buffer, ValueRange indices);
  /// The read-only memref of a tensor operand.
  Value toBuffer(Value tensor);
  /// A fresh buffer for a result of `type` whose axes have `sizes`.
  Value allocResult(RankedTensorType type, ArrayRef<Value> sizes);
  /// Per-iteration f32 scratch [rows x lanes] (in L1).
  Value laneScratch(Value rows);
  /// Per-iteration f32 scratch [rows x width] for copies of the rows of
  /// `buffer`; null when `buffer` already holds f32.
  Value wideScratch(Value buffer, Value width, int64_t rows);
  /// scf.for from 0 to `ub` step `step` whose body `body` yields the
  /// updated iter args.
  scf::ForOp forLoop(
      Value ub, int64_t step, ValueRange inits,
      function_ref<SmallVector<Value>(Value iv, ValueRange args)> body);
  /// H / G (the query heads per key/value head), at least 1 and never a
  /// division by 0: a launch with H = 0 (G = 0) runs no head, but the
  /// kernel must not trap computing this.
  Value emitHeadsPerGroup(Value heads, Value kvHeads);
  /// Whether a tile of TileClass `tileClass` has a kept point.
  Value isNonEmptyTile(Value tileClass);
  /// Whether a tile of TileClass `tileClass` whose inner extent holds `rows`
  /// of its `tileRows` rows (fewer at the end) keeps every one of them, so
  /// that neither mask nor bounds need evaluating.
  Value isFullTile(Value tileClass, Value rows, int64_t tileRows);
  /// vector<lanes x i1>: which lanes keep their point, `inRange` (a scalar
  /// i1: the point's scalar index is before the end) and, when `mask` is
  /// given, what the mask region yields for `args` (b, h, m, n).
  FailureOr<Value> emitKeptLanes(Block *mask, ArrayRef<LaneValue> args,
                                 Value inRange,
                                 const DenseMap<Value, Value> &buffers);
  /// Creates the scf.parallel over (batch, heads, tiles of lanes rows of
  /// `rows`) and moves the insertion point to the start of its body; the
  /// caller restores it.
  LaneTile emitParallelLaneTiles(Value batch, Value heads, Value rows);
  /// Sets every row of the scratch `tile` [width x lanes] to 0.
  void emitZero(Value tile, Value width);
  /// vector<lanes x index>: min(first + lane, last).
  Value laneIndices(Value first, Value last);

  //===--------------------------------------------------------------------===//
  // Tiles.
  //===--------------------------------------------------------------------===//

  /// Copies rows min(first + j, last), j < `rows`, of head `head` of batch
  /// `batch` of `src` ([B, heads, rows, width]) into the f32 scratch `dst`
  /// [rows x width].
  void emitRowCopy(Value src, Value batch, Value head, Value first, Value last,
                   int64_t rows, Value width, Value dst);
  /// Fills `rows.wide` with the first `count` rows.
  void widen(const RowBlock &rows, int64_t count, Value width);
  /// dst[w][lane] = scale * src[batch, head, min(first + lane, last), w]
  /// for w < width (no product without `scale`).
  void emitTranspose(Value src, Value batch, Value head, Value first,
                     Value last, Value width, Value scale, Value dst);
  /// vector<lanes x f32>: src[batch, head, min(first + lane, last)] of a
  /// rank-3 buffer.
  Value emitLaneGather(Value src, Value batch, Value head, Value first,
                       Value last);
  /// The dots micro-kernel: outT[j][lane] = init + sum_w R[j][w] tileT[w][lane]
  /// for j < `count` (a multiple of kRowBlock).
  void emitDots(const RowBlock &rows, Value width, Value tileT, int64_t count,
                Value init, Value outT);
  /// The accumulate micro-kernel: accT[w][lane] = prepare(accT[w][lane]) +
  /// sum_j R[j][w] weightsT[j][lane] for w < width, j < `count`; `prepare`
  /// (the forward's rescaling) may be null.
  void emitAccumulate(const RowBlock &rows, Value width, Value weightsT,
                      int64_t count, Value accT,
                      function_ref<Value(Value)> prepare = nullptr);
  /// dst[batch, head, first + lane, w] = scale * tileT[w][lane] for lanes
  /// below `count` and w < width (no product without `scale`).
  void emitStoreLanes(Value tileT, Value width, Value scale, Value count,
                      Value dst, Value batch, Value head, Value first);
  /// dst[batch, head, first + lane] = values[lane] for lanes below `count`.
  void emitStoreLaneVector(Value values, Value count, Value dst, Value batch,
                           Value head, Value first);

protected:
  OpBuilder b;
  Location loc;
  int64_t lanes;
  VectorType laneType;

private:
  void emitAccumulateBlock(const RowBlock &rows, Value w0, int64_t width,
                           Value weightsT, int64_t count, Value accT,
                           function_ref<Value(Value)> prepare);
};

/// Checks the tile sizes of a fused pass (`lanes` at least 1, `rows` a
/// positive multiple of kRowBlock), reporting on `module` with the option
/// names.
LogicalResult checkTileSizes(ModuleOp module, StringRef pass,
                             StringRef lanesOption, int64_t lanes,
                             StringRef rowsOption, int64_t rows);

/// The ops of type OpTy in `module` outside any attn.kernel: inside a kernel
/// attention is still cascade IR; the fused passes lower only the copies
/// that convert-attn-to-linalg (keep-attention) puts into functions.
template <typename OpTy>
SmallVector<OpTy> collectOutsideKernels(ModuleOp module) {
  SmallVector<OpTy> ops;
  module.walk([&](OpTy op) {
    if (!op->template getParentOfType<KernelOp>())
      ops.push_back(op);
  });
  return ops;
}

/// Maps every tensor the regions of `op` read to its read-only memref,
/// created at `b`'s insertion point. Fails, reporting on the read, on a
/// tensor defined inside `op`.
LogicalResult collectReadBuffers(OpBuilder &b, Operation *op,
                                 DenseMap<Value, Value> &buffers);

/// The i32 TileClass of the tile (b, h, m_first, m_last, n_first, n_last)
/// in `bounds`: `tileClass` cloned, or without one 2 (full) for a trivial
/// mask and 1 (partial) otherwise.
FailureOr<Value> emitTileClass(OpBuilder &b, Location loc, Region &tileClass,
                               bool trivialMask, ArrayRef<Value> bounds,
                               int64_t lanes,
                               const DenseMap<Value, Value> &buffers);

} // namespace mlir::attn

#endif // ATTN_CPU_LANEKERNELS_H
