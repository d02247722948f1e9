//===- AnalyzeMask.cpp - Tile classes of attention masks ------------------===//
//
// attn-analyze-mask: fills the tile_class region of every attn.attention and
// attn.attention_backward of a kernel so that backends can skip empty tiles
// and drop the mask on full ones. The work is done by TileClassifier; this
// pass only drives it and says, with a remark, when a mask could not be
// bounded at all.
//
//===----------------------------------------------------------------------===//

#include "attn/Analysis/TileClassifier.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

namespace mlir::attn {

#define GEN_PASS_DEF_ATTNANALYZEMASK
#include "attn/Transforms/Passes.h.inc"

namespace {

struct AttnAnalyzeMask : impl::AttnAnalyzeMaskBase<AttnAnalyzeMask> {
  using Base::Base;

  void runOnOperation() override {
    KernelOp kernel = getOperation();
    if (summaryTileSize <= 0) {
      kernel.emitError() << "summary-tile-size must be positive, got "
                         << summaryTileSize;
      return signalPassFailure();
    }
    TileClassifierOptions options;
    options.summaryTileSize = summaryTileSize;
    options.summaryLevels = summaryLevels;
    TileClassifier classifier(kernel, options);
    // Collect first: classifying inserts summaries into the kernel body.
    SmallVector<Operation *> ops;
    kernel.walk([&](Operation *op) {
      if (isa<AttentionOp, AttentionBackwardOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      auto forward = dyn_cast<AttentionOp>(op);
      TileClassReport report =
          forward ? classifier.classify(forward)
                  : classifier.classify(cast<AttentionBackwardOp>(op));
      // A mask that cannot be bounded still runs correctly, only without
      // tile skipping: say why, as the totality rule asks.
      if (!report.interpreted)
        op->emitRemark() << "every tile is partial: " << report.reason;
    }
  }
};

} // namespace
} // namespace mlir::attn
