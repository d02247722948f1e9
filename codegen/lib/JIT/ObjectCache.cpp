//===- ObjectCache.cpp - Compiled kernel objects on disk ------------------===//

#include "attn/JIT/ObjectCache.h"

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
constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'K', 'O', 'B', 'J'};
constexpr size_t kMagicOffset = 0;
constexpr size_t kVersionOffset = 8;
constexpr size_t kFlagsOffset = 12;
constexpr size_t kKeyOffset = 16;
constexpr size_t kSizeOffset = 48;
constexpr size_t kChecksumOffset = 56;
/// 88 bytes rounded up, so the object starts 16-byte aligned in the file.
constexpr size_t kHeaderSize = 96;

std::array<uint8_t, 32> checksum(llvm::StringRef bytes) {
  return llvm::SHA256::hash(llvm::arrayRefFromStringRef(bytes));
}

} // namespace

std::string attn::toHex(const CacheKey &key) {
  return llvm::toHex(key, /*LowerCase=*/true);
}

std::optional<std::string> ObjectCache::getDefaultDirectory() {
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

std::string ObjectCache::getEntryPath(const CacheKey &key) const {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, toHex(key) + ".o");
  return std::string(path);
}

std::optional<CachedObject> ObjectCache::lookup(const CacheKey &key,
                                                std::string &warning) const {
  warning.clear();
  std::string path = getEntryPath(key);
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!file)
    return std::nullopt;
  llvm::StringRef bytes = (*file)->getBuffer();
  auto reject = [&](const llvm::Twine &why) -> std::optional<CachedObject> {
    warning = ("discarding cache entry '" + path + "': " + why).str();
    // Deleting it means the rebuilt object replaces it and the warning is
    // not repeated on the next run.
    (void)llvm::sys::fs::remove(path);
    return std::nullopt;
  };
  using llvm::support::endian::read32le;
  using llvm::support::endian::read64le;
  if (bytes.size() < kHeaderSize)
    return reject("truncated header");
  if (std::memcmp(bytes.data() + kMagicOffset, kMagic, sizeof(kMagic)) != 0)
    return reject("not an attnc object cache entry");
  if (read32le(bytes.data() + kVersionOffset) != kFormatVersion)
    return reject("format version " +
                  llvm::Twine(read32le(bytes.data() + kVersionOffset)) +
                  ", expected " + llvm::Twine(kFormatVersion));
  if (std::memcmp(bytes.data() + kKeyOffset, key.data(), key.size()) != 0)
    return reject("written for another key (stale)");
  uint64_t size = read64le(bytes.data() + kSizeOffset);
  if (bytes.size() - kHeaderSize != size)
    return reject("object is " + llvm::Twine(bytes.size() - kHeaderSize) +
                  " bytes, header says " + llvm::Twine(size) +
                  " (truncated or extended)");
  llvm::StringRef object = bytes.substr(kHeaderSize);
  std::array<uint8_t, 32> sum = checksum(object);
  if (std::memcmp(bytes.data() + kChecksumOffset, sum.data(), sum.size()) != 0)
    return reject("checksum mismatch (corrupt)");
  CachedObject entry;
  entry.flags = read32le(bytes.data() + kFlagsOffset);
  // A copy, aligned for the object file readers, that does not keep the
  // entry's file mapped.
  entry.object = llvm::MemoryBuffer::getMemBufferCopy(object, path);
  return entry;
}

llvm::Error ObjectCache::store(const CacheKey &key, llvm::StringRef object,
                               uint32_t flags) const {
  if (std::error_code error = llvm::sys::fs::create_directories(directory))
    return llvm::createStringError(error, "cannot create cache directory '" +
                                              directory +
                                              "': " + error.message());
  char header[kHeaderSize] = {};
  std::memcpy(header + kMagicOffset, kMagic, sizeof(kMagic));
  llvm::support::endian::write32le(header + kVersionOffset, kFormatVersion);
  llvm::support::endian::write32le(header + kFlagsOffset, flags);
  std::memcpy(header + kKeyOffset, key.data(), key.size());
  llvm::support::endian::write64le(header + kSizeOffset, object.size());
  std::array<uint8_t, 32> sum = checksum(object);
  std::memcpy(header + kChecksumOffset, sum.data(), sum.size());
  // writeToOutput writes a temporary file beside the entry and renames it.
  return llvm::writeToOutput(getEntryPath(key), [&](llvm::raw_ostream &os) {
    os.write(header, kHeaderSize);
    os << object;
    return llvm::Error::success();
  });
}
