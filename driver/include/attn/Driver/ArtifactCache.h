//===- ArtifactCache.h - Compiled artifacts on disk -------------*- C++ -*-===//
//
// The one cache of compiled artifacts (CPU objects, GPU packages): one file
// per artifact, named by its key and kind, under one directory. An entry is
// a fixed header (magic, format version, kind, flags, the key, the payload
// size, the notes' size and a SHA-256 of both) followed by the payload and
// the notes (what the compile reported besides the artifact). Entries are
// written atomically (a temporary file renamed into place), so concurrent
// writers, threads or processes, never expose a half-written entry; an entry
// that is corrupt, truncated, of another kind or written for another key is
// deleted and reported, never served.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_DRIVER_ARTIFACTCACHE_H
#define ATTN_DRIVER_ARTIFACTCACHE_H

#include "attn/Driver/CacheKey.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace attn {

/// What an entry holds.
struct CachedArtifact {
  std::unique_ptr<llvm::MemoryBuffer> payload;
  /// Facts about the kernel learned while lowering it, which a cache hit
  /// cannot recompute without lowering (CpuKernelFlags for CPU objects).
  uint32_t flags = 0;
  /// What the compile reported besides the artifact (its remarks, in the
  /// form the compile driver writes), so that a hit reports it again.
  std::string notes;
};

class ArtifactCache {
public:
  /// The bump that invalidates every entry written by an older layout.
  static constexpr uint32_t kFormatVersion = 3;

  explicit ArtifactCache(std::string directory)
      : directory(std::move(directory)) {}

  /// `$XDG_CACHE_HOME/attnc`, else `$HOME/.cache/attnc`; nullopt when
  /// neither variable is set.
  static std::optional<std::string> getDefaultDirectory();

  const std::string &getDirectory() const { return directory; }
  /// `<directory>/<hex key>.o` for objects, `.attnpkg` for packages.
  std::string getEntryPath(const CacheKey &key, ArtifactKind kind) const;

  /// The entry for `key`, or nullopt when there is none. An entry that fails
  /// any check is deleted and the reason is put in `warning` (left empty
  /// otherwise), so the caller warns once and rebuilds it.
  std::optional<CachedArtifact> lookup(const CacheKey &key, ArtifactKind kind,
                                       std::string &warning) const;

  /// Writes the entry for `key` (creating the directory), replacing any
  /// existing one atomically.
  llvm::Error store(const CacheKey &key, ArtifactKind kind,
                    llvm::StringRef payload, uint32_t flags,
                    llvm::StringRef notes = {}) const;

private:
  std::string directory;
};

} // namespace attn

#endif // ATTN_DRIVER_ARTIFACTCACHE_H
