//===- ObjectCache.h - Compiled kernel objects on disk ----------*- C++ -*-===//
//
// One file per kernel object, named by its key: a fixed header (magic,
// format version, flags, the key, the object size and a SHA-256 of the
// object) followed by the object. Entries are written atomically (a
// temporary file renamed into place), so concurrent compilers never see a
// half-written entry; an entry that is corrupt, truncated or written for
// another key is deleted and reported, never loaded.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_JIT_OBJECTCACHE_H
#define ATTN_JIT_OBJECTCACHE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace attn {

/// A SHA-256 of everything the object depends on (see CacheKey.h).
using CacheKey = std::array<uint8_t, 32>;

/// The key as 64 lowercase hex digits (the entry's file name stem).
std::string toHex(const CacheKey &key);

/// What an entry holds besides the object.
struct CachedObject {
  std::unique_ptr<llvm::MemoryBuffer> object;
  /// Facts about the kernel learned while lowering it, which a cache hit
  /// cannot recompute without lowering (CpuKernelFlags).
  uint32_t flags = 0;
};

class ObjectCache {
public:
  /// The bump that invalidates every entry written by an older layout.
  static constexpr uint32_t kFormatVersion = 1;

  explicit ObjectCache(std::string directory)
      : directory(std::move(directory)) {}

  /// `$XDG_CACHE_HOME/attnc`, else `$HOME/.cache/attnc`; nullopt when
  /// neither variable is set.
  static std::optional<std::string> getDefaultDirectory();

  const std::string &getDirectory() const { return directory; }
  std::string getEntryPath(const CacheKey &key) const;

  /// The entry for `key`, or nullopt when there is none. An entry that fails
  /// any check is deleted and the reason is put in `warning` (left empty
  /// otherwise), so the caller warns once and rebuilds it.
  std::optional<CachedObject> lookup(const CacheKey &key,
                                     std::string &warning) const;

  /// Writes the entry for `key` (creating the directory), replacing any
  /// existing one atomically.
  llvm::Error store(const CacheKey &key, llvm::StringRef object,
                    uint32_t flags) const;

private:
  std::string directory;
};

} // namespace attn

#endif // ATTN_JIT_OBJECTCACHE_H
