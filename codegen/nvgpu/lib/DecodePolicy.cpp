//===- DecodePolicy.cpp - When and how a package runs decode --------------===//

#include "DecodePolicy.h"

using namespace attn;
using mlir::attn::GpuKernelArtifact;

namespace {

/// Decode serves launches with at most this many 16-row tiles of packed
/// rows per key/value head (64 query heads of one MQA step, or 16 queries
/// of a GQA group of 4); longer ones amortise K and V over more rows with
/// the attention kernel.
constexpr int64_t kMaxDecodeRowTiles = 4;
/// The decode grid has at most this many CTAs, when the keys are long
/// enough: one wave of the one-warp CTAs on an H100 (132 SMs, 5 CTAs each
/// by shared memory), where every CTA streams its keys from start to end.
/// Measured with 1 query, GQA 32/8, D = 128 (ms for B = 8, N = 32k): 256
/// CTAs 0.384, 512 0.387, 768 (two waves) 0.419, 2048 0.41, 4096 0.44;
/// with B = 1, more splits win until the wave is full.
constexpr int64_t kDecodeMaxCtas = 512;
/// ... and splits of at least this many keys, so that the partial results
/// stay small beside K and V.
constexpr int64_t kDecodeMinSplitKeys = 256;

} // namespace

void attn::addDecodeEntries(PackageManifest &manifest, EntrySpec main,
                            const GpuKernelArtifact &artifact,
                            const std::string &b, const std::string &h,
                            const std::string &g, const std::string &m,
                            const std::string &n) {
  using mlir::attn::kDecodeRows;
  auto paren = [](const std::string &x) { return "(" + x + ")"; };
  // R G and 64 G: R <= 64 without a division by G.
  std::string rowsTimesG = paren(m) + "*" + paren(h);
  std::string limitTimesG =
      std::to_string(kMaxDecodeRowTiles * kDecodeRows) + "*" + paren(g);
  std::string rowTiles = "cdiv(" + rowsTimesG + ", " +
                         std::to_string(kDecodeRows) + "*" + paren(g) + ")";
  // Splits: at most kDecodeMaxCtas CTAs in all, each split at least
  // kDecodeMinSplitKeys keys long, at least one split.
  std::string ctasPerSplit =
      "max(1, " + paren(b) + "*" + paren(g) + "*" + rowTiles + ")";
  std::string splits =
      "max(1, min(cdiv(" + n + ", " + std::to_string(kDecodeMinSplitKeys) +
      "), " + std::to_string(kDecodeMaxCtas) + "/" + ctasPerSplit + "))";
  manifest.workspaces.push_back(
      {"partials",
       paren(b) + "*" + paren(g) + "*" + splits + "*" + rowTiles + "*" +
           std::to_string(kDecodeRows * 4 * (artifact.valueDim + 1))});

  ParamSlot workspace;
  workspace.kind = ParamSlot::Kind::Workspace;
  workspace.arg = "partials";
  workspace.type = SlotType::Ptr;
  ParamSlot splitCount;
  splitCount.kind = ParamSlot::Kind::Expr;
  splitCount.arg = splits;
  splitCount.type = SlotType::I32;

  // The decode kernel evaluates its tile classes itself.
  ParamSlot noTiles;
  noTiles.kind = ParamSlot::Kind::Const;
  noTiles.type = SlotType::I64;
  EntrySpec decode = main, merge = main;
  main.when = rowsTimesG + " > " + limitTimesG;
  decode.name = "attn_decode";
  decode.module = "attn_decode";
  decode.function = artifact.decode->kernelName;
  decode.when = rowsTimesG + " <= " + limitTimesG;
  decode.grid = {splits + "*" + rowTiles, g, b};
  decode.block[0] = mlir::attn::kDecodeThreads;
  decode.sharedBytes = artifact.decode->sharedMemoryBytes;
  auto at = [](mlir::attn::FixedParam param) {
    return static_cast<unsigned>(param);
  };
  decode.params[at(mlir::attn::FixedParam::Partials)] = workspace;
  decode.params[at(mlir::attn::FixedParam::Splits)] = splitCount;
  decode.params[at(mlir::attn::FixedParam::Tiles)] = noTiles;
  merge.name = "attn_decode_merge";
  merge.function = artifact.decode->mergeKernelName;
  merge.when = decode.when;
  merge.grid = {rowTiles, g, b};
  merge.block[0] = mlir::attn::kMergeThreads;
  merge.sharedBytes = 0;
  merge.module = decode.module;
  merge.params = decode.params;
  manifest.entries.push_back(std::move(main));
  manifest.entries.push_back(std::move(decode));
  manifest.entries.push_back(std::move(merge));
}
