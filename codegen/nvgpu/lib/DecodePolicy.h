//===- DecodePolicy.h - When and how a package runs decode ------*- C++ -*-===//
//
// Private to codegen/nvgpu: which launches of a package run the split-key
// decode kernel and its merge instead of the attention kernel, how many
// splits they take, and the package entries that say so.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_DECODEPOLICY_H
#define ATTN_NVGPU_DECODEPOLICY_H

#include "attn/NVGPU/GpuKernel.h"
#include "attn/Runtime/Package.h"

#include <string>

namespace attn {

/// The decode entries of flash-decoding beside the attention entry `main`
/// (whose params they share but for the workspace and the split count):
/// launches whose packed rows per key/value head, R = M·H/G, fit a few tiles
/// of 16 run the split-key kernel and its merge, the others `main`. The
/// formulas name the dims of the spec (B, H, G, M, N stand for whatever Q's
/// and K's axes are). Adds the three entries and the "partials" workspace.
void addDecodeEntries(PackageManifest &manifest, EntrySpec main,
                      const mlir::attn::GpuKernelArtifact &artifact,
                      const std::string &b, const std::string &h,
                      const std::string &g, const std::string &m,
                      const std::string &n);

} // namespace attn

#endif // ATTN_NVGPU_DECODEPOLICY_H
