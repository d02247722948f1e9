//===- ArtifactCache.cpp - Compiled artifacts on disk ---------------------===//

#include "attn/Driver/ArtifactCache.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace attn;

namespace {

/// The layout of an entry's header; every integer is little-endian.
constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'A', 'R', 'T', 'F'};
constexpr size_t kMagicOffset = 0;
constexpr size_t kVersionOffset = 8;
constexpr size_t kFlagsOffset = 12;
constexpr size_t kKeyOffset = 16;
constexpr size_t kSizeOffset = 48;
constexpr size_t kChecksumOffset = 56;
constexpr size_t kKindOffset = 88;
constexpr size_t kNotesSizeOffset = 92;
/// The payload starts 16-byte aligned in the file.
constexpr size_t kHeaderSize = 96;

llvm::StringRef getExtension(ArtifactKind kind) {
  switch (kind) {
  case ArtifactKind::CpuObject:
    return ".o";
  case ArtifactKind::GpuPackage:
    return ".attnpkg";
  case ArtifactKind::HalideObject:
    return ".halide.o";
  case ArtifactKind::HalideRuntime:
    return ".halide-runtime.o";
  }
  return ".bin";
}

std::array<uint8_t, 32> checksum(llvm::StringRef payload,
                                 llvm::StringRef notes) {
  llvm::SHA256 hasher;
  hasher.update(llvm::arrayRefFromStringRef(payload));
  hasher.update(llvm::arrayRefFromStringRef(notes));
  return hasher.final();
}

} // namespace

std::optional<std::string> ArtifactCache::getDefaultDirectory() {
  llvm::SmallString<256> path;
  if (std::optional<std::string> xdg =
          llvm::sys::Process::GetEnv("XDG_CACHE_HOME");
      xdg && !xdg->empty()) {
    path = *xdg;
  } else if (std::optional<std::string> home =
                 llvm::sys::Process::GetEnv("HOME");
             home && !home->empty()) {
    path = *home;
    llvm::sys::path::append(path, ".cache");
  } else {
    return std::nullopt;
  }
  llvm::sys::path::append(path, "attnc");
  return std::string(path);
}

std::string ArtifactCache::getEntryPath(const CacheKey &key,
                                        ArtifactKind kind) const {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, toHex(key) + getExtension(kind));
  return std::string(path);
}

std::optional<CachedArtifact>
ArtifactCache::lookup(const CacheKey &key, ArtifactKind kind,
                      std::string &warning) const {
  warning.clear();
  std::string path = getEntryPath(key, kind);
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!file)
    return std::nullopt;
  llvm::StringRef bytes = (*file)->getBuffer();
  auto reject = [&](const llvm::Twine &why) -> std::optional<CachedArtifact> {
    warning = ("discarding cache entry '" + path + "': " + why).str();
    // Deleting it means the rebuilt artifact replaces it and the warning is
    // not repeated on the next run.
    (void)llvm::sys::fs::remove(path);
    return std::nullopt;
  };
  using llvm::support::endian::read32le;
  using llvm::support::endian::read64le;
  if (bytes.size() < kHeaderSize)
    return reject("truncated header");
  if (std::memcmp(bytes.data() + kMagicOffset, kMagic, sizeof(kMagic)) != 0)
    return reject("not an attnc cache entry");
  if (read32le(bytes.data() + kVersionOffset) != kFormatVersion)
    return reject("format version " +
                  llvm::Twine(read32le(bytes.data() + kVersionOffset)) +
                  ", expected " + llvm::Twine(kFormatVersion));
  if (read32le(bytes.data() + kKindOffset) != static_cast<uint32_t>(kind))
    return reject("holds another kind of artifact");
  if (std::memcmp(bytes.data() + kKeyOffset, key.data(), key.size()) != 0)
    return reject("written for another key (stale)");
  uint64_t size = read64le(bytes.data() + kSizeOffset);
  uint64_t notesSize = read32le(bytes.data() + kNotesSizeOffset);
  if (bytes.size() - kHeaderSize != size + notesSize)
    return reject("payload and notes are " +
                  llvm::Twine(bytes.size() - kHeaderSize) +
                  " bytes, header says " + llvm::Twine(size + notesSize) +
                  " (truncated or extended)");
  llvm::StringRef payload = bytes.substr(kHeaderSize, size);
  llvm::StringRef notes = bytes.substr(kHeaderSize + size);
  std::array<uint8_t, 32> sum = checksum(payload, notes);
  if (std::memcmp(bytes.data() + kChecksumOffset, sum.data(), sum.size()) != 0)
    return reject("checksum mismatch (corrupt)");
  CachedArtifact entry;
  entry.flags = read32le(bytes.data() + kFlagsOffset);
  entry.notes = notes.str();
  // A copy, aligned for the object file readers, that does not keep the
  // entry's file mapped.
  entry.payload = llvm::MemoryBuffer::getMemBufferCopy(payload, path);
  return entry;
}

llvm::Error ArtifactCache::store(const CacheKey &key, ArtifactKind kind,
                                 llvm::StringRef payload, uint32_t flags,
                                 llvm::StringRef notes) const {
  if (std::error_code error = llvm::sys::fs::create_directories(directory))
    return llvm::createStringError(error, "cannot create cache directory '" +
                                              directory +
                                              "': " + error.message());
  char header[kHeaderSize] = {};
  std::memcpy(header + kMagicOffset, kMagic, sizeof(kMagic));
  llvm::support::endian::write32le(header + kVersionOffset, kFormatVersion);
  llvm::support::endian::write32le(header + kFlagsOffset, flags);
  std::memcpy(header + kKeyOffset, key.data(), key.size());
  llvm::support::endian::write32le(header + kKindOffset,
                                   static_cast<uint32_t>(kind));
  llvm::support::endian::write64le(header + kSizeOffset, payload.size());
  if (notes.size() > UINT32_MAX)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "the compile's notes are too long to cache");
  llvm::support::endian::write32le(header + kNotesSizeOffset,
                                   static_cast<uint32_t>(notes.size()));
  std::array<uint8_t, 32> sum = checksum(payload, notes);
  std::memcpy(header + kChecksumOffset, sum.data(), sum.size());
  // writeToOutput writes a temporary file beside the entry and renames it.
  return llvm::writeToOutput(getEntryPath(key, kind),
                             [&](llvm::raw_ostream &os) {
    os.write(header, kHeaderSize);
    os << payload << notes;
    return llvm::Error::success();
  });
}
