//===- TileClassifier.h - Symbolic tile classes of attention masks -*- C++ -*-===//
//
// Builds the `tile_class` region of an attn.attention: code that decides, for
// a batch b, a head h and inclusive ranges m in [m_first, m_last] and
// n in [n_first, n_last], whether the mask keeps no point (0, empty), every
// point (2, full) or an unknown mix (1, partial) of that tile.
//
// The mask region is cloned in "interval form" (abstract interpretation
// compiled into IR): every integer value becomes a run-time pair (lo, hi),
// every i1 a pair (mayBeTrue, mayBeFalse), values that depend on neither m nor
// n stay exact. Nothing depends on the sizes at compile time, so one compiled
// kernel serves every M and N.
//
// Reads of tensors whose subscripts range over the tile use summaries built
// once per kernel launch, at kernel level, by generated attn.einsum ops:
// per-tile min/max over `summaryTileSize` elements along the ranged axes, a
// sparse table of power-of-two spans of tiles (one ranged axis), and a whole
// range min/max. Summaries are f32 (einsum reductions are float only): they
// are exact for integers of magnitude below 2^24; larger values make the
// classifier widen the value to its type's full range, which stays sound.
//
// Soundness contract: the generated code assumes what the driver already
// proves before a launch, that every read of the mask is in range at every
// point of the tile, and that index (i64) arithmetic of the mask does not
// overflow. Narrower integer arithmetic (i32) that may wrap is widened to the
// whole type.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_ANALYSIS_TILECLASSIFIER_H
#define ATTN_ANALYSIS_TILECLASSIFIER_H

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/IR/Value.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <cstdint>
#include <string>

namespace mlir::attn {

struct TileClassifierOptions {
  /// Elements per summary tile along a ranged axis of a tensor read.
  int64_t summaryTileSize = 64;
  /// Highest level of the sparse table of tile summaries: a read whose range
  /// covers up to 2^(summaryLevels + 1) summary tiles costs two reads per
  /// level; wider reads use the whole-range summary.
  unsigned summaryLevels = 3;
};

/// What the classifier found out about one attention op.
struct TileClassReport {
  /// Whether the mask could be interpreted at all; when false the region
  /// always yields partial and `reason` says why.
  bool interpreted = true;
  /// Whether the region reads generated tensor summaries.
  bool usesSummaries = false;
  std::string reason;
};

/// Generates tile_class regions for the attention ops of one kernel. Tensor
/// summaries are shared by every op of the kernel that reads the same tensor
/// over the same ranged axes.
class TileClassifier {
public:
  TileClassifier(KernelOp kernel, TileClassifierOptions options);
  ~TileClassifier();

  /// Replaces the tile_class region of `op` (which must be inside the
  /// kernel) and inserts any summaries it needs just before `op`'s ancestor
  /// in the kernel body.
  TileClassReport classify(AttentionOp op);
  /// The same for the backward, whose tiles are classified alike.
  TileClassReport classify(AttentionBackwardOp op);

  /// The per-tile, sparse-table and whole-range summaries of one tensor.
  struct Summary {
    /// Level k holds, for each tile t, the min (max) over the summary tiles
    /// t .. t + 2^k - 1 (clamped to the last tile). Only level 0 when more
    /// than one axis is ranged.
    llvm::SmallVector<Value> minLevels, maxLevels;
    /// Min and max over the whole range of the ranged axes.
    Value wholeMin, wholeMax;
    /// The size of every axis of the tensor, as kernel-level index values.
    llvm::SmallVector<Value> extents;
  };

private:
  friend class MaskInterpreter;
  /// Fills `tileClass` of `op` from its `mask` block.
  TileClassReport classify(Operation *op, Block &mask, Region &tileClass);
  /// The summaries of `tensor` over the axes in `rangedAxes` (a bit mask),
  /// built before `anchor` on first use; null when the tensor's sizes are not
  /// known at kernel level.
  const Summary *getSummary(Value tensor, uint64_t rangedAxes,
                            Operation *anchor);

  KernelOp kernel;
  TileClassifierOptions options;
  llvm::DenseMap<std::pair<Value, uint64_t>, Summary> summaries;
};

} // namespace mlir::attn

#endif // ATTN_ANALYSIS_TILECLASSIFIER_H
